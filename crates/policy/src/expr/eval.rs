//! Evaluation of parsed expressions against a request's context.

use super::{Code, Expr, Stmt, V};
use base64::Engine;
use std::collections::HashMap;

/// What an expression can read of the request being served. The gateway implements it.
pub trait Env {
    /// The context value at a dotted path (`Request.Method`): a leaf value, or `V::Ctx(path)`
    /// for an object whose members are read further.
    fn member(&self, path: &str) -> Result<V, EvalError>;
    /// An entry of a context map (`Request.Headers`, `Request.Url.Query`, `Variables`,
    /// `Request.MatchedParameters`, `Response.Headers`) by key; headers as a list of values.
    fn lookup(&self, map: &str, key: &str) -> Option<V>;
    /// The body of `Request` or `Response`, as text.
    fn body(&self, message: &str) -> Result<String, EvalError>;
}

/// A failure while evaluating: APIM reports it as `ExpressionValueEvaluationFailure`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

type R = Result<V, EvalError>;

fn fail<T>(m: impl Into<String>) -> Result<T, EvalError> {
    Err(EvalError(m.into()))
}

/// Evaluates a compiled expression or block.
pub fn eval_code(code: &Code, env: &dyn Env) -> R {
    let mut locals = HashMap::new();
    match code {
        Code::Expr(e) => eval(e, &mut locals, env),
        Code::Block(stmts) => match run(stmts, &mut locals, env, &mut 0)? {
            Some(v) => Ok(v),
            None => fail("the block ended without returning a value"),
        },
    }
}

const MAX_STEPS: u32 = 100_000;

fn run(
    stmts: &[Stmt],
    locals: &mut HashMap<String, V>,
    env: &dyn Env,
    steps: &mut u32,
) -> Result<Option<V>, EvalError> {
    for s in stmts {
        *steps += 1;
        if *steps > MAX_STEPS {
            return fail("the block ran too long");
        }
        match s {
            Stmt::Var(n, e) | Stmt::Assign(n, e) => {
                let v = eval(e, locals, env)?;
                locals.insert(n.clone(), v);
            }
            Stmt::Expr(e) => {
                eval(e, locals, env)?;
            }
            Stmt::Return(e) => return Ok(Some(eval(e, locals, env)?)),
            Stmt::If(c, a, b) => {
                let branch = if truthy(&eval(c, locals, env)?)? {
                    a
                } else {
                    b
                };
                if let Some(v) = crate::stack::deeper(|| run(branch, locals, env, steps))? {
                    return Ok(Some(v));
                }
            }
            Stmt::Foreach(name, list, body) => {
                let items = match eval(list, locals, env)? {
                    V::List(l) => l,
                    V::Json(serde_json::Value::Array(a)) => a.into_iter().map(V::Json).collect(),
                    V::Str(s) => s.chars().map(|c| V::Str(c.to_string())).collect(),
                    other => return fail(format!("cannot iterate over {}", other.type_name())),
                };
                for item in items {
                    locals.insert(name.clone(), item);
                    if let Some(v) = crate::stack::deeper(|| run(body, locals, env, steps))? {
                        return Ok(Some(v));
                    }
                }
            }
        }
    }
    Ok(None)
}

fn truthy(v: &V) -> Result<bool, EvalError> {
    v.truthy()
}

fn num(v: &V) -> Option<f64> {
    match v {
        V::Int(n) => Some(*n as f64),
        V::Double(d) => Some(*d),
        V::Json(serde_json::Value::Number(n)) => n.as_f64(),
        _ => None,
    }
}

fn int(v: &V) -> Option<i64> {
    match v {
        V::Int(n) => Some(*n),
        V::Json(serde_json::Value::Number(n)) => n.as_i64(),
        _ => None,
    }
}

fn string(v: &V, what: &str) -> Result<String, EvalError> {
    match v {
        V::Str(s) => Ok(s.clone()),
        V::Json(serde_json::Value::String(s)) => Ok(s.clone()),
        V::Null => fail(format!("{what} is null")),
        other => Ok(other.text()),
    }
}

fn equal(a: &V, b: &V) -> bool {
    match (a, b) {
        (V::Null, V::Null) => true,
        (V::Null, V::Json(serde_json::Value::Null))
        | (V::Json(serde_json::Value::Null), V::Null) => true,
        (V::Null, _) | (_, V::Null) => false,
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => match (a, b) {
                (V::Bool(x), V::Bool(y)) => x == y,
                (V::Time(x), V::Time(y)) => x == y,
                _ => a.text() == b.text(),
            },
        },
    }
}

fn eval(e: &Expr, locals: &mut HashMap<String, V>, env: &dyn Env) -> R {
    crate::stack::deeper(|| eval_here(e, locals, env))
}

fn eval_here(e: &Expr, locals: &mut HashMap<String, V>, env: &dyn Env) -> R {
    match e {
        Expr::Lit(v) => Ok(v.clone()),
        Expr::Interp(parts) => {
            let mut s = String::new();
            for p in parts {
                s.push_str(&eval(p, locals, env)?.text());
            }
            Ok(V::Str(s))
        }
        Expr::Context => Ok(V::Ctx(String::new())),
        Expr::Local(n) => locals
            .get(n)
            .cloned()
            .ok_or_else(|| EvalError(format!("'{n}' is used before it has a value"))),
        Expr::Static(t) => Ok(V::Type(t.clone())),
        Expr::Member(target, name) => {
            let t = eval(target, locals, env)?;
            member(t, name, env)
        }
        Expr::Index(target, index) => {
            let t = eval(target, locals, env)?;
            let i = eval(index, locals, env)?;
            index_of(t, &i, env)
        }
        Expr::NullSafe(target, access) => {
            let t = eval(target, locals, env)?;
            if matches!(t, V::Null | V::Json(serde_json::Value::Null)) {
                return Ok(V::Null);
            }
            // The access's `Target` stands for the value just computed.
            locals.insert("\u{0}target".into(), t);
            let v = eval(access, locals, env);
            locals.remove("\u{0}target");
            v
        }
        Expr::Target => locals
            .get("\u{0}target")
            .cloned()
            .ok_or_else(|| EvalError("'?.' without a target".into())),
        Expr::OutVar(n) => fail(format!("out {n} is only allowed in a TryParse call")),
        Expr::Call(target, name, generic, args) if matches!(args.last(), Some(Expr::OutVar(_))) => {
            let Some(Expr::OutVar(out)) = args.last() else {
                unreachable!("matched above")
            };
            let t = eval(target, locals, env)?;
            let mut a = Vec::with_capacity(args.len());
            for x in &args[..args.len() - 1] {
                a.push(eval(x, locals, env)?);
            }
            let (value, ok) = try_call(t, name, a, env);
            locals.insert(out.clone(), value);
            Ok(V::Bool(ok))
        }
        Expr::Call(target, name, generic, args) => {
            let t = eval(target, locals, env)?;
            let mut a = Vec::with_capacity(args.len());
            for x in args {
                a.push(eval(x, locals, env)?);
            }
            call(t, name, generic.as_deref(), a, env)
        }
        Expr::Unary(op, x) => {
            let v = eval(x, locals, env)?;
            match (*op, &v) {
                ("!", _) => Ok(V::Bool(!truthy(&v)?)),
                ("-", V::Int(n)) => Ok(V::Int(
                    n.checked_neg()
                        .ok_or_else(|| EvalError("overflow".into()))?,
                )),
                ("-", V::Double(d)) => Ok(V::Double(-d)),
                _ => fail(format!("'{op}' cannot apply to {}", v.type_name())),
            }
        }
        Expr::Cond(c, a, b) => {
            if truthy(&eval(c, locals, env)?)? {
                eval(a, locals, env)
            } else {
                eval(b, locals, env)
            }
        }
        Expr::Binary(first, rest) => {
            let mut acc = eval(first, locals, env)?;
            for (op, operand) in rest {
                acc = match *op {
                    "&&" => V::Bool(truthy(&acc)? && truthy(&eval(operand, locals, env)?)?),
                    "||" => V::Bool(truthy(&acc)? || truthy(&eval(operand, locals, env)?)?),
                    "??" if matches!(acc, V::Null | V::Json(serde_json::Value::Null)) => {
                        eval(operand, locals, env)?
                    }
                    "??" => acc,
                    _ => binary(op, acc, eval(operand, locals, env)?)?,
                };
            }
            Ok(acc)
        }
        Expr::Cast(t, x) => cast(t, eval(x, locals, env)?),
    }
}

fn binary(op: &str, x: V, y: V) -> R {
    match op {
        "==" => return Ok(V::Bool(equal(&x, &y))),
        "!=" => return Ok(V::Bool(!equal(&x, &y))),
        _ => {}
    }
    if op == "+" && (matches!(x, V::Str(_)) || matches!(y, V::Str(_))) {
        return Ok(V::Str(format!("{}{}", x.text(), y.text())));
    }
    if let (V::Time(a), V::Time(b)) = (&x, &y) {
        return match op {
            "<" => Ok(V::Bool(a < b)),
            ">" => Ok(V::Bool(a > b)),
            "<=" => Ok(V::Bool(a <= b)),
            ">=" => Ok(V::Bool(a >= b)),
            "-" => Ok(V::Double((*a - *b).as_seconds_f64())),
            _ => fail(format!("'{op}' cannot apply to two DateTime values")),
        };
    }
    if let (Some(a), Some(b)) = (int(&x), int(&y)) {
        let overflow = || EvalError(format!("overflow in {a} {op} {b}"));
        return match op {
            "+" => a.checked_add(b).map(V::Int).ok_or_else(overflow),
            "-" => a.checked_sub(b).map(V::Int).ok_or_else(overflow),
            "*" => a.checked_mul(b).map(V::Int).ok_or_else(overflow),
            "/" if b == 0 => fail("division by zero"),
            "/" => a.checked_div(b).map(V::Int).ok_or_else(overflow),
            "%" if b == 0 => fail("division by zero"),
            "%" => a.checked_rem(b).map(V::Int).ok_or_else(overflow),
            "<" => Ok(V::Bool(a < b)),
            ">" => Ok(V::Bool(a > b)),
            "<=" => Ok(V::Bool(a <= b)),
            ">=" => Ok(V::Bool(a >= b)),
            _ => fail(format!("unknown operator {op}")),
        };
    }
    if let (Some(a), Some(b)) = (num(&x), num(&y)) {
        return match op {
            "+" => Ok(V::Double(a + b)),
            "-" => Ok(V::Double(a - b)),
            "*" => Ok(V::Double(a * b)),
            "/" => Ok(V::Double(a / b)),
            "%" => Ok(V::Double(a % b)),
            "<" => Ok(V::Bool(a < b)),
            ">" => Ok(V::Bool(a > b)),
            "<=" => Ok(V::Bool(a <= b)),
            ">=" => Ok(V::Bool(a >= b)),
            _ => fail(format!("unknown operator {op}")),
        };
    }
    fail(format!(
        "'{op}' cannot apply to {} and {}",
        x.type_name(),
        y.type_name()
    ))
}

fn cast(t: &str, v: V) -> R {
    match (t, v) {
        ("string" | "String", V::Null) => Ok(V::Null),
        ("string" | "String", V::Json(serde_json::Value::String(s))) => Ok(V::Str(s)),
        ("string" | "String", V::Str(s)) => Ok(V::Str(s)),
        ("string" | "String", other) => {
            fail(format!("cannot cast {} to string", other.type_name()))
        }
        ("int" | "Int32" | "long" | "Int64", v) => match (int(&v), num(&v)) {
            (Some(n), _) => Ok(V::Int(n)),
            (None, Some(d)) => Ok(V::Int(d as i64)),
            _ => fail(format!("cannot cast {} to {t}", v.type_name())),
        },
        ("double" | "Double", v) => num(&v)
            .map(V::Double)
            .ok_or_else(|| EvalError(format!("cannot cast {} to double", v.type_name()))),
        ("bool" | "Boolean", v) => Ok(V::Bool(truthy(&v)?)),
        ("JObject" | "JToken" | "JArray", V::Json(j)) => Ok(V::Json(j)),
        (_, v) => Ok(v),
    }
}

fn member(t: V, name: &str, env: &dyn Env) -> R {
    match t {
        V::Ctx(path) => {
            let full = if path.is_empty() {
                name.to_string()
            } else {
                format!("{path}.{name}")
            };
            env.member(&full)
        }
        V::Str(s) if name == "Length" => Ok(V::Int(s.chars().count() as i64)),
        V::List(l) if name == "Length" || name == "Count" => Ok(V::Int(l.len() as i64)),
        V::Bytes(b) if name == "Length" => Ok(V::Int(b.len() as i64)),
        V::Type(t) => match (t.as_str(), name) {
            ("DateTime", "UtcNow" | "Now") => Ok(V::Time(time::OffsetDateTime::now_utc())),
            ("Encoding", "UTF8" | "ASCII") => Ok(V::Type("Encoding.UTF8".into())),
            ("StringComparison", n) => Ok(V::Comparison(n.ends_with("IgnoreCase"))),
            ("string" | "String", "Empty") => Ok(V::Str(String::new())),
            ("int" | "Int32", "MaxValue") => Ok(V::Int(i32::MAX as i64)),
            (t, n) => fail(format!("{t}.{n} is not supported")),
        },
        V::Time(t) => match name {
            "Year" => Ok(V::Int(t.year() as i64)),
            "Month" => Ok(V::Int(u8::from(t.month()) as i64)),
            "Day" => Ok(V::Int(t.day() as i64)),
            "Hour" => Ok(V::Int(t.hour() as i64)),
            "Minute" => Ok(V::Int(t.minute() as i64)),
            "Second" => Ok(V::Int(t.second() as i64)),
            "Ticks" => Ok(V::Int(
                (t.unix_timestamp_nanos() / 100) as i64 + 621_355_968_000_000_000,
            )),
            n => fail(format!("DateTime.{n} is not supported")),
        },
        V::Json(j) => Ok(V::Json(
            j.get(name).cloned().unwrap_or(serde_json::Value::Null),
        )),
        other => fail(format!("{} has no member {name}", other.type_name())),
    }
}

fn index_of(t: V, i: &V, env: &dyn Env) -> R {
    match t {
        V::Ctx(path) => {
            let key = i.text();
            env.lookup(&path, &key).ok_or_else(|| {
                EvalError(format!(
                    "The given key '{key}' was not present in context.{path}."
                ))
            })
        }
        V::List(l) => {
            let n = int(i).ok_or_else(|| EvalError("an array index must be a number".into()))?;
            usize::try_from(n)
                .ok()
                .and_then(|n| l.get(n).cloned())
                .ok_or_else(|| EvalError(format!("index {n} is outside the array of {}", l.len())))
        }
        V::Str(s) => {
            let n = int(i).ok_or_else(|| EvalError("a string index must be a number".into()))?;
            usize::try_from(n)
                .ok()
                .and_then(|n| s.chars().nth(n))
                .map(|c| V::Str(c.to_string()))
                .ok_or_else(|| EvalError(format!("index {n} is outside the string")))
        }
        V::Json(j) => Ok(V::Json(match (i, &j) {
            (V::Int(n), serde_json::Value::Array(a)) => {
                a.get(*n as usize).cloned().unwrap_or_default()
            }
            (k, _) => j.get(k.text()).cloned().unwrap_or_default(),
        })),
        other => fail(format!("{} cannot be indexed", other.type_name())),
    }
}

fn arg(args: &[V], n: usize, method: &str) -> Result<V, EvalError> {
    args.get(n)
        .cloned()
        .ok_or_else(|| EvalError(format!("{method} needs {} argument(s)", n + 1)))
}

fn ignore_case(args: &[V]) -> bool {
    args.iter().any(|a| matches!(a, V::Comparison(true)))
}

fn call(t: V, name: &str, generic: Option<&str>, args: Vec<V>, env: &dyn Env) -> R {
    match t {
        V::Ctx(path) => ctx_call(&path, name, generic, args, env),
        V::Type(t) => static_call(&t, name, args),
        V::Str(s) => string_call(&s, name, args),
        V::Json(j) => json_call(j, name, generic, args),
        V::Time(t) => time_call(t, name, args),
        V::List(l) => match name {
            "Contains" => {
                let x = arg(&args, 0, name)?;
                Ok(V::Bool(l.iter().any(|v| equal(v, &x))))
            }
            "First" | "FirstOrDefault" => Ok(l.first().cloned().unwrap_or(V::Null)),
            "Last" | "LastOrDefault" => Ok(l.last().cloned().unwrap_or(V::Null)),
            "Any" => Ok(V::Bool(!l.is_empty())),
            "Count" => Ok(V::Int(l.len() as i64)),
            n => fail(format!("array.{n} is not supported")),
        },
        V::Null => fail(format!("{name} was called on null")),
        other => match name {
            "ToString" => Ok(V::Str(other.text())),
            "Equals" => Ok(V::Bool(equal(&other, &arg(&args, 0, name)?))),
            n => fail(format!("{}.{n} is not supported", other.type_name())),
        },
    }
}

fn ctx_call(path: &str, name: &str, generic: Option<&str>, args: Vec<V>, env: &dyn Env) -> R {
    match name {
        "GetValueOrDefault" => {
            let key = string(&arg(&args, 0, name)?, "the key")?;
            let default = args.get(1).cloned().unwrap_or(V::Null);
            Ok(match env.lookup(path, &key) {
                Some(V::List(values)) => {
                    V::Str(values.iter().map(V::text).collect::<Vec<_>>().join(","))
                }
                Some(v) => match generic {
                    Some(t) => cast(t, v)?,
                    None => v,
                },
                None => default,
            })
        }
        "ContainsKey" => {
            let key = string(&arg(&args, 0, name)?, "the key")?;
            Ok(V::Bool(env.lookup(path, &key).is_some()))
        }
        "As" if path.ends_with(".Body") => {
            let message = path.trim_end_matches(".Body");
            let text = env.body(message)?;
            match generic.unwrap_or("string") {
                "string" | "String" => Ok(V::Str(text)),
                "JObject" | "JToken" | "JArray" => serde_json::from_str(&text)
                    .map(V::Json)
                    .map_err(|e| EvalError(format!("the body is not JSON: {e}"))),
                t => fail(format!("Body.As<{t}> is not supported")),
            }
        }
        "AsJwt" | "TryParseJwt" | "AsBasic" | "TryParseBasic" => fail(format!(
            "{name} is called on a header value, not on context.{path}"
        )),
        n => fail(format!("context.{path}.{n} is not supported")),
    }
}

fn static_call(t: &str, name: &str, args: Vec<V>) -> R {
    let a0 = || arg(&args, 0, name);
    match (t, name) {
        ("string" | "String", "IsNullOrEmpty") => Ok(V::Bool(match a0()? {
            V::Null => true,
            v => v.text().is_empty(),
        })),
        ("string" | "String", "IsNullOrWhiteSpace") => Ok(V::Bool(match a0()? {
            V::Null => true,
            v => v.text().trim().is_empty(),
        })),
        ("string" | "String", "Join") => {
            let sep = a0()?.text();
            let items: Vec<String> = match args.get(1) {
                Some(V::List(l)) if args.len() == 2 => l.iter().map(V::text).collect(),
                _ => args[1..].iter().map(V::text).collect(),
            };
            Ok(V::Str(items.join(&sep)))
        }
        ("string" | "String", "Concat") => Ok(V::Str(args.iter().map(V::text).collect())),
        ("string" | "String", "Format") => {
            let mut f = a0()?.text();
            for (i, v) in args[1..].iter().enumerate() {
                f = f.replace(&format!("{{{i}}}"), &v.text());
            }
            Ok(V::Str(f))
        }
        ("int" | "Int32" | "long" | "Int64", "Parse") => {
            // The text is not quoted: it may come from a secret named value.
            a0()?
                .text()
                .trim()
                .parse::<i64>()
                .map(V::Int)
                .map_err(|_| EvalError(format!("{t}.Parse: the text is not a whole number")))
        }
        ("double" | "Double", "Parse") => a0()?
            .text()
            .trim()
            .parse::<f64>()
            .map(V::Double)
            .map_err(|_| EvalError("not a number".into())),
        ("bool" | "Boolean", "Parse") => match a0()?.text().trim().to_ascii_lowercase().as_str() {
            "true" => Ok(V::Bool(true)),
            "false" => Ok(V::Bool(false)),
            _ => fail("bool.Parse: the text is not true or false"),
        },
        ("DateTime", "Parse") => time::OffsetDateTime::parse(
            &a0()?.text(),
            &time::format_description::well_known::Rfc3339,
        )
        .map(V::Time)
        .map_err(|e| EvalError(format!("not a date: {e}"))),
        ("Convert", "ToBase64String") => match a0()? {
            V::Bytes(b) => Ok(V::Str(base64::engine::general_purpose::STANDARD.encode(b))),
            V::Str(s) => Ok(V::Str(base64::engine::general_purpose::STANDARD.encode(s))),
            v => fail(format!(
                "Convert.ToBase64String needs bytes, not {}",
                v.type_name()
            )),
        },
        ("Convert", "FromBase64String") => base64::engine::general_purpose::STANDARD
            .decode(a0()?.text().trim())
            .map(V::Bytes)
            .map_err(|_| EvalError("the text is not base64".into())),
        ("Convert", "ToInt32" | "ToInt64") => {
            cast("int", a0()?).or_else(|_| static_call("int", "Parse", args.clone()))
        }
        ("Convert", "ToString") => Ok(V::Str(a0()?.text())),
        ("Encoding.UTF8", "GetBytes") => Ok(V::Bytes(a0()?.text().into_bytes())),
        ("Encoding.UTF8", "GetString") => match a0()? {
            V::Bytes(b) => Ok(V::Str(String::from_utf8_lossy(&b).into_owned())),
            v => fail(format!(
                "Encoding.UTF8.GetString needs bytes, not {}",
                v.type_name()
            )),
        },
        ("Math", "Min" | "Max") => {
            let (x, y) = (a0()?, arg(&args, 1, name)?);
            let less = binary("<", x.clone(), y.clone())?.truthy()?;
            Ok(if (name == "Min") == less { x } else { y })
        }
        ("Math", "Abs") => match a0()? {
            V::Int(n) => Ok(V::Int(n.abs())),
            v => num(&v)
                .map(|d| V::Double(d.abs()))
                .ok_or_else(|| EvalError("not a number".into())),
        },
        ("Guid", "NewGuid") => Ok(V::Str(format!("{:032x}", rand_u128()))),
        ("JObject", "Parse") | ("JArray", "Parse") => serde_json::from_str(&a0()?.text())
            .map(V::Json)
            .map_err(|e| EvalError(format!("not JSON: {e}"))),
        (t, n) => fail(format!("{t}.{n} is not supported")),
    }
}

fn rand_u128() -> u128 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    nanos.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
}

fn string_call(s: &str, name: &str, args: Vec<V>) -> R {
    let a0 = || arg(&args, 0, name).map(|v| v.text());
    let ic = ignore_case(&args);
    let fold = |x: &str| if ic { x.to_lowercase() } else { x.to_string() };
    match name {
        "Contains" => Ok(V::Bool(fold(s).contains(&fold(&a0()?)))),
        "StartsWith" => Ok(V::Bool(fold(s).starts_with(&fold(&a0()?)))),
        "EndsWith" => Ok(V::Bool(fold(s).ends_with(&fold(&a0()?)))),
        "Equals" => Ok(V::Bool(fold(s) == fold(&a0()?))),
        "ToLower" | "ToLowerInvariant" => Ok(V::Str(s.to_lowercase())),
        "ToUpper" | "ToUpperInvariant" => Ok(V::Str(s.to_uppercase())),
        "Trim" => Ok(V::Str(s.trim().to_string())),
        "TrimStart" => Ok(V::Str(s.trim_start().to_string())),
        "TrimEnd" => Ok(V::Str(s.trim_end().to_string())),
        "ToString" => Ok(V::Str(s.to_string())),
        "Replace" => Ok(V::Str(s.replace(&a0()?, &arg(&args, 1, name)?.text()))),
        "IndexOf" => Ok(V::Int(
            fold(s)
                .find(&fold(&a0()?))
                .map(|b| s[..b].chars().count() as i64)
                .unwrap_or(-1),
        )),
        "Split" => {
            let seps: Vec<String> = args
                .iter()
                .filter(|a| !matches!(a, V::Comparison(_) | V::Int(_)))
                .map(V::text)
                .collect();
            let seps = if seps.is_empty() {
                vec![" ".to_string()]
            } else {
                seps
            };
            let mut parts = vec![s.to_string()];
            for sep in seps.iter().filter(|x| !x.is_empty()) {
                parts = parts
                    .iter()
                    .flat_map(|p| {
                        p.split(sep.as_str())
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .collect();
            }
            Ok(V::List(parts.into_iter().map(V::Str).collect()))
        }
        "Substring" => {
            let chars: Vec<char> = s.chars().collect();
            let start = int(&arg(&args, 0, name)?)
                .ok_or_else(|| EvalError("Substring needs numbers".into()))?;
            let len = match args.get(1) {
                Some(v) => int(v).ok_or_else(|| EvalError("Substring needs numbers".into()))?,
                None => chars.len() as i64 - start,
            };
            if start < 0 || len < 0 || (start + len) as usize > chars.len() {
                return fail(format!(
                    "Substring({start}, {len}) is outside a string of {} characters",
                    chars.len()
                ));
            }
            Ok(V::Str(
                chars[start as usize..(start + len) as usize]
                    .iter()
                    .collect(),
            ))
        }
        "AsJwt" | "TryParseJwt" => Ok(parse_jwt(s).map(V::Json).unwrap_or(V::Null)),
        "AsBasic" | "TryParseBasic" => Ok(parse_basic(s).map(V::Json).unwrap_or(V::Null)),
        n => fail(format!("string.{n} is not supported")),
    }
}

/// A JWT's header and claims (not validated: validate-jwt does that), as APIM's `Jwt`.
fn parse_jwt(s: &str) -> Option<serde_json::Value> {
    let token = s.trim().strip_prefix("Bearer ").unwrap_or(s.trim());
    let mut parts = token.split('.');
    let dec = |p: &str| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p.trim_end_matches('='))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
    };
    let header = dec(parts.next()?)?;
    let claims = dec(parts.next()?)?;
    let mut claim_map = serde_json::Map::new();
    if let Some(m) = claims.as_object() {
        for (k, v) in m {
            let list = match v {
                serde_json::Value::Array(a) => a
                    .iter()
                    .map(|x| {
                        serde_json::Value::String(
                            x.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| x.to_string()),
                        )
                    })
                    .collect(),
                serde_json::Value::String(s) => vec![serde_json::Value::String(s.clone())],
                other => vec![serde_json::Value::String(other.to_string())],
            };
            claim_map.insert(k.clone(), serde_json::Value::Array(list));
        }
    }
    let get = |k: &str| claims.get(k).cloned().unwrap_or_default();
    Some(serde_json::json!({
        "Algorithm": header.get("alg").cloned().unwrap_or_default(),
        "Type": header.get("typ").cloned().unwrap_or_default(),
        "Issuer": get("iss"),
        "Subject": get("sub"),
        "Audiences": get("aud"),
        "Id": get("jti"),
        "Claims": claim_map,
    }))
}

fn parse_basic(s: &str) -> Option<serde_json::Value> {
    let b64 = s.trim().strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some(serde_json::json!({"UserId": user, "Password": pass}))
}

fn json_call(j: serde_json::Value, name: &str, generic: Option<&str>, args: Vec<V>) -> R {
    match name {
        "Value" => {
            let key = arg(&args, 0, name)?.text();
            let v = V::Json(j.get(&key).cloned().unwrap_or_default());
            match generic {
                Some(t) => cast(t, v),
                None => Ok(v),
            }
        }
        "ToString" => Ok(V::Str(match j {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })),
        "ContainsKey" => Ok(V::Bool(j.get(arg(&args, 0, name)?.text()).is_some())),
        // A send-request response's Body: `.Body.As<JObject>()`.
        "As" => {
            let text = match j {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            match generic.unwrap_or("string") {
                "string" | "String" => Ok(V::Str(text)),
                "JObject" | "JToken" | "JArray" => serde_json::from_str(&text)
                    .map(V::Json)
                    .map_err(|e| EvalError(format!("the body is not JSON: {e}"))),
                t => fail(format!("Body.As<{t}> is not supported")),
            }
        }
        "GetValue" => Ok(V::Json(
            j.get(arg(&args, 0, name)?.text())
                .cloned()
                .unwrap_or_default(),
        )),
        "TryGetValue" => {
            fail("TryGetValue with out parameters is not supported; use Value<T>(…) or ?? instead")
        }
        n => fail(format!("JToken.{n} is not supported")),
    }
}

fn time_call(t: time::OffsetDateTime, name: &str, args: Vec<V>) -> R {
    let n = || -> Result<f64, EvalError> {
        num(&arg(&args, 0, name)?).ok_or_else(|| EvalError(format!("{name} needs a number")))
    };
    let add = |secs: f64| Ok(V::Time(t + time::Duration::seconds_f64(secs)));
    match name {
        "AddSeconds" => add(n()?),
        "AddMinutes" => add(n()? * 60.0),
        "AddHours" => add(n()? * 3600.0),
        "AddDays" => add(n()? * 86400.0),
        "ToString" => match args.first().map(V::text) {
            None => Ok(V::Str(V::Time(t).text())),
            Some(f) => Ok(V::Str(format_time(t, &f))),
        },
        n => fail(format!("DateTime.{n} is not supported")),
    }
}

/// .NET custom date formats (yyyy MM dd HH mm ss fff) and "o"/"s"/"r".
fn format_time(t: time::OffsetDateTime, f: &str) -> String {
    match f {
        "o" | "O" => {
            return t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
        }
        "r" | "R" => {
            return t
                .format(&time::format_description::well_known::Rfc2822)
                .unwrap_or_default();
        }
        "s" => return format_time(t, "yyyy-MM-ddTHH:mm:ss"),
        _ => {}
    }
    let tokens: [(&str, String); 7] = [
        ("yyyy", format!("{:04}", t.year())),
        ("fff", format!("{:03}", t.millisecond())),
        ("MM", format!("{:02}", u8::from(t.month()))),
        ("dd", format!("{:02}", t.day())),
        ("HH", format!("{:02}", t.hour())),
        ("mm", format!("{:02}", t.minute())),
        ("ss", format!("{:02}", t.second())),
    ];
    let mut out = String::new();
    let mut rest = f;
    'outer: while !rest.is_empty() {
        for (tok, val) in &tokens {
            if let Some(r) = rest.strip_prefix(tok) {
                out.push_str(val);
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// `X.TryParse(text, out v)`, `s.TryParseJwt(out j)`, `s.TryParseBasic(out b)`: the value (or
/// the type's default) and whether it parsed.
fn try_call(t: V, name: &str, args: Vec<V>, env: &dyn Env) -> (V, bool) {
    let (method, default) = match (&t, name) {
        (V::Type(ty), "TryParse") => (
            "Parse",
            match ty.as_str() {
                "bool" | "Boolean" => V::Bool(false),
                "double" | "Double" => V::Double(0.0),
                "DateTime" => V::Null,
                _ => V::Int(0),
            },
        ),
        (_, "TryParseJwt") => ("AsJwt", V::Null),
        (_, "TryParseBasic") => ("AsBasic", V::Null),
        _ => return (V::Null, false),
    };
    match call(t, method, None, args, env) {
        Ok(V::Null) | Err(_) => (default, false),
        Ok(v) => (v, true),
    }
}

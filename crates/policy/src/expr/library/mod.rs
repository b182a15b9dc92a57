//! The .NET library as policy expressions see it: members and methods by the receiver's kind
//! (one module per family), operators, casts and type tests, and number formatting.
//!
//! Invariant: nothing here panics or grows a value past [`MAX_LEN`]; a member that exists in
//! .NET but not here fails with its name (the parser already refused names outside the list).

mod collections;
mod context;
mod crypto;
mod json;
mod linq;
mod numbers;
mod statics;
mod strings;
mod times;
mod xml;

use super::value::{Env, EvalError, Host, Native, Obj, R, Seg, V, equal, fail, int, num};

pub use crypto::bytes_of;
pub use numbers::format_value;
pub use statics::regex;
pub use xml::content as xml_content;

/// A random key for an HMAC made without one (as .NET makes it).
pub fn random_key() -> Vec<u8> {
    crypto::random_bytes(64).unwrap_or_default()
}

/// Whether `context.<path>` is one of the context's dictionaries.
pub fn is_context_map(path: &str) -> bool {
    context::MAPS.contains(&path)
}

/// `context.<path>` read in one step.
pub fn context_path(env: &dyn Env, path: &str) -> R {
    let v = context::value(env, path)?;
    if v.is_null()
        && let Some((object, name)) = path.split_once('.')
        && matches!(object, "Subscription" | "User" | "Product")
        && env.member(object)?.is_null()
    {
        // As `context.Subscription.Id` on a request without a subscription, in APIM.
        return fail(format!(
            "Object reference not set to an instance of an object (reading {name} of null)"
        ));
    }
    Ok(v)
}

/// The items a `foreach` or a LINQ operator walks.
pub fn enumerate(env: &dyn Env, v: V) -> Result<Vec<V>, EvalError> {
    if let V::Ctx(path) = &v {
        return Ok(context::entries(env, path));
    }
    v.items()
        .ok_or_else(|| EvalError(format!("cannot iterate over {}", v.type_name())))
}

pub fn member(h: &mut dyn Host, t: V, name: &str) -> R {
    match t {
        V::Ctx(path) => context::member(h.env(), &path, name),
        V::Null => match name {
            "HasValue" => Ok(V::Bool(false)),
            _ => fail(format!(
                "Object reference not set to an instance of an object (reading {name} of null)"
            )),
        },
        V::Type(t) => statics::member(&t, name),
        V::Str(s) => strings::member(&s, name),
        V::Json(j) => json::member(&j, name),
        V::Xml(x) => xml::member(&x, name),
        V::Time(_) | V::Span(_) => times::member(&t, name),
        V::Int(_) | V::Double(_) | V::Bool(_) => match name {
            "HasValue" => Ok(V::Bool(true)),
            "Value" => Ok(t),
            n => fail(format!("{}.{n} is not supported", t.type_name())),
        },
        V::Pair(p) => match name {
            "Key" | "Name" | "Item1" => Ok(p.0.clone()),
            "Value" | "Item2" => Ok(p.1.clone()),
            n => fail(format!("KeyValuePair.{n} is not supported")),
        },
        V::Native(_) | V::Obj(_) => crypto::member(&t, name)
            .or_else(|| statics::native_member(&t, name))
            .unwrap_or_else(|| fail(format!("{}.{name} is not supported", t.type_name()))),
        _ => collections::member(&t, name),
    }
}

pub fn call(h: &mut dyn Host, t: V, name: &str, generic: Option<&str>, args: Vec<V>) -> R {
    match (&t, name) {
        (V::Type(ty), _) => return statics::call(h, ty, name, generic, &args),
        (V::Null, _) => {
            return fail(format!(
                "Object reference not set to an instance of an object (calling {name} on null)"
            ));
        }
        (_, "Equals") if !matches!(t, V::Str(_)) => {
            return Ok(V::Bool(equal(&t, &super::value::arg(&args, 0, name)?)));
        }
        (_, "GetHashCode") => return Ok(V::Int(hash(&t.text()))),
        (_, "GetType") => return Ok(V::Str(format!("System.{}", t.type_name()))),
        _ => {}
    }
    let own = match &t {
        V::Ctx(path) => context::call(h, path, name, generic, &args),
        V::Str(s) => strings::call(s, name, &args),
        V::Json(j) => json::call(h, j, name, generic, &args),
        V::Xml(x) => xml::call(x, name, &args),
        V::Time(_) | V::Span(_) => times::call(&t, name, &args),
        V::Int(_) | V::Double(_) | V::Bool(_) => numbers::call(&t, name, &args),
        V::Native(_) | V::Obj(_) => crypto::call(&t, name, &args)
            .unwrap_or_else(|| statics::native_call(h, &t, name, &args)),
        V::Pair(_) if name == "ToString" => Ok(V::Str(t.text())),
        V::Enum(..) | V::Comparison(_) if name == "ToString" => Ok(V::Str(t.text())),
        V::Pair(p) if name == "Remove" => match &p.1 {
            V::Json(j) => json::remove_self(j),
            _ => fail("only a JProperty can be removed"),
        },
        _ => collections::call(h, &t, name, &args),
    };
    match own {
        Err(e) if e.0 == UNKNOWN && linq::has(name) => {
            let items = enumerate(h.env(), t)?;
            linq::call(h, items, name, generic, &args)
        }
        Err(e) if e.0 == UNKNOWN && name == "ToString" && args.is_empty() => Ok(V::Str(t.text())),
        Err(e) if e.0 == UNKNOWN => fail(format!("{}.{name} is not supported", t.type_name())),
        other => other,
    }
}

/// What a family gives for a method it does not have, so that LINQ may take the call.
const UNKNOWN: &str = "\u{0}unknown method";

fn unknown<T>() -> Result<T, EvalError> {
    fail(UNKNOWN)
}

pub fn index(h: &mut dyn Host, t: V, idx: &[V]) -> R {
    let Some(i) = idx.first() else {
        return fail("an index is missing");
    };
    match t {
        V::Ctx(path) => {
            let key = i.text();
            h.env().lookup(&path, &key).ok_or_else(|| {
                EvalError(format!(
                    "The given key '{key}' was not present in context.{path}."
                ))
            })
        }
        V::Json(j) => Ok(match i {
            V::Int(n) if *n >= 0 => V::Json(j.child(Seg::Idx(*n as usize))),
            k => V::Json(j.child(Seg::Key(k.text()))),
        }),
        V::Native(_) => statics::native_index(&t, i),
        t => collections::index(&t, i),
    }
}

pub fn set_index(t: &V, idx: &[V], v: V) -> Result<(), EvalError> {
    let Some(i) = idx.first() else {
        return fail("an index is missing");
    };
    match t {
        V::Json(j) => json::set(j, i, v),
        V::Ctx(path) => fail(format!("context.{path} is read-only")),
        t => collections::set_index(t, i, v),
    }
}

pub fn set_member(t: &V, name: &str, v: V) -> Result<(), EvalError> {
    match t {
        V::Json(j) if name == "Value" => {
            let new = super::value::to_json(&v);
            j.with_mut(|x| x.map(|x| *x = new));
            Ok(())
        }
        V::Xml(x) => xml::set_member(x, name, v),
        V::Obj(_) => statics::set_native_member(t, name, v),
        V::Ctx(path) => fail(format!("context.{path} is read-only")),
        t => fail(format!("{}.{name} cannot be set", t.type_name())),
    }
}

/// `TryGetValue(key, out v)` on dictionaries, JSON objects and context maps.
pub fn try_get(h: &mut dyn Host, t: &V, key: &V) -> Option<V> {
    match t {
        V::Ctx(path) => h.env().lookup(path, &key.text()),
        V::Dict(d) => d.lock().get(key),
        V::Json(j) => {
            let k = key.text();
            j.with(|v| v.and_then(|v| v.get(&k)).is_some())
                .then(|| V::Json(j.child(Seg::Key(k))))
        }
        _ => None,
    }
}

fn hash(s: &str) -> i64 {
    s.bytes()
        .fold(5381i32, |h, b| h.wrapping_mul(33) ^ b as i32) as i64
}

/// A binary operator (not `&&`, `||`, `??`, which the interpreter short-circuits).
pub fn binary(op: &str, x: V, y: V) -> R {
    match op {
        "==" => return Ok(V::Bool(equal(&x, &y))),
        "!=" => return Ok(V::Bool(!equal(&x, &y))),
        _ => {}
    }
    if op == "+" && (matches!(x, V::Str(_)) || matches!(y, V::Str(_))) {
        if let V::Native(n) = &x
            && let Native::Namespace(ns) = &**n
        {
            return Ok(V::Str(format!("{{{ns}}}{}", y.text())));
        }
        let (a, b) = (x.text(), y.text());
        super::value::check_len(a.len() + b.len())?;
        return Ok(V::Str(a + &b));
    }
    if let Some(v) = times::binary(op, &x, &y) {
        return v;
    }
    if let (V::Bool(a), V::Bool(b)) = (&x, &y) {
        return match op {
            "&" => Ok(V::Bool(*a & *b)),
            "|" => Ok(V::Bool(*a | *b)),
            "^" => Ok(V::Bool(*a ^ *b)),
            _ => fail(format!("'{op}' cannot apply to two bools")),
        };
    }
    let (xi, yi) = (int(&x), int(&y));
    let integral = !matches!(x, V::Double(_)) && !matches!(y, V::Double(_));
    if let (Some(a), Some(b), true) = (xi, yi, integral) {
        return numbers::integer(op, a, b);
    }
    if let (Some(a), Some(b)) = (num(&x), num(&y)) {
        return numbers::double(op, a, b);
    }
    fail(format!(
        "'{op}' cannot apply to {} and {}",
        x.type_name(),
        y.type_name()
    ))
}

/// A cast `(T)value`.
pub fn cast(t: &str, v: V) -> R {
    let t = t.trim_end_matches('?');
    match t {
        "string" | "String" => match v {
            V::Null => Ok(V::Null),
            V::Json(j) => Ok(match j.get() {
                serde_json::Value::Null => V::Null,
                serde_json::Value::String(s) => V::Str(s),
                serde_json::Value::Bool(b) => V::Str(if b { "True" } else { "False" }.into()),
                other => V::Str(other.to_string()),
            }),
            V::Str(s) => Ok(V::Str(s)),
            other => fail(format!(
                "Unable to cast object of type '{}' to type 'System.String'",
                other.type_name()
            )),
        },
        "int" | "Int32" | "long" | "Int64" | "short" | "Int16" | "byte" | "Byte" | "uint"
        | "UInt32" | "ulong" | "UInt64" | "sbyte" | "ushort" => numbers::to_integer(t, &v),
        "double" | "Double" | "float" | "Single" | "decimal" | "Decimal" => num(&v)
            .map(V::Double)
            .or_else(|| match &v {
                V::Json(j) => j.get().as_str().and_then(|s| s.parse().ok()).map(V::Double),
                _ => None,
            })
            .ok_or_else(|| EvalError(format!("cannot cast {} to {t}", v.type_name()))),
        "bool" | "Boolean" => match &v {
            V::Json(j) => match j.get() {
                serde_json::Value::Bool(b) => Ok(V::Bool(b)),
                serde_json::Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(V::Bool(true)),
                serde_json::Value::String(s) if s.eq_ignore_ascii_case("false") => {
                    Ok(V::Bool(false))
                }
                _ => fail("cannot cast this JToken to bool"),
            },
            _ => Ok(V::Bool(v.truthy()?)),
        },
        "char" | "Char" => match v {
            V::Int(n) => char::from_u32(n as u32)
                .map(|c| V::Str(c.to_string()))
                .ok_or_else(|| EvalError("not a character code".into())),
            other => Ok(other),
        },
        "DateTime" | "DateTimeOffset" => match &v {
            V::Time(_) => Ok(v),
            V::Json(_) | V::Str(_) => super::clock::parse(&v.text())
                .map(V::Time)
                .ok_or_else(|| EvalError(format!("cannot cast '{}' to DateTime", v.text()))),
            _ => fail(format!("cannot cast {} to DateTime", v.type_name())),
        },
        "XNamespace" => Ok(V::native(Native::Namespace(v.text()))),
        "XName" => Ok(V::Str(v.text())),
        "JObject" | "JArray" | "JToken" | "JValue" | "JContainer" => match v {
            V::Json(_) | V::Null => Ok(v),
            other if t == "JToken" || t == "JValue" => Ok(V::json(super::value::to_json(&other))),
            other => fail(format!(
                "Unable to cast object of type '{}' to type '{t}'",
                other.type_name()
            )),
        },
        _ => Ok(v),
    }
}

/// `value is T` (and what `as T` checks).
pub fn is_type(v: &V, t: &str) -> bool {
    let t = t.trim_end_matches('?');
    let base = t.split('<').next().unwrap_or(t);
    match (base, v) {
        ("object" | "Object" | "var" | "dynamic", _) => !v.is_null(),
        ("string" | "String", V::Str(_)) => true,
        ("int" | "Int32" | "long" | "Int64", V::Int(_)) => true,
        ("double" | "Double" | "float" | "decimal" | "Decimal", V::Double(_)) => true,
        ("bool" | "Boolean", V::Bool(_)) => true,
        ("DateTime" | "DateTimeOffset", V::Time(_)) => true,
        ("TimeSpan", V::Span(_)) => true,
        ("byte[]", V::Bytes(_)) => true,
        ("JToken", V::Json(_)) => true,
        ("JObject", V::Json(j)) => j.with(|v| v.is_some_and(|v| v.is_object())),
        ("JArray", V::Json(j)) => j.with(|v| v.is_some_and(|v| v.is_array())),
        ("JValue", V::Json(j)) => j.with(|v| v.is_some_and(|v| !v.is_object() && !v.is_array())),
        ("JProperty" | "KeyValuePair", V::Pair(_)) => true,
        ("XContainer", V::Xml(_)) => true,
        ("XElement" | "XNode", V::Xml(x)) => !x.doc,
        ("XDocument", V::Xml(x)) => x.doc,
        ("Dictionary" | "IDictionary" | "IReadOnlyDictionary", V::Dict(_)) => true,
        ("HashSet" | "ISet", V::Set(_)) => true,
        ("List" | "IList" | "ICollection" | "IReadOnlyCollection", V::List(_)) => true,
        (t, V::List(_)) if t.ends_with("[]") => true,
        ("IEnumerable", v) => v.items().is_some(),
        ("Exception", V::Native(n)) => matches!(**n, Native::Exception { .. }),
        ("StringBuilder", V::Obj(o)) => matches!(*o.lock(), Obj::Builder(_)),
        _ => false,
    }
}

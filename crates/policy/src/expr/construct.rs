//! `new T(…)` for the types expressions may construct, and the default values of types.

use super::library;
use super::value::{
    Dict, EvalError, Native, Obj, R, Shared, V, Xml, arg, check_len, default_of, fail, int, num,
    to_json,
};
use super::xtree::{XElem, XNode};

/// The types `new` accepts, checked when the expression is parsed.
const CONSTRUCTIBLE: &[&str] = &[
    "JObject",
    "JArray",
    "JProperty",
    "JValue",
    "List",
    "Dictionary",
    "HashSet",
    "Queue",
    "Stack",
    "StringBuilder",
    "Random",
    "Uri",
    "UriBuilder",
    "XElement",
    "XAttribute",
    "XDocument",
    "XCData",
    "XComment",
    "XText",
    "DateTime",
    "DateTimeOffset",
    "TimeSpan",
    "Regex",
    "Exception",
    "HMACSHA256",
    "HMACSHA1",
    "HMACSHA384",
    "HMACSHA512",
    "HMACMD5",
    "SHA256Managed",
    "SHA1Managed",
    "SHA384Managed",
    "SHA512Managed",
    "Guid",
    "KeyValuePair",
    "Tuple",
    "string",
    "String",
    "RNGCryptoServiceProvider",
    "object",
    "Object",
];

fn base(t: &str) -> &str {
    t.split('<').next().unwrap_or(t).trim_end_matches('?')
}

/// Whether `new t(…)` with `n` arguments is something expressions can build.
pub fn check(t: &str, _n: usize) -> Result<(), String> {
    let b = base(t);
    if CONSTRUCTIBLE.contains(&b) || is_exception(b) {
        Ok(())
    } else {
        Err(format!(
            "'new {b}(…)' is not supported in policy expressions"
        ))
    }
}

pub fn is_exception(t: &str) -> bool {
    super::types::EXCEPTIONS.contains(&t)
}

/// `new T[n]`.
pub fn sized(t: &str, n: i64) -> R {
    let n = usize::try_from(n).map_err(|_| {
        EvalError("Arithmetic operation resulted in an overflow (a negative array size).".into())
    })?;
    check_len(n)?;
    Ok(match base(t) {
        "byte" | "Byte" => V::bytes(vec![0; n]),
        other => V::list(vec![default_of(other); n]),
    })
}

fn hmac(t: &str, args: &[V]) -> R {
    let key = match args.first() {
        Some(k) => Some(library::bytes_of(k)?),
        None => Some(library::random_key()),
    };
    Ok(V::Obj(Shared::new(Obj::Hash {
        algorithm: t.to_string(),
        key,
    })))
}

/// `new T(args)` (initializers are applied by the caller).
pub fn object(t: &str, args: Vec<V>) -> R {
    let a0 = || arg(&args, 0, t);
    match base(t) {
        "JObject" => json_container(true, &args),
        "JArray" => json_container(false, &args),
        "JProperty" => Ok(V::pair(V::Str(a0()?.text()), V::json(to_json(&arg(&args, 1, t)?)))),
        "JValue" => Ok(V::json(to_json(&a0()?))),
        "List" | "HashSet" | "Queue" | "Stack" => {
            let items = match args.first() {
                Some(V::Int(_)) | None => Vec::new(),
                Some(v) => v.items().unwrap_or_default(),
            };
            Ok(match base(t) {
                "List" => V::list(items),
                "HashSet" => {
                    let mut set: Vec<V> = Vec::new();
                    for x in items {
                        if !set.iter().any(|y| super::value::equal(&x, y)) {
                            set.push(x);
                        }
                    }
                    V::Set(Shared::new(set))
                }
                "Queue" => V::Obj(Shared::new(Obj::Queue(items.into()))),
                _ => V::Obj(Shared::new(Obj::Stack(items))),
            })
        }
        "Dictionary" => {
            let mut d = Dict::default();
            for a in &args {
                match a {
                    V::Comparison(ic) => d.ignore_case = *ic,
                    V::Dict(other) => d.entries = other.lock().entries.clone(),
                    _ => {}
                }
            }
            Ok(V::Dict(Shared::new(d)))
        }
        "StringBuilder" => Ok(V::Obj(Shared::new(Obj::Builder(match args.first() {
            Some(V::Str(s)) => s.clone(),
            _ => String::new(),
        })))),
        "Random" | "RNGCryptoServiceProvider" => {
            let seed = match args.first().and_then(int) {
                Some(s) => (s as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                None => rand::random(),
            };
            Ok(V::Obj(Shared::new(Obj::Random(seed))))
        }
        "Uri" => {
            let text = match args.as_slice() {
                [V::Native(b), rel, ..] if matches!(**b, Native::Uri(_)) => {
                    let Native::Uri(b) = &**b else { unreachable!("matched above") };
                    return b.join(&rel.text()).map(|u| V::native(Native::Uri(u))).map_err(|_| EvalError(format!("Invalid URI: '{}'", rel.text())));
                }
                [first, ..] => first.text(),
                [] => return fail("new Uri needs a URI"),
            };
            url::Url::parse(&text)
                .map(|u| V::native(Native::Uri(u)))
                .map_err(|_| EvalError("Invalid URI: The format of the URI could not be determined.".into()))
        }
        "UriBuilder" => {
            let text = args.first().map(V::text).unwrap_or_else(|| "http://localhost/".into());
            url::Url::parse(&text)
                .map(|u| V::Obj(Shared::new(Obj::UriBuilder(u))))
                .map_err(|_| EvalError("Invalid URI: The format of the URI could not be determined.".into()))
        }
        "XElement" | "XDocument" => xml(base(t) == "XDocument", &args),
        "XAttribute" => Ok(V::native(Native::XAttribute(a0()?.text(), arg(&args, 1, t)?.text()))),
        "XCData" | "XText" | "XComment" => Ok(V::Str(a0()?.text())),
        "DateTime" | "DateTimeOffset" => date(&args),
        "TimeSpan" => span(&args),
        "Regex" => library::regex(&a0()?.text(), &args[1..]),
        "Guid" => uuid::Uuid::parse_str(a0()?.text().trim())
            .map(|u| V::Str(u.to_string()))
            .map_err(|_| EvalError("Guid should contain 32 digits with 4 dashes (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx).".into())),
        "KeyValuePair" | "Tuple" => match args.len() {
            2 => Ok(V::pair(args[0].clone(), args[1].clone())),
            _ => Ok(V::list(args)),
        },
        "string" | "String" => {
            let c = a0()?.text();
            let n = int(&arg(&args, 1, t)?).unwrap_or(0).max(0) as usize;
            check_len(n)?;
            Ok(V::Str(c.repeat(n)))
        }
        "object" | "Object" => Ok(V::json(serde_json::json!({}))),
        h if h.starts_with("HMAC") => hmac(h, &args),
        h if h.starts_with("SHA") => Ok(V::Obj(Shared::new(Obj::Hash { algorithm: h.to_string(), key: None }))),
        e if is_exception(e) => Ok(V::native(Native::Exception {
            kind: e.to_string(),
            message: args.first().map(V::text).unwrap_or_else(|| format!("Exception of type 'System.{e}' was thrown.")),
        })),
        other => fail(format!("'new {other}(…)' is not supported")),
    }
}

/// `new JObject(props…)`, `new JArray(items…)`: a JObject takes JProperties (or another
/// object's properties), a JArray takes values or an enumerable of them.
fn json_container(object: bool, args: &[V]) -> R {
    use serde_json::Value as J;
    let mut items: Vec<V> = Vec::new();
    for a in args {
        match a {
            V::List(l) => items.extend(l.lock().iter().cloned()),
            V::Json(j) if object && j.with(|v| v.is_some_and(J::is_object)) => {
                items.extend(a.items().unwrap_or_default());
            }
            other => items.push(other.clone()),
        }
    }
    if object {
        let mut map = serde_json::Map::new();
        for item in items {
            match item {
                V::Pair(p) => {
                    map.insert(p.0.text(), to_json(&p.1));
                }
                other => {
                    return fail(format!(
                        "Can not add {} to Newtonsoft.Json.Linq.JObject.",
                        other.type_name()
                    ));
                }
            }
        }
        Ok(V::json(J::Object(map)))
    } else {
        Ok(V::json(J::Array(items.iter().map(to_json).collect())))
    }
}

fn xml(document: bool, args: &[V]) -> R {
    if document {
        let root = args.iter().find_map(|a| match a {
            V::Xml(x) => x.with(|e| e.cloned()),
            _ => None,
        });
        let mut x = Xml::element(root.unwrap_or_else(|| XElem::new("root")));
        x.doc = true;
        return Ok(V::Xml(x));
    }
    let name = arg(args, 0, "XElement")?.text();
    if name.is_empty() {
        return fail("The empty string '' is not a valid local name.");
    }
    let mut e = XElem::new(name);
    let mut nodes: Vec<XNode> = Vec::new();
    let mut attrs = Vec::new();
    for a in &args[1..] {
        library::xml_content(a, &mut nodes, &mut attrs)?;
    }
    e.children = nodes;
    e.attrs = attrs;
    Ok(V::Xml(Xml::element(e)))
}

fn date(args: &[V]) -> R {
    let n = |i: usize| {
        args.get(i)
            .and_then(int)
            .unwrap_or(if i < 3 { 1 } else { 0 })
    };
    if args.len() == 1 {
        return super::clock::from_ticks(n(0)).map(V::Time).ok_or_else(|| {
            EvalError(
                "Ticks must be between DateTime.MinValue.Ticks and DateTime.MaxValue.Ticks.".into(),
            )
        });
    }
    let bad = || {
        EvalError("Year, Month, and Day parameters describe an un-representable DateTime.".into())
    };
    let month = time::Month::try_from(u8::try_from(n(1)).map_err(|_| bad())?).map_err(|_| bad())?;
    let date =
        time::Date::from_calendar_date(n(0) as i32, month, u8::try_from(n(2)).map_err(|_| bad())?)
            .map_err(|_| bad())?;
    let hms = time::Time::from_hms_milli(
        u8::try_from(n(3)).map_err(|_| bad())?,
        u8::try_from(n(4)).map_err(|_| bad())?,
        u8::try_from(n(5)).map_err(|_| bad())?,
        u16::try_from(args.get(6).and_then(int).unwrap_or(0)).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    Ok(V::Time(
        time::PrimitiveDateTime::new(date, hms).assume_utc(),
    ))
}

fn span(args: &[V]) -> R {
    let n: Vec<f64> = args.iter().map(|a| num(a).unwrap_or(0.0)).collect();
    let secs = match n.as_slice() {
        [ticks] => ticks / 1e7,
        [h, m, s] => h * 3600.0 + m * 60.0 + s,
        [d, h, m, s] => d * 86400.0 + h * 3600.0 + m * 60.0 + s,
        [d, h, m, s, ms] => d * 86400.0 + h * 3600.0 + m * 60.0 + s + ms / 1000.0,
        _ => {
            return fail(
                "new TimeSpan takes ticks, (hours, minutes, seconds) or (days, hours, minutes, seconds[, milliseconds])",
            );
        }
    };
    if !secs.is_finite() || secs.abs() > 1e15 {
        return fail("TimeSpan overflowed because the duration is too long.");
    }
    Ok(V::Span(time::Duration::seconds_f64(secs)))
}

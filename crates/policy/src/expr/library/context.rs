//! `context` and its objects: members read through the gateway's [`Env`], the maps
//! (`Headers`, `Query`, `Variables`, `MatchedParameters`) with their dictionary methods, message
//! bodies with `As<T>()`, and URLs as `IUrl`.

use super::super::value::{Env, EvalError, Host, Json, R, Shared, V, arg, fail};
use super::super::{value, xtree};
use super::{cast, unknown};

/// The context objects that are dictionaries.
pub const MAPS: &[&str] = &[
    "Request.Headers",
    "Response.Headers",
    "Request.Url.Query",
    "Request.OriginalUrl.Query",
    "Request.MatchedParameters",
    "Variables",
];

pub fn entries(env: &dyn Env, path: &str) -> Vec<V> {
    env.entries(path)
        .into_iter()
        .map(|(k, v)| V::pair(V::Str(k), v))
        .collect()
}

pub fn member(env: &dyn Env, path: &str, name: &str) -> R {
    let full = if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    };
    if MAPS.contains(&path) {
        let items = env.entries(path);
        return match name {
            "Count" => Ok(V::Int(items.len() as i64)),
            "Keys" => Ok(V::list(items.into_iter().map(|(k, _)| V::Str(k)).collect())),
            "Values" => Ok(V::list(items.into_iter().map(|(_, v)| v).collect())),
            n => fail(format!("context.{path}.{n} is not supported")),
        };
    }
    value(env, &full)
}

/// The context's member at `full` (`Request.Method`, `Elapsed`, `Api.ServiceUrl`), typed as
/// APIM types it.
pub fn value(env: &dyn Env, full: &str) -> R {
    let v = env.member(full)?;
    Ok(match (full, v) {
        ("Elapsed", V::Double(s)) => V::Span(time::Duration::seconds_f64(s)),
        // IUrl: `context.Api.ServiceUrl.Host`, and the URL as its text.
        (p, V::Str(s)) if p.ends_with("ServiceUrl") => match url::Url::parse(&s) {
            Ok(u) => V::native(value::Native::Uri(u)),
            Err(_) => V::Str(s),
        },
        (_, v) => v,
    })
}

pub fn call(h: &mut dyn Host, path: &str, name: &str, generic: Option<&str>, args: &[V]) -> R {
    let env = h.env();
    match name {
        "GetValueOrDefault" => {
            let key = arg(args, 0, name)?.text();
            let default = args.get(1).cloned().unwrap_or(V::Null);
            Ok(match env.lookup(path, &key) {
                Some(V::List(values)) if path != "Variables" => V::Str(
                    values
                        .lock()
                        .iter()
                        .map(V::text)
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                Some(v) => match generic {
                    Some(t) => checked_cast(t, v, &key)?,
                    None => v,
                },
                None => default,
            })
        }
        "ContainsKey" => {
            let key = arg(args, 0, name)?.text();
            Ok(V::Bool(env.lookup(path, &key).is_some()))
        }
        "As" if path.ends_with(".Body") => {
            let message = path.trim_end_matches(".Body");
            body_as(&env.body(message)?, generic.unwrap_or("string"))
        }
        "AsFormUrlEncodedContent" if path.ends_with(".Body") => {
            let message = path.trim_end_matches(".Body");
            Ok(form(&env.body(message)?))
        }
        "ToString" if path.ends_with("Url") => url_text(env, path),
        "Trace" if path.is_empty() => Ok(V::Null),
        "AsJwt" | "TryParseJwt" | "AsBasic" | "TryParseBasic" => fail(format!(
            "{name} is called on a header value, not on context.{path}"
        )),
        _ if MAPS.contains(&path) => unknown(),
        n => fail(format!("context.{path}.{n} is not supported")),
    }
}

/// `Variables.GetValueOrDefault<T>`: throws, as APIM does, when the stored value is not a T.
fn checked_cast(t: &str, v: V, key: &str) -> R {
    if super::is_type(&v, t) || matches!(t, "object" | "dynamic") || v.is_null() {
        return Ok(v);
    }
    if matches!(v, V::Json(_)) {
        return cast(t, v);
    }
    fail(format!(
        "the variable '{key}' is a {}, not a {t}",
        v.type_name()
    ))
}

/// A message body read as `As<T>()`.
pub fn body_as(text: &str, t: &str) -> R {
    match t {
        "string" | "String" => Ok(V::Str(text.to_string())),
        "byte[]" => Ok(V::bytes(text.as_bytes().to_vec())),
        "JObject" | "JToken" | "JArray" => {
            if text.trim().is_empty() {
                return Ok(V::Null);
            }
            let j: serde_json::Value = serde_json::from_str(text)
                .map_err(|e| EvalError(format!("the body is not JSON: {e}")))?;
            match (t, &j) {
                ("JObject", v) if !v.is_object() => fail("the body is JSON but not an object"),
                ("JArray", v) if !v.is_array() => fail("the body is JSON but not an array"),
                _ => Ok(V::Json(Json::new(j))),
            }
        }
        "XDocument" | "XElement" | "XNode" => {
            let root = xtree::parse(text).map_err(EvalError)?;
            let mut x = value::Xml::element(root);
            x.doc = t == "XDocument";
            Ok(V::Xml(x))
        }
        t => fail(format!("Body.As<{t}> is not supported")),
    }
}

/// `AsFormUrlEncodedContent()`: field name → its values.
fn form(text: &str) -> V {
    let mut d = value::Dict::default();
    for (k, v) in form_urlencoded::parse(text.as_bytes()) {
        let key = V::Str(k.into_owned());
        match d.get(&key) {
            Some(V::List(l)) => l.lock().push(V::Str(v.into_owned())),
            _ => d.insert(key, V::list(vec![V::Str(v.into_owned())])),
        }
    }
    V::Dict(Shared::new(d))
}

/// `context.Request.Url.ToString()`: the whole URL.
fn url_text(env: &dyn Env, path: &str) -> R {
    let part = |p: &str| env.member(&format!("{path}.{p}")).map(|v| v.text());
    let (scheme, host, port) = (part("Scheme")?, part("Host")?, part("Port")?);
    let default_port = matches!(
        (scheme.as_str(), port.as_str()),
        ("http", "80") | ("https", "443")
    );
    let port = if default_port || port.is_empty() {
        String::new()
    } else {
        format!(":{port}")
    };
    let query = part("QueryString")?;
    let query = if query.is_empty() || query.starts_with('?') {
        query
    } else {
        format!("?{query}")
    };
    Ok(V::Str(format!(
        "{scheme}://{host}{port}{}{query}",
        part("Path")?
    )))
}

//! `System.String`'s members (with `StringComparison` overloads) and the header-value
//! extensions APIM adds (`AsJwt`, `AsBasic`).

use super::super::value::{EvalError, R, V, arg, check_len, fail, int};
use super::unknown;
use base64::Engine;

pub fn member(s: &str, name: &str) -> R {
    match name {
        "Length" => Ok(V::Int(s.encode_utf16().count() as i64)),
        // An XName is its expanded text (`{namespace}local`).
        "LocalName" => Ok(V::Str(super::super::xtree::local(s).to_string())),
        "NamespaceName" => Ok(V::Str(super::super::xtree::namespace(s).to_string())),
        "Namespace" => Ok(V::native(super::super::value::Native::Namespace(
            super::super::xtree::namespace(s).to_string(),
        ))),
        n => fail(format!("string.{n} is not supported")),
    }
}

fn ignore_case(args: &[V]) -> bool {
    args.iter().any(|a| matches!(a, V::Comparison(true)))
}

/// Character offsets (as .NET counts them: UTF-16 units) ↔ byte offsets.
fn chars(s: &str) -> Vec<char> {
    s.chars().collect()
}

fn index_arg(args: &[V], n: usize, method: &str) -> Result<i64, EvalError> {
    int(&arg(args, n, method)?).ok_or_else(|| EvalError(format!("{method} needs a number")))
}

pub fn call(s: &str, name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name).map(|v| v.text());
    let ic = ignore_case(args);
    let fold = |x: &str| if ic { x.to_lowercase() } else { x.to_string() };
    match name {
        "Contains" => Ok(V::Bool(fold(s).contains(&fold(&a0()?)))),
        "StartsWith" => Ok(V::Bool(fold(s).starts_with(&fold(&a0()?)))),
        "EndsWith" => Ok(V::Bool(fold(s).ends_with(&fold(&a0()?)))),
        "Equals" => Ok(V::Bool(match arg(args, 0, name)? {
            V::Null => false,
            v => fold(s) == fold(&v.text()),
        })),
        "CompareTo" => Ok(V::Int(compare(s, &a0()?, false))),
        "ToLower" | "ToLowerInvariant" => Ok(V::Str(s.to_lowercase())),
        "ToUpper" | "ToUpperInvariant" => Ok(V::Str(s.to_uppercase())),
        "Trim" | "TrimStart" | "TrimEnd" => Ok(V::Str(trim(s, name, args))),
        "ToString" | "Normalize" | "Clone" => Ok(V::Str(s.to_string())),
        "Replace" => {
            let from = a0()?;
            if from.is_empty() {
                return fail("String cannot be of zero length (Replace)");
            }
            let to = arg(args, 1, name)?.text();
            let out = if ic {
                replace_ignore_case(s, &from, &to)
            } else {
                s.replace(&from, &to)
            };
            check_len(out.len())?;
            Ok(V::Str(out))
        }
        "IndexOf" | "LastIndexOf" => index_of(s, name, args),
        "IndexOfAny" => {
            let set: Vec<char> = arg(args, 0, name)?
                .items()
                .unwrap_or_default()
                .iter()
                .flat_map(|c| c.text().chars().collect::<Vec<_>>())
                .collect();
            Ok(V::Int(
                chars(s)
                    .iter()
                    .position(|c| set.contains(c))
                    .map_or(-1, |p| p as i64),
            ))
        }
        "Split" => Ok(split(s, args)),
        "Substring" => substring(s, args),
        "Remove" => {
            let c = chars(s);
            let start = index_arg(args, 0, name)?;
            let count = match args.get(1) {
                Some(v) => int(v).unwrap_or(0),
                None => c.len() as i64 - start,
            };
            if start < 0 || count < 0 || (start + count) as usize > c.len() {
                return fail(format!(
                    "Remove({start}, {count}) is outside a string of {} characters",
                    c.len()
                ));
            }
            let (a, b) = (start as usize, (start + count) as usize);
            Ok(V::Str(c[..a].iter().chain(&c[b..]).collect()))
        }
        "Insert" => {
            let c = chars(s);
            let at = index_arg(args, 0, name)?;
            if at < 0 || at as usize > c.len() {
                return fail("Insert: the index is outside the string");
            }
            let ins = arg(args, 1, name)?.text();
            let at = at as usize;
            Ok(V::Str(
                c[..at].iter().collect::<String>() + &ins + &c[at..].iter().collect::<String>(),
            ))
        }
        "PadLeft" | "PadRight" => {
            let width = index_arg(args, 0, name)?.max(0) as usize;
            check_len(width)?;
            let pad = args
                .get(1)
                .map(|p| p.text().chars().next().unwrap_or(' '))
                .unwrap_or(' ');
            let n = chars(s).len();
            let fill: String = std::iter::repeat_n(pad, width.saturating_sub(n)).collect();
            Ok(V::Str(if name == "PadLeft" {
                fill + s
            } else {
                s.to_string() + &fill
            }))
        }
        "ToCharArray" => Ok(V::list(s.chars().map(|c| V::Str(c.to_string())).collect())),
        "AsJwt" | "TryParseJwt" => Ok(parse_jwt(s).map(V::json).unwrap_or(V::Null)),
        "AsBasic" | "TryParseBasic" => Ok(parse_basic(s).map(V::json).unwrap_or(V::Null)),
        _ => unknown(),
    }
}

/// Ordinal comparison (culture-aware ordering is not modelled): -1, 0 or 1.
pub fn compare(a: &str, b: &str, ignore_case: bool) -> i64 {
    let ord = if ignore_case {
        a.to_lowercase().cmp(&b.to_lowercase())
    } else {
        a.cmp(b)
    };
    ord as i64
}

fn trim(s: &str, name: &str, args: &[V]) -> String {
    let set: Vec<char> = args
        .iter()
        .flat_map(|a| match a.items() {
            Some(items) if !matches!(a, V::Str(_)) => items.iter().map(V::text).collect::<Vec<_>>(),
            _ => vec![a.text()],
        })
        .flat_map(|t| t.chars().collect::<Vec<_>>())
        .collect();
    let is_trim = |c: char| {
        if set.is_empty() {
            c.is_whitespace()
        } else {
            set.contains(&c)
        }
    };
    match name {
        "TrimStart" => s.trim_start_matches(is_trim).to_string(),
        "TrimEnd" => s.trim_end_matches(is_trim).to_string(),
        _ => s.trim_matches(is_trim).to_string(),
    }
}

fn replace_ignore_case(s: &str, from: &str, to: &str) -> String {
    let lower = s.to_lowercase();
    let needle = from.to_lowercase();
    if lower.len() != s.len() {
        return s.replace(from, to);
    }
    let mut out = String::new();
    let mut i = 0;
    while let Some(p) = lower[i..].find(&needle) {
        out.push_str(&s[i..i + p]);
        out.push_str(to);
        i += p + needle.len();
    }
    out.push_str(&s[i..]);
    out
}

fn index_of(s: &str, name: &str, args: &[V]) -> R {
    let ic = ignore_case(args);
    let needle = arg(args, 0, name)?.text();
    let (hay, needle) = if ic {
        (s.to_lowercase(), needle.to_lowercase())
    } else {
        (s.to_string(), needle)
    };
    let start = args.get(1).and_then(int).unwrap_or(0).max(0) as usize;
    let offset: usize = hay.chars().take(start).map(char::len_utf8).sum();
    let found = if name == "IndexOf" {
        hay.get(offset..)
            .and_then(|h| h.find(&needle))
            .map(|b| b + offset)
    } else {
        hay.rfind(&needle)
    };
    Ok(V::Int(
        found.map_or(-1, |b| hay[..b].chars().count() as i64),
    ))
}

/// `Split(sep…)`, `Split(char[])`, `Split(string[], options)`, `Split(sep, count)`, with
/// `StringSplitOptions.RemoveEmptyEntries` and `TrimEntries`.
fn split(s: &str, args: &[V]) -> V {
    let mut seps: Vec<String> = Vec::new();
    let (mut remove_empty, mut trim_entries, mut count) = (false, false, None);
    for a in args {
        match a {
            V::Enum("StringSplitOptions", o) => {
                remove_empty |= o.contains("RemoveEmptyEntries");
                trim_entries |= o.contains("TrimEntries");
            }
            V::Int(n) => count = Some(*n),
            V::List(l) => seps.extend(l.lock().iter().map(V::text)),
            V::Null => {}
            other => seps.push(other.text()),
        }
    }
    let seps: Vec<String> = seps.into_iter().filter(|x| !x.is_empty()).collect();
    let mut parts: Vec<String> = Vec::new();
    let mut rest = s;
    loop {
        if count.is_some_and(|c| parts.len() as i64 + 1 >= c) {
            break;
        }
        let next = if seps.is_empty() {
            rest.char_indices()
                .find(|(_, c)| c.is_whitespace())
                .map(|(i, c)| (i, c.len_utf8()))
        } else {
            seps.iter()
                .filter_map(|sep| rest.find(sep.as_str()).map(|i| (i, sep.len())))
                .min()
        };
        match next {
            Some((i, len)) => {
                parts.push(rest[..i].to_string());
                rest = &rest[i + len..];
            }
            None => break,
        }
    }
    parts.push(rest.to_string());
    let parts = parts
        .into_iter()
        .map(|p| {
            if trim_entries {
                p.trim().to_string()
            } else {
                p
            }
        })
        .filter(|p| !(remove_empty && p.is_empty()));
    V::list(parts.map(V::Str).collect())
}

fn substring(s: &str, args: &[V]) -> R {
    let c = chars(s);
    let start = index_arg(args, 0, "Substring")?;
    let len = match args.get(1) {
        Some(v) => int(v).ok_or_else(|| EvalError("Substring needs numbers".into()))?,
        None => c.len() as i64 - start,
    };
    if start < 0 || len < 0 || (start + len) as usize > c.len() {
        return fail(format!(
            "Substring({start}, {len}) is outside a string of {} characters",
            c.len()
        ));
    }
    Ok(V::Str(
        c[start as usize..(start + len) as usize].iter().collect(),
    ))
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
    for (k, v) in claims.as_object()? {
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
    let get = |k: &str| claims.get(k).cloned().unwrap_or_default();
    let time = |k: &str| {
        claims
            .get(k)
            .and_then(serde_json::Value::as_i64)
            .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
            .map(|t| {
                serde_json::Value::String(super::super::clock::format(t, "yyyy-MM-ddTHH:mm:ssZ"))
            })
            .unwrap_or_default()
    };
    let audiences = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => serde_json::json!([a]),
        Some(a) => a.clone(),
        None => serde_json::json!([]),
    };
    Some(serde_json::json!({
        "Algorithm": header.get("alg").cloned().unwrap_or_default(),
        "Type": header.get("typ").cloned().unwrap_or_default(),
        "Issuer": get("iss"),
        "Subject": get("sub"),
        "Audiences": audiences,
        "Id": get("jti"),
        "ExpirationTime": time("exp"),
        "NotBefore": time("nbf"),
        "IssuedAt": time("iat"),
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

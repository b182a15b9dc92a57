//! Static members of the allowed types (`string.Join`, `Convert`, `Math`, `DateTime.UtcNow`,
//! `Regex.Replace`, `JsonConvert`, `Uri.EscapeDataString`, `BitConverter`, …) and the
//! members of the small native objects (`Regex`, `Match`, `Uri`, `Exception`, `StringBuilder`,
//! `Random`, `Queue`, `Stack`, `UriBuilder`, `XAttribute`).

use super::super::clock;
use super::super::value::{
    EvalError, Host, Json, Native, Obj, R, Shared, V, arg, check_len, fail, int, num, to_json,
};
use super::crypto;
use base64::Engine;
use std::sync::Arc;

fn enum_value(t: &'static str, name: &str) -> R {
    Ok(V::Enum(t, name.to_string()))
}

pub fn member(t: &str, name: &str) -> R {
    match (t, name) {
        ("string" | "String", "Empty") => Ok(V::Str(String::new())),
        ("int" | "Int32", "MaxValue") => Ok(V::Int(i32::MAX as i64)),
        ("int" | "Int32", "MinValue") => Ok(V::Int(i32::MIN as i64)),
        ("long" | "Int64", "MaxValue") => Ok(V::Int(i64::MAX)),
        ("long" | "Int64", "MinValue") => Ok(V::Int(i64::MIN)),
        ("double" | "Double", "MaxValue") => Ok(V::Double(f64::MAX)),
        ("double" | "Double", "MinValue") => Ok(V::Double(f64::MIN)),
        ("double" | "Double", "NaN") => Ok(V::Double(f64::NAN)),
        ("DateTime" | "DateTimeOffset", "UtcNow" | "Now") => {
            Ok(V::Time(time::OffsetDateTime::now_utc()))
        }
        ("DateTime" | "DateTimeOffset", "Today") => Ok(V::Time(
            time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT),
        )),
        ("DateTime" | "DateTimeOffset", "MinValue") => Ok(V::Time(
            clock::from_ticks(0).unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        )),
        ("DateTime" | "DateTimeOffset", "MaxValue") => Ok(V::Time(
            clock::from_ticks(3_155_378_975_999_999_999)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        )),
        ("DateTime" | "DateTimeOffset", "UnixEpoch") => {
            Ok(V::Time(time::OffsetDateTime::UNIX_EPOCH))
        }
        ("TimeSpan", "Zero") => Ok(V::Span(time::Duration::ZERO)),
        ("TimeSpan", "MaxValue") => Ok(V::Span(time::Duration::MAX)),
        ("Encoding", e) => Ok(V::native(Native::Encoding(match e {
            "UTF8" | "Default" => "UTF8",
            "ASCII" => "ASCII",
            "Unicode" => "Unicode",
            "UTF32" => "UTF32",
            "BigEndianUnicode" => "BigEndianUnicode",
            "Latin1" => "Latin1",
            n => return fail(format!("Encoding.{n} is not supported")),
        }))),
        ("StringComparison" | "StringComparer", n) => Ok(V::Comparison(n.ends_with("IgnoreCase"))),
        ("Math", "PI") => Ok(V::Double(std::f64::consts::PI)),
        ("Math", "E") => Ok(V::Double(std::f64::consts::E)),
        ("Guid", "Empty") => Ok(V::Str("00000000-0000-0000-0000-000000000000".into())),
        ("BitConverter", "IsLittleEndian") => Ok(V::Bool(true)),
        ("JTokenType", n) => enum_value("JTokenType", n),
        ("DayOfWeek", n) => enum_value("DayOfWeek", n),
        ("Formatting", n) => enum_value("Formatting", n),
        ("StringSplitOptions", n) => enum_value("StringSplitOptions", n),
        ("RegexOptions", n) => enum_value("RegexOptions", n),
        ("DateTimeKind", n) => enum_value("DateTimeKind", n),
        ("MidpointRounding", n) => enum_value("MidpointRounding", n),
        ("UriPartial", n) => enum_value("UriPartial", n),
        ("XmlNodeType", n) => enum_value("XmlNodeType", n),
        ("XNamespace", "None") => Ok(V::native(Native::Namespace(String::new()))),
        ("XNamespace", "Xml") => Ok(V::native(Native::Namespace(
            "http://www.w3.org/XML/1998/namespace".into(),
        ))),
        ("XNamespace", "Xmlns") => Ok(V::native(Native::Namespace(
            "http://www.w3.org/2000/xmlns/".into(),
        ))),
        ("Match", "Empty") => Ok(V::native(Native::Group(None))),
        (t, n) => fail(format!("{t}.{n} is not supported")),
    }
}

pub fn call(h: &mut dyn Host, t: &str, name: &str, generic: Option<&str>, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    match t {
        "string" | "String" => string_static(name, args),
        "int" | "Int32" | "long" | "Int64" | "short" | "Int16" | "byte" | "Byte" | "uint"
        | "UInt32" | "ulong" | "UInt64" | "sbyte" | "SByte" | "ushort" | "UInt16" => match name {
            "Parse" => {
                let text = a0()?.text();
                let n = text
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| EvalError(format!("{t}.Parse: the text is not a whole number")))?;
                super::numbers::to_integer(t, &V::Int(n))
            }
            n => fail(format!("{t}.{n} is not supported")),
        },
        "double" | "Double" | "float" | "Single" | "decimal" | "Decimal" => match name {
            "Parse" => a0()?
                .text()
                .trim()
                .parse::<f64>()
                .map(V::Double)
                .map_err(|_| EvalError(format!("{t}.Parse: the text is not a number"))),
            "Round" | "Floor" | "Ceiling" | "Truncate" => math(name, args),
            n => fail(format!("{t}.{n} is not supported")),
        },
        "bool" | "Boolean" => match (name, a0()?.text().trim().to_ascii_lowercase().as_str()) {
            ("Parse", "true") => Ok(V::Bool(true)),
            ("Parse", "false") => Ok(V::Bool(false)),
            ("Parse", _) => fail("bool.Parse: the text is not true or false"),
            (n, _) => fail(format!("bool.{n} is not supported")),
        },
        "char" | "Char" => {
            let c = a0()?.text().chars().next().unwrap_or('\0');
            Ok(match name {
                "IsDigit" => V::Bool(c.is_ascii_digit()),
                "IsLetter" => V::Bool(c.is_alphabetic()),
                "IsLetterOrDigit" => V::Bool(c.is_alphanumeric()),
                "IsWhiteSpace" => V::Bool(c.is_whitespace()),
                "IsUpper" => V::Bool(c.is_uppercase()),
                "IsLower" => V::Bool(c.is_lowercase()),
                "ToUpper" => V::Str(c.to_uppercase().collect()),
                "ToLower" => V::Str(c.to_lowercase().collect()),
                n => return fail(format!("char.{n} is not supported")),
            })
        }
        "DateTime" | "DateTimeOffset" => date_static(name, args),
        "TimeSpan" => span_static(name, args),
        "Convert" => convert(name, args),
        "Math" => math(name, args),
        "Guid" => match name {
            "NewGuid" => Ok(V::Str(uuid::Uuid::new_v4().to_string())),
            "Parse" => uuid::Uuid::parse_str(a0()?.text().trim())
                .map(|u| V::Str(u.to_string()))
                .map_err(|_| EvalError("Guid.Parse: the text is not a GUID".into())),
            n => fail(format!("Guid.{n} is not supported")),
        },
        "BitConverter" => bit_converter(name, args),
        "Array" => array_static(h, name, args),
        "Enumerable" => match name {
            "Range" => {
                let (start, count) = (
                    int(&a0()?).unwrap_or(0),
                    int(&arg(args, 1, name)?).unwrap_or(0).max(0),
                );
                check_len(count as usize)?;
                Ok(V::list(
                    (start..start.saturating_add(count)).map(V::Int).collect(),
                ))
            }
            "Repeat" => {
                let count = int(&arg(args, 1, name)?).unwrap_or(0).max(0) as usize;
                check_len(count)?;
                Ok(V::list(vec![a0()?; count]))
            }
            "Empty" => Ok(V::list(Vec::new())),
            n => {
                let items = super::enumerate(h.env(), a0()?)?;
                super::linq::call(h, items, n, generic, &args[1..])
            }
        },
        "Encoding" => match name {
            "GetEncoding" => {
                let e = a0()?.text().to_ascii_lowercase().replace('-', "");
                member(
                    "Encoding",
                    match e.as_str() {
                        "utf8" => "UTF8",
                        "ascii" | "usascii" => "ASCII",
                        "utf16" | "unicode" => "Unicode",
                        "iso88591" | "latin1" => "Latin1",
                        _ => return fail(format!("the encoding '{e}' is not supported")),
                    },
                )
            }
            n => fail(format!("Encoding.{n} is not supported")),
        },
        "JsonConvert" => match name {
            "SerializeObject" => {
                let j = to_json(&a0()?);
                let indented = matches!(args.get(1), Some(V::Enum(_, f)) if f == "Indented");
                Ok(V::Str(
                    if indented {
                        serde_json::to_string_pretty(&j)
                    } else {
                        serde_json::to_string(&j)
                    }
                    .unwrap_or_default(),
                ))
            }
            "DeserializeObject" => {
                let j: serde_json::Value = serde_json::from_str(&a0()?.text())
                    .map_err(|e| EvalError(format!("the text is not JSON: {e}")))?;
                let v = V::Json(Json::new(j));
                match generic {
                    Some(t) => {
                        super::json::call(h, &Json::new(to_json(&v)), "ToObject", Some(t), &[])
                    }
                    None => Ok(v),
                }
            }
            n => fail(format!("JsonConvert.{n} is not supported")),
        },
        "JObject" | "JArray" | "JToken" | "JValue" | "JContainer" => match name {
            "Parse" => {
                let j: serde_json::Value = serde_json::from_str(&a0()?.text())
                    .map_err(|e| EvalError(format!("the text is not JSON: {e}")))?;
                match (t, &j) {
                    ("JObject", v) if !v.is_object() => {
                        fail("JObject.Parse: the text is JSON but not an object")
                    }
                    ("JArray", v) if !v.is_array() => {
                        fail("JArray.Parse: the text is JSON but not an array")
                    }
                    _ => Ok(V::json(j)),
                }
            }
            "FromObject" => Ok(V::json(to_json(&a0()?))),
            "CreateNull" => Ok(V::json(serde_json::Value::Null)),
            n => fail(format!("{t}.{n} is not supported")),
        },
        "Regex" => regex_static(h, name, args),
        "Uri" => uri_static(name, args),
        "WebUtility" => {
            let s = a0()?.text();
            Ok(V::Str(match name {
                "UrlEncode" => form_urlencoded::byte_serialize(s.as_bytes()).collect(),
                "UrlDecode" => form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default(),
                "HtmlEncode" => html_encode(&s),
                "HtmlDecode" => html_decode(&s),
                n => return fail(format!("WebUtility.{n} is not supported")),
            }))
        }
        "RandomNumberGenerator" | "RNGCryptoServiceProvider" => match name {
            "Create" => Ok(V::Obj(Shared::new(Obj::Random(seed())))),
            "GetBytes" => Ok(V::bytes(crypto::random_bytes(
                int(&a0()?).unwrap_or(0).max(0) as usize,
            )?)),
            "Fill" => fill_random(&a0()?),
            "GetInt32" => {
                let (lo, hi) = match args.len() {
                    1 => (0, int(&a0()?).unwrap_or(1)),
                    _ => (
                        int(&a0()?).unwrap_or(0),
                        int(&arg(args, 1, name)?).unwrap_or(1),
                    ),
                };
                if hi <= lo {
                    return fail("GetInt32: the upper bound must be above the lower");
                }
                Ok(V::Int(rand::Rng::random_range(&mut rand::rng(), lo..hi)))
            }
            n => fail(format!("{t}.{n} is not supported")),
        },
        t if crypto::is_hash(t) || t == "HMAC" || t == "HashAlgorithm" => match name {
            "Create" => {
                let algorithm = match args.first() {
                    Some(a) => a.text().replace('-', "").to_ascii_uppercase(),
                    None => t.to_string(),
                };
                if !crypto::is_hash(&algorithm) {
                    return fail(format!("{algorithm} is not a hash algorithm"));
                }
                Ok(V::Obj(Shared::new(Obj::Hash {
                    algorithm,
                    key: None,
                })))
            }
            "HashData" if t.starts_with("HMAC") => {
                let key = crypto::bytes_of(&a0()?)?;
                let data = crypto::bytes_of(&arg(args, 1, name)?)?;
                crypto::digest(t, Some(&key), &data).map(V::bytes)
            }
            "HashData" => crypto::digest(t, None, &crypto::bytes_of(&a0()?)?).map(V::bytes),
            n => fail(format!("{t}.{n} is not supported")),
        },
        "Tuple" | "KeyValuePair" if name == "Create" => match args.len() {
            2 => Ok(V::pair(args[0].clone(), args[1].clone())),
            _ => Ok(V::list(args.to_vec())),
        },
        "XElement" | "XDocument" | "XNode" if name == "Parse" => {
            let root = super::super::xtree::parse(&a0()?.text()).map_err(EvalError)?;
            let mut x = super::super::value::Xml::element(root);
            x.doc = t == "XDocument";
            Ok(V::Xml(x))
        }
        "XNamespace" if name == "Get" => Ok(V::native(Native::Namespace(a0()?.text()))),
        "XName" if name == "Get" => Ok(V::Str(match args.get(1) {
            Some(ns) if !ns.text().is_empty() => format!("{{{}}}{}", ns.text(), a0()?.text()),
            _ => a0()?.text(),
        })),
        t => fail(format!("{t}.{name} is not supported")),
    }
}

fn string_static(name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    match name {
        "IsNullOrEmpty" => Ok(V::Bool(match a0()? {
            V::Null => true,
            v => v.is_null() || v.text().is_empty(),
        })),
        "IsNullOrWhiteSpace" => Ok(V::Bool(match a0()? {
            V::Null => true,
            v => v.is_null() || v.text().trim().is_empty(),
        })),
        "Join" => {
            let sep = a0()?.text();
            let items: Vec<String> = match args.get(1).and_then(|a| {
                if matches!(a, V::Str(_)) {
                    None
                } else {
                    a.items()
                }
            }) {
                Some(list) if args.len() == 2 => list.iter().map(V::text).collect(),
                _ => args[1..].iter().map(V::text).collect(),
            };
            let out = items.join(&sep);
            check_len(out.len())?;
            Ok(V::Str(out))
        }
        "Concat" => {
            let parts: Vec<String> = match args {
                [one] if !matches!(one, V::Str(_)) && one.items().is_some() => one
                    .items()
                    .unwrap_or_default()
                    .iter()
                    .map(V::text)
                    .collect(),
                _ => args.iter().map(V::text).collect(),
            };
            Ok(V::Str(parts.concat()))
        }
        "Format" => format(args),
        "Compare" | "CompareOrdinal" => {
            let ic = matches!(args.get(2), Some(V::Comparison(true)) | Some(V::Bool(true)));
            Ok(V::Int(super::strings::compare(
                &a0()?.text(),
                &arg(args, 1, name)?.text(),
                ic,
            )))
        }
        "Equals" => {
            let ic = matches!(args.get(2), Some(V::Comparison(true)));
            let (a, b) = (a0()?, arg(args, 1, name)?);
            Ok(V::Bool(if a.is_null() || b.is_null() {
                a.is_null() && b.is_null()
            } else if ic {
                a.text().eq_ignore_ascii_case(&b.text())
            } else {
                a.text() == b.text()
            }))
        }
        "Copy" => Ok(V::Str(a0()?.text())),
        n => fail(format!("string.{n} is not supported")),
    }
}

/// `string.Format("{0} {1:N2}", a, b)`: placeholders with optional format and alignment.
fn format(args: &[V]) -> R {
    let f = arg(args, 0, "Format")?.text();
    let values: Vec<V> = match args.get(1) {
        Some(V::List(l)) if args.len() == 2 => l.lock().clone(),
        _ => args[1..].to_vec(),
    };
    let mut out = String::new();
    let mut rest = f.as_str();
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push(tail.as_bytes()[0] as char);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return fail("Input string was not in a correct format (a lone '}').");
        }
        let close = tail.find('}').ok_or_else(|| {
            EvalError("Input string was not in a correct format (a '{' is not closed).".into())
        })?;
        let spec = &tail[1..close];
        let (head, fmt) = spec
            .split_once(':')
            .map_or((spec, None), |(a, b)| (a, Some(b)));
        let (index, align) = head
            .split_once(',')
            .map_or((head, None), |(a, b)| (a, Some(b)));
        let n: usize = index.trim().parse().map_err(|_| {
            EvalError(format!(
                "Input string was not in a correct format ('{{{spec}}}')."
            ))
        })?;
        let v = values.get(n).ok_or_else(|| {
            EvalError(format!(
                "Index (zero based) must be less than the size of the argument list ({n})."
            ))
        })?;
        let text = match fmt {
            Some(f) => super::format_value(v, f)?,
            None => v.text(),
        };
        let width: i64 = align.and_then(|a| a.trim().parse().ok()).unwrap_or(0);
        let pad = (width.unsigned_abs() as usize).saturating_sub(text.chars().count());
        if width > 0 {
            out.push_str(&" ".repeat(pad));
        }
        out.push_str(&text);
        if width < 0 {
            out.push_str(&" ".repeat(pad));
        }
        rest = &tail[close + 1..];
    }
    out.push_str(rest);
    check_len(out.len())?;
    Ok(V::Str(out))
}

fn date_static(name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    match name {
        "Parse" => clock::parse(&a0()?.text())
            .map(V::Time)
            .ok_or_else(|| EvalError("String was not recognized as a valid DateTime.".into())),
        "ParseExact" => {
            let text = a0()?.text();
            let formats = match arg(args, 1, name)? {
                V::List(l) => l.lock().iter().map(V::text).collect(),
                f => vec![f.text()],
            };
            formats
                .iter()
                .find_map(|f| clock::parse_exact(&text, f))
                .map(V::Time)
                .ok_or_else(|| EvalError("String was not recognized as a valid DateTime.".into()))
        }
        "SpecifyKind" | "ToUniversalTime" => a0(),
        "FromUnixTimeSeconds" => {
            time::OffsetDateTime::from_unix_timestamp(int(&a0()?).unwrap_or(0))
                .map(V::Time)
                .map_err(|_| EvalError("the time is out of range".into()))
        }
        "FromUnixTimeMilliseconds" => time::OffsetDateTime::from_unix_timestamp_nanos(
            int(&a0()?).unwrap_or(0) as i128 * 1_000_000,
        )
        .map(V::Time)
        .map_err(|_| EvalError("the time is out of range".into())),
        "DaysInMonth" => {
            let (y, m) = (
                int(&a0()?).unwrap_or(1) as i32,
                int(&arg(args, 1, name)?).unwrap_or(1) as u8,
            );
            let month = time::Month::try_from(m)
                .map_err(|_| EvalError("the month is out of range".into()))?;
            Ok(V::Int(time::util::days_in_month(month, y) as i64))
        }
        "IsLeapYear" => Ok(V::Bool(time::util::is_leap_year(
            int(&a0()?).unwrap_or(1) as i32
        ))),
        "Compare" => match (a0()?, arg(args, 1, name)?) {
            (V::Time(a), V::Time(b)) => Ok(V::Int(a.cmp(&b) as i64)),
            _ => fail("DateTime.Compare needs two DateTimes"),
        },
        n => fail(format!("DateTime.{n} is not supported")),
    }
}

fn span_static(name: &str, args: &[V]) -> R {
    let n = num(&arg(args, 0, name)?).unwrap_or(0.0);
    let secs = match name {
        "FromMilliseconds" => n / 1000.0,
        "FromSeconds" => n,
        "FromMinutes" => n * 60.0,
        "FromHours" => n * 3600.0,
        "FromDays" => n * 86400.0,
        "FromTicks" => n / 1e7,
        "Parse" => {
            return clock::parse_span(&arg(args, 0, name)?.text())
                .map(V::Span)
                .ok_or_else(|| EvalError("String was not recognized as a valid TimeSpan.".into()));
        }
        n => return fail(format!("TimeSpan.{n} is not supported")),
    };
    if !secs.is_finite() || secs.abs() > 1e15 {
        return fail("TimeSpan overflowed because the duration is too long.");
    }
    Ok(V::Span(time::Duration::seconds_f64(secs)))
}

fn convert(name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    let b64 = base64::engine::general_purpose::STANDARD;
    match name {
        "ToBase64String" => {
            let b = crypto::bytes_of(&a0()?)?;
            let b = match (args.get(1).and_then(int), args.get(2).and_then(int)) {
                (Some(o), Some(c)) => b
                    .get(o.max(0) as usize..(o + c).max(0) as usize)
                    .ok_or_else(|| {
                        EvalError("ToBase64String: the range is outside the array".into())
                    })?
                    .to_vec(),
                _ => b,
            };
            Ok(V::Str(b64.encode(b)))
        }
        "FromBase64String" => b64
            .decode(a0()?.text().trim())
            .map(V::bytes)
            .map_err(|_| EvalError("The input is not a valid Base-64 string.".into())),
        "ToHexString" => Ok(V::Str(hex::encode_upper(crypto::bytes_of(&a0()?)?))),
        "FromHexString" => hex::decode(a0()?.text().trim())
            .map(V::bytes)
            .map_err(|_| EvalError("The input is not a valid hex string.".into())),
        "ToInt16" | "ToInt32" | "ToInt64" | "ToUInt16" | "ToUInt32" | "ToUInt64" | "ToByte"
        | "ToSByte" => {
            let t = &name[2..];
            let v = a0()?;
            if let (Some(base), V::Str(s)) = (args.get(1).and_then(int), &v) {
                let n = i64::from_str_radix(s.trim().trim_start_matches("0x"), base as u32)
                    .map_err(|_| {
                        EvalError(format!(
                            "Convert.{name}: the text is not a number in base {base}"
                        ))
                    })?;
                return Ok(V::Int(n));
            }
            match v {
                V::Null => Ok(V::Int(0)),
                V::Str(s) => s
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| EvalError("Input string was not in a correct format.".into()))
                    .and_then(|n| super::numbers::to_integer(t, &V::Int(n))),
                V::Double(d) => super::numbers::to_integer(t, &V::Int(round_even(d, 0) as i64)),
                V::Bool(b) => Ok(V::Int(b as i64)),
                other => super::numbers::to_integer(t, &other),
            }
        }
        "ToDouble" | "ToDecimal" | "ToSingle" => match a0()? {
            V::Null => Ok(V::Double(0.0)),
            V::Str(s) => s
                .trim()
                .parse()
                .map(V::Double)
                .map_err(|_| EvalError("Input string was not in a correct format.".into())),
            v => num(&v)
                .map(V::Double)
                .ok_or_else(|| EvalError(format!("cannot convert {} to a number", v.type_name()))),
        },
        "ToBoolean" => match a0()? {
            V::Str(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Ok(V::Bool(true)),
                "false" => Ok(V::Bool(false)),
                _ => fail("String was not recognized as a valid Boolean."),
            },
            V::Bool(b) => Ok(V::Bool(b)),
            v => Ok(V::Bool(num(&v).unwrap_or(0.0) != 0.0)),
        },
        "ToString" => {
            let v = a0()?;
            match args.get(1).and_then(int) {
                Some(16) => Ok(V::Str(format!("{:x}", int(&v).unwrap_or(0)))),
                Some(2) => Ok(V::Str(format!("{:b}", int(&v).unwrap_or(0)))),
                Some(8) => Ok(V::Str(format!("{:o}", int(&v).unwrap_or(0)))),
                _ => Ok(V::Str(v.text())),
            }
        }
        "ToChar" => Ok(V::Str(
            char::from_u32(int(&a0()?).unwrap_or(0) as u32)
                .map(String::from)
                .unwrap_or_default(),
        )),
        "ToDateTime" => clock::parse(&a0()?.text())
            .map(V::Time)
            .ok_or_else(|| EvalError("String was not recognized as a valid DateTime.".into())),
        n => fail(format!("Convert.{n} is not supported")),
    }
}

/// Banker's rounding, as .NET's `Math.Round` and `Convert.ToInt32` do by default.
fn round_even(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    let y = x * m;
    let r = y.round();
    let r = if (y - y.trunc()).abs() == 0.5 {
        2.0 * (y / 2.0).round()
    } else {
        r
    };
    r / m
}

fn math(name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    let n = |i: usize| {
        num(&arg(args, i, name)?).ok_or_else(|| EvalError(format!("Math.{name} needs numbers")))
    };
    let keep_int = |v: f64, like: &V| {
        if matches!(like, V::Int(_)) {
            V::Int(v as i64)
        } else {
            V::Double(v)
        }
    };
    match name {
        "Min" | "Max" => {
            let (x, y) = (a0()?, arg(args, 1, name)?);
            let less = super::linq::order(&x, &y).is_lt();
            Ok(if (name == "Min") == less { x } else { y })
        }
        "Abs" => match a0()? {
            V::Int(i) => i
                .checked_abs()
                .map(V::Int)
                .ok_or_else(|| EvalError("arithmetic overflow".into())),
            v => Ok(V::Double(
                num(&v)
                    .ok_or_else(|| EvalError("Math.Abs needs a number".into()))?
                    .abs(),
            )),
        },
        "Round" => {
            let x = n(0)?;
            let digits = args.get(1).and_then(int).unwrap_or(0) as i32;
            let away = args
                .iter()
                .any(|a| matches!(a, V::Enum(_, m) if m == "AwayFromZero"));
            let m = 10f64.powi(digits);
            Ok(V::Double(if away {
                (x * m).round() / m
            } else {
                round_even(x, digits)
            }))
        }
        "Floor" => Ok(V::Double(n(0)?.floor())),
        "Ceiling" => Ok(V::Double(n(0)?.ceil())),
        "Truncate" => Ok(V::Double(n(0)?.trunc())),
        "Sqrt" => Ok(V::Double(n(0)?.sqrt())),
        "Pow" => Ok(V::Double(n(0)?.powf(n(1)?))),
        "Exp" => Ok(V::Double(n(0)?.exp())),
        "Log" => Ok(V::Double(match args.get(1) {
            Some(b) => n(0)?.log(num(b).unwrap_or(std::f64::consts::E)),
            None => n(0)?.ln(),
        })),
        "Log10" => Ok(V::Double(n(0)?.log10())),
        "Sign" => Ok(V::Int(n(0)?.signum() as i64 * (n(0)? != 0.0) as i64)),
        "Clamp" => {
            let v = a0()?;
            let (lo, hi) = (n(1)?, n(2)?);
            Ok(keep_int(n(0)?.clamp(lo.min(hi), hi.max(lo)), &v))
        }
        n => fail(format!("Math.{n} is not supported")),
    }
}

fn bit_converter(name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    match name {
        "GetBytes" => Ok(V::bytes(match a0()? {
            V::Int(i) if i32::try_from(i).is_ok() => (i as i32).to_le_bytes().to_vec(),
            V::Int(i) => i.to_le_bytes().to_vec(),
            V::Double(d) => d.to_le_bytes().to_vec(),
            V::Bool(b) => vec![b as u8],
            V::Str(s) => s
                .chars()
                .next()
                .map(|c| (c as u16).to_le_bytes().to_vec())
                .unwrap_or_default(),
            v => {
                return fail(format!(
                    "BitConverter.GetBytes cannot take {}",
                    v.type_name()
                ));
            }
        })),
        "ToString" => {
            let b = crypto::bytes_of(&a0()?)?;
            Ok(V::Str(
                b.iter()
                    .map(|x| format!("{x:02X}"))
                    .collect::<Vec<_>>()
                    .join("-"),
            ))
        }
        "ToInt32" | "ToInt64" | "ToUInt32" | "ToInt16" | "ToUInt16" | "ToUInt64" | "ToDouble"
        | "ToBoolean" => {
            let b = crypto::bytes_of(&a0()?)?;
            let at = args.get(1).and_then(int).unwrap_or(0).max(0) as usize;
            let take = |n: usize| {
                b.get(at..at + n).ok_or_else(|| {
                    EvalError(format!("BitConverter.{name}: the array is too short"))
                })
            };
            Ok(match name {
                "ToInt32" => {
                    V::Int(i32::from_le_bytes(take(4)?.try_into().unwrap_or_default()) as i64)
                }
                "ToUInt32" => {
                    V::Int(u32::from_le_bytes(take(4)?.try_into().unwrap_or_default()) as i64)
                }
                "ToInt16" => {
                    V::Int(i16::from_le_bytes(take(2)?.try_into().unwrap_or_default()) as i64)
                }
                "ToUInt16" => {
                    V::Int(u16::from_le_bytes(take(2)?.try_into().unwrap_or_default()) as i64)
                }
                "ToDouble" => {
                    V::Double(f64::from_le_bytes(take(8)?.try_into().unwrap_or_default()))
                }
                "ToBoolean" => V::Bool(take(1)?[0] != 0),
                _ => V::Int(i64::from_le_bytes(take(8)?.try_into().unwrap_or_default())),
            })
        }
        n => fail(format!("BitConverter.{n} is not supported")),
    }
}

fn array_static(h: &mut dyn Host, name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    match (name, a0()?) {
        ("Reverse", V::Bytes(b)) => {
            b.lock().reverse();
            Ok(V::Null)
        }
        ("Reverse", V::List(l)) => {
            l.lock().reverse();
            Ok(V::Null)
        }
        ("Copy", src) => {
            let (si, dst, di, len) = match args {
                [_, dst, len] => (0, dst.clone(), 0, int(len).unwrap_or(0)),
                [_, si, dst, di, len] => (
                    int(si).unwrap_or(0),
                    dst.clone(),
                    int(di).unwrap_or(0),
                    int(len).unwrap_or(0),
                ),
                _ => {
                    return fail(
                        "Array.Copy takes (source, destination, length) or (source, index, destination, index, length)",
                    );
                }
            };
            let (si, di, len) = (si.max(0) as usize, di.max(0) as usize, len.max(0) as usize);
            match (&src, &dst) {
                (V::Bytes(s), V::Bytes(d)) => {
                    let part = s
                        .lock()
                        .get(si..si + len)
                        .map(<[u8]>::to_vec)
                        .ok_or_else(|| EvalError("Array.Copy: the source is too short".into()))?;
                    let mut d = d.lock();
                    d.get_mut(di..di + len)
                        .ok_or_else(|| {
                            EvalError("Array.Copy: the destination is too short".into())
                        })?
                        .copy_from_slice(&part);
                    Ok(V::Null)
                }
                (V::List(s), V::List(d)) => {
                    let part = s
                        .lock()
                        .get(si..si + len)
                        .map(<[V]>::to_vec)
                        .ok_or_else(|| EvalError("Array.Copy: the source is too short".into()))?;
                    let mut d = d.lock();
                    d.get_mut(di..di + len)
                        .ok_or_else(|| {
                            EvalError("Array.Copy: the destination is too short".into())
                        })?
                        .clone_from_slice(&part);
                    Ok(V::Null)
                }
                _ => fail("Array.Copy needs two arrays of one kind"),
            }
        }
        ("IndexOf", arr) => {
            let x = arg(args, 1, name)?;
            let items = arr.items().unwrap_or_default();
            Ok(V::Int(
                items
                    .iter()
                    .position(|v| super::super::value::equal(v, &x))
                    .map_or(-1, |p| p as i64),
            ))
        }
        ("Exists" | "Find" | "FindAll" | "TrueForAll" | "FindIndex", arr) => {
            let items = super::enumerate(h.env(), arr)?;
            let list = V::list(items);
            super::collections::call(h, &list, name, &args[1..])
        }
        ("Empty", _) => Ok(V::list(Vec::new())),
        (n, _) => fail(format!("Array.{n} is not supported")),
    }
}

/// A cache of compiled patterns: policies call `Regex.IsMatch(x, "literal")` per request.
fn compiled(pattern: &str, options: &[V]) -> Result<Arc<regex::Regex>, EvalError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<regex::Regex>>>> = OnceLock::new();
    let mut flags = String::new();
    for o in options {
        if let V::Enum("RegexOptions", names) = o {
            for (name, flag) in [
                ("IgnoreCase", 'i'),
                ("Multiline", 'm'),
                ("Singleline", 's'),
                ("IgnorePatternWhitespace", 'x'),
            ] {
                if names.contains(name) {
                    flags.push(flag);
                }
            }
        }
    }
    let full = if flags.is_empty() {
        pattern.to_string()
    } else {
        format!("(?{flags}){pattern}")
    };
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&full) {
        return Ok(r.clone());
    }
    let r = regex::RegexBuilder::new(&full)
        .size_limit(1 << 20)
        .build()
        .map(Arc::new)
        .map_err(|e| EvalError(format!("the regular expression is not supported here (look-arounds and back-references are not): {}", first_line(&e.to_string()))))?;
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= 512 {
        c.clear();
    }
    c.insert(full, r.clone());
    Ok(r)
}

fn first_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}

pub fn regex(pattern: &str, options: &[V]) -> R {
    compiled(pattern, options).map(|r| V::native(Native::Regex(r)))
}

fn regex_static(h: &mut dyn Host, name: &str, args: &[V]) -> R {
    let a0 = || arg(args, 0, name);
    match name {
        "Escape" => Ok(V::Str(regex::escape(&a0()?.text()))),
        "Unescape" => Ok(V::Str(a0()?.text().replace('\\', ""))),
        _ => {
            let pattern = arg(args, 1, name)?.text();
            let rest = if name == "Replace" {
                &args[2..]
            } else {
                &args[1..]
            };
            let r = compiled(&pattern, rest)?;
            let mut call_args = vec![a0()?];
            if name == "Replace" {
                call_args.push(arg(args, 2, name)?);
            }
            regex_call(h, &r, name, &call_args)
        }
    }
}

fn char_index(s: &str, byte: usize) -> usize {
    s[..byte].chars().count()
}

fn match_at(r: &Arc<regex::Regex>, input: &Arc<str>, from: usize) -> V {
    let caps = if from <= input.len() {
        r.captures_at(input, from)
    } else {
        None
    };
    match caps {
        None => V::native(Native::Group(None)),
        Some(c) => {
            let whole = c.get(0).map_or(0..0, |m| m.range());
            let next = if whole.is_empty() {
                whole.end + input[whole.end..].chars().next().map_or(1, char::len_utf8)
            } else {
                whole.end
            };
            V::native(Native::Match {
                groups: c
                    .iter()
                    .map(|g| g.map(|g| (char_index(input, g.start()), g.as_str().to_string())))
                    .collect(),
                names: r.capture_names().map(|n| n.map(str::to_string)).collect(),
                input: input.clone(),
                next,
                regex: r.clone(),
            })
        }
    }
}

fn regex_call(h: &mut dyn Host, r: &Arc<regex::Regex>, name: &str, args: &[V]) -> R {
    let input = arg(args, 0, name)?.text();
    match name {
        "IsMatch" => Ok(V::Bool(r.is_match(&input))),
        "Match" => Ok(match_at(r, &Arc::from(input.as_str()), 0)),
        "Matches" => {
            let input: Arc<str> = Arc::from(input.as_str());
            let mut out = Vec::new();
            let mut from = 0;
            loop {
                let m = match_at(r, &input, from);
                let V::Native(n) = &m else { break };
                let Native::Match { next, .. } = &**n else {
                    break;
                };
                from = *next;
                out.push(m);
                check_len(out.len())?;
            }
            Ok(V::list(out))
        }
        "Replace" => match arg(args, 1, name)? {
            f @ V::Native(_) if f.type_name() == "Func" => {
                let input_arc: Arc<str> = Arc::from(input.as_str());
                let mut out = String::new();
                let mut last = 0;
                for m in r.find_iter(&input) {
                    out.push_str(&input[last..m.start()]);
                    let matched = match_at(r, &input_arc, m.start());
                    out.push_str(&h.invoke(&f, vec![matched])?.text());
                    last = m.end();
                }
                out.push_str(&input[last..]);
                Ok(V::Str(out))
            }
            replacement => {
                let out = r
                    .replace_all(&input, replacement.text().as_str())
                    .into_owned();
                check_len(out.len())?;
                Ok(V::Str(out))
            }
        },
        "Split" => Ok(V::list(
            r.split(&input).map(|p| V::Str(p.to_string())).collect(),
        )),
        n => fail(format!("Regex.{n} is not supported")),
    }
}

fn uri_static(name: &str, args: &[V]) -> R {
    let s = arg(args, 0, name)?.text();
    const DATA: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    const URI: &percent_encoding::AsciiSet = &DATA
        .remove(b':')
        .remove(b'/')
        .remove(b'?')
        .remove(b'#')
        .remove(b'[')
        .remove(b']')
        .remove(b'@')
        .remove(b'!')
        .remove(b'$')
        .remove(b'&')
        .remove(b'\'')
        .remove(b'(')
        .remove(b')')
        .remove(b'*')
        .remove(b'+')
        .remove(b',')
        .remove(b';')
        .remove(b'=')
        .remove(b'%');
    match name {
        "EscapeDataString" => Ok(V::Str(
            percent_encoding::utf8_percent_encode(&s, DATA).to_string(),
        )),
        "EscapeUriString" => Ok(V::Str(
            percent_encoding::utf8_percent_encode(&s, URI).to_string(),
        )),
        "UnescapeDataString" => Ok(V::Str(
            percent_encoding::percent_decode_str(&s)
                .decode_utf8_lossy()
                .into_owned(),
        )),
        "IsWellFormedUriString" => Ok(V::Bool(
            url::Url::parse(&s).is_ok() || (!s.contains(' ') && !s.contains("://")),
        )),
        "Create" => Ok(url::Url::parse(&s)
            .map(|u| V::native(Native::Uri(u)))
            .unwrap_or(V::Null)),
        n => fail(format!("Uri.{n} is not supported")),
    }
}

fn html_encode(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

fn html_decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

fn seed() -> u64 {
    rand::Rng::random(&mut rand::rng())
}

fn fill_random(v: &V) -> R {
    match v {
        V::Bytes(b) => {
            let mut b = b.lock();
            rand::Rng::fill(&mut rand::rng(), &mut b[..]);
            Ok(V::Null)
        }
        _ => fail("GetBytes needs a byte[]"),
    }
}

/// xorshift64*: `new Random(seed)` gives a repeatable sequence, as .NET's does (not the same
/// numbers as .NET's algorithm).
fn next_random(state: &mut u64) -> u64 {
    let mut x = *state | 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

pub fn native_member(v: &V, name: &str) -> Option<R> {
    match v {
        V::Native(n) => Some(match (&**n, name) {
            (Native::Match { groups, .. }, "Success") => {
                Ok(V::Bool(groups.first().is_some_and(Option::is_some)))
            }
            (Native::Match { .. }, "Groups" | "Captures") => Ok(v.clone()),
            (Native::Match { groups, .. }, "Value" | "Index" | "Length") => {
                group_member(groups.first().cloned().flatten(), name)
            }
            (Native::Match { groups, .. }, "Count") => Ok(V::Int(groups.len() as i64)),
            (Native::Group(g), "Success") => Ok(V::Bool(g.is_some())),
            (Native::Group(g), _) => group_member(g.clone(), name),
            (Native::Uri(u), _) => uri_member(u, name),
            (Native::Exception { message, .. }, "Message") => Ok(V::Str(message.clone())),
            (Native::Exception { .. }, "InnerException") => Ok(V::Null),
            (Native::Exception { .. }, "StackTrace" | "Source") => Ok(V::Str(String::new())),
            (Native::Namespace(ns), "NamespaceName") => Ok(V::Str(ns.clone())),
            (Native::XAttribute(n, _), "Name") => Ok(V::Str(n.clone())),
            (Native::XAttribute(_, value), "Value") => Ok(V::Str(value.clone())),
            _ => return None,
        }),
        V::Obj(o) => Some(match (&*o.lock(), name) {
            (Obj::Builder(s), "Length") => Ok(V::Int(s.chars().count() as i64)),
            (Obj::Builder(s), "Capacity") => Ok(V::Int(s.capacity() as i64)),
            (Obj::Queue(q), "Count") => Ok(V::Int(q.len() as i64)),
            (Obj::Stack(s), "Count") => Ok(V::Int(s.len() as i64)),
            (Obj::UriBuilder(u), "Uri") => Ok(V::native(Native::Uri(u.clone()))),
            (Obj::UriBuilder(u), n) => uri_member(u, n),
            _ => return None,
        }),
        _ => None,
    }
}

fn group_member(g: Option<(usize, String)>, name: &str) -> R {
    Ok(match name {
        "Value" => V::Str(g.map(|g| g.1).unwrap_or_default()),
        "Index" => V::Int(g.map_or(0, |g| g.0 as i64)),
        "Length" => V::Int(g.map_or(0, |g| g.1.chars().count() as i64)),
        "Success" => V::Bool(g.is_some()),
        n => return fail(format!("Group.{n} is not supported")),
    })
}

fn uri_member(u: &url::Url, name: &str) -> R {
    let s = |x: &str| Ok(V::Str(x.to_string()));
    match name {
        "Host" | "DnsSafeHost" => s(u.host_str().unwrap_or("")),
        "Port" => Ok(V::Int(u.port_or_known_default().map_or(-1, i64::from))),
        "Scheme" => s(u.scheme()),
        "AbsolutePath" | "Path" | "LocalPath" => s(u.path()),
        "AbsoluteUri" | "OriginalString" => s(u.as_str()),
        "PathAndQuery" => Ok(V::Str(format!(
            "{}{}",
            u.path(),
            u.query().map(|q| format!("?{q}")).unwrap_or_default()
        ))),
        "Query" => Ok(V::Str(
            u.query().map(|q| format!("?{q}")).unwrap_or_default(),
        )),
        "Fragment" => Ok(V::Str(
            u.fragment().map(|f| format!("#{f}")).unwrap_or_default(),
        )),
        "Authority" => Ok(V::Str(format!(
            "{}{}",
            u.host_str().unwrap_or(""),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ))),
        "UserInfo" => s(u.username()),
        "IsAbsoluteUri" => Ok(V::Bool(true)),
        "IsDefaultPort" => Ok(V::Bool(u.port().is_none())),
        "Segments" => {
            let mut out = vec![V::Str("/".into())];
            let parts: Vec<&str> = u.path().trim_start_matches('/').split('/').collect();
            for (i, p) in parts.iter().enumerate() {
                if p.is_empty() {
                    continue;
                }
                out.push(V::Str(if i + 1 < parts.len() {
                    format!("{p}/")
                } else {
                    p.to_string()
                }));
            }
            Ok(V::list(out))
        }
        n => fail(format!("Uri.{n} is not supported")),
    }
}

pub fn native_index(v: &V, i: &V) -> R {
    let V::Native(n) = v else {
        return fail("cannot be indexed");
    };
    match &**n {
        Native::Match { groups, names, .. } => {
            let at = match i {
                V::Int(k) => usize::try_from(*k).ok(),
                k => names
                    .iter()
                    .position(|n| n.as_deref() == Some(k.text().as_str())),
            };
            Ok(V::native(Native::Group(
                at.and_then(|k| groups.get(k).cloned()).flatten(),
            )))
        }
        _ => fail(format!("{} cannot be indexed", v.type_name())),
    }
}

pub fn native_call(h: &mut dyn Host, v: &V, name: &str, args: &[V]) -> R {
    match v {
        V::Native(n) => match (&**n, name) {
            (Native::Regex(r), _) if name != "ToString" => regex_call(h, r, name, args),
            (
                Native::Match {
                    regex, input, next, ..
                },
                "NextMatch",
            ) => Ok(match_at(regex, input, *next)),
            (Native::Match { groups, .. }, "Result") => {
                let mut out = arg(args, 0, name)?.text();
                for (i, g) in groups.iter().enumerate().rev() {
                    out = out.replace(&format!("${i}"), g.as_ref().map_or("", |g| g.1.as_str()));
                }
                Ok(V::Str(out))
            }
            (Native::Uri(u), "GetLeftPart") => {
                let part = arg(args, 0, name)?.text();
                let mut u = u.clone();
                if part != "Query" {
                    u.set_query(None);
                }
                u.set_fragment(None);
                let text = match part.as_str() {
                    "Scheme" => format!("{}://", u.scheme()),
                    "Authority" => {
                        format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""))
                            + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
                    }
                    _ => u.to_string(),
                };
                Ok(V::Str(text))
            }
            (_, "ToString") => Ok(V::Str(v.text())),
            _ => fail(format!("{}.{name} is not supported", v.type_name())),
        },
        V::Obj(o) => obj_call(h, v, o, name, args),
        _ => fail(format!("{}.{name} is not supported", v.type_name())),
    }
}

fn obj_call(h: &mut dyn Host, v: &V, o: &Shared<Obj>, name: &str, args: &[V]) -> R {
    let _ = h;
    let a0 = || arg(args, 0, name);
    let mut obj = o.lock();
    match (&mut *obj, name) {
        (
            Obj::Builder(s),
            "Append" | "AppendLine" | "AppendFormat" | "Insert" | "Replace" | "Remove" | "Clear",
        ) => {
            match name {
                "Append" => s.push_str(&a0()?.text()),
                "AppendLine" => {
                    s.push_str(&args.first().map(V::text).unwrap_or_default());
                    s.push_str("\r\n");
                }
                "AppendFormat" => s.push_str(&format(args)?.text()),
                "Insert" => {
                    let at = int(&a0()?).unwrap_or(-1);
                    let count = s.chars().count() as i64;
                    if at < 0 || at > count {
                        return fail("Insert: the index is outside the builder");
                    }
                    let byte = s.char_indices().nth(at as usize).map_or(s.len(), |c| c.0);
                    s.insert_str(byte, &arg(args, 1, name)?.text());
                }
                "Replace" => *s = s.replace(&a0()?.text(), &arg(args, 1, name)?.text()),
                "Remove" => {
                    let (at, len) = (
                        int(&a0()?).unwrap_or(-1),
                        int(&arg(args, 1, name)?).unwrap_or(-1),
                    );
                    let c: Vec<char> = s.chars().collect();
                    if at < 0 || len < 0 || (at + len) as usize > c.len() {
                        return fail("Remove: the range is outside the builder");
                    }
                    *s = c[..at as usize]
                        .iter()
                        .chain(&c[(at + len) as usize..])
                        .collect();
                }
                _ => s.clear(),
            }
            check_len(s.len())?;
            Ok(v.clone())
        }
        (Obj::Builder(s), "ToString") => Ok(V::Str(s.clone())),
        (Obj::Random(state), "Next") => {
            let r = next_random(state);
            let (lo, hi) = match args.len() {
                0 => (0, i32::MAX as i64),
                1 => (0, int(&a0()?).unwrap_or(0)),
                _ => (
                    int(&a0()?).unwrap_or(0),
                    int(&arg(args, 1, name)?).unwrap_or(0),
                ),
            };
            if hi < lo {
                return fail("Random.Next: minValue cannot be greater than maxValue");
            }
            let span = (hi - lo) as u64;
            Ok(V::Int(if span == 0 {
                lo
            } else {
                lo + (r % span) as i64
            }))
        }
        (Obj::Random(state), "NextDouble") => Ok(V::Double(
            (next_random(state) >> 11) as f64 / (1u64 << 53) as f64,
        )),
        (Obj::Random(state), "NextBytes" | "GetBytes" | "GetNonZeroBytes") => {
            let V::Bytes(b) = a0()? else {
                return fail(format!("{name} needs a byte[]"));
            };
            for x in b.lock().iter_mut() {
                *x = loop {
                    let r = (next_random(state) >> 24) as u8;
                    if name != "GetNonZeroBytes" || r != 0 {
                        break r;
                    }
                };
            }
            Ok(V::Null)
        }
        (Obj::Random(_), "Dispose") => Ok(V::Null),
        (Obj::Queue(q), "Enqueue") => {
            check_len(q.len() + 1)?;
            q.push_back(a0()?);
            Ok(V::Null)
        }
        (Obj::Queue(q), "Dequeue" | "Peek") => {
            let x = if name == "Peek" {
                q.front().cloned()
            } else {
                q.pop_front()
            };
            x.ok_or_else(|| EvalError("Queue empty.".into()))
        }
        (Obj::Stack(s), "Push") => {
            check_len(s.len() + 1)?;
            s.push(a0()?);
            Ok(V::Null)
        }
        (Obj::Stack(s), "Pop" | "Peek") => {
            let x = if name == "Peek" {
                s.last().cloned()
            } else {
                s.pop()
            };
            x.ok_or_else(|| EvalError("Stack empty.".into()))
        }
        (Obj::Queue(q), "Clear") => {
            q.clear();
            Ok(V::Null)
        }
        (Obj::Stack(s), "Clear") => {
            s.clear();
            Ok(V::Null)
        }
        (Obj::UriBuilder(u), "ToString") => Ok(V::Str(u.to_string())),
        (_, "ToString") => {
            drop(obj);
            Ok(V::Str(v.text()))
        }
        (Obj::Queue(_) | Obj::Stack(_), _) => {
            drop(obj);
            super::unknown()
        }
        _ => fail(format!("{name} is not supported here")),
    }
}

pub fn set_native_member(v: &V, name: &str, value: V) -> Result<(), EvalError> {
    let V::Obj(o) = v else {
        return fail(format!("{}.{name} cannot be set", v.type_name()));
    };
    let mut obj = o.lock();
    if let Obj::Hash { key, .. } = &mut *obj
        && name == "Key"
    {
        *key = Some(crypto::bytes_of(&value)?);
        return Ok(());
    }
    let Obj::UriBuilder(u) = &mut *obj else {
        return fail(format!("{name} cannot be set here"));
    };
    let text = value.text();
    let bad = |what: &str| EvalError(format!("UriBuilder.{name}: '{text}' is not a valid {what}"));
    match name {
        "Host" => u.set_host(Some(&text)).map_err(|_| bad("host")),
        "Scheme" => u.set_scheme(&text).map_err(|_| bad("scheme")),
        "Port" => {
            let p = int(&value).unwrap_or(-1);
            u.set_port(u16::try_from(p).ok()).map_err(|_| bad("port"))
        }
        "Path" => {
            u.set_path(&text);
            Ok(())
        }
        "Query" => {
            let q = text.trim_start_matches('?');
            u.set_query((!q.is_empty()).then_some(q));
            Ok(())
        }
        "Fragment" => {
            let f = text.trim_start_matches('#');
            u.set_fragment((!f.is_empty()).then_some(f));
            Ok(())
        }
        n => fail(format!("UriBuilder.{n} cannot be set")),
    }
}

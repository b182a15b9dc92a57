//! Numbers: checked integer arithmetic (overflow is an error, as in a `checked` context, rather
//! than a silent wrap), doubles, conversions, and .NET's numeric format strings
//! (`N2`, `F0`, `D4`, `X`, `P`, `0.00`, `#,##0`).

use super::super::value::{EvalError, R, V, arg, double_text, fail, int, num};
use super::unknown;

pub fn integer(op: &str, a: i64, b: i64) -> R {
    let overflow = || EvalError(format!("arithmetic overflow in {a} {op} {b}"));
    match op {
        "+" => a.checked_add(b).map(V::Int).ok_or_else(overflow),
        "-" => a.checked_sub(b).map(V::Int).ok_or_else(overflow),
        "*" => a.checked_mul(b).map(V::Int).ok_or_else(overflow),
        "/" | "%" if b == 0 => fail("Attempted to divide by zero."),
        "/" => a.checked_div(b).map(V::Int).ok_or_else(overflow),
        "%" => a.checked_rem(b).map(V::Int).ok_or_else(overflow),
        "<" => Ok(V::Bool(a < b)),
        ">" => Ok(V::Bool(a > b)),
        "<=" => Ok(V::Bool(a <= b)),
        ">=" => Ok(V::Bool(a >= b)),
        "&" => Ok(V::Int(a & b)),
        "|" => Ok(V::Int(a | b)),
        "^" => Ok(V::Int(a ^ b)),
        "<<" => Ok(V::Int(a.wrapping_shl((b & 63) as u32))),
        ">>" => Ok(V::Int(a.wrapping_shr((b & 63) as u32))),
        _ => fail(format!("'{op}' cannot apply to numbers")),
    }
}

pub fn double(op: &str, a: f64, b: f64) -> R {
    match op {
        "+" => Ok(V::Double(a + b)),
        "-" => Ok(V::Double(a - b)),
        "*" => Ok(V::Double(a * b)),
        "/" => Ok(V::Double(a / b)),
        "%" => Ok(V::Double(a % b)),
        "<" => Ok(V::Bool(a < b)),
        ">" => Ok(V::Bool(a > b)),
        "<=" => Ok(V::Bool(a <= b)),
        ">=" => Ok(V::Bool(a >= b)),
        _ => fail(format!("'{op}' cannot apply to numbers with a fraction")),
    }
}

/// A cast to an integral type: doubles truncate, JSON numbers and numeric JSON strings convert.
pub fn to_integer(t: &str, v: &V) -> R {
    let n = match (int(v), num(v)) {
        (Some(n), _) => n,
        (None, Some(d)) => d.trunc() as i64,
        _ => match v {
            V::Str(s) if s.chars().count() == 1 => s.chars().next().map_or(0, |c| c as i64),
            V::Json(j) => match j.get() {
                serde_json::Value::String(s) => s
                    .trim()
                    .parse()
                    .map_err(|_| EvalError(format!("cannot convert '{s}' to {t}")))?,
                serde_json::Value::Bool(b) => b as i64,
                _ => return fail(format!("cannot cast this JToken to {t}")),
            },
            other => return fail(format!("cannot cast {} to {t}", other.type_name())),
        },
    };
    let fits = match t {
        "int" | "Int32" => i32::try_from(n).is_ok(),
        "short" | "Int16" => i16::try_from(n).is_ok(),
        "byte" | "Byte" => u8::try_from(n).is_ok(),
        "sbyte" => i8::try_from(n).is_ok(),
        "ushort" | "UInt16" => u16::try_from(n).is_ok(),
        "uint" | "UInt32" => u32::try_from(n).is_ok(),
        "ulong" | "UInt64" => n >= 0,
        _ => true,
    };
    if !fits {
        return fail(format!("{n} is outside the range of {t}"));
    }
    Ok(V::Int(n))
}

pub fn call(v: &V, name: &str, args: &[V]) -> R {
    match name {
        "ToString" => match args.first() {
            Some(f) if !matches!(f, V::Null) => format_value(v, &f.text()).map(V::Str),
            _ => Ok(V::Str(v.text())),
        },
        "CompareTo" => {
            let o = arg(args, 0, name)?;
            let (a, b) = (num(v).unwrap_or(0.0), num(&o).unwrap_or(0.0));
            Ok(V::Int(a.partial_cmp(&b).map_or(0, |o| o as i64)))
        }
        "GetValueOrDefault" => Ok(v.clone()),
        _ => unknown(),
    }
}

/// `{value:format}` and `ToString(format)` for numbers and dates.
pub fn format_value(v: &V, f: &str) -> Result<String, EvalError> {
    if let V::Time(t) = v {
        return Ok(super::super::clock::format(*t, f));
    }
    if let V::Span(_) = v {
        return Ok(v.text());
    }
    let Some(x) = num(v) else {
        return Ok(v.text());
    };
    let mut chars = f.chars();
    let kind = chars.next().unwrap_or('G');
    let digits: Option<usize> = chars.as_str().parse().ok().filter(|d: &usize| *d <= 99);
    if chars.as_str().is_empty() || digits.is_some() {
        match kind.to_ascii_uppercase() {
            'N' => return Ok(group(&fixed(x, digits.unwrap_or(2)))),
            'F' => return Ok(fixed(x, digits.unwrap_or(2))),
            'E' => return Ok(format!("{:.*e}", digits.unwrap_or(6), x)),
            'P' => {
                return Ok(format!(
                    "{} %",
                    group(&format!("{:.*}", digits.unwrap_or(2), x * 100.0))
                ));
            }
            'D' => {
                let n = x as i64;
                let w = digits.unwrap_or(0);
                return Ok(if n < 0 {
                    format!("-{:0w$}", -n)
                } else {
                    format!("{n:0w$}")
                });
            }
            'X' => {
                let w = digits.unwrap_or(0);
                let s = format!("{:0w$x}", x as i64);
                return Ok(if kind == 'X' { s.to_uppercase() } else { s });
            }
            'G' | 'R' => {
                return Ok(match v {
                    V::Int(n) => n.to_string(),
                    _ => double_text(x),
                });
            }
            'C' => {
                return Ok(format!(
                    "¤{}",
                    group(&format!("{:.*}", digits.unwrap_or(2), x))
                ));
            }
            _ => {}
        }
    }
    Ok(custom(x, f))
}

/// `x` with `d` decimals, halves rounded away from zero (as .NET formats).
fn fixed(x: f64, d: usize) -> String {
    let m = 10f64.powi(d.min(15) as i32);
    let r = (x * m).round() / m;
    format!("{r:.d$}")
}

/// Thousands separators in the integral part of a formatted number.
fn group(s: &str) -> String {
    let (sign, s) = s.strip_prefix('-').map_or(("", s), |r| ("-", r));
    let (int_part, frac) = s.split_once('.').map_or((s, None), |(a, b)| (a, Some(b)));
    let mut out = String::new();
    for (i, c) in int_part.chars().enumerate() {
        if i > 0 && (int_part.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{out}.{f}"),
        None => format!("{sign}{out}"),
    }
}

/// Custom numeric formats: `0` (a digit), `#` (a digit if significant), `.`, `,` (grouping).
fn custom(x: f64, f: &str) -> String {
    let (int_fmt, frac_fmt) = f.split_once('.').map_or((f, ""), |(a, b)| (a, b));
    let decimals = frac_fmt.chars().filter(|c| *c == '0' || *c == '#').count();
    let required = frac_fmt.chars().filter(|c| *c == '0').count();
    let mut s = format!("{:.*}", decimals, x.abs());
    if decimals > required && s.contains('.') {
        while s.ends_with('0') && s.len() - s.find('.').unwrap_or(0) - 1 > required {
            s.pop();
        }
        if s.ends_with('.') {
            s.pop();
        }
    }
    let min_int = int_fmt.chars().filter(|c| *c == '0').count();
    let (ip, fp) = s
        .split_once('.')
        .map_or((s.as_str(), None), |(a, b)| (a, Some(b)));
    let mut ip = format!("{ip:0>min_int$}");
    if min_int == 0 && ip == "0" && int_fmt.contains('#') {
        ip.clear();
    }
    if int_fmt.contains(',') {
        ip = group(&ip);
    }
    let sign = if x < 0.0 { "-" } else { "" };
    match fp {
        Some(fp) => format!("{sign}{ip}.{fp}"),
        None => format!("{sign}{ip}"),
    }
}

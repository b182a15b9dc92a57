//! `DateTime`/`DateTimeOffset` (kept in UTC) and `TimeSpan`: members, methods, arithmetic and
//! comparison.

use super::super::clock;
use super::super::value::{EvalError, R, V, arg, fail, num};
use super::unknown;
use time::{Duration, OffsetDateTime};

pub fn member(v: &V, name: &str) -> R {
    match v {
        V::Time(t) => time_member(*t, name),
        V::Span(d) => span_member(*d, name),
        _ => fail("not a time"),
    }
}

fn time_member(t: OffsetDateTime, name: &str) -> R {
    let i = |n: i64| Ok(V::Int(n));
    match name {
        "Year" => i(t.year() as i64),
        "Month" => i(u8::from(t.month()) as i64),
        "Day" => i(t.day() as i64),
        "Hour" => i(t.hour() as i64),
        "Minute" => i(t.minute() as i64),
        "Second" => i(t.second() as i64),
        "Millisecond" => i(t.millisecond() as i64),
        "Ticks" => i(clock::ticks(t)),
        "DayOfYear" => i(t.ordinal() as i64),
        "DayOfWeek" => Ok(V::Enum("DayOfWeek", clock::day_name(t).to_string())),
        "Date" => Ok(V::Time(t.replace_time(time::Time::MIDNIGHT))),
        "TimeOfDay" => Ok(V::Span(t - t.replace_time(time::Time::MIDNIGHT))),
        "UtcDateTime" | "DateTime" => Ok(V::Time(t)),
        "Offset" => Ok(V::Span(
            Duration::seconds(t.offset().whole_seconds() as i64),
        )),
        "Kind" => Ok(V::Enum("DateTimeKind", "Utc".into())),
        n => fail(format!("DateTime.{n} is not supported")),
    }
}

fn span_member(d: Duration, name: &str) -> R {
    let f = |x: f64| Ok(V::Double(x));
    match name {
        "TotalSeconds" => f(d.as_seconds_f64()),
        "TotalMilliseconds" => f(d.as_seconds_f64() * 1000.0),
        "TotalMinutes" => f(d.as_seconds_f64() / 60.0),
        "TotalHours" => f(d.as_seconds_f64() / 3600.0),
        "TotalDays" => f(d.as_seconds_f64() / 86400.0),
        "Days" => Ok(V::Int(d.whole_days())),
        "Hours" => Ok(V::Int(d.whole_hours() % 24)),
        "Minutes" => Ok(V::Int(d.whole_minutes() % 60)),
        "Seconds" => Ok(V::Int(d.whole_seconds() % 60)),
        "Milliseconds" => Ok(V::Int(d.subsec_milliseconds() as i64)),
        "Ticks" => Ok(V::Int((d.whole_nanoseconds() / 100) as i64)),
        n => fail(format!("TimeSpan.{n} is not supported")),
    }
}

fn number(args: &[V], name: &str) -> Result<f64, EvalError> {
    num(&arg(args, 0, name)?).ok_or_else(|| EvalError(format!("{name} needs a number")))
}

fn checked(t: Option<OffsetDateTime>) -> R {
    t.map(V::Time)
        .ok_or_else(|| EvalError("the date is outside the range DateTime can hold".into()))
}

fn add_months(t: OffsetDateTime, months: i64) -> Option<OffsetDateTime> {
    let total = t.year() as i64 * 12 + (u8::from(t.month()) as i64 - 1) + months;
    let (y, m) = (
        total.div_euclid(12) as i32,
        (total.rem_euclid(12) + 1) as u8,
    );
    let month = time::Month::try_from(m).ok()?;
    let day = t.day().min(time::util::days_in_month(month, y));
    let date = time::Date::from_calendar_date(y, month, day).ok()?;
    Some(t.replace_date(date))
}

pub fn call(v: &V, name: &str, args: &[V]) -> R {
    match v {
        V::Time(t) => time_call(*t, name, args),
        V::Span(d) => span_call(*d, name, args),
        _ => unknown(),
    }
}

fn time_call(t: OffsetDateTime, name: &str, args: &[V]) -> R {
    let add = |secs: f64| checked(t.checked_add(Duration::seconds_f64(secs)));
    match name {
        "AddMilliseconds" => add(number(args, name)? / 1000.0),
        "AddSeconds" => add(number(args, name)?),
        "AddMinutes" => add(number(args, name)? * 60.0),
        "AddHours" => add(number(args, name)? * 3600.0),
        "AddDays" => add(number(args, name)? * 86400.0),
        "AddTicks" => add(number(args, name)? / 1e7),
        "AddMonths" => checked(add_months(t, number(args, name)? as i64)),
        "AddYears" => checked(add_months(t, number(args, name)? as i64 * 12)),
        "Add" => match arg(args, 0, name)? {
            V::Span(d) => checked(t.checked_add(d)),
            _ => fail("DateTime.Add needs a TimeSpan"),
        },
        "Subtract" => match arg(args, 0, name)? {
            V::Span(d) => checked(t.checked_sub(d)),
            V::Time(o) => Ok(V::Span(t - o)),
            _ => fail("DateTime.Subtract needs a TimeSpan or a DateTime"),
        },
        "ToUniversalTime" | "ToLocalTime" => Ok(V::Time(t)),
        "ToUnixTimeSeconds" => Ok(V::Int(t.unix_timestamp())),
        "ToUnixTimeMilliseconds" => Ok(V::Int((t.unix_timestamp_nanos() / 1_000_000) as i64)),
        "ToString" => Ok(V::Str(match args.first() {
            None | Some(V::Null) => V::Time(t).text(),
            Some(f) => clock::format(t, &f.text()),
        })),
        "CompareTo" => match arg(args, 0, name)? {
            V::Time(o) => Ok(V::Int(t.cmp(&o) as i64)),
            _ => fail("DateTime.CompareTo needs a DateTime"),
        },
        "ToFileTimeUtc" | "ToFileTime" => Ok(V::Int(clock::ticks(t) - 504_911_232_000_000_000)),
        _ => unknown(),
    }
}

fn span_call(d: Duration, name: &str, args: &[V]) -> R {
    match name {
        "Add" | "Subtract" => match arg(args, 0, name)? {
            V::Span(o) => Ok(V::Span(if name == "Add" { d + o } else { d - o })),
            _ => fail(format!("TimeSpan.{name} needs a TimeSpan")),
        },
        "Negate" => Ok(V::Span(-d)),
        "Duration" => Ok(V::Span(d.abs())),
        "ToString" => Ok(V::Str(V::Span(d).text())),
        "CompareTo" => match arg(args, 0, name)? {
            V::Span(o) => Ok(V::Int(d.cmp(&o) as i64)),
            _ => fail("TimeSpan.CompareTo needs a TimeSpan"),
        },
        _ => unknown(),
    }
}

/// Operators between times and spans; `None` when neither operand is one.
pub fn binary(op: &str, x: &V, y: &V) -> Option<R> {
    let cmp = |o: std::cmp::Ordering| -> Option<R> {
        Some(Ok(V::Bool(match op {
            "<" => o.is_lt(),
            ">" => o.is_gt(),
            "<=" => o.is_le(),
            ">=" => o.is_ge(),
            _ => return None,
        })))
    };
    match (x, y) {
        (V::Time(a), V::Time(b)) => match op {
            "-" => Some(Ok(V::Span(*a - *b))),
            _ => cmp(a.cmp(b))
                .or_else(|| Some(fail(format!("'{op}' cannot apply to two DateTime values")))),
        },
        (V::Time(a), V::Span(d)) => match op {
            "+" => Some(checked(a.checked_add(*d))),
            "-" => Some(checked(a.checked_sub(*d))),
            _ => Some(fail(format!(
                "'{op}' cannot apply to a DateTime and a TimeSpan"
            ))),
        },
        (V::Span(a), V::Span(b)) => match op {
            "+" => Some(Ok(V::Span(*a + *b))),
            "-" => Some(Ok(V::Span(*a - *b))),
            _ => cmp(a.cmp(b))
                .or_else(|| Some(fail(format!("'{op}' cannot apply to two TimeSpans")))),
        },
        (V::Span(a), n) | (n, V::Span(a)) if op == "*" => num(n).map(|f| Ok(V::Span(*a * f))),
        (V::Span(a), n) if op == "/" => num(n).map(|f| Ok(V::Span(*a / f))),
        _ => None,
    }
}

//! DateTime and TimeSpan text as .NET writes and reads it (invariant culture): standard formats
//! (`o`, `s`, `u`, `r`, `G`, `d`, `yyyy-MM-dd`…), custom format strings, and the parsing
//! `DateTime.Parse` accepts for the shapes APIs send (ISO 8601, RFC 1123, date only).

use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::{Duration, OffsetDateTime, PrimitiveDateTime, UtcOffset};

const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

pub fn day_name(t: OffsetDateTime) -> &'static str {
    DAYS[t.weekday().number_days_from_monday() as usize]
}

/// Formats as `DateTime.ToString(format)` does in the invariant culture.
pub fn format(t: OffsetDateTime, f: &str) -> String {
    match f {
        "o" | "O" => return custom(t, "yyyy-MM-ddTHH:mm:ss.fffffffZ"),
        "s" => return custom(t, "yyyy-MM-ddTHH:mm:ss"),
        "u" => return custom(t, "yyyy-MM-dd HH:mm:ssZ"),
        "r" | "R" => return custom(t, "ddd, dd MMM yyyy HH:mm:ss 'GMT'"),
        "G" | "" => return custom(t, "MM/dd/yyyy HH:mm:ss"),
        "g" => return custom(t, "MM/dd/yyyy HH:mm"),
        "d" => return custom(t, "MM/dd/yyyy"),
        "D" => return custom(t, "dddd, dd MMMM yyyy"),
        "t" => return custom(t, "HH:mm"),
        "T" => return custom(t, "HH:mm:ss"),
        "f" => return custom(t, "dddd, dd MMMM yyyy HH:mm"),
        "F" => return custom(t, "dddd, dd MMMM yyyy HH:mm:ss"),
        "M" | "m" => return custom(t, "MMMM dd"),
        "Y" | "y" => return custom(t, "yyyy MMMM"),
        _ => {}
    }
    custom(t, f)
}

/// A custom format string: runs of one letter are one field; quoted text and `\x` literal.
fn custom(t: OffsetDateTime, f: &str) -> String {
    let chars: Vec<char> = f.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|d| *d == c)
                .map_or(chars.len(), |p| i + 1 + p);
            out.extend(&chars[i + 1..end.min(chars.len())]);
            i = end + 1;
            continue;
        }
        if c == '\\' {
            if let Some(d) = chars.get(i + 1) {
                out.push(*d);
            }
            i += 2;
            continue;
        }
        let run = chars[i..].iter().take_while(|d| **d == c).count();
        i += run;
        out.push_str(&field(t, c, run).unwrap_or_else(|| c.to_string().repeat(run)));
    }
    out
}

fn field(t: OffsetDateTime, c: char, n: usize) -> Option<String> {
    let month = u8::from(t.month());
    let hour12 = match t.hour() % 12 {
        0 => 12,
        h => h,
    };
    Some(match (c, n) {
        ('y', 1) => (t.year() % 100).to_string(),
        ('y', 2) => format!("{:02}", t.year() % 100),
        ('y', _) => format!("{:0n$}", t.year()),
        ('M', 1) => month.to_string(),
        ('M', 2) => format!("{month:02}"),
        ('M', 3) => MONTHS[month as usize - 1][..3].to_string(),
        ('M', _) => MONTHS[month as usize - 1].to_string(),
        ('d', 1) => t.day().to_string(),
        ('d', 2) => format!("{:02}", t.day()),
        ('d', 3) => day_name(t)[..3].to_string(),
        ('d', _) => day_name(t).to_string(),
        ('H', 1) => t.hour().to_string(),
        ('H', _) => format!("{:02}", t.hour()),
        ('h', 1) => hour12.to_string(),
        ('h', _) => format!("{hour12:02}"),
        ('m', 1) => t.minute().to_string(),
        ('m', _) => format!("{:02}", t.minute()),
        ('s', 1) => t.second().to_string(),
        ('s', _) => format!("{:02}", t.second()),
        ('f' | 'F', n) if n <= 7 => {
            let digits = format!("{:09}", t.nanosecond());
            let s = digits[..n].to_string();
            if c == 'F' {
                s.trim_end_matches('0').to_string()
            } else {
                s
            }
        }
        ('t', 1) => if t.hour() < 12 { "A" } else { "P" }.to_string(),
        ('t', _) => if t.hour() < 12 { "AM" } else { "PM" }.to_string(),
        ('z', 1) => format!("{:+}", t.offset().whole_hours()),
        ('z', 2) => format!("{:+03}", t.offset().whole_hours()),
        ('z', _) => {
            let (h, m, _) = t.offset().as_hms();
            format!(
                "{}{:02}:{:02}",
                if h < 0 || m < 0 { '-' } else { '+' },
                h.abs(),
                m.abs()
            )
        }
        ('K', _) => {
            if t.offset() == UtcOffset::UTC {
                "Z".to_string()
            } else {
                field(t, 'z', 3)?
            }
        }
        ('Z', 1) => "Z".to_string(),
        _ => return None,
    })
}

/// `DateTime.Parse`: ISO 8601 (with or without offset or fraction), RFC 1123, `yyyy-MM-dd`,
/// `MM/dd/yyyy[ HH:mm:ss]`. Times without an offset are taken as UTC.
pub fn parse(s: &str) -> Option<OffsetDateTime> {
    let s = s.trim();
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t);
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc2822) {
        return Some(t);
    }
    let gmt = s.strip_suffix(" GMT").or_else(|| s.strip_suffix(" UTC"));
    if let Some(g) = gmt
        && let Ok(t) = OffsetDateTime::parse(&format!("{g} +0000"), &Rfc2822)
    {
        return Some(t);
    }
    let (s, utc) = match s.strip_suffix('Z') {
        Some(r) => (r, true),
        None => (s, false),
    };
    let _ = utc;
    let formats = [
        time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond]"
        ),
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]"),
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]"),
        time::macros::format_description!("[month]/[day]/[year] [hour]:[minute]:[second]"),
    ];
    for f in formats {
        if let Ok(t) = PrimitiveDateTime::parse(s, &f) {
            return Some(t.assume_utc());
        }
    }
    let dates = [
        time::macros::format_description!("[year]-[month]-[day]"),
        time::macros::format_description!("[month]/[day]/[year]"),
        time::macros::format_description!("[year]/[month]/[day]"),
    ];
    for f in dates {
        if let Ok(d) = time::Date::parse(s, &f) {
            return Some(d.midnight().assume_utc());
        }
    }
    None
}

/// `DateTime.ParseExact(s, format)` for the custom formats people write (`yyyyMMdd`,
/// `yyyy-MM-ddTHH:mm:ssZ`, `dd/MM/yyyy HH:mm`…).
pub fn parse_exact(s: &str, f: &str) -> Option<OffsetDateTime> {
    match f {
        "o" | "O" | "s" | "u" | "r" | "R" => return parse(s),
        _ => {}
    }
    let fc: Vec<char> = f.chars().collect();
    let sc: Vec<char> = s.trim().chars().collect();
    let (mut i, mut j) = (0, 0);
    let (mut y, mut mo, mut d, mut h, mut mi, mut se, mut ns) =
        (1i32, 1u8, 1u8, 0u8, 0u8, 0u8, 0u32);
    let mut pm = None;
    while i < fc.len() {
        let c = fc[i];
        let run = fc[i..].iter().take_while(|x| **x == c).count();
        if "yMdHhmsft".contains(c) {
            let width = match (c, run) {
                ('y', 2) => 2,
                ('y', _) => run.max(4),
                ('t', _) => run,
                ('f', _) => run,
                _ => 2,
            };
            let take: String = if run == 1 && c != 'f' && c != 't' {
                sc[j..]
                    .iter()
                    .take_while(|x| x.is_ascii_digit())
                    .take(2)
                    .collect()
            } else {
                sc.get(j..j + width)?.iter().collect()
            };
            j += take.chars().count();
            match c {
                'y' if run == 2 => y = 2000 + take.parse::<i32>().ok()?,
                'y' => y = take.parse().ok()?,
                'M' => mo = take.parse().ok()?,
                'd' => d = take.parse().ok()?,
                'H' | 'h' => h = take.parse().ok()?,
                'm' => mi = take.parse().ok()?,
                's' => se = take.parse().ok()?,
                'f' => ns = format!("{take:0<9}").parse().ok()?,
                't' => pm = Some(take.starts_with('P') || take.starts_with('p')),
                _ => {}
            }
            i += run;
            continue;
        }
        let literal = if c == '\'' {
            let end = fc[i + 1..].iter().position(|x| *x == '\'')? + i + 1;
            let lit: String = fc[i + 1..end].iter().collect();
            i = end + 1;
            lit
        } else if c == '\\' {
            i += 2;
            fc.get(i - 1)?.to_string()
        } else {
            i += 1;
            if c == 'K' || c == 'Z' {
                if sc.get(j) == Some(&'Z') {
                    j += 1;
                }
                continue;
            }
            c.to_string()
        };
        for l in literal.chars() {
            if sc.get(j) != Some(&l) {
                return None;
            }
            j += 1;
        }
    }
    if j != sc.len() {
        return None;
    }
    if let Some(pm) = pm {
        h = (h % 12) + if pm { 12 } else { 0 };
    }
    let date = time::Date::from_calendar_date(y, time::Month::try_from(mo).ok()?, d).ok()?;
    let t = time::Time::from_hms_nano(h, mi, se, ns).ok()?;
    Some(PrimitiveDateTime::new(date, t).assume_utc())
}

/// A TimeSpan as `ToString()` writes it: `[-][d.]hh:mm:ss[.fffffff]`.
pub fn span_text(d: Duration) -> String {
    let neg = d.is_negative();
    let d = d.abs();
    let days = d.whole_days();
    let secs = d.whole_seconds() - days * 86_400;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let ticks = d.subsec_nanoseconds() / 100;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if days > 0 {
        out.push_str(&format!("{days}."));
    }
    out.push_str(&format!("{h:02}:{m:02}:{s:02}"));
    if ticks > 0 {
        out.push_str(&format!(".{ticks:07}"));
    }
    out
}

/// `TimeSpan.Parse`: `[d.]hh:mm[:ss[.f]]` or a whole number of days.
pub fn parse_span(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let (days, rest) = match s.split_once('.') {
        Some((d, r)) if !d.contains(':') => (d.parse::<i64>().ok()?, r),
        _ => (0, s),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    let d = match parts.as_slice() {
        [d] => Duration::days(d.parse().ok()?),
        [h, m] => Duration::hours(h.parse().ok()?) + Duration::minutes(m.parse().ok()?),
        [h, m, s] => {
            Duration::hours(h.parse().ok()?)
                + Duration::minutes(m.parse().ok()?)
                + Duration::seconds_f64(s.parse().ok()?)
        }
        _ => return None,
    } + Duration::days(days);
    Some(if neg { -d } else { d })
}

/// .NET ticks (100 ns since 0001-01-01) of a time.
pub fn ticks(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 100) as i64 + 621_355_968_000_000_000
}

pub fn from_ticks(ticks: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos((ticks as i128 - 621_355_968_000_000_000) * 100).ok()
}

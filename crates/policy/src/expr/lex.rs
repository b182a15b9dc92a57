//! Tokens of the C# subset policy expressions are written in.

use super::ExprError;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Int(i64),
    Double(f64),
    Str(String),
    Char(char),
    /// `$"…{expr}…"`: literal parts and the source of each hole.
    Interp(Vec<InterpPart>),
    Punct(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub enum InterpPart {
    Lit(String),
    Hole(String, usize),
}

/// A token and the byte offset it starts at (for error positions).
pub type Spanned = (Tok, usize);

const PUNCTS: &[&str] = &[
    "?.", "??", "==", "!=", "<=", ">=", "&&", "||", "=>", "++", "--", "+=", "-=", "+", "-", "*",
    "/", "%", "<", ">", "!", "?", ":", ".", ",", "(", ")", "[", "]", "{", "}", ";", "=",
];

fn escape(c: char) -> Option<char> {
    Some(match c {
        'n' => '\n',
        't' => '\t',
        'r' => '\r',
        '0' => '\0',
        '\\' => '\\',
        '"' => '"',
        '\'' => '\'',
        _ => return None,
    })
}

pub fn lex(src: &str) -> Result<Vec<Spanned>, ExprError> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| chars.get(i).map(|c| c.1);
    let off = |i: usize| chars.get(i).map_or(src.len(), |c| c.0);
    while i < chars.len() {
        let c = chars[i].1;
        let start = off(i);
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '/' && at(i + 1) == Some('/') {
            while i < chars.len() && chars[i].1 != '\n' {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let mut s = String::new();
            while let Some(d) = at(i).filter(|d| d.is_ascii_alphanumeric() || *d == '_') {
                s.push(d);
                i += 1;
            }
            out.push((Tok::Ident(s), start));
            continue;
        }
        if c.is_ascii_digit() {
            let mut s = String::new();
            let mut double = false;
            while let Some(d) = at(i) {
                if d.is_ascii_digit() {
                    s.push(d);
                } else if d == '.' && !double && at(i + 1).is_some_and(|e| e.is_ascii_digit()) {
                    double = true;
                    s.push(d);
                } else {
                    break;
                }
                i += 1;
            }
            // Suffixes: L, d, m, f.
            if at(i).is_some_and(|d| matches!(d, 'L' | 'l' | 'd' | 'D' | 'm' | 'M' | 'f' | 'F')) {
                if at(i).is_some_and(|d| !matches!(d, 'L' | 'l')) {
                    double = true;
                }
                i += 1;
            }
            let tok =
                if double {
                    Tok::Double(s.parse().map_err(|_| ExprError::at(start, "bad number"))?)
                } else {
                    Tok::Int(s.parse().map_err(|_| {
                        ExprError::at(start, format!("the number {s} is too large"))
                    })?)
                };
            out.push((tok, start));
            continue;
        }
        if c == '"' || (c == '@' && at(i + 1) == Some('"')) {
            let verbatim = c == '@';
            i += if verbatim { 2 } else { 1 };
            let mut s = String::new();
            loop {
                let Some(d) = at(i) else {
                    return Err(ExprError::at(start, "a string is not closed"));
                };
                i += 1;
                if d == '"' {
                    if verbatim && at(i) == Some('"') {
                        s.push('"');
                        i += 1;
                        continue;
                    }
                    break;
                }
                if d == '\\' && !verbatim {
                    let e = at(i).and_then(escape).ok_or_else(|| {
                        ExprError::at(off(i), "unknown escape sequence in a string")
                    })?;
                    s.push(e);
                    i += 1;
                    continue;
                }
                s.push(d);
            }
            out.push((Tok::Str(s), start));
            continue;
        }
        if c == '$' && at(i + 1) == Some('"') {
            i += 2;
            let mut parts = Vec::new();
            let mut lit = String::new();
            loop {
                let Some(d) = at(i) else {
                    return Err(ExprError::at(start, "an interpolated string is not closed"));
                };
                i += 1;
                match d {
                    '"' => break,
                    '\\' => {
                        let e = at(i).and_then(escape).ok_or_else(|| {
                            ExprError::at(off(i), "unknown escape sequence in a string")
                        })?;
                        lit.push(e);
                        i += 1;
                    }
                    '{' if at(i) == Some('{') => {
                        lit.push('{');
                        i += 1;
                    }
                    '}' if at(i) == Some('}') => {
                        lit.push('}');
                        i += 1;
                    }
                    '{' => {
                        if !lit.is_empty() {
                            parts.push(InterpPart::Lit(std::mem::take(&mut lit)));
                        }
                        let hole_start = off(i);
                        let mut depth = 1;
                        let mut hole = String::new();
                        let mut in_str = false;
                        loop {
                            let Some(h) = at(i) else {
                                return Err(ExprError::at(
                                    hole_start,
                                    "a {…} in an interpolated string is not closed",
                                ));
                            };
                            i += 1;
                            if h == '"' {
                                in_str = !in_str;
                            } else if !in_str && h == '{' {
                                depth += 1;
                            } else if !in_str && h == '}' {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            hole.push(h);
                        }
                        parts.push(InterpPart::Hole(hole, hole_start));
                    }
                    d => lit.push(d),
                }
            }
            if !lit.is_empty() {
                parts.push(InterpPart::Lit(lit));
            }
            out.push((Tok::Interp(parts), start));
            continue;
        }
        if c == '\'' {
            let (ch, len) = match (at(i + 1), at(i + 2), at(i + 3)) {
                (Some('\\'), Some(e), Some('\'')) => (
                    escape(e).ok_or_else(|| ExprError::at(start, "unknown escape in a char"))?,
                    4,
                ),
                (Some(ch), Some('\''), _) => (ch, 3),
                _ => {
                    return Err(ExprError::at(
                        start,
                        "a char literal must be one character in single quotes",
                    ));
                }
            };
            out.push((Tok::Char(ch), start));
            i += len;
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)]
            .iter()
            .map(|c| c.1)
            .collect();
        match PUNCTS.iter().find(|p| rest.starts_with(**p)) {
            Some(p) => {
                out.push((Tok::Punct(p), start));
                i += p.chars().count();
            }
            None => return Err(ExprError::at(start, format!("unexpected character '{c}'"))),
        }
    }
    Ok(out)
}

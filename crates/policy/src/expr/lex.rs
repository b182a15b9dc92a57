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

/// Longest first where one is a prefix of another. `<<` and `>>` are not tokens: `>>` closes
/// two generic argument lists (`List<List<int>>`), so the parser reads shifts from two adjacent
/// `<` or `>`.
const PUNCTS: &[&str] = &[
    "??=", "?.", "?[", "??", "==", "!=", "<=", ">=", "&&", "||", "=>", "++", "--", "+=", "-=",
    "*=", "/=", "%=", "&=", "|=", "^=", "+", "-", "*", "/", "%", "<", ">", "!", "?", ":", ".", ",",
    "(", ")", "[", "]", "{", "}", ";", "=", "&", "|", "^", "~",
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

/// The lexer's place in the source: characters with their byte offsets.
struct Lexer<'s> {
    src: &'s str,
    chars: Vec<(usize, char)>,
    i: usize,
}

impl Lexer<'_> {
    fn at(&self, i: usize) -> Option<char> {
        self.chars.get(i).map(|c| c.1)
    }

    /// The byte offset of character `i` (the source's end past the last).
    fn off(&self, i: usize) -> usize {
        self.chars.get(i).map_or(self.src.len(), |c| c.0)
    }

    /// The next character, taken.
    fn take(&mut self) -> Option<char> {
        let c = self.at(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn skip_line(&mut self) {
        while self.at(self.i).is_some_and(|c| c != '\n') {
            self.i += 1;
        }
    }

    fn ident(&mut self) -> Tok {
        let mut s = String::new();
        while let Some(d) = self
            .at(self.i)
            .filter(|d| d.is_ascii_alphanumeric() || *d == '_')
        {
            s.push(d);
            self.i += 1;
        }
        Tok::Ident(s)
    }

    fn number(&mut self, start: usize) -> Result<Tok, ExprError> {
        let mut s = String::new();
        let mut double = false;
        while let Some(d) = self.at(self.i) {
            let fraction =
                d == '.' && !double && self.at(self.i + 1).is_some_and(|e| e.is_ascii_digit());
            if !(d.is_ascii_digit() || fraction) {
                break;
            }
            double |= fraction;
            s.push(d);
            self.i += 1;
        }
        if matches!(self.at(self.i), Some('e' | 'E'))
            && self
                .at(self.i + 1)
                .is_some_and(|d| d.is_ascii_digit() || d == '-' || d == '+')
        {
            double = true;
            s.push('e');
            self.i += 1;
            while let Some(d) = self
                .at(self.i)
                .filter(|d| d.is_ascii_digit() || *d == '-' || *d == '+')
            {
                s.push(d);
                self.i += 1;
            }
        }
        // Suffixes: L, U, UL, d, m, f.
        while let Some(suffix) = self.at(self.i).filter(|d| "LlUudDmMfF".contains(*d)) {
            double |= !matches!(suffix, 'L' | 'l' | 'U' | 'u');
            self.i += 1;
        }
        if double {
            return s
                .parse()
                .map(Tok::Double)
                .map_err(|_| ExprError::at(start, "bad number"));
        }
        s.parse()
            .map(Tok::Int)
            .map_err(|_| ExprError::at(start, format!("the number {s} is too large")))
    }

    /// An escape after `\\` in a string.
    fn escaped(&mut self) -> Result<char, ExprError> {
        let e = self.at(self.i).and_then(escape).ok_or_else(|| {
            ExprError::at(self.off(self.i), "unknown escape sequence in a string")
        })?;
        self.i += 1;
        Ok(e)
    }

    /// `"…"` or `@"…"` (verbatim: no escapes, `""` for a quote), the opening quote taken.
    fn string(&mut self, start: usize, verbatim: bool) -> Result<Tok, ExprError> {
        let mut s = String::new();
        loop {
            let d = self
                .take()
                .ok_or_else(|| ExprError::at(start, "a string is not closed"))?;
            match d {
                '"' if verbatim && self.at(self.i) == Some('"') => {
                    s.push('"');
                    self.i += 1;
                }
                '"' => return Ok(Tok::Str(s)),
                '\\' if !verbatim => s.push(self.escaped()?),
                d => s.push(d),
            }
        }
    }

    fn skip_block_comment(&mut self, start: usize) -> Result<(), ExprError> {
        self.i += 2;
        loop {
            match (self.at(self.i), self.at(self.i + 1)) {
                (Some('*'), Some('/')) => {
                    self.i += 2;
                    return Ok(());
                }
                (Some(_), _) => self.i += 1,
                (None, _) => return Err(ExprError::at(start, "a /* comment is not closed")),
            }
        }
    }

    /// `0x1F` (and its `L`/`U` suffixes).
    fn hex(&mut self, start: usize) -> Result<Tok, ExprError> {
        self.i += 2;
        let mut s = String::new();
        while let Some(d) = self.at(self.i).filter(char::is_ascii_hexdigit) {
            s.push(d);
            self.i += 1;
        }
        while self.at(self.i).is_some_and(|d| "uUlL".contains(d)) {
            self.i += 1;
        }
        i64::from_str_radix(&s, 16)
            .map(Tok::Int)
            .map_err(|_| ExprError::at(start, "bad hexadecimal number"))
    }

    /// `$"…{expr}…"` (or `$@"…"`, verbatim), the opening taken.
    fn interpolated(&mut self, start: usize, verbatim: bool) -> Result<Tok, ExprError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        loop {
            let d = self
                .take()
                .ok_or_else(|| ExprError::at(start, "an interpolated string is not closed"))?;
            match d {
                '"' if verbatim && self.at(self.i) == Some('"') => {
                    lit.push('"');
                    self.i += 1;
                }
                '"' => break,
                '\\' if !verbatim => lit.push(self.escaped()?),
                '{' | '}' if self.at(self.i) == Some(d) => {
                    lit.push(d);
                    self.i += 1;
                }
                '{' => {
                    if !lit.is_empty() {
                        parts.push(InterpPart::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(self.hole()?);
                }
                d => lit.push(d),
            }
        }
        if !lit.is_empty() {
            parts.push(InterpPart::Lit(lit));
        }
        Ok(Tok::Interp(parts))
    }

    /// The source of a `{…}` in an interpolated string, the `{` taken.
    fn hole(&mut self) -> Result<InterpPart, ExprError> {
        let hole_start = self.off(self.i);
        let mut depth = 1;
        let mut hole = String::new();
        let mut in_str = false;
        loop {
            let h = self.take().ok_or_else(|| {
                ExprError::at(hole_start, "a {…} in an interpolated string is not closed")
            })?;
            if h == '"' {
                in_str = !in_str;
            } else if !in_str && h == '{' {
                depth += 1;
            } else if !in_str && h == '}' {
                depth -= 1;
                if depth == 0 {
                    return Ok(InterpPart::Hole(hole, hole_start));
                }
            }
            hole.push(h);
        }
    }

    fn char_literal(&mut self, start: usize) -> Result<Tok, ExprError> {
        let i = self.i;
        let (ch, len) = match (self.at(i + 1), self.at(i + 2), self.at(i + 3)) {
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
        self.i += len;
        Ok(Tok::Char(ch))
    }

    fn punct(&mut self, start: usize, c: char) -> Result<Tok, ExprError> {
        let end = self.chars.len().min(self.i + 3);
        let rest: String = self.chars[self.i..end].iter().map(|c| c.1).collect();
        match PUNCTS.iter().find(|p| rest.starts_with(**p)) {
            Some(p) => {
                self.i += p.chars().count();
                Ok(Tok::Punct(p))
            }
            None => Err(ExprError::at(start, format!("unexpected character '{c}'"))),
        }
    }

    /// The next token, or `None` at the end.
    fn token(&mut self) -> Result<Option<Spanned>, ExprError> {
        loop {
            let Some(c) = self.at(self.i) else {
                return Ok(None);
            };
            let start = self.off(self.i);
            let next = self.at(self.i + 1);
            let tok = match c {
                c if c.is_whitespace() => {
                    self.i += 1;
                    continue;
                }
                '/' if next == Some('/') => {
                    self.skip_line();
                    continue;
                }
                '/' if next == Some('*') => {
                    self.skip_block_comment(start)?;
                    continue;
                }
                '0' if matches!(next, Some('x' | 'X')) => self.hex(start)?,
                c if c.is_ascii_alphabetic() || c == '_' => self.ident(),
                c if c.is_ascii_digit() => self.number(start)?,
                '"' => {
                    self.i += 1;
                    self.string(start, false)?
                }
                '@' if next == Some('"') => {
                    self.i += 2;
                    self.string(start, true)?
                }
                '$' if next == Some('"') => {
                    self.i += 2;
                    self.interpolated(start, false)?
                }
                '$' if next == Some('@') && self.at(self.i + 2) == Some('"') => {
                    self.i += 3;
                    self.interpolated(start, true)?
                }
                '@' if next == Some('$') && self.at(self.i + 2) == Some('"') => {
                    self.i += 3;
                    self.interpolated(start, true)?
                }
                '\'' => self.char_literal(start)?,
                c => self.punct(start, c)?,
            };
            return Ok(Some((tok, start)));
        }
    }
}

pub fn lex(src: &str) -> Result<Vec<Spanned>, ExprError> {
    let mut lexer = Lexer {
        src,
        chars: src.char_indices().collect(),
        i: 0,
    };
    let mut out = Vec::new();
    while let Some(token) = lexer.token()? {
        out.push(token);
    }
    Ok(out)
}

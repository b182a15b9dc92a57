//! The OData `$filter` subset APIM lists accept.
//!
//! Grammar (case-insensitive keywords):
//! ```text
//! expr    := and ('or' and)*
//! and     := unary ('and' unary)*
//! unary   := 'not' unary | '(' expr ')' | compare | call
//! compare := field ('eq' | 'ne') literal
//! call    := ('startswith' | 'endswith' | 'contains') '(' field ',' literal ')'
//! field   := 'name' | 'properties/' ident | ident
//! literal := 'string' (with '' for a quote) | number | true | false | null
//! ```
//! Invariant: the parser never panics; every error names the byte offset where it failed.

use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// The resource id.
    Name,
    /// A top-level property, e.g. `displayName`.
    Property(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Compare {
        field: Field,
        op: Op,
        value: Value,
    },
    /// All of them. Chains of `and` (and of `or`) are kept flat, so that a filter listing
    /// thousands of names nests one level, not thousands.
    And(Vec<Filter>),
    /// Any of them.
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid $filter at position {position}: {message}")]
pub struct FilterError {
    pub position: usize,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    Comma,
}

fn tokenize(input: &str) -> Result<Vec<(usize, Tok)>, FilterError> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = input.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (pos, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((pos, Tok::LParen));
                i += 1
            }
            ')' => {
                out.push((pos, Tok::RParen));
                i += 1
            }
            ',' => {
                out.push((pos, Tok::Comma));
                i += 1
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => {
                            return Err(FilterError {
                                position: pos,
                                message: "unterminated string literal".into(),
                            });
                        }
                        Some((_, '\'')) => {
                            if matches!(chars.get(i + 1), Some((_, '\''))) {
                                s.push('\'');
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some((_, ch)) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push((pos, Tok::Str(s)));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].1.is_ascii_digit() || chars[i].1 == '.') {
                    i += 1;
                }
                let text: String = chars[start..i].iter().map(|(_, c)| c).collect();
                let n = text.parse::<f64>().map_err(|_| FilterError {
                    position: pos,
                    message: format!("'{text}' is not a number"),
                })?;
                out.push((pos, Tok::Num(n)));
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].1.is_alphanumeric() || matches!(chars[i].1, '_' | '/' | '$' | '.'))
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().map(|(_, c)| c).collect();
                out.push((pos, Tok::Ident(text)));
            }
            other => {
                return Err(FilterError {
                    position: pos,
                    message: format!("unexpected character '{other}'"),
                });
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 64;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn here(&self) -> usize {
        self.toks.get(self.pos).map(|(p, _)| *p).unwrap_or(self.end)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, FilterError> {
        Err(FilterError {
            position: self.here(),
            message: message.into(),
        })
    }
    fn keyword(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }
    fn expect(&mut self, tok: Tok, what: &str) -> Result<(), FilterError> {
        if self.peek() == Some(&tok) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(format!("expected {what}"))
        }
    }

    fn expr(&mut self) -> Result<Filter, FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("expression nested too deeply");
        }
        let mut any = vec![self.and()?];
        while self.keyword("or") {
            self.pos += 1;
            any.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Filter::Or(any)
        })
    }

    fn and(&mut self) -> Result<Filter, FilterError> {
        let mut all = vec![self.unary()?];
        while self.keyword("and") {
            self.pos += 1;
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Filter::And(all)
        })
    }

    fn unary(&mut self) -> Result<Filter, FilterError> {
        if self.keyword("not") {
            self.pos += 1;
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return self.err("expression nested too deeply");
            }
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let inner = self.expr()?;
            self.expect(Tok::RParen, "')'")?;
            return Ok(inner);
        }
        for (name, op) in [
            ("startswith", Op::StartsWith),
            ("endswith", Op::EndsWith),
            ("contains", Op::Contains),
        ] {
            if self.keyword(name) {
                self.pos += 1;
                self.expect(Tok::LParen, "'(' after function name")?;
                let field = self.field()?;
                self.expect(Tok::Comma, "','")?;
                let value = self.literal()?;
                if !value.is_string() {
                    return self.err(format!("{name} takes a string literal"));
                }
                self.expect(Tok::RParen, "')'")?;
                return Ok(Filter::Compare { field, op, value });
            }
        }
        let field = self.field()?;
        let op = if self.keyword("eq") {
            Op::Eq
        } else if self.keyword("ne") {
            Op::Ne
        } else {
            return self.err("expected 'eq' or 'ne'");
        };
        self.pos += 1;
        let value = self.literal()?;
        Ok(Filter::Compare { field, op, value })
    }

    fn field(&mut self) -> Result<Field, FilterError> {
        let Some(Tok::Ident(name)) = self.peek().cloned() else {
            return self.err("expected a field name");
        };
        let field = if name.eq_ignore_ascii_case("name") {
            Field::Name
        } else {
            let prop = name.strip_prefix("properties/").unwrap_or(&name);
            if prop.is_empty() || !prop.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return self.err(format!("'{name}' is not a field that can be filtered on"));
            }
            Field::Property(prop.to_string())
        };
        self.pos += 1;
        Ok(field)
    }

    fn literal(&mut self) -> Result<Value, FilterError> {
        let v = match self.peek() {
            Some(Tok::Str(s)) => Value::String(s.clone()),
            Some(Tok::Num(n)) => serde_json::Number::from_f64(*n)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("true") => Value::Bool(true),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("false") => Value::Bool(false),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("null") => Value::Null,
            _ => return self.err("expected a literal ('text', a number, true, false or null)"),
        };
        self.pos += 1;
        Ok(v)
    }
}

impl Filter {
    pub fn parse(input: &str) -> Result<Filter, FilterError> {
        let toks = tokenize(input)?;
        let mut p = Parser {
            toks,
            pos: 0,
            end: input.len(),
            depth: 0,
        };
        if p.peek().is_none() {
            return p.err("the filter is empty");
        }
        let f = p.expr()?;
        if p.peek().is_some() {
            return p.err("unexpected text after the end of the expression");
        }
        Ok(f)
    }

    /// Evaluates the filter against a resource id and its properties. String comparisons
    /// ignore case, as APIM's do.
    pub fn matches(&self, name: &str, properties: &Value) -> bool {
        match self {
            Filter::And(all) => all.iter().all(|f| f.matches(name, properties)),
            Filter::Or(any) => any.iter().any(|f| f.matches(name, properties)),
            Filter::Not(a) => !a.matches(name, properties),
            Filter::Compare { field, op, value } => {
                let actual = match field {
                    Field::Name => Value::String(name.to_string()),
                    Field::Property(p) => properties.get(p).cloned().unwrap_or(Value::Null),
                };
                compare(&actual, op, value)
            }
        }
    }
}

fn compare(actual: &Value, op: &Op, expected: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.to_lowercase()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.as_f64().map(|f| f.to_string()).unwrap_or_default()),
        _ => None,
    };
    match op {
        Op::Eq => match (text(actual), text(expected)) {
            (Some(a), Some(b)) => a == b,
            (None, None) => actual.is_null() && expected.is_null(),
            _ => false,
        },
        Op::Ne => !compare(actual, &Op::Eq, expected),
        Op::StartsWith | Op::EndsWith | Op::Contains => {
            let (Some(a), Some(b)) = (text(actual), text(expected)) else {
                return false;
            };
            match op {
                Op::StartsWith => a.starts_with(&b),
                Op::EndsWith => a.ends_with(&b),
                _ => a.contains(&b),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn long_chains_stay_flat() {
        let names: Vec<String> = (0..5_000).map(|i| format!("name eq 'api{i}'")).collect();
        let f = Filter::parse(&names.join(" or ")).unwrap();
        assert!(matches!(&f, Filter::Or(any) if any.len() == 5_000));
        let run = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || f.matches("api4999", &Value::Null) && !f.matches("x", &Value::Null))
            .unwrap();
        assert!(run.join().unwrap());
    }

    #[test]
    fn parses_and_matches() {
        let f =
            Filter::parse("startswith(properties/displayName, 'Echo') and name ne 'x'").unwrap();
        assert!(f.matches("echo", &json!({"displayName": "echo api"})));
        assert!(!f.matches("x", &json!({"displayName": "echo api"})));
        let f = Filter::parse("contains(name,'o''b') or (displayName eq 'A')").unwrap();
        assert!(f.matches("fo'bar", &json!({})));
        assert!(f.matches("z", &json!({"displayName": "a"})));
        assert!(Filter::parse("name eq").is_err());
        assert!(Filter::parse("name gt 'a'").is_err());
        assert!(Filter::parse("startswith(name 'a')").is_err());
        assert!(Filter::parse("").is_err());
        let e = Filter::parse("name eq 'a' xyz").unwrap_err();
        assert_eq!(e.position, 12);
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,200}") {
            let _ = Filter::parse(&s);
        }

        #[test]
        fn parser_never_panics_on_filter_like_text(s in "(name|properties/displayName|eq|ne|and|or|not|startswith|contains|\\(|\\)|,|'[a-z']*'| ){0,40}") {
            let _ = Filter::parse(&s);
        }

        #[test]
        fn eq_filter_matches_exactly_its_value(v in "[a-zA-Z0-9 _-]{0,20}", other in "[a-zA-Z0-9 _-]{0,20}") {
            let f = Filter::parse(&format!("name eq '{}'", v)).unwrap();
            let empty = serde_json::json!({});
            prop_assert!(f.matches(&v, &empty));
            prop_assert_eq!(f.matches(&other, &serde_json::json!({})), other.to_lowercase() == v.to_lowercase());
        }

        #[test]
        fn startswith_agrees_with_str(prefix in "[a-z]{0,5}", name in "[a-z]{0,10}") {
            let f = Filter::parse(&format!("startswith(name, '{}')", prefix)).unwrap();
            prop_assert_eq!(f.matches(&name, &serde_json::json!({})), name.starts_with(&prefix));
        }
    }
}

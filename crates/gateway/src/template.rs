//! APIM URL templates (`/users/{id}/orders/{*rest}?date={date}`, and APIM's wildcard
//! operation `/*`) compiled once and matched against request paths without allocation on the
//! miss path.
//!
//! Invariant: of the templates matching a request, the most specific wins — more literal
//! segments, then more segments mixing literals and parameters, then more query parameters,
//! then no wildcard; that ordering is `Template::specificity`, used by the router to rank
//! candidates. `docs/routing.md` has the rules as a table, each row a test.

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Param(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// The whole segment is literal text (compared case-insensitively).
    Literal(String),
    /// The whole segment is one parameter.
    Param(String),
    /// Literal text and parameters inside one segment, e.g. `{name}.{ext}`.
    Mixed(Vec<Part>),
    /// `{*name}` or APIM's `*`: the rest of the path, any number of segments including none;
    /// `{*name}` takes it as a parameter.
    Wildcard(Option<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    segments: Vec<Segment>,
    /// Query parameters named in the template: `(query name, template parameter or literal)`.
    query: Vec<(String, Option<String>, Option<String>)>,
    literals: usize,
    mixed: usize,
    wildcard: bool,
}

fn parse_parts(seg: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut rest = seg;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Literal(rest[..open].to_ascii_lowercase()));
        }
        let after = &rest[open + 1..];
        let close = after.find('}').unwrap_or(after.len());
        parts.push(Part::Param(after[..close].to_string()));
        rest = after.get(close + 1..).unwrap_or("");
    }
    if !rest.is_empty() {
        parts.push(Part::Literal(rest.to_ascii_lowercase()));
    }
    parts
}

impl Template {
    pub fn parse(template: &str) -> Template {
        let (path, query) = template.split_once('?').unwrap_or((template, ""));
        let mut segments = Vec::new();
        let (mut literals, mut mixed) = (0, 0);
        let mut wildcard = false;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            // A wildcard takes the rest: the management API refuses one that is not last.
            if seg == "*" {
                segments.push(Segment::Wildcard(None));
                wildcard = true;
                break;
            }
            if let Some(name) = seg.strip_prefix("{*").and_then(|s| s.strip_suffix('}')) {
                segments.push(Segment::Wildcard(Some(name.to_string())));
                wildcard = true;
                break;
            }
            let parts = parse_parts(seg);
            match parts.as_slice() {
                [Part::Literal(l)] => {
                    literals += 1;
                    segments.push(Segment::Literal(l.clone()));
                }
                [Part::Param(p)] => segments.push(Segment::Param(p.clone())),
                _ => {
                    mixed += 1;
                    segments.push(Segment::Mixed(parts));
                }
            }
        }
        let mut q = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
                Some(param) => q.push((name.to_string(), Some(param.to_string()), None)),
                None => q.push((name.to_string(), None, Some(value.to_string()))),
            }
        }
        Template {
            segments,
            query: q,
            literals,
            mixed,
            wildcard,
        }
    }

    /// Higher is more specific: literal segments, then segments mixing literals and
    /// parameters, then query parameters, then no wildcard. (Among templates that match one
    /// path, those without a wildcard have as many segments as the path, so the count of
    /// segments decides nothing a wildcard's absence does not.)
    pub fn specificity(&self) -> (usize, usize, usize, bool) {
        (self.literals, self.mixed, self.query.len(), !self.wildcard)
    }

    /// Matches a request path (percent-encoded, starting with `/`) and query string; returns the
    /// template parameters' values.
    pub fn matches(&self, path: &str, query: Option<&str>) -> Option<Vec<(String, String)>> {
        let mut captured = Vec::new();
        self.walk(path, query, Some(&mut captured))
            .then_some(captured)
    }

    /// Whether a request path and query string match, as [`Template::matches`] decides, without
    /// taking the parameters' values. Routing asks only this: most requests never need the
    /// values (the policy engine's `MatchedParameters` takes them), and taking them costs an
    /// allocation per parameter.
    pub fn is_match(&self, path: &str, query: Option<&str>) -> bool {
        self.walk(path, query, None)
    }

    fn walk(
        &self,
        path: &str,
        query: Option<&str>,
        mut captured: Option<&mut Vec<(String, String)>>,
    ) -> bool {
        let mut segs = path.split('/').filter(|s| !s.is_empty()).peekable();
        for (i, seg) in self.segments.iter().enumerate() {
            match seg {
                Segment::Wildcard(name) => {
                    if let (Some(out), Some(name)) = (captured.as_deref_mut(), name) {
                        let mut rest = String::new();
                        for (k, s) in segs.by_ref().enumerate() {
                            if k > 0 {
                                rest.push('/');
                            }
                            rest.push_str(s);
                        }
                        out.push((name.clone(), rest));
                    }
                    debug_assert_eq!(i + 1, self.segments.len());
                    break;
                }
                Segment::Literal(l) => match segs.next() {
                    Some(s) if s.eq_ignore_ascii_case(l) => {}
                    _ => return false,
                },
                Segment::Param(name) => {
                    let Some(s) = segs.next() else {
                        return false;
                    };
                    if let Some(out) = captured.as_deref_mut() {
                        out.push((name.clone(), decode(s)));
                    }
                }
                Segment::Mixed(parts) => {
                    let Some(s) = segs.next() else {
                        return false;
                    };
                    if match_mixed(parts, s, captured.as_deref_mut()).is_none() {
                        return false;
                    }
                }
            }
        }
        if !self.wildcard && segs.next().is_some() {
            return false;
        }
        for (name, param, literal) in &self.query {
            let Some(value) = query_value(query.unwrap_or(""), name) else {
                return false;
            };
            match (param, literal) {
                (Some(p), _) => {
                    if let Some(out) = captured.as_deref_mut() {
                        out.push((p.clone(), value));
                    }
                }
                (None, Some(l)) if !l.is_empty() && &value != l => return false,
                _ => {}
            }
        }
        true
    }
}

fn match_mixed(
    parts: &[Part],
    seg: &str,
    mut out: Option<&mut Vec<(String, String)>>,
) -> Option<()> {
    let lower = seg.to_ascii_lowercase();
    let mut pos = 0;
    for (i, part) in parts.iter().enumerate() {
        match part {
            Part::Literal(l) => {
                if !lower[pos..].starts_with(l.as_str()) {
                    return None;
                }
                pos += l.len();
            }
            Part::Param(name) => {
                let end = match parts.get(i + 1) {
                    Some(Part::Literal(next)) => pos + lower[pos..].find(next.as_str())?,
                    _ => seg.len(),
                };
                if end == pos {
                    return None;
                }
                if let Some(out) = out.as_deref_mut() {
                    out.push((name.clone(), decode(&seg[pos..end])));
                }
                pos = end;
            }
        }
    }
    (pos == seg.len()).then_some(())
}

/// Percent-decodes a path segment (invalid escapes are kept as they are, invalid UTF-8
/// replaced).
pub(crate) fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The decoded value of query parameter `name` (`+` a space, as in forms), if present.
pub(crate) fn query_value(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let t = Template::parse("/users/{id}/orders");
        assert_eq!(
            t.matches("/users/42/orders", None).unwrap(),
            vec![("id".into(), "42".into())]
        );
        assert!(t.matches("/users/42", None).is_none());
        assert!(t.matches("/users/42/orders/x", None).is_none());
        let w = Template::parse("/files/{*path}");
        assert_eq!(
            w.matches("/files/a/b/c.txt", None).unwrap()[0].1,
            "a/b/c.txt"
        );
        let m = Template::parse("/img/{name}.{ext}");
        assert_eq!(
            m.matches("/img/cat.png", None).unwrap(),
            vec![("name".into(), "cat".into()), ("ext".into(), "png".into())]
        );
        let q = Template::parse("/search?q={term}&mode=full");
        assert_eq!(
            q.matches("/search", Some("q=a%20b&mode=full")).unwrap(),
            vec![("term".into(), "a b".into())]
        );
        assert!(q.matches("/search", Some("mode=full")).is_none());
        assert!(q.matches("/search", Some("q=x&mode=lite")).is_none());
        let root = Template::parse("/");
        assert!(root.matches("/", None).is_some());
        assert!(root.matches("/x", None).is_none());
        assert!(Template::parse("/a/b").specificity() > Template::parse("/a/{x}").specificity());
        let star = Template::parse("/files/*");
        assert!(star.matches("/files", None).unwrap().is_empty());
        assert!(star.matches("/files/a/b", None).unwrap().is_empty());
        assert!(star.matches("/other", None).is_none());
        assert!(Template::parse("/").specificity() > Template::parse("/*").specificity());
        assert!(Template::parse("/{id}").specificity() > Template::parse("/*").specificity());
    }

    #[test]
    fn routing_decides_as_matching_does() {
        let templates = [
            "/",
            "/users/{id}/orders",
            "/files/{*path}",
            "/img/{name}.{ext}",
            "/search?q={term}&mode=full",
            "/a/B/{x}",
            "/{*rest}",
            "/*",
            "/files/*",
        ];
        let requests = [
            ("/", None),
            ("/users/42/orders", None),
            ("/users/42/orders/x", None),
            ("/users/42", None),
            ("/files", None),
            ("/files/a/b/c.txt", None),
            ("/img/cat.png", None),
            ("/img/cat", None),
            ("/img/.png", None),
            ("/search", Some("q=a%20b&mode=full")),
            ("/search", Some("mode=full")),
            ("/search", Some("q=x&mode=lite")),
            ("/a/b/c", None),
            ("/A/b/%20", None),
            ("//a//b//c//", None),
            ("/x/y", Some("z=1")),
        ];
        for template in templates {
            let t = Template::parse(template);
            for (path, query) in requests {
                assert_eq!(
                    t.is_match(path, query),
                    t.matches(path, query).is_some(),
                    "{template} against {path}?{query:?}"
                );
            }
        }
    }
}

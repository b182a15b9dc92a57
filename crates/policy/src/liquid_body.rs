//! `set-body template="liquid"`: APIM's Liquid (DotLiquid in its C# mode) on the `liquid` crate.
//! Filters have APIM's PascalCase names (`Upcase`, `AtLeast`, `Date` with a .NET format);
//! the Liquid names (`upcase`) work too. Templates are parsed when the policy is saved.
//!
//! What a template sees: `body` (the message body, as JSON when its content type is JSON, as
//! the JSON of its XML when it is XML, else its text) and `context` with APIM's bindable
//! members (`context.Request.Url.Path`, `context.Request.Headers`, `context.Response.StatusCode`, …).

use liquid_core::model::{
    ArrayView, DisplayCow, KString, KStringCow, ObjectView, ScalarCow, State, ValueView,
};
use liquid_core::parser::{FilterArguments, ParameterReflection};
use liquid_core::{
    Display_filter, Expression, Filter, FilterParameters, FilterReflection, FromFilterParameters,
    ParseFilter, Result, Runtime, Value,
};
use std::sync::OnceLock;

/// A compiled template.
pub struct Template(liquid::Template);

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiquidTemplate")
    }
}

/// A stdlib filter under APIM's name.
#[derive(Clone)]
struct Renamed<F> {
    name: &'static str,
    inner: F,
}

impl<F: ParseFilter + Clone + 'static> ParseFilter for Renamed<F> {
    fn parse(&self, arguments: FilterArguments) -> Result<Box<dyn Filter>> {
        self.inner.parse(arguments)
    }

    fn reflection(&self) -> &dyn FilterReflection {
        self
    }
}

impl<F: ParseFilter + Clone> FilterReflection for Renamed<F> {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        self.inner.reflection().description()
    }
    fn positional_parameters(&self) -> &'static [ParameterReflection] {
        self.inner.reflection().positional_parameters()
    }
    fn keyword_parameters(&self) -> &'static [ParameterReflection] {
        self.inner.reflection().keyword_parameters()
    }
}

#[derive(Debug, FilterParameters)]
struct DateArgs {
    #[parameter(description = "A .NET date format string.", arg_type = "str")]
    format: Expression,
}

/// `Date:"yyyy-MM-dd"`: a date in the input text, written with a .NET format string.
#[derive(Clone, ParseFilter, FilterReflection)]
#[filter(
    name = "Date",
    description = "Formats a date with a .NET format string.",
    parameters(DateArgs),
    parsed(DateFilter)
)]
struct DotnetDate;

#[derive(Debug, FromFilterParameters, Display_filter)]
#[name = "Date"]
struct DateFilter {
    #[parameters]
    args: DateArgs,
}

impl Filter for DateFilter {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        let args = self.args.evaluate(runtime)?;
        let text = input.to_kstr().into_owned();
        Ok(
            match crate::expr::format_date(&text, args.format.as_str()) {
                Some(s) => Value::scalar(s),
                None => input.to_value(),
            },
        )
    }
}

fn parser() -> &'static std::result::Result<liquid::Parser, String> {
    static PARSER: OnceLock<std::result::Result<liquid::Parser, String>> = OnceLock::new();
    PARSER.get_or_init(|| {
        use liquid_lib::stdlib as s;
        macro_rules! renamed {
            ($builder:expr, $($name:literal => $f:expr),* $(,)?) => {
                $builder$(.filter(Box::new(Renamed { name: $name, inner: $f }) as Box<dyn ParseFilter>))*
            };
        }
        let builder = liquid::ParserBuilder::with_stdlib().filter(DotnetDate);
        let builder = renamed!(builder,
            "Abs" => s::Abs, "Append" => s::Append, "AtLeast" => s::AtLeast, "AtMost" => s::AtMost,
            "Capitalize" => s::Capitalize, "Compact" => s::Compact, "Default" => s::Default,
            "DividedBy" => s::DividedBy, "Downcase" => s::Downcase, "Escape" => s::Escape,
            "H" => s::Escape, "First" => s::First, "Join" => s::Join, "Last" => s::Last,
            "Lstrip" => s::Lstrip, "Map" => s::Map, "Minus" => s::Minus, "Modulo" => s::Modulo,
            "NewlineToBr" => s::NewlineToBr, "Plus" => s::Plus, "Prepend" => s::Prepend,
            "Remove" => s::Remove, "RemoveFirst" => s::RemoveFirst, "Replace" => s::Replace,
            "ReplaceFirst" => s::ReplaceFirst, "Round" => s::Round, "Rstrip" => s::Rstrip,
            "Size" => s::Size, "Slice" => s::Slice, "Sort" => s::Sort, "Split" => s::Split,
            "Strip" => s::Strip, "StripHtml" => s::StripHtml, "StripNewlines" => s::StripNewlines,
            "Times" => s::Times, "Truncate" => s::Truncate, "TruncateWords" => s::TruncateWords,
            "Uniq" => s::Uniq, "Upcase" => s::Upcase, "UrlDecode" => s::UrlDecode,
            "UrlEncode" => s::UrlEncode,
        );
        builder.build().map_err(|e| e.to_string())
    })
}

/// Parses a template (when the policy is saved).
pub fn compile(source: &str) -> std::result::Result<Template, String> {
    integers_fit(source)?;
    let parser = parser().as_ref().map_err(Clone::clone)?;
    parser.parse(source).map(Template).map_err(|e| {
        e.to_string()
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    })
}

/// The `liquid` crate's parser assumes every integer literal in a tag fits in 64 bits (it
/// panics on one that does not): such a literal is refused here first. Text outside tags is
/// output as written, so long numbers there are fine.
fn integers_fit(source: &str) -> std::result::Result<(), String> {
    let bytes = source.as_bytes();
    let (mut in_tag, mut digits, mut i) = (false, 0usize, 0usize);
    while i < bytes.len() {
        let pair = bytes.get(i..i + 2);
        if !in_tag && matches!(pair, Some(b"{{") | Some(b"{%")) {
            in_tag = true;
            i += 2;
            continue;
        }
        if in_tag && matches!(pair, Some(b"}}") | Some(b"%}")) {
            in_tag = false;
            digits = 0;
            i += 2;
            continue;
        }
        digits = if in_tag && bytes[i].is_ascii_digit() {
            digits + 1
        } else {
            0
        };
        if digits > 18 {
            return Err(format!(
                "a number in a Liquid tag is too large (more than 18 digits, at byte {})",
                i + 1 - digits
            ));
        }
        i += 1;
    }
    Ok(())
}

/// Renders with `body` and `context` (JSON values, as the policy builds them). A member a
/// template names that the data lacks renders as nothing, as DotLiquid renders it (the `liquid`
/// crate would refuse the whole template).
pub fn render(
    t: &Template,
    body: serde_json::Value,
    context: serde_json::Value,
) -> std::result::Result<String, String> {
    let globals = Node::Object(vec![
        ("body".into(), Node::of(body, 0)),
        ("context".into(), Node::of(context, 0)),
    ]);
    let Node::Object(_) = &globals else {
        unreachable!("built as an object")
    };
    t.0.render(&globals).map_err(|e| {
        e.to_string()
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    })
}

/// A value of the data a template reads: objects answer every key (a missing one with nil).
#[derive(Debug)]
enum Node {
    Scalar(Value),
    Array(Vec<Node>),
    Object(Vec<(KString, Node)>),
    /// A member the data lacks: nil, whose own members are missing too.
    Missing,
}

static NIL: Node = Node::Missing;
static NIL_VALUE: Value = Value::Nil;

impl Node {
    /// JSON as a template's data (depth-bounded: a body nests at most as deep as its parser
    /// allows).
    fn of(v: serde_json::Value, depth: usize) -> Node {
        use serde_json::Value as J;
        match v {
            J::Null => Node::Scalar(Value::Nil),
            J::Bool(b) => Node::Scalar(Value::scalar(b)),
            J::Number(n) => Node::Scalar(match n.as_i64() {
                Some(i) => Value::scalar(i),
                None => Value::scalar(n.as_f64().unwrap_or(0.0)),
            }),
            J::String(s) => Node::Scalar(Value::scalar(s)),
            _ if depth > 128 => Node::Scalar(Value::Nil),
            J::Array(a) => Node::Array(a.into_iter().map(|x| Node::of(x, depth + 1)).collect()),
            J::Object(o) => Node::Object(
                o.into_iter()
                    .map(|(k, x)| (KString::from(k), Node::of(x, depth + 1)))
                    .collect(),
            ),
        }
    }
}

impl ValueView for Node {
    fn as_debug(&self) -> &dyn std::fmt::Debug {
        self
    }
    fn render(&self) -> DisplayCow<'_> {
        match self {
            Node::Scalar(v) => v.render(),
            Node::Missing => NIL_VALUE.render(),
            _ => DisplayCow::Owned(Box::new(self.to_value().render().to_string())),
        }
    }
    fn source(&self) -> DisplayCow<'_> {
        match self {
            Node::Scalar(v) => v.source(),
            Node::Missing => NIL_VALUE.source(),
            _ => DisplayCow::Owned(Box::new(self.to_value().source().to_string())),
        }
    }
    fn type_name(&self) -> &'static str {
        match self {
            Node::Scalar(v) => v.type_name(),
            Node::Missing => NIL_VALUE.type_name(),
            Node::Array(_) => "array",
            Node::Object(_) => "object",
        }
    }
    fn query_state(&self, state: State) -> bool {
        match self {
            Node::Scalar(v) => v.query_state(state),
            Node::Missing => NIL_VALUE.query_state(state),
            Node::Array(a) => match state {
                State::Truthy => true,
                _ => a.is_empty(),
            },
            Node::Object(o) => match state {
                State::Truthy => true,
                _ => o.is_empty(),
            },
        }
    }
    fn to_kstr(&self) -> KStringCow<'_> {
        match self {
            Node::Scalar(v) => v.to_kstr(),
            Node::Missing => NIL_VALUE.to_kstr(),
            _ => KStringCow::from(self.render().to_string()),
        }
    }
    fn to_value(&self) -> Value {
        match self {
            Node::Scalar(v) => v.clone(),
            Node::Missing => Value::Nil,
            Node::Array(a) => Value::Array(a.iter().map(Node::to_value).collect()),
            Node::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_value())).collect())
            }
        }
    }
    fn as_scalar(&self) -> Option<ScalarCow<'_>> {
        match self {
            Node::Scalar(v) => v.as_scalar(),
            _ => None,
        }
    }
    fn as_array(&self) -> Option<&dyn ArrayView> {
        match self {
            Node::Array(_) => Some(self),
            _ => None,
        }
    }
    fn as_object(&self) -> Option<&dyn ObjectView> {
        match self {
            Node::Object(_) | Node::Missing => Some(self),
            _ => None,
        }
    }
    fn is_nil(&self) -> bool {
        matches!(self, Node::Scalar(Value::Nil) | Node::Missing)
    }
}

impl ArrayView for Node {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        match self {
            Node::Array(a) => a.len() as i64,
            _ => 0,
        }
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        match self {
            Node::Array(a) => Box::new(a.iter().map(|n| n as &dyn ValueView)),
            _ => Box::new(std::iter::empty()),
        }
    }
    fn contains_key(&self, index: i64) -> bool {
        ArrayView::get(self, index).is_some()
    }
    fn get(&self, index: i64) -> Option<&dyn ValueView> {
        let Node::Array(a) = self else { return None };
        let i = if index < 0 {
            a.len() as i64 + index
        } else {
            index
        };
        usize::try_from(i)
            .ok()
            .and_then(|i| <[Node]>::get(a, i))
            .map(|n| n as &dyn ValueView)
    }
}

impl ObjectView for Node {
    fn as_value(&self) -> &dyn ValueView {
        self
    }
    fn size(&self) -> i64 {
        match self {
            Node::Object(o) => o.len() as i64,
            _ => 0,
        }
    }
    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        match self {
            Node::Object(o) => Box::new(o.iter().map(|(k, _)| KStringCow::from(k.as_ref()))),
            _ => Box::new(std::iter::empty()),
        }
    }
    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        match self {
            Node::Object(o) => Box::new(o.iter().map(|(_, v)| v as &dyn ValueView)),
            _ => Box::new(std::iter::empty()),
        }
    }
    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        match self {
            Node::Object(o) => Box::new(
                o.iter()
                    .map(|(k, v)| (KStringCow::from(k.as_ref()), v as &dyn ValueView)),
            ),
            _ => Box::new(std::iter::empty()),
        }
    }
    fn contains_key(&self, _: &str) -> bool {
        true
    }
    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        let Node::Object(o) = self else {
            return Some(&NIL);
        };
        Some(
            o.iter()
                .find(|(k, _)| k.as_str() == index)
                .map_or(&NIL as &dyn ValueView, |(_, v)| v as &dyn ValueView),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(src: &str, body: serde_json::Value) -> String {
        let t = compile(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        render(&t, body, json!({"Request": {"Method": "POST"}}))
            .unwrap_or_else(|e| panic!("{src}: {e}"))
    }

    /// An integer too large for 64 bits in a tag is refused, not a panic in the parser (found
    /// by the `expression` fuzz target); in text it is output as written.
    #[test]
    fn integers_past_64_bits_in_tags_are_refused() {
        let e = compile("{% for x in 77777777777777777777777 %}{{ x }}{% endfor %}").unwrap_err();
        assert!(e.contains("too large"), "{e}");
        assert!(compile("{{ 99999999999999999999 | Plus: 1 }}").is_err());
        assert_eq!(
            run("id 123456789012345678901234 {{ 12 }}", json!({})),
            "id 123456789012345678901234 12"
        );
    }

    #[test]
    fn apims_filters_dates_and_missing_members() {
        let body =
            json!({"name": "ann", "items": [{"n": 1}, {"n": 2}], "when": "2026-12-07T10:05:00Z"});
        for (src, want) in [
            (
                "{{ body.name | Upcase }}-{{ body.name | upcase }}",
                "ANN-ANN",
            ),
            (
                "{{ body.missing.deeper }}|{{ body.missing | Default: 'none' }}",
                "|none",
            ),
            (
                "{% for i in body.items %}{{ i.n | Times: 10 }},{% endfor %}",
                "10,20,",
            ),
            ("{{ body.when | Date: 'yyyyMMddTHH:mm' }}", "20261207T10:05"),
            (
                "{{ body.items | Size }} {{ context.Request.Method }}",
                "2 POST",
            ),
            (
                "{% if body.name == 'ann' %}yes{% else %}no{% endif %}",
                "yes",
            ),
            ("{{ 'a b' | UrlEncode }} {{ 3 | AtLeast: 5 }}", "a%20b 5"),
        ] {
            assert_eq!(run(src, body.clone()), want, "{src}");
        }
    }

    #[test]
    fn a_bad_template_is_refused_when_saved() {
        assert!(compile("{% if x %}unclosed").is_err());
        assert!(compile("{{ x | NoSuchFilter }}").is_err());
    }
}

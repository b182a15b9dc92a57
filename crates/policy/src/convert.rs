//! json-to-xml and xml-to-json, as APIM converts bodies: JSON objects become elements under a
//! `<Document>` root, arrays repeated elements; XML becomes "JavaScript-friendly" JSON (repeated
//! elements as arrays, attributes as `@name`, text beside attributes as `#text`) or a direct form.

use serde_json::{Map, Value};

/// Why a body could not be converted (APIM's `ConversionFailure`): where the parser stopped.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConvertError {
    #[error("the body is not JSON: {message} at line {line}, column {column}")]
    NotJson {
        message: String,
        line: usize,
        column: usize,
    },
    #[error("the body is not XML: {message} at line {line}, column {column}")]
    NotXml {
        message: String,
        line: u32,
        column: u32,
    },
    #[error("the JSON is nested more than {0} levels deep")]
    TooDeep(usize),
}

/// How deeply a converted JSON document may nest.
const MAX_DEPTH: usize = 64;

fn element_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty()
        || !out
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
    {
        out.insert(0, '_');
    }
    out
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
}

fn write_value(name: &str, v: &Value, out: &mut String, depth: usize) -> Result<(), ConvertError> {
    if depth > MAX_DEPTH {
        return Err(ConvertError::TooDeep(MAX_DEPTH));
    }
    match v {
        Value::Array(items) => {
            for i in items {
                write_value(name, i, out, depth + 1)?;
            }
        }
        Value::Object(m) => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            for (k, v) in m {
                write_value(&element_name(k), v, out, depth + 1)?;
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        Value::Null => {
            out.push('<');
            out.push_str(name);
            out.push_str(" />");
        }
        Value::String(s) => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            escape(s, out);
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        other => {
            out.push('<');
            out.push_str(name);
            out.push('>');
            out.push_str(&other.to_string());
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
    }
    Ok(())
}

/// A JSON document as XML under `<Document>`.
pub fn json_to_xml(json: &str) -> Result<String, ConvertError> {
    let v: Value = serde_json::from_str(json).map_err(|e| ConvertError::NotJson {
        message: e
            .to_string()
            .split(" at line ")
            .next()
            .unwrap_or_default()
            .to_string(),
        line: e.line(),
        column: e.column(),
    })?;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    match &v {
        Value::Object(m) => {
            out.push_str("<Document>");
            for (k, v) in m {
                write_value(&element_name(k), v, &mut out, 0)?;
            }
            out.push_str("</Document>");
        }
        other => {
            out.push_str("<Document>");
            write_value("Item", other, &mut out, 0)?;
            out.push_str("</Document>");
        }
    }
    Ok(out)
}

fn node_to_json(node: roxmltree::Node, direct: bool, depth: usize) -> Value {
    if depth > 64 {
        return Value::Null;
    }
    let elements: Vec<roxmltree::Node> = node.children().filter(|c| c.is_element()).collect();
    let text: String = node
        .children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect::<String>()
        .trim()
        .to_string();
    let attrs: Vec<(String, String)> = node
        .attributes()
        .map(|a| (format!("@{}", a.name()), a.value().to_string()))
        .collect();
    if elements.is_empty() && attrs.is_empty() {
        return if text.is_empty() && direct {
            Value::Null
        } else {
            Value::String(text)
        };
    }
    let mut m = Map::new();
    for (k, v) in attrs {
        m.insert(k, Value::String(v));
    }
    for e in elements {
        let name = e.tag_name().name().to_string();
        let v = node_to_json(e, direct, depth + 1);
        match m.get_mut(&name) {
            Some(Value::Array(a)) => a.push(v),
            Some(existing) => {
                let first = existing.take();
                *existing = Value::Array(vec![first, v]);
            }
            None => {
                m.insert(name, v);
            }
        }
    }
    if !text.is_empty() {
        m.insert("#text".into(), Value::String(text));
    }
    Value::Object(m)
}

/// An XML document as JSON: `{"root": {...}}`.
pub fn xml_to_json(xml: &str, direct: bool) -> Result<String, ConvertError> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| ConvertError::NotXml {
        message: e
            .to_string()
            .split(" at ")
            .next()
            .unwrap_or_default()
            .to_string(),
        line: e.pos().row,
        column: e.pos().col,
    })?;
    let root = doc.root_element();
    let mut m = Map::new();
    m.insert(
        root.tag_name().name().to_string(),
        node_to_json(root, direct, 0),
    );
    Ok(Value::Object(m).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_of_apim_shapes() {
        let x = json_to_xml(r#"{"name": "a<b", "tags": ["x", "y"], "n": 1, "inner": {"ok": true}, "2bad key": null}"#).unwrap();
        assert_eq!(
            x,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Document><name>a&lt;b</name><tags>x</tags><tags>y</tags><n>1</n><inner><ok>true</ok></inner><_2bad_key /></Document>"
        );
        let j = xml_to_json(
            r#"<order id="7"><item>a</item><item>b</item><note>hi</note></order>"#,
            false,
        )
        .unwrap();
        assert_eq!(j, r#"{"order":{"@id":"7","item":["a","b"],"note":"hi"}}"#);
        assert!(matches!(
            json_to_xml("{\n  \"a\": ]"),
            Err(ConvertError::NotJson { line: 2, .. })
        ));
        assert!(matches!(
            xml_to_json("<a>", false),
            Err(ConvertError::NotXml { line: 1, .. })
        ));
        let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(
            json_to_xml(&format!("{{\"a\": {deep}}}")),
            Err(ConvertError::TooDeep(MAX_DEPTH))
        );
    }
}

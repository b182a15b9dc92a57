//! The one way files are formatted, so that equal content gives equal bytes (small Git
//! diffs): object keys sorted at every level, two-space indentation, a final newline.

use serde_json::{Map, Value};

/// `value` with the keys of every object in sorted order.
pub fn sorted(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), sorted(&m[k])))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Pretty, sorted JSON with a final newline.
pub fn to_file(value: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(&sorted(value)).expect("JSON values serialise");
    out.push(b'\n');
    out
}

/// An information file: `{"properties": {…}}`.
pub fn info_file(properties: &Map<String, Value>) -> Vec<u8> {
    let mut doc = Map::new();
    doc.insert("properties".into(), Value::Object(properties.clone()));
    to_file(&Value::Object(doc))
}

/// The `properties` of an information file. APIM's own GET shape (`id`, `name`, `type`
/// beside `properties`) is accepted too; other top-level keys are an error.
pub fn parse_info(bytes: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8".to_string())?;
    let text = text.trim_start_matches('\u{feff}');
    let doc: Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "line {}, column {}: the file is not valid JSON: {e}",
            e.line(),
            e.column()
        )
    })?;
    let Value::Object(mut doc) = doc else {
        return Err("the file must hold a JSON object".into());
    };
    let properties = match doc.remove("properties") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(p)) => p,
        Some(_) => return Err("'properties' must be an object".into()),
    };
    for key in ["id", "name", "type"] {
        doc.remove(key);
    }
    if let Some(key) = doc.keys().next() {
        return Err(format!(
            "unexpected top-level key '{key}': an information file holds {{\"properties\": {{…}}}}"
        ));
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn files_are_sorted_and_end_with_a_newline() {
        let v = json!({"b": 1, "a": {"d": [ {"z": 1, "y": 2} ], "c": true}});
        let text = String::from_utf8(to_file(&v)).unwrap();
        assert_eq!(
            text,
            "{\n  \"a\": {\n    \"c\": true,\n    \"d\": [\n      {\n        \"y\": 2,\n        \"z\": 1\n      }\n    ]\n  },\n  \"b\": 1\n}\n"
        );
    }

    #[test]
    fn information_files_name_what_is_wrong() {
        assert!(
            parse_info(b"{\"properties\": [1]}")
                .unwrap_err()
                .contains("object")
        );
        let e = parse_info(b"{\n \"properties\": {,}}").unwrap_err();
        assert!(e.starts_with("line 2, column"), "{e}");
        assert!(
            parse_info(b"{\"extra\": 1}")
                .unwrap_err()
                .contains("'extra'")
        );
        let p =
            parse_info(b"{\"id\": \"/x\", \"name\": \"x\", \"properties\": {\"a\": 1}}").unwrap();
        assert_eq!(p["a"], 1);
    }
}

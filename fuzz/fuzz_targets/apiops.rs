//! What an import reads never panics: archive bodies (zip, tar, gzip), information files,
//! override files, ARM templates with their expressions, folders of arbitrary files, and the
//! raw-form conversion of policy text.
#![no_main]

use gatehouse_apiops::{Files, archive, arm, json, overrides::Overrides, read};
use gatehouse_policy::doc::{stored_format_of_raw, unescape_xml_expressions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = archive::read(data, archive::LIMITS);
    let _ = json::parse_info(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Overrides::parse("o.yaml", text);
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
        let _ = arm::read(&v, None);
        let template = serde_json::json!({"resources": [{"type": "Microsoft.ApiManagement/service/apis", "name": text, "properties": {"displayName": text}}]});
        let _ = arm::read(&template, None);
    }
    let _ = stored_format_of_raw(text);
    let _ = unescape_xml_expressions(text);
    // Lines as "path<TAB>content" make a folder.
    let files: Files = text
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect();
    let _ = read::read(&files, None);
});

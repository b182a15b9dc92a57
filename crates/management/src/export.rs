//! `GET /apis/{id}?export=true&format=…`: an API's description, as APIM's contract answers it
//! — `{"id", "format", "value"}`, where `value` is the document for the plain formats and
//! `{"link": url}` for the `-link` formats, the URL a short-lived download served by the
//! management listener (`GET /exports/{token}`, no token needed: the URL is the capability).
//!
//! Invariant: a download link works for [`LINK_LIFETIME`] and names nothing but a random
//! token; the document holds no secret (it is made from the API's public properties).

use crate::openapi;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a download link works.
pub const LINK_LIFETIME: Duration = Duration::from_secs(300);
/// Downloads kept at once (the oldest go first).
const MAX_DOWNLOADS: usize = 256;

/// Which document an export asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    OpenApiYaml,
    OpenApiJson,
    Swagger,
    Wsdl,
    Wadl,
}

/// A `format` value: the document, whether it is a link, and the format the answer names.
pub fn parse_format(format: &str) -> Option<(Document, bool, &'static str)> {
    Some(match format {
        "" | "openapi+json" | "openapi-json" => (Document::OpenApiJson, false, "openapi+json"),
        "openapi" | "openapi-yaml" => (Document::OpenApiYaml, false, "openapi"),
        "swagger" | "swagger-json" => (Document::Swagger, false, "swagger-json"),
        "wsdl" => (Document::Wsdl, false, "wsdl"),
        "wadl" => (Document::Wadl, false, "wadl"),
        "openapi-link" => (Document::OpenApiYaml, true, "openapi-link"),
        "openapi+json-link" => (Document::OpenApiJson, true, "openapi-link"),
        "swagger-link" | "swagger-link-json" => (Document::Swagger, true, "swagger-link-json"),
        "wsdl-link" => (Document::Wsdl, true, "wsdl-link+xml"),
        "wadl-link" | "wadl-link-json" => (Document::Wadl, true, "wadl-link-json"),
        _ => return None,
    })
}

pub const FORMATS: &str = "openapi, openapi+json, swagger, wsdl, wadl, openapi-link, openapi+json-link, swagger-link, wsdl-link, wadl-link";

/// What an API's export is made from.
pub struct Source<'a> {
    pub api: &'a Map<String, Value>,
    pub operations: &'a [(String, Map<String, Value>)],
    /// The API's kept WSDL or WADL, if any.
    pub wsdl: Option<&'a str>,
    pub wadl: Option<&'a str>,
    /// The document of the API's kept `openapi` schema (its components), if any.
    pub components: Option<&'a Value>,
    pub gateway: &'a str,
}

/// The document (as JSON for the JSON formats, else as text) and its media type.
pub fn document(doc: Document, src: &Source<'_>) -> Result<(Value, &'static str), String> {
    Ok(match doc {
        Document::OpenApiJson => (
            openapi::export(src.api, src.gateway, src.operations, src.components),
            "application/json",
        ),
        Document::OpenApiYaml => {
            let v = openapi::export(src.api, src.gateway, src.operations, src.components);
            let text = serde_norway::to_string(&v).map_err(|e| e.to_string())?;
            (json!(text), "application/yaml")
        }
        Document::Swagger => (swagger2(src), "application/json"),
        Document::Wsdl => {
            let wsdl = src.wsdl.ok_or(
                "the API is not a SOAP API imported from a WSDL: export it as openapi or swagger",
            )?;
            (json!(wsdl), "application/wsdl+xml")
        }
        Document::Wadl => (
            json!(src.wadl.map(str::to_string).unwrap_or_else(|| wadl(src))),
            "application/vnd.sun.wadl+xml",
        ),
    })
}

/// The API as Swagger 2.0.
fn swagger2(src: &Source<'_>) -> Value {
    let v3 = openapi::export(src.api, src.gateway, src.operations, src.components);
    let server = v3["servers"][0]["url"].as_str().unwrap_or_default();
    let (scheme, rest) = server.split_once("://").unwrap_or(("https", server));
    let (host, base) = rest
        .split_once('/')
        .map_or((rest, String::new()), |(h, b)| (h, format!("/{b}")));
    let mut paths = Map::new();
    for (path, item) in v3["paths"].as_object().into_iter().flatten() {
        let mut out = Map::new();
        for (method, op) in item.as_object().into_iter().flatten() {
            let params: Vec<Value> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let mut q = json!({"name": p["name"], "in": p["in"], "required": p["required"], "type": p["schema"]["type"]});
                    for k in ["enum", "default"] {
                        if let Some(v) = p["schema"].get(k) {
                            q[k] = v.clone();
                        }
                    }
                    if let Some(d) = p.get("description") {
                        q["description"] = d.clone();
                    }
                    q
                })
                .collect();
            let responses: Map<String, Value> = op["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(code, r)| (code.clone(), json!({"description": r["description"]})))
                .collect();
            let mut o = json!({"operationId": op["operationId"], "summary": op["summary"], "parameters": params, "responses": responses});
            if let Some(d) = op.get("description") {
                o["description"] = d.clone();
            }
            out.insert(method.clone(), o);
        }
        paths.insert(path.clone(), Value::Object(out));
    }
    json!({
        "swagger": "2.0",
        "info": v3["info"],
        "host": host,
        "basePath": if base.is_empty() { "/".to_string() } else { base },
        "schemes": [scheme],
        "paths": paths,
    })
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The API as WADL: its operations as resources and methods.
fn wadl(src: &Source<'_>) -> String {
    let base = format!(
        "{}/{}",
        src.gateway.trim_end_matches('/'),
        src.api
            .get("path")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    let mut by_path: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (id, op) in src.operations {
        let template = op.get("urlTemplate").and_then(Value::as_str).unwrap_or("/");
        let path = template.split('?').next().unwrap_or("/").to_string();
        let method = op.get("method").and_then(Value::as_str).unwrap_or("GET");
        let query: String = op
            .get("request")
            .and_then(|r| r.get("queryParameters"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "<param name=\"{}\" style=\"query\" type=\"xs:{}\"/>",
                    xml_escape(p["name"].as_str().unwrap_or("")),
                    xml_escape(p["type"].as_str().unwrap_or("string"))
                )
            })
            .collect();
        by_path.entry(path).or_default().push(format!(
            "<method name=\"{}\" id=\"{}\"><request>{query}</request><response status=\"200\"/></method>",
            xml_escape(method),
            xml_escape(id)
        ));
    }
    let resources: String = by_path
        .iter()
        .map(|(path, methods)| {
            format!(
                "<resource path=\"{}\">{}</resource>",
                xml_escape(path),
                methods.concat()
            )
        })
        .collect();
    format!(
        "<application xmlns=\"http://wadl.dev.java.net/2009/02\" xmlns:xs=\"http://www.w3.org/2001/XMLSchema\"><resources base=\"{}\">{resources}</resources></application>",
        xml_escape(&base)
    )
}

/// A document behind a link: when it was made, its media type, its bytes.
type Download = (Instant, &'static str, Vec<u8>);

/// Documents behind download links, each for [`LINK_LIFETIME`].
#[derive(Default)]
pub struct Downloads {
    map: Mutex<HashMap<String, Download>>,
}

impl Downloads {
    /// Keeps a document; returns its token.
    pub fn put(&self, content_type: &'static str, bytes: Vec<u8>) -> String {
        let token = hex::encode(rand::random::<[u8; 24]>());
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (at, _, _)| now.duration_since(*at) < LINK_LIFETIME);
        while map.len() >= MAX_DOWNLOADS {
            let oldest = map
                .iter()
                .min_by_key(|(_, (at, _, _))| *at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(token.clone(), (now, content_type, bytes));
        token
    }

    /// A kept document, while its link works.
    pub fn get(&self, token: &str) -> Option<(&'static str, Vec<u8>)> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(token)
            .filter(|(at, _, _)| at.elapsed() < LINK_LIFETIME)
            .map(|(_, ct, bytes)| (*ct, bytes.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source<'a>(
        api: &'a Map<String, Value>,
        ops: &'a [(String, Map<String, Value>)],
    ) -> Source<'a> {
        Source {
            api,
            operations: ops,
            wsdl: None,
            wadl: None,
            components: None,
            gateway: "https://gw.example",
        }
    }

    #[test]
    fn every_format_has_a_document() {
        let api = json!({"displayName": "Pets", "path": "pets"})
            .as_object()
            .unwrap()
            .clone();
        let ops = vec![("get".to_string(), json!({"displayName": "get", "method": "GET", "urlTemplate": "/p/{id}", "templateParameters": [{"name": "id", "type": "string", "required": true}], "request": {"queryParameters": [{"name": "q", "type": "string"}]}}).as_object().unwrap().clone())];
        let src = source(&api, &ops);
        let (sw, _) = document(Document::Swagger, &src).unwrap();
        assert_eq!(sw["swagger"], "2.0");
        assert_eq!(sw["host"], "gw.example");
        assert_eq!(sw["basePath"], "/pets");
        assert_eq!(sw["paths"]["/p/{id}"]["get"]["parameters"][0]["in"], "path");
        let (wadl, _) = document(Document::Wadl, &src).unwrap();
        let wadl = wadl.as_str().unwrap();
        assert!(
            wadl.contains("<resource path=\"/p/{id}\"><method name=\"GET\" id=\"get\">"),
            "{wadl}"
        );
        assert!(document(Document::Wsdl, &src).is_err());
        assert_eq!(
            parse_format("wsdl-link"),
            Some((Document::Wsdl, true, "wsdl-link+xml"))
        );
        assert!(parse_format("bogus").is_none());
    }

    #[test]
    fn links_expire_and_are_random() {
        let d = Downloads::default();
        let a = d.put("text/plain", b"a".to_vec());
        let b = d.put("text/plain", b"b".to_vec());
        assert_ne!(a, b);
        assert_eq!(a.len(), 48);
        assert_eq!(d.get(&a).unwrap().1, b"a");
        assert!(d.get("nope").is_none());
    }
}

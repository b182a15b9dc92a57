//! API descriptions other than OpenAPI, and the one entry point for all of them: WADL (an HTTP
//! API's resources and methods), WSDL (a SOAP pass-through API: an operation per SOAP action)
//! and GraphQL SDL (a GraphQL pass-through API, its schema kept to check queries against).
//!
//! Invariant: an import is decided before anything is written — a document that does not
//! parse is an error naming what is wrong, and the description is kept verbatim as the API's
//! schema (`/apis/{id}/schemas/{wsdl|wadl|graphql}`) so that it is exported as it came.

use crate::openapi::{self, ImportedApi};
use crate::rules::template_parameters;
use serde_json::{Map, Value, json};

/// Which kind of description a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecKind {
    OpenApi,
    Wadl,
    Wsdl,
    GraphQl,
}

/// The schema id, content type and specification file extension of each kept description.
pub const GRAPHQL_SCHEMA: (&str, &str) =
    ("graphql", "application/vnd.ms-azure-apim.graphql.schema");
pub const WSDL_SCHEMA: (&str, &str) = ("wsdl", "application/wsdl+xml");
pub const WADL_SCHEMA: (&str, &str) = ("wadl", "application/vnd.sun.wadl+xml");

impl SpecKind {
    /// APIM's import `format` values: the kind, and whether `value` is a URL to fetch.
    pub fn from_format(format: &str) -> Option<(SpecKind, bool)> {
        Some(match format {
            "openapi" | "openapi+json" | "swagger-json" => (SpecKind::OpenApi, false),
            "openapi-link" | "openapi+json-link" | "swagger-link-json" => (SpecKind::OpenApi, true),
            "wadl-xml" => (SpecKind::Wadl, false),
            "wadl-link-json" => (SpecKind::Wadl, true),
            "wsdl" => (SpecKind::Wsdl, false),
            "wsdl-link" => (SpecKind::Wsdl, true),
            "graphql-link" => (SpecKind::GraphQl, true),
            _ => return None,
        })
    }

    /// An APIOps specification file's extension.
    pub fn from_extension(ext: &str) -> Option<SpecKind> {
        Some(match ext {
            "yaml" | "yml" | "json" => SpecKind::OpenApi,
            "wadl" => SpecKind::Wadl,
            "wsdl" => SpecKind::Wsdl,
            "graphql" => SpecKind::GraphQl,
            _ => return None,
        })
    }
}

pub const FORMATS: &str = "openapi, openapi+json, swagger-json, openapi-link, openapi+json-link, swagger-link-json, wadl-xml, wadl-link-json, wsdl, wsdl-link, graphql-link";

/// Parses a description into the API's properties, operations and kept schema.
pub fn import(kind: SpecKind, text: &str) -> Result<ImportedApi, String> {
    match kind {
        SpecKind::OpenApi => openapi::import(text),
        SpecKind::Wadl => wadl(text),
        SpecKind::Wsdl => wsdl(text),
        SpecKind::GraphQl => graphql(text),
    }
}

fn kept(schema: (&str, &str), text: &str) -> Option<(String, Map<String, Value>)> {
    let props = json!({"contentType": schema.1, "document": {"value": text}});
    Some((
        schema.0.to_string(),
        props.as_object().cloned().unwrap_or_default(),
    ))
}

fn parse_xml<'i>(text: &'i str, what: &str) -> Result<roxmltree::Document<'i>, String> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: 1_000_000,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(text, opts).map_err(|e| {
        let p = e.pos();
        format!(
            "the {what} is not well-formed XML (line {}, column {}): {e}",
            p.row, p.col
        )
    })
}

fn children<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    n.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// A WADL's resources and methods as operations; its `resources@base` as the service URL.
fn wadl(text: &str) -> Result<ImportedApi, String> {
    let doc = parse_xml(text, "WADL document")?;
    let root = doc.root_element();
    if root.tag_name().name() != "application" {
        return Err("the WADL document's root element must be <application>".into());
    }
    let mut out = ImportedApi {
        display_name: None,
        description: None,
        service_url: None,
        operations: Vec::new(),
        api_type: None,
        schema: kept(WADL_SCHEMA, text),
    };
    for resources in children(root, "resources") {
        if out.service_url.is_none() {
            out.service_url = resources
                .attribute("base")
                .map(|b| b.trim_end_matches('/').to_string());
        }
        for r in children(resources, "resource") {
            wadl_resource(r, "", &[], &mut out.operations)?;
        }
    }
    if out.operations.is_empty() {
        return Err("the WADL document describes no method".into());
    }
    Ok(out)
}

fn wadl_param(p: roxmltree::Node) -> Value {
    let ty = p.attribute("type").unwrap_or("string");
    let ty = ty.rsplit(':').next().unwrap_or(ty);
    let mut o = json!({"name": p.attribute("name").unwrap_or(""), "type": ty, "required": p.attribute("required") == Some("true"), "values": []});
    if let Some(d) = p.attribute("default") {
        o["defaultValue"] = json!(d);
    }
    o
}

const MAX_WADL_DEPTH: usize = 32;

fn wadl_resource(
    r: roxmltree::Node,
    prefix: &str,
    inherited: &[roxmltree::Node],
    ops: &mut Vec<(String, Map<String, Value>)>,
) -> Result<(), String> {
    if prefix.matches('/').count() > MAX_WADL_DEPTH {
        return Err(format!(
            "the WADL document's resources nest deeper than {MAX_WADL_DEPTH}"
        ));
    }
    let seg = r.attribute("path").unwrap_or("").trim_matches('/');
    let path = if seg.is_empty() {
        prefix.to_string()
    } else {
        format!("{prefix}/{seg}")
    };
    let mut params: Vec<roxmltree::Node> = inherited.to_vec();
    params.extend(children(r, "param"));
    for m in children(r, "method") {
        let method = m.attribute("name").unwrap_or("GET").to_ascii_uppercase();
        let template = if path.is_empty() {
            "/".to_string()
        } else {
            path.clone()
        };
        let used = template_parameters(&template)
            .map_err(|e| format!("the path '{template}' is invalid: {e}"))?;
        let mut all = params.clone();
        if let Some(req) = children(m, "request").next() {
            all.extend(children(req, "param"));
        }
        let style = |p: &roxmltree::Node, s: &str| p.attribute("style") == Some(s);
        let mut template_params: Vec<Value> = all
            .iter()
            .filter(|p| style(p, "template"))
            .map(|p| {
                let mut v = wadl_param(*p);
                v["required"] = json!(true);
                v
            })
            .collect();
        for name in &used {
            if !template_params.iter().any(|p| p["name"] == json!(name)) {
                template_params
                    .push(json!({"name": name, "type": "string", "required": true, "values": []}));
            }
        }
        let query: Vec<Value> = all
            .iter()
            .filter(|p| style(p, "query"))
            .map(|p| wadl_param(*p))
            .collect();
        let headers: Vec<Value> = all
            .iter()
            .filter(|p| style(p, "header"))
            .map(|p| wadl_param(*p))
            .collect();
        let responses: Vec<Value> = children(m, "response")
            .map(|resp| {
                let code: u16 = resp.attribute("status").and_then(|s| s.split_whitespace().next()?.parse().ok()).unwrap_or(200);
                let reps: Vec<Value> = children(resp, "representation").filter_map(|rep| rep.attribute("mediaType")).map(|ct| json!({"contentType": ct})).collect();
                json!({"statusCode": code, "description": "", "representations": reps, "headers": []})
            })
            .collect();
        let id = m.attribute("id").map(str::to_string).unwrap_or_else(|| {
            format!(
                "{}{}",
                method.to_lowercase(),
                template.replace(['/', '{', '}'], "-")
            )
        });
        let id = unique_id(ops, &crate::openapi::sanitize_id(&id));
        let mut props = Map::new();
        props.insert(
            "displayName".into(),
            json!(m.attribute("id").unwrap_or(&format!("{method} {template}"))),
        );
        props.insert("method".into(), json!(method));
        props.insert("urlTemplate".into(), json!(template));
        props.insert("templateParameters".into(), json!(template_params));
        props.insert(
            "request".into(),
            json!({"queryParameters": query, "headers": headers, "representations": []}),
        );
        props.insert("responses".into(), json!(responses));
        ops.push((id, props));
    }
    for child in children(r, "resource") {
        wadl_resource(child, &path, &params, ops)?;
    }
    Ok(())
}

fn unique_id(ops: &[(String, Map<String, Value>)], base: &str) -> String {
    let mut id = base.to_string();
    let mut n = 2;
    while ops.iter().any(|(o, _)| *o == id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

const WSDL_NS: &str = "http://schemas.xmlsoap.org/wsdl/";
const SOAP_NS: [&str; 2] = [
    "http://schemas.xmlsoap.org/wsdl/soap/",
    "http://schemas.xmlsoap.org/wsdl/soap12/",
];

/// A WSDL 1.1 document as a SOAP pass-through API: the first SOAP binding's operations, each
/// `POST /?soapAction={action}` (as APIM names them), routed by the `SOAPAction` header (or
/// SOAP 1.2's `action` parameter of the content type); the service address as the backend.
fn wsdl(text: &str) -> Result<ImportedApi, String> {
    let doc = parse_xml(text, "WSDL document")?;
    let root = doc.root_element();
    if root.tag_name().name() != "definitions" || root.tag_name().namespace() != Some(WSDL_NS) {
        return Err("the WSDL document's root element must be WSDL 1.1's <definitions>".into());
    }
    let soap = |n: &roxmltree::Node| {
        n.tag_name()
            .namespace()
            .is_some_and(|ns| SOAP_NS.contains(&ns))
    };
    let binding = children(root, "binding")
        .find(|b| b.children().any(|c| soap(&c)))
        .ok_or("the WSDL document has no SOAP binding")?;
    let mut operations = Vec::new();
    for op in children(binding, "operation") {
        let name = op
            .attribute("name")
            .ok_or("a binding operation has no name")?;
        let action = op
            .children()
            .find(|c| soap(c) && c.tag_name().name() == "operation")
            .and_then(|c| c.attribute("soapAction"))
            .unwrap_or(name);
        let id = unique_id(&operations, &crate::openapi::sanitize_id(name));
        let element = body_element(root, binding, op, name);
        let props = json!({
            "displayName": name,
            "method": "POST",
            "urlTemplate": format!("/?soapAction={action}"),
            "templateParameters": [],
            "description": "",
            "request": {"queryParameters": [], "headers": [], "representations": [{"contentType": "text/xml", "typeName": element}]},
            "responses": [{"statusCode": 200, "description": "", "representations": [{"contentType": "text/xml"}], "headers": []}],
        });
        operations.push((id, props.as_object().cloned().unwrap_or_default()));
    }
    if operations.is_empty() {
        return Err("the WSDL document's SOAP binding has no operation".into());
    }
    let service_url = children(root, "service")
        .flat_map(|s| children(s, "port"))
        .flat_map(|p| p.children())
        .find(|c| soap(c) && c.tag_name().name() == "address")
        .and_then(|a| a.attribute("location"))
        .map(str::to_string);
    Ok(ImportedApi {
        display_name: children(root, "service")
            .next()
            .and_then(|s| s.attribute("name"))
            .map(str::to_string),
        description: None,
        service_url,
        operations,
        api_type: Some("soap"),
        schema: kept(WSDL_SCHEMA, text),
    })
}

/// The `style` of a WSDL node's SOAP child (`soap:binding`, `soap:operation`).
fn soap_style(n: roxmltree::Node) -> Option<String> {
    n.children()
        .find(|c| {
            c.tag_name()
                .namespace()
                .is_some_and(|ns| SOAP_NS.contains(&ns))
        })
        .and_then(|c| c.attribute("style"))
        .map(str::to_string)
}

fn local(qname: &str) -> &str {
    qname.rsplit(':').next().unwrap_or(qname)
}

/// The first element of a request's SOAP Body for this operation (how a request without a
/// SOAP action is routed): the operation's name for RPC style, else its input message's part
/// element (document style), else the operation's name.
fn body_element(
    root: roxmltree::Node,
    binding: roxmltree::Node,
    op: roxmltree::Node,
    name: &str,
) -> String {
    if soap_style(op).or(soap_style(binding)).as_deref() == Some("rpc") {
        return name.to_string();
    }
    let port_type = binding.attribute("type").map(local).unwrap_or_default();
    children(root, "portType")
        .filter(|p| p.attribute("name") == Some(port_type))
        .flat_map(|p| children(p, "operation"))
        .find(|o| o.attribute("name") == Some(name))
        .and_then(|o| children(o, "input").next())
        .and_then(|i| i.attribute("message"))
        .map(local)
        .and_then(|m| children(root, "message").find(|n| n.attribute("name") == Some(m)))
        .and_then(|m| children(m, "part").find_map(|p| p.attribute("element")))
        .map(|e| local(e).to_string())
        .unwrap_or_else(|| name.to_string())
}

/// A GraphQL schema (SDL) for a pass-through API: checked now, kept, and used by the gateway
/// to refuse queries that do not validate against it.
fn graphql(text: &str) -> Result<ImportedApi, String> {
    crate::rules::check_graphql_schema(text)?;
    Ok(ImportedApi {
        display_name: None,
        description: None,
        service_url: None,
        operations: Vec::new(),
        api_type: Some("graphql"),
        schema: kept(GRAPHQL_SCHEMA, text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wadl_becomes_operations() {
        let wadl = r#"<application xmlns="http://wadl.dev.java.net/2009/02" xmlns:xsd="http://www.w3.org/2001/XMLSchema">
  <resources base="https://backend.example/api/">
    <resource path="items">
      <method name="GET" id="listItems">
        <request><param name="top" style="query" type="xsd:int" default="10"/></request>
        <response status="200"><representation mediaType="application/json"/></response>
      </method>
      <resource path="{id}">
        <param name="id" style="template" type="xsd:string"/>
        <method name="DELETE"/>
      </resource>
    </resource>
  </resources>
</application>"#;
        let api = import(SpecKind::Wadl, wadl).unwrap();
        assert_eq!(
            api.service_url.as_deref(),
            Some("https://backend.example/api")
        );
        assert_eq!(api.operations.len(), 2);
        let (id, list) = &api.operations[0];
        assert_eq!(id, "listItems");
        assert_eq!(list["urlTemplate"], "/items");
        assert_eq!(list["request"]["queryParameters"][0]["type"], "int");
        assert_eq!(list["request"]["queryParameters"][0]["defaultValue"], "10");
        let (_, del) = &api.operations[1];
        assert_eq!(del["method"], "DELETE");
        assert_eq!(del["urlTemplate"], "/items/{id}");
        assert_eq!(del["templateParameters"][0]["name"], "id");
        assert_eq!(api.schema.unwrap().0, "wadl");
        assert!(
            import(SpecKind::Wadl, "<application/>")
                .unwrap_err()
                .contains("no method")
        );
        assert!(
            import(SpecKind::Wadl, "<application>")
                .unwrap_err()
                .contains("line 1")
        );
    }

    pub const WSDL: &str = r#"<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" name="Calc">
  <binding name="CalcSoap" type="tns:CalcPort">
    <soap:binding transport="http://schemas.xmlsoap.org/soap/http"/>
    <operation name="Add"><soap:operation soapAction="http://tempuri.org/Add"/></operation>
    <operation name="Subtract"><soap:operation soapAction="http://tempuri.org/Subtract"/></operation>
  </binding>
  <service name="Calculator">
    <port name="CalcSoap" binding="tns:CalcSoap"><soap:address location="http://calc.example/calc.asmx"/></port>
  </service>
</definitions>"#;

    #[test]
    fn a_wsdl_becomes_a_soap_pass_through() {
        let api = import(SpecKind::Wsdl, WSDL).unwrap();
        assert_eq!(api.api_type, Some("soap"));
        assert_eq!(api.display_name.as_deref(), Some("Calculator"));
        assert_eq!(
            api.service_url.as_deref(),
            Some("http://calc.example/calc.asmx")
        );
        let ops: Vec<(&str, &Value)> = api
            .operations
            .iter()
            .map(|(id, p)| (id.as_str(), &p["urlTemplate"]))
            .collect();
        assert_eq!(
            ops,
            [
                ("Add", &json!("/?soapAction=http://tempuri.org/Add")),
                (
                    "Subtract",
                    &json!("/?soapAction=http://tempuri.org/Subtract")
                )
            ]
        );
        assert!(
            import(SpecKind::Wsdl, "<definitions/>")
                .unwrap_err()
                .contains("WSDL 1.1")
        );
    }

    #[test]
    fn a_graphql_schema_is_checked_and_kept() {
        let api = import(SpecKind::GraphQl, "type Query { hello: String }").unwrap();
        assert_eq!(api.api_type, Some("graphql"));
        assert!(api.operations.is_empty());
        let e = import(SpecKind::GraphQl, "type Query { hello: Nope }").unwrap_err();
        assert!(e.contains("line 1, column") && e.contains("Nope"), "{e}");
    }
}

//! set-body, find-and-replace, json-to-xml and xml-to-json: the message's body.

use crate::compile::{Ctx, Res, XNode};
use crate::convert;
use crate::exchange::{Exchange, ExistsAction, Flow, set_pairs};
use crate::expr::Text;
use crate::liquid_body;
use crate::node::{At, Policy, Run};
use crate::position::Section;

/// The body a policy in `section` works on: the response's once there is one in outbound and
/// on-error, else the request's (marked changed, so the gateway sends the new one).
fn body_of(section: Section, ex: &mut Exchange) -> &mut Option<Vec<u8>> {
    if ex.on_response(section) {
        return &mut ex.response.as_mut().expect("on_response").body;
    }
    ex.request_body_changed = true;
    &mut ex.request_body
}

#[derive(Debug)]
pub struct SetBody(pub Text);

pub fn parse_set_body<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["template", "xsi-nil", "parse-date"])?;
    match cx.literal(node, "template")?.as_deref() {
        None | Some("none") => {}
        Some("liquid") => return parse_liquid(cx, node),
        Some(other) => {
            return cx.err(
                node,
                format!(
                    "set-body template=\"{other}\" is not a template kind; APIM has only \"liquid\""
                ),
            );
        }
    }
    let text = cx.element_text(node);
    Ok(Box::new(SetBody(cx.text_value(node, &text)?)))
}

impl Policy for SetBody {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        match at.text(&self.0, ex) {
            Ok(body) => {
                *body_of(at.section, ex) = Some(body.into_bytes());
                Run::Done(Flow::Next)
            }
            Err(flow) => Run::Done(flow),
        }
    }
}

/// set-body template="liquid": the element's content (text and elements, as written) is the
/// template; `{{name}}` named values are not substituted in it (they are Liquid's syntax).
#[derive(Debug)]
pub struct SetBodyLiquid(pub liquid_body::Template);

fn parse_liquid<'a>(cx: &mut Ctx<'a, '_>, node: XNode<'a>) -> Res<Box<dyn Policy>> {
    let source = inner_source(cx, node);
    cx.reads_body = true;
    match liquid_body::compile(&source) {
        Ok(t) => Ok(Box::new(SetBodyLiquid(t))),
        Err(e) => cx.err(node, format!("the liquid template does not parse: {e}")),
    }
}

/// An element's content as written in the document, entities decoded.
fn inner_source(cx: &Ctx<'_, '_>, node: XNode<'_>) -> String {
    let text = cx.doc.input_text();
    let range = node.range();
    let whole = &text[range.clone()];
    let start = whole.find('>').map_or(whole.len(), |i| i + 1);
    let end = whole.rfind("</").filter(|e| *e >= start).unwrap_or(start);
    crate::compile::decode_entities(whole[start..end].trim()).into_owned()
}

impl Policy for SetBodyLiquid {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        let body = liquid_input(at.section, ex);
        let context = liquid_context(ex);
        match liquid_body::render(&self.0, body, context) {
            Ok(out) => {
                *body_of(at.section, ex) = Some(out.into_bytes());
                Run::Done(Flow::Next)
            }
            Err(e) => Run::Done(at.fail(
                500,
                "ExpressionValueEvaluationFailure",
                format!("The liquid template could not be rendered: {e}"),
            )),
        }
    }
}

/// `body` as a template sees it: JSON for a JSON content type, the JSON of the XML for an XML
/// one, the text otherwise; nothing inside return-response (it has no body yet).
fn liquid_input(section: Section, ex: &Exchange) -> serde_json::Value {
    let (headers, body) = if ex.on_response(section) {
        let r = ex.response.as_ref().expect("on_response");
        (&r.headers, &r.body)
    } else {
        (&ex.request_headers, &ex.request_body)
    };
    let text = String::from_utf8_lossy(body.as_deref().unwrap_or_default()).into_owned();
    let content_type = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let is =
        |exact: &[&str], suffix: &str| exact.contains(&media.as_str()) || media.ends_with(suffix);
    if is(&["application/json", "text/json"], "+json") {
        return serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    }
    if is(&["application/xml", "text/xml"], "+xml") {
        return convert::xml_to_json(&text, true)
            .ok()
            .and_then(|j| serde_json::from_str(&j).ok())
            .unwrap_or(serde_json::Value::String(text));
    }
    serde_json::Value::String(text)
}

/// `context` as a template sees it (APIM's bindable members).
fn liquid_context(ex: &Exchange) -> serde_json::Value {
    let headers = |pairs: &[(String, String)]| {
        let mut m = serde_json::Map::new();
        for (k, v) in pairs {
            m.entry(k.clone())
                .and_modify(|e| {
                    if let serde_json::Value::String(s) = e {
                        s.push(',');
                        s.push_str(v);
                    }
                })
                .or_insert_with(|| serde_json::Value::String(v.clone()));
        }
        serde_json::Value::Object(m)
    };
    let query: serde_json::Map<String, serde_json::Value> = ex
        .query
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let url = serde_json::json!({
        "Scheme": ex.scheme, "Host": ex.host, "Port": ex.port, "Path": ex.backend_path,
        "Query": query, "QueryString": crate::exchange::query_string(&ex.query),
    });
    let original = serde_json::json!({
        "Scheme": ex.scheme, "Host": ex.host, "Port": ex.port, "Path": ex.original_path,
        "QueryString": ex.original_query,
    });
    let params: serde_json::Map<String, serde_json::Value> = ex
        .matched_parameters
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "Request": {
            "Url": url, "OriginalUrl": original, "Method": ex.method, "OriginalMethod": ex.method,
            "IpAddress": ex.ip.map(|i| i.to_string()), "MatchedParameters": params,
            "HasBody": ex.request_body.as_ref().is_some_and(|b| !b.is_empty()),
            "Headers": headers(&ex.request_headers),
        },
        "Response": ex.response.as_ref().map(|r| serde_json::json!({
            "StatusCode": r.status, "Headers": headers(&r.headers),
        })),
    })
}

#[derive(Debug)]
pub struct FindAndReplace {
    pub from: Text,
    pub to: Text,
}

pub fn parse_find_and_replace<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    _: Section,
) -> Res<Box<dyn Policy>> {
    cx.check_attrs(node, &["from", "to"])?;
    cx.reads_body = true;
    Ok(Box::new(FindAndReplace {
        from: cx.required(node, "from")?,
        to: cx.required(node, "to")?,
    }))
}

impl Policy for FindAndReplace {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl FindAndReplace {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let from = at.text(&self.from, ex)?;
        let to = at.text(&self.to, ex)?;
        if let Some(body) = body_of(at.section, ex).as_mut()
            && !from.is_empty()
        {
            *body = String::from_utf8_lossy(body)
                .replace(&from, &to)
                .into_bytes();
        }
        Ok(())
    }
}

/// json-to-xml (`to_xml`) or xml-to-json.
#[derive(Debug)]
pub struct Convert {
    pub to_xml: bool,
    /// Convert only when the body's content type says JSON (XML).
    pub only_matching_type: bool,
    pub consider_accept: bool,
    pub direct: bool,
}

pub fn parse_convert<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(
        node,
        section,
        &[Section::Inbound, Section::Outbound, Section::OnError],
    )?;
    let to_xml = node.tag_name().name() == "json-to-xml";
    cx.check_attrs(
        node,
        &[
            "apply",
            "consider-accept-header",
            "parse-date",
            "namespace-separator",
            "namespace-prefix",
            "attribute-block-name",
            "kind",
        ],
    )?;
    cx.reads_body = true;
    let matching = if to_xml {
        "content-type-json"
    } else {
        "content-type-xml"
    };
    let apply = cx.choice(node, "apply", &["always", matching])?;
    let kind = cx.choice(node, "kind", &["javascript-friendly", "direct"])?;
    Ok(Box::new(Convert {
        to_xml,
        only_matching_type: apply != "always",
        consider_accept: cx.boolean(node, "consider-accept-header", true)?,
        direct: kind == "direct",
    }))
}

impl Policy for Convert {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl Convert {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let (want, have) = if self.to_xml {
            ("xml", "json")
        } else {
            ("json", "xml")
        };
        let on_response = ex.on_response(at.section);
        let accepts = |ex: &Exchange| {
            ex.header("Accept")
                .is_some_and(|a| a.to_ascii_lowercase().contains(want))
        };
        if self.consider_accept && on_response && !accepts(ex) {
            return Ok(());
        }
        let content_type = match &ex.response {
            Some(r) if on_response => r.header("Content-Type"),
            _ => ex.header("Content-Type"),
        };
        let typed = content_type.is_some_and(|c| c.to_ascii_lowercase().contains(have));
        if self.only_matching_type && !typed {
            return Ok(());
        }
        let source = match &ex.response {
            Some(r) if on_response => r.body.as_deref(),
            _ => ex.request_body.as_deref(),
        };
        let Some(bytes) = source.filter(|b| !b.is_empty()) else {
            return Ok(());
        };
        let text = String::from_utf8_lossy(bytes);
        let converted = if self.to_xml {
            convert::json_to_xml(&text)
        } else {
            convert::xml_to_json(&text, self.direct)
        };
        let converted = converted.map_err(|e| at.fail(500, "ConversionFailure", e.to_string()))?;
        *body_of(at.section, ex) = Some(converted.into_bytes());
        let new_type = if self.to_xml {
            "application/xml"
        } else {
            "application/json"
        };
        let headers = match ex.response.as_mut() {
            Some(r) if on_response => &mut *r.headers,
            _ => &mut *ex.request_headers,
        };
        set_pairs(
            headers,
            "Content-Type",
            ExistsAction::Override,
            vec![new_type.into()],
        );
        Ok(())
    }
}

/// jsonp: a response to a request with the callback parameter becomes `callback(body)`.
#[derive(Debug)]
pub struct Jsonp {
    pub parameter: String,
}

pub fn parse_jsonp<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Outbound])?;
    cx.check_attrs(node, &["callback-parameter-name"])?;
    cx.reads_body = true;
    Ok(Box::new(Jsonp {
        parameter: cx.name_attr(node, "callback-parameter-name")?,
    }))
}

impl Policy for Jsonp {
    fn run<'a>(&'a self, _: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        let callback = form_urlencoded::parse(ex.original_query.as_bytes())
            .find(|(k, _)| *k == self.parameter)
            .map(|(_, v)| v.into_owned());
        // Only a JavaScript name: anything else would let the caller inject a script.
        let valid = |c: &str| {
            !c.is_empty()
                && c.split('.').all(|p| {
                    p.chars()
                        .next()
                        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == '$')
                        && p.chars()
                            .all(|x| x.is_ascii_alphanumeric() || x == '_' || x == '$')
                })
        };
        if let (Some(cb), Some(r)) = (callback.filter(|c| valid(c)), ex.response.as_mut()) {
            let body = r.body.take().unwrap_or_default();
            let mut out = format!("{cb}(").into_bytes();
            out.extend_from_slice(&body);
            out.push(b')');
            r.body = Some(out);
            set_pairs(
                &mut r.headers,
                "Content-Type",
                ExistsAction::Override,
                vec!["application/javascript".into()],
            );
        }
        Run::Done(Flow::Next)
    }
}

/// redirect-content-urls: in a response, the backend's base URL becomes the gateway's (so the
/// links a backend writes point through the gateway); in a request, the other way.
#[derive(Debug)]
pub struct RedirectContentUrls;

pub fn parse_redirect_content_urls<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound, Section::Outbound])?;
    cx.check_attrs(node, &[])?;
    cx.reads_body = true;
    Ok(Box::new(RedirectContentUrls))
}

impl Policy for RedirectContentUrls {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        let info = |k: &str| ex.info.get(k).map(|v| v.text()).unwrap_or_default();
        let backend = ex
            .backend_url
            .clone()
            .unwrap_or_else(|| info("Api.ServiceUrl"))
            .trim_end_matches('/')
            .to_string();
        let default_port = matches!((ex.scheme, ex.port), ("http", 80) | ("https", 443));
        let port = if default_port || ex.port == 0 {
            String::new()
        } else {
            format!(":{}", ex.port)
        };
        let path = info("Api.Path");
        let gateway = format!(
            "{}://{}{port}{}{}",
            ex.scheme,
            ex.host,
            if path.is_empty() { "" } else { "/" },
            path.trim_matches('/')
        );
        if backend.is_empty() {
            return Run::Done(Flow::Next);
        }
        let (from, to) = if ex.on_response(at.section) {
            (backend, gateway)
        } else {
            (gateway, backend)
        };
        if let Some(body) = body_of(at.section, ex).as_mut() {
            *body = String::from_utf8_lossy(body)
                .replace(&from, &to)
                .into_bytes();
        }
        Run::Done(Flow::Next)
    }
}

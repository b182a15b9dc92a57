//! cors: answers preflights, and marks the response of an allowed origin for the gateway to
//! add the CORS headers to ([`cors_response_headers`]).

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, Flow, ResponseParts};
use crate::expr::V;
use crate::node::{At, Policy, Run};
use crate::position::Section;

#[derive(Debug)]
pub struct Cors {
    pub allow_credentials: bool,
    pub terminate_unmatched: bool,
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    pub max_age: u64,
    pub headers: Vec<String>,
    pub expose: Vec<String>,
}

pub fn parse_cors<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    cx.check_attrs(node, &["allow-credentials", "terminate-unmatched-request"])?;
    let mut cors = Cors {
        allow_credentials: cx.boolean(node, "allow-credentials", false)?,
        terminate_unmatched: cx.boolean(node, "terminate-unmatched-request", true)?,
        origins: Vec::new(),
        methods: Vec::new(),
        max_age: 0,
        headers: Vec::new(),
        expose: Vec::new(),
    };
    for c in cx.children(node)? {
        match c.tag_name().name() {
            "allowed-origins" => cors.origins = cx.item_texts(c, "origin")?,
            "allowed-methods" => {
                cors.max_age = cx.number(c, "preflight-result-max-age", Some(0), 86_400)?;
                cors.methods = cx.item_texts(c, "method")?;
            }
            "allowed-headers" => cors.headers = cx.item_texts(c, "header")?,
            "expose-headers" => cors.expose = cx.item_texts(c, "header")?,
            other => return cx.err(c, format!("<cors> has no element <{other}>")),
        }
    }
    if cors.origins.is_empty() {
        return cx.err(
            node,
            "<cors> needs <allowed-origins> with at least one <origin>",
        );
    }
    if cors.allow_credentials && cors.origins.iter().any(|o| o == "*") {
        return cx.err(
            node,
            "allow-credentials=\"true\" cannot be combined with the origin '*'",
        );
    }
    Ok(Box::new(cors))
}

impl Policy for Cors {
    fn run<'a>(&'a self, _: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::Done(self.apply(ex))
    }

    fn runs_in_preflight(&self) -> bool {
        true
    }
}

impl Cors {
    fn apply(&self, ex: &mut Exchange) -> Flow {
        let Some(origin) = ex.header("Origin").map(str::to_string) else {
            return Flow::Next;
        };
        let origin_ok = self
            .origins
            .iter()
            .any(|o| o == "*" || o.eq_ignore_ascii_case(&origin));
        let allow_origin = if self.origins.iter().any(|o| o == "*") && !self.allow_credentials {
            "*".to_string()
        } else {
            origin
        };
        let preflight =
            ex.method == "OPTIONS" && ex.header("Access-Control-Request-Method").is_some();
        if preflight {
            return self.preflight(ex, origin_ok, allow_origin);
        }
        if origin_ok {
            ex.variables.insert("__cors".into(), V::Str(allow_origin));
            if self.allow_credentials {
                ex.variables
                    .insert("__cors_credentials".into(), V::Bool(true));
            }
            if !self.expose.is_empty() {
                ex.variables
                    .insert("__cors_expose".into(), V::Str(self.expose.join(",")));
            }
        }
        Flow::Next
    }

    fn methods(&self) -> Vec<String> {
        if self.methods.is_empty() {
            vec!["GET".into(), "POST".into()]
        } else {
            self.methods.clone()
        }
    }

    /// The answer to a preflight: the CORS headers when origin, method and headers are
    /// allowed; else an empty 200 (or nothing, so the request goes on, when unmatched
    /// requests are not terminated).
    fn preflight(&self, ex: &mut Exchange, origin_ok: bool, allow_origin: String) -> Flow {
        let method = ex.header("Access-Control-Request-Method").unwrap_or("");
        let methods = self.methods();
        let method_ok = methods
            .iter()
            .any(|m| m == "*" || m.eq_ignore_ascii_case(method));
        let requested: Vec<String> = ex
            .header("Access-Control-Request-Headers")
            .map(|h| {
                h.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let headers_ok = requested.iter().all(|r| {
            self.headers
                .iter()
                .any(|h| h == "*" || h.eq_ignore_ascii_case(r))
        });
        let mut headers = Vec::new();
        if origin_ok && method_ok && headers_ok {
            let mut add = |name: &str, value: String| headers.push((name.to_string(), value));
            add("Access-Control-Allow-Origin", allow_origin);
            add("Access-Control-Allow-Methods", methods.join(","));
            if !requested.is_empty() {
                add("Access-Control-Allow-Headers", requested.join(","));
            }
            if self.allow_credentials {
                add("Access-Control-Allow-Credentials", "true".into());
            }
            if self.max_age > 0 {
                add("Access-Control-Max-Age", self.max_age.to_string());
            }
        } else if !self.terminate_unmatched {
            return Flow::Next;
        }
        ex.response = Some(ResponseParts {
            status: 200,
            reason: "OK".into(),
            headers: headers.into(),
            body: Some(Vec::new()),
        });
        Flow::Respond
    }
}

/// Headers a CORS policy asks to add to the final response (for an allowed origin).
pub fn cors_response_headers(ex: &Exchange) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(V::Str(o)) = ex.variables.get("__cors") {
        out.push(("Access-Control-Allow-Origin".to_string(), o.clone()));
        if ex.variables.contains_key("__cors_credentials") {
            out.push((
                "Access-Control-Allow-Credentials".to_string(),
                "true".into(),
            ));
        }
        if let Some(V::Str(e)) = ex.variables.get("__cors_expose") {
            out.push(("Access-Control-Expose-Headers".to_string(), e.clone()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::cors_response_headers;
    use crate::exchange::Flow;
    use crate::position::Section;
    use crate::testing::{Fake, get, inbound, run_section};

    const CORS: &str = r#"<cors allow-credentials="true"><allowed-origins><origin>https://app.example</origin></allowed-origins><allowed-methods preflight-result-max-age="300"><method>GET</method><method>PUT</method></allowed-methods><allowed-headers><header>x-a</header></allowed-headers></cors>"#;

    #[test]
    fn a_preflight_is_answered_here() {
        let mut ex = get(&[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "x-a"),
        ]);
        ex.method = "OPTIONS".into();
        ex.preflight = true;
        let flow = run_section(&inbound(CORS), Section::Inbound, &mut ex, &Fake::default());
        assert!(matches!(flow, Flow::Respond));
        let response = ex.response.expect("answered");
        assert_eq!(
            response.header("Access-Control-Allow-Methods"),
            Some("GET,PUT")
        );
        assert_eq!(response.header("Access-Control-Max-Age"), Some("300"));
        assert_eq!(
            response.header("Access-Control-Allow-Credentials"),
            Some("true")
        );
    }

    #[test]
    fn an_allowed_origin_gets_its_headers_on_the_response() {
        let mut ex = get(&[("Origin", "https://app.example")]);
        run_section(&inbound(CORS), Section::Inbound, &mut ex, &Fake::default());
        let headers = cors_response_headers(&ex);
        assert!(headers.contains(&(
            "Access-Control-Allow-Origin".to_string(),
            "https://app.example".to_string()
        )));
        let mut other = get(&[("Origin", "https://evil.example")]);
        run_section(
            &inbound(CORS),
            Section::Inbound,
            &mut other,
            &Fake::default(),
        );
        assert!(cors_response_headers(&other).is_empty());
    }
}

//! set-method, rewrite-uri, set-backend-service and forward-request: where the request goes.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, ExistsAction, Flow, Forward, set_pairs};
use crate::expr::Text;
use crate::node::{At, Policy, Run};
use crate::position::Section;

#[derive(Debug)]
pub struct SetMethod(pub Text);

pub fn parse_set_method<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound, Section::OnError])?;
    cx.check_attrs(node, &[])?;
    let text = cx.element_text(node);
    Ok(Box::new(SetMethod(cx.text_value(node, &text)?)))
}

impl Policy for SetMethod {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl SetMethod {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let method = at.text(&self.0, ex)?.trim().to_ascii_uppercase();
        if method.is_empty() || !method.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(at.fail(
                500,
                "ExpressionValueEvaluationFailure",
                format!("'{method}' is not an HTTP method"),
            ));
        }
        ex.method = method.into();
        Ok(())
    }
}

/// rewrite-uri: the backend path (and query) from a template with the operation's parameters.
#[derive(Debug)]
pub struct RewriteUri {
    pub template: Text,
    pub copy_unmatched: bool,
}

pub fn parse_rewrite_uri<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    cx.check_attrs(node, &["template", "copy-unmatched-params"])?;
    Ok(Box::new(RewriteUri {
        template: cx.required(node, "template")?,
        copy_unmatched: cx.boolean(node, "copy-unmatched-params", true)?,
    }))
}

impl Policy for RewriteUri {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        let template = match at.text(&self.template, ex) {
            Ok(t) => t,
            Err(flow) => return Run::Done(flow),
        };
        let (path, query) = rewrite(&template, &ex.matched_parameters);
        let mut query = query;
        if self.copy_unmatched {
            for (k, v) in &ex.query {
                let matched = ex.matched_parameters.iter().any(|(p, _)| p == k);
                if !matched && !query.iter().any(|(q, _)| q == k) {
                    query.push((k.clone(), v.clone()));
                }
            }
        }
        ex.backend_path = path;
        ex.query = query;
        Run::Done(Flow::Next)
    }
}

/// The path (with a leading `/`) and query a template gives, `{name}` filled from `params`.
fn rewrite(template: &str, params: &[(String, String)]) -> (String, Vec<(String, String)>) {
    let (path, query) = template.split_once('?').unwrap_or((template, ""));
    let fill = |s: &str| -> String {
        let mut out = s.to_string();
        for (k, v) in params {
            out = out.replace(&format!("{{{k}}}"), v);
        }
        out
    };
    let path = fill(path);
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (fill(k), fill(v))
        })
        .collect();
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    (path, query)
}

/// set-backend-service: a base URL, or a backend entity (with its credentials and TLS checks).
#[derive(Debug)]
pub struct SetBackendService {
    pub base_url: Option<Text>,
    pub backend_id: Option<String>,
}

pub fn parse_set_backend_service<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound, Section::Backend])?;
    cx.check_attrs(node, &["base-url", "backend-id"])?;
    let base_url = cx.attr_text(node, "base-url")?;
    let backend_id = cx.literal(node, "backend-id")?;
    if base_url.is_some() == backend_id.is_some() {
        return cx.err(
            node,
            "<set-backend-service> needs exactly one of 'base-url' and 'backend-id'",
        );
    }
    Ok(Box::new(SetBackendService {
        base_url,
        backend_id,
    }))
}

impl Policy for SetBackendService {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl SetBackendService {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        if let Some(url) = &self.base_url {
            ex.backend_url = Some(at.text(url, ex)?);
            ex.backend_tls = None;
            return Ok(());
        }
        let Some(id) = &self.backend_id else {
            return Ok(());
        };
        let Some(backend) = at.svc.backend(id) else {
            return Err(at.fail(
                500,
                "BackendNotFound",
                format!("The backend '{id}' does not exist."),
            ));
        };
        if let Some(secs) = backend.unavailable {
            let mut failure = at.failure(
                503,
                "BackendUnavailable",
                format!("The backend '{id}' is unavailable: its circuit breaker is open."),
            );
            failure
                .headers
                .push(("Retry-After".into(), secs.max(1).to_string()));
            return Err(Flow::Fail(failure));
        }
        ex.backend_url = Some(backend.url);
        ex.backend_entity = Some(backend.entity);
        ex.backend_tls = Some((backend.validate_chain, backend.validate_name));
        for (k, v) in backend.headers {
            set_pairs(&mut ex.request_headers, &k, ExistsAction::Override, vec![v]);
        }
        for (k, v) in backend.query {
            set_pairs(&mut ex.query, &k, ExistsAction::Override, vec![v]);
        }
        if let Some((scheme, param)) = backend.authorization {
            let value = vec![format!("{scheme} {param}")];
            set_pairs(
                &mut ex.request_headers,
                "Authorization",
                ExistsAction::Override,
                value,
            );
        }
        Ok(())
    }
}

/// forward-request: the request goes to the backend, and its answer becomes the response.
#[derive(Debug)]
pub struct ForwardRequest(pub Forward);

pub fn parse_forward_request<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Backend])?;
    cx.check_attrs(
        node,
        &[
            "timeout",
            "follow-redirects",
            "buffer-request-body",
            "buffer-response",
            "fail-on-error-status-code",
            "http-version",
        ],
    )?;
    Ok(Box::new(ForwardRequest(Forward {
        timeout_secs: cx.number(node, "timeout", Some(300), 240 * 100)?,
        follow_redirects: cx.boolean(node, "follow-redirects", false)?,
    })))
}

impl Policy for ForwardRequest {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::Wait(Box::pin(async move {
            match at.svc.forward(ex, self.0).await {
                Ok(()) => Flow::Next,
                Err(mut failure) => {
                    failure.policy_id = at.node.id.clone();
                    failure.pos = at.node.pos;
                    Flow::Fail(failure)
                }
            }
        }))
    }

    fn plain_forward(&self) -> Option<Forward> {
        (!self.0.follow_redirects).then_some(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::rewrite;

    #[test]
    fn templates_take_the_operations_parameters() {
        let params = [("id".to_string(), "7".to_string())];
        let (path, query) = rewrite("items/{id}?full=true&of={id}", &params);
        assert_eq!(path, "/items/7");
        assert_eq!(
            query,
            [
                ("full".to_string(), "true".to_string()),
                ("of".to_string(), "7".to_string())
            ]
        );
        assert_eq!(rewrite("/", &[]).0, "/");
    }
}

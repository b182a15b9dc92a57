//! ip-filter and authentication-basic.

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, ExistsAction, Flow, set_pairs};
use crate::expr::Text;
use crate::node::{At, Policy, Run};
use crate::position::Section;
use std::net::IpAddr;

/// ip-filter: callers from the listed addresses and ranges are allowed (or forbidden).
#[derive(Debug)]
pub struct IpFilter {
    pub allow: bool,
    pub addresses: Vec<IpAddr>,
    pub ranges: Vec<(IpAddr, IpAddr)>,
}

pub fn parse_ip_filter<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    cx.check_attrs(node, &["action"])?;
    let allow = match cx.literal(node, "action")?.as_deref() {
        Some("allow") => true,
        Some("forbid") => false,
        _ => {
            return cx.err(
                node,
                "<ip-filter> needs action=\"allow\" or action=\"forbid\"",
            );
        }
    };
    let mut filter = IpFilter {
        allow,
        addresses: Vec::new(),
        ranges: Vec::new(),
    };
    for c in cx.children(node)? {
        let ip = |s: &str| -> Res<IpAddr> {
            s.trim()
                .parse()
                .or_else(|_| cx.err(c, format!("'{s}' is not an IP address")))
        };
        match c.tag_name().name() {
            "address" => filter.addresses.push(ip(&cx.element_text(c))?),
            "address-range" => {
                cx.check_attrs(c, &["from", "to"])?;
                let from = ip(c.attribute("from").unwrap_or(""))?;
                filter
                    .ranges
                    .push((from, ip(c.attribute("to").unwrap_or(""))?));
            }
            other => {
                return cx.err(
                    c,
                    format!("<ip-filter> may contain <address> and <address-range>, not <{other}>"),
                );
            }
        }
    }
    Ok(Box::new(filter))
}

impl Policy for IpFilter {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        let Some(ip) = ex.ip else {
            return Run::Done(at.fail(
                403,
                "FailedToParseCallerIP",
                "Failed to parse the caller IP address.",
            ));
        };
        let listed = self.addresses.contains(&ip)
            || self
                .ranges
                .iter()
                .any(|(from, to)| in_range(ip, *from, *to));
        Run::Done(match (self.allow, listed) {
            (true, true) | (false, false) => Flow::Next,
            (true, false) => at.fail(
                403,
                "CallerIpNotAllowed",
                format!("Caller IP address {ip} is not allowed."),
            ),
            (false, true) => at.fail(
                403,
                "CallerIpBlocked",
                format!("Caller IP address {ip} is blocked."),
            ),
        })
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }
}

fn in_range(ip: IpAddr, from: IpAddr, to: IpAddr) -> bool {
    match (ip, from, to) {
        (IpAddr::V4(i), IpAddr::V4(f), IpAddr::V4(t)) => {
            (u32::from(f)..=u32::from(t)).contains(&u32::from(i))
        }
        (IpAddr::V6(i), IpAddr::V6(f), IpAddr::V6(t)) => {
            (u128::from(f)..=u128::from(t)).contains(&u128::from(i))
        }
        _ => false,
    }
}

/// authentication-basic: the request carries these credentials to the backend.
#[derive(Debug)]
pub struct AuthenticationBasic {
    pub username: Text,
    pub password: Text,
}

pub fn parse_authentication_basic<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    cx.check_attrs(node, &["username", "password"])?;
    Ok(Box::new(AuthenticationBasic {
        username: cx.required(node, "username")?,
        password: cx.required(node, "password")?,
    }))
}

impl Policy for AuthenticationBasic {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }
}

impl AuthenticationBasic {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        use base64::Engine;
        let user = at.text(&self.username, ex)?;
        let password = at.text(&self.password, ex)?;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        set_pairs(
            &mut ex.request_headers,
            "Authorization",
            ExistsAction::Override,
            vec![format!("Basic {token}")],
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_ranges_compare_within_one_family() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_range(ip("10.0.0.5"), ip("10.0.0.1"), ip("10.0.0.9")));
        assert!(!in_range(ip("10.0.1.0"), ip("10.0.0.1"), ip("10.0.0.9")));
        assert!(in_range(ip("::5"), ip("::1"), ip("::9")));
        assert!(!in_range(ip("::5"), ip("10.0.0.1"), ip("10.0.0.9")));
    }
}

/// authentication-managed-identity: an access token for `resource` from the instance's token
/// source, into the Authorization header (or a variable).
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedIdentity {
    pub resource: Text,
    pub client_id: Option<Text>,
    pub variable: Option<String>,
    pub ignore_error: bool,
}

pub fn parse_managed_identity(cx: &mut Ctx<'_, '_>, node: XNode<'_>) -> Res<ManagedIdentity> {
    cx.check_attrs(
        node,
        &[
            "resource",
            "client-id",
            "output-token-variable-name",
            "ignore-error",
        ],
    )?;
    Ok(ManagedIdentity {
        resource: cx.required(node, "resource")?,
        client_id: cx.attr_text(node, "client-id")?,
        variable: cx.literal(node, "output-token-variable-name")?,
        ignore_error: cx.boolean(node, "ignore-error", false)?,
    })
}

pub fn parse_authentication_managed_identity<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    Ok(Box::new(parse_managed_identity(cx, node)?))
}

impl ManagedIdentity {
    /// The token (or `None` when it failed and errors are ignored).
    pub async fn token(&self, at: At<'_>, ex: &Exchange) -> Result<Option<String>, Flow> {
        let resource = at.text(&self.resource, ex)?;
        let client_id = match &self.client_id {
            Some(c) => Some(at.text(c, ex)?),
            None => None,
        };
        match at.svc.identity_token(&resource, client_id.as_deref()).await {
            Ok(t) => Ok(Some(t)),
            Err(_) if self.ignore_error => Ok(None),
            Err(why) => Err(at.fail(
                500,
                "ManagedIdentityTokenFailure",
                format!("Unable to get an access token for the resource '{resource}': {why}"),
            )),
        }
    }
}

impl Policy for ManagedIdentity {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::Wait(Box::pin(async move {
            match self.token(at, ex).await {
                Ok(Some(token)) => {
                    match &self.variable {
                        Some(v) => {
                            ex.variables.insert(v.clone(), crate::expr::V::Str(token));
                        }
                        None => set_pairs(
                            &mut ex.request_headers,
                            "Authorization",
                            ExistsAction::Override,
                            vec![format!("Bearer {token}")],
                        ),
                    }
                    Flow::Next
                }
                Ok(None) => Flow::Next,
                Err(flow) => flow,
            }
        }))
    }
}

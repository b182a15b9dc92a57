//! validate-jwt: the element and how it runs; the token checks themselves are [`crate::jwt`].

use crate::compile::{Ctx, Res, XNode};
use crate::exchange::{Exchange, Flow};
use crate::jwt::{self, InlineKey, Jwt, RequiredClaim, TokenSource};
use crate::node::{At, Policy, Run};
use crate::position::Section;

#[derive(Debug)]
pub struct ValidateJwt(pub Jwt);

pub fn parse_validate_jwt<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    cx.check_attrs(
        node,
        &[
            "header-name",
            "query-parameter-name",
            "token-value",
            "failed-validation-httpcode",
            "failed-validation-error-message",
            "require-expiration-time",
            "require-scheme",
            "require-signed-tokens",
            "clock-skew",
            "output-token-variable-name",
        ],
    )?;
    let mut jwt = Jwt {
        source: token_source(cx, node)?,
        status: cx.number(node, "failed-validation-httpcode", Some(401), 599)? as u16,
        message: cx.literal(node, "failed-validation-error-message")?,
        require_expiration: cx.boolean(node, "require-expiration-time", true)?,
        require_scheme: cx.literal(node, "require-scheme")?,
        require_signed: cx.boolean(node, "require-signed-tokens", true)?,
        clock_skew_secs: cx.number(node, "clock-skew", Some(0), 86_400)?,
        output_variable: cx.literal(node, "output-token-variable-name")?,
        openid_urls: Vec::new(),
        keys: Vec::new(),
        audiences: Vec::new(),
        issuers: Vec::new(),
        claims: Vec::new(),
        memo: Default::default(),
    };
    if !jwt.require_signed {
        return cx.err(
            node,
            "require-signed-tokens=\"false\" is not supported: Gatehouse accepts only signed tokens",
        );
    }
    for c in cx.children(node)? {
        parse_child(cx, c, &mut jwt)?;
    }
    if jwt.keys.is_empty() && jwt.openid_urls.is_empty() {
        return cx.err(
            node,
            "<validate-jwt> needs <issuer-signing-keys> or <openid-config> to check signatures with",
        );
    }
    Ok(Box::new(ValidateJwt(jwt)))
}

fn token_source(cx: &mut Ctx<'_, '_>, node: XNode<'_>) -> Res<TokenSource> {
    let sources = ["header-name", "query-parameter-name", "token-value"];
    if sources
        .iter()
        .filter(|s| node.attribute(**s).is_some())
        .count()
        != 1
    {
        return cx.err(
            node,
            "<validate-jwt> needs exactly one of 'header-name', 'query-parameter-name' and 'token-value'",
        );
    }
    Ok(if let Some(h) = cx.literal(node, "header-name")? {
        TokenSource::Header(h)
    } else if let Some(q) = cx.literal(node, "query-parameter-name")? {
        TokenSource::Query(q)
    } else {
        TokenSource::Value(cx.required(node, "token-value")?)
    })
}

fn parse_child<'a>(cx: &mut Ctx<'a, '_>, c: XNode<'a>, jwt: &mut Jwt) -> Res<()> {
    match c.tag_name().name() {
        "openid-config" => {
            cx.check_attrs(c, &["url"])?;
            let url = cx.literal(c, "url")?.unwrap_or_default();
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return cx.err(
                    c,
                    format!("<openid-config url> must be an http(s) URL, not '{url}'"),
                );
            }
            jwt.openid_urls.push(url);
        }
        "issuer-signing-keys" => {
            for k in cx.children(c)? {
                jwt.keys.push(signing_key(cx, k)?);
            }
        }
        "audiences" => jwt.audiences = cx.item_texts(c, "audience")?,
        "issuers" => jwt.issuers = cx.item_texts(c, "issuer")?,
        "required-claims" => {
            for claim in cx.children(c)? {
                jwt.claims.push(required_claim(cx, claim)?);
            }
        }
        "decryption-keys" => {
            return cx.err(c, "encrypted tokens (decryption-keys) are not supported");
        }
        other => return cx.err(c, format!("<validate-jwt> has no element <{other}>")),
    }
    Ok(())
}

fn signing_key(cx: &mut Ctx<'_, '_>, k: XNode<'_>) -> Res<InlineKey> {
    if k.tag_name().name() != "key" {
        return cx.err(k, "<issuer-signing-keys> may contain only <key>");
    }
    if k.attribute("certificate-id").is_some() {
        return cx.err(
            k,
            "keys by certificate-id are not supported; give n and e, a PEM public key or a base64 secret",
        );
    }
    if let (Some(n), Some(e)) = (k.attribute("n"), k.attribute("e")) {
        return Ok(InlineKey::Rsa {
            n: n.to_string(),
            e: e.to_string(),
        });
    }
    let text = cx.substitute(k, &cx.element_text(k))?;
    if text.starts_with("-----BEGIN") {
        return Ok(InlineKey::Pem(text));
    }
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(text.trim()) {
        Ok(bytes) => Ok(InlineKey::Symmetric(bytes)),
        Err(_) => cx.err(k, "a symmetric <key> must be base64"),
    }
}

fn required_claim(cx: &mut Ctx<'_, '_>, claim: XNode<'_>) -> Res<RequiredClaim> {
    if claim.tag_name().name() != "claim" {
        return cx.err(claim, "<required-claims> may contain only <claim>");
    }
    cx.check_attrs(claim, &["name", "match", "separator"])?;
    let match_all = cx.choice(claim, "match", &["all", "any"])? == "all";
    let mut values = Vec::new();
    for v in claim.children().filter(|n| n.is_element()) {
        values.push(cx.substitute(v, v.text().unwrap_or("").trim())?);
    }
    Ok(RequiredClaim {
        name: claim.attribute("name").unwrap_or_default().to_string(),
        match_all,
        separator: claim.attribute("separator").map(str::to_string),
        values,
    })
}

impl Policy for ValidateJwt {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }

    fn openid_urls(&self) -> &[String] {
        &self.0.openid_urls
    }
}

/// The token's claims once `jwt`'s checks pass, with the keys of the configurations at
/// `urls`; else the configured failure.
fn checked_claims(
    jwt: &Jwt,
    urls: &[String],
    at: At<'_>,
    ex: &Exchange,
) -> Result<serde_json::Value, Flow> {
    let value = match &jwt.source {
        TokenSource::Value(t) => Some(at.text(t, ex)?),
        _ => None,
    };
    let query = |q: &str| {
        ex.query
            .iter()
            .find(|(k, _)| k == q)
            .map(|(_, v)| v.clone())
    };
    let header = |h: &str| ex.header(h).map(str::to_string);
    jwt::extract(jwt, header, query, value)
        .and_then(|token| {
            let keys: Vec<_> = urls
                .iter()
                .flat_map(|url| at.svc.openid_keys(url).unwrap_or_default())
                .collect();
            jwt::validate(jwt, &token, &keys)
        })
        .map_err(|refused| {
            let message = jwt.message.clone().unwrap_or(refused.message);
            at.fail(jwt.status, refused.reason, message)
        })
}

impl ValidateJwt {
    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let jwt = &self.0;
        let claims = checked_claims(jwt, &jwt.openid_urls, at, ex)?;
        if let Some(v) = &jwt.output_variable {
            ex.variables.insert(v.clone(), jwt::as_variable(claims));
        }
        Ok(())
    }
}

/// validate-azure-ad-token: validate-jwt against an Entra ID tenant — its OpenID configuration
/// and issuers — with the token's client application (`azp`, or `appid` in v1 tokens) among
/// the allowed ones.
#[derive(Debug)]
pub struct ValidateAzureAdToken {
    pub tenant: String,
    pub client_ids: Vec<String>,
    /// For Entra ID's public authority.
    pub jwt: Jwt,
    /// For another authority (the gateway's `entra-authority`, a sovereign cloud or a test
    /// issuer): the same checks with that authority's issuer, made on first use.
    pub elsewhere: std::sync::OnceLock<(String, Jwt)>,
}

pub fn parse_validate_azure_ad_token<'a>(
    cx: &mut Ctx<'a, '_>,
    node: XNode<'a>,
    section: Section,
) -> Res<Box<dyn Policy>> {
    cx.allowed_in(node, section, &[Section::Inbound])?;
    cx.check_attrs(
        node,
        &[
            "tenant-id",
            "header-name",
            "query-parameter-name",
            "token-value",
            "failed-validation-httpcode",
            "failed-validation-error-message",
            "output-token-variable-name",
        ],
    )?;
    let tenant = cx.literal(node, "tenant-id")?.unwrap_or_default();
    if tenant.is_empty()
        || !tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
    {
        return cx.err(
            node,
            "<validate-azure-ad-token> needs 'tenant-id': a tenant's id or domain name",
        );
    }
    let source = if ["header-name", "query-parameter-name", "token-value"]
        .iter()
        .any(|a| node.attribute(*a).is_some())
    {
        token_source(cx, node)?
    } else {
        TokenSource::Header("Authorization".into())
    };
    let mut jwt = Jwt {
        source,
        status: cx.number(node, "failed-validation-httpcode", Some(401), 599)? as u16,
        message: cx.literal(node, "failed-validation-error-message")?,
        require_expiration: true,
        require_scheme: None,
        require_signed: true,
        clock_skew_secs: 0,
        output_variable: cx.literal(node, "output-token-variable-name")?,
        openid_urls: vec![entra_config_url(crate::exchange::ENTRA_AUTHORITY, &tenant)],
        keys: Vec::new(),
        audiences: Vec::new(),
        issuers: entra_issuers(crate::exchange::ENTRA_AUTHORITY, &tenant),
        claims: Vec::new(),
        memo: Default::default(),
    };
    let mut client_ids = Vec::new();
    for c in cx.children(node)? {
        match c.tag_name().name() {
            "client-application-ids" => client_ids = cx.item_texts(c, "application-id")?,
            "backend-application-ids" => {
                for id in cx.item_texts(c, "application-id")? {
                    jwt.audiences.push(format!("api://{id}"));
                    jwt.audiences.push(id);
                }
            }
            "audiences" => jwt.audiences.extend(cx.item_texts(c, "audience")?),
            "required-claims" => {
                for claim in cx.children(c)? {
                    jwt.claims.push(required_claim(cx, claim)?);
                }
            }
            "decryption-keys" => {
                return cx.err(c, "encrypted tokens (decryption-keys) are not supported");
            }
            other => {
                return cx.err(
                    c,
                    format!("<validate-azure-ad-token> has no element <{other}>"),
                );
            }
        }
    }
    if client_ids.is_empty() {
        return cx.err(node, "<validate-azure-ad-token> needs <client-application-ids> with at least one <application-id>");
    }
    Ok(Box::new(ValidateAzureAdToken {
        tenant,
        client_ids,
        jwt,
        elsewhere: Default::default(),
    }))
}

/// A tenant's OpenID configuration under an authority (always read from Entra ID's URL: the
/// gateway maps it to its configured authority).
fn entra_config_url(authority: &str, tenant: &str) -> String {
    format!("{authority}/{tenant}/v2.0/.well-known/openid-configuration")
}

fn entra_issuers(authority: &str, tenant: &str) -> Vec<String> {
    vec![
        format!("{authority}/{tenant}/v2.0"),
        format!("https://sts.windows.net/{tenant}/"),
    ]
}

impl ValidateAzureAdToken {
    fn checks(&self, authority: &str) -> &Jwt {
        if authority == crate::exchange::ENTRA_AUTHORITY {
            return &self.jwt;
        }
        let (made_for, jwt) = self.elsewhere.get_or_init(|| {
            let mut jwt = self.jwt.clone();
            jwt.issuers = entra_issuers(authority, &self.tenant);
            (authority.to_string(), jwt)
        });
        if made_for == authority {
            jwt
        } else {
            &self.jwt
        }
    }

    fn apply(&self, at: At<'_>, ex: &mut Exchange) -> Result<(), Flow> {
        let jwt = self.checks(&at.svc.entra_authority());
        let claims = checked_claims(jwt, &self.jwt.openid_urls, at, ex)?;
        let fail = |reason: &'static str, message: String| {
            at.fail(jwt.status, reason, jwt.message.clone().unwrap_or(message))
        };
        let client = claims
            .get("azp")
            .or_else(|| claims.get("appid"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        if !self
            .client_ids
            .iter()
            .any(|c| c.eq_ignore_ascii_case(client))
        {
            return Err(fail(
                "TokenClaimNotFound",
                "The token's client application is not allowed.".into(),
            ));
        }
        if let Some(v) = &jwt.output_variable {
            ex.variables.insert(v.clone(), jwt::as_variable(claims));
        }
        Ok(())
    }
}

impl Policy for ValidateAzureAdToken {
    fn run<'a>(&'a self, at: At<'a>, ex: &'a mut Exchange) -> Run<'a> {
        Run::of(self.apply(at, ex))
    }

    fn leaves_request_alone(&self) -> bool {
        true
    }

    fn openid_urls(&self) -> &[String] {
        &self.jwt.openid_urls
    }
}

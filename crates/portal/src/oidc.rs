//! Sign-in through an OpenID Connect provider (APIM's `identityProviders`): the authorization
//! code flow, the ID token checked against the provider's keys, and the portal account found by
//! the identity (`identities[{provider, id}]`) or by a verified email, or made on first sign-in.
//!
//! Where the provider is: `authority` given as a URL is the issuer itself (a company's own
//! provider: `https://login.contoso.com/realms/staff`); otherwise `aad` is Microsoft Entra ID
//! (`https://{authority or login.microsoftonline.com}/{signinTenant or organizations}/v2.0`),
//! `microsoft` the Microsoft account issuer and `google` Google's. Facebook and Twitter do not
//! speak OpenID Connect and are refused with that reason.
//!
//! Invariants: the `state` and `nonce` of a sign-in are bound to the browser by a signed,
//! short-lived cookie, and the ID token must carry that nonce, the provider's issuer, our client
//! id as audience, and a signature by one of the provider's published keys; an email links to
//! an existing account only when the provider says it is verified. The client secret is never
//! logged or shown.

use crate::error::PortalError;
use crate::secret;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The cookie that carries a sign-in's state across the provider.
pub const FLOW_COOKIE: &str = "gh_oidc";
/// How long a sign-in at the provider may take.
pub const FLOW_LIFETIME_SECS: i64 = 600;
/// How long a provider's discovery document and keys are kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// One configured provider, as the portal uses it.
#[derive(Clone)]
pub struct Provider {
    pub id: String,
    pub issuer: String,
    pub client_id: String,
    client_secret: String,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Provider({}, {})", self.id, self.issuer)
    }
}

/// The label of a provider's sign-in button.
pub fn label(id: &str) -> &'static str {
    match id {
        "aad" => "your organization",
        "aadB2C" => "Azure AD B2C",
        "microsoft" => "a Microsoft account",
        "google" => "Google",
        _ => "an identity provider",
    }
}

fn text(p: &Map<String, Value>, name: &str) -> String {
    p.get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The provider an `identityProviders` resource describes.
pub fn provider(id: &str, props: &Map<String, Value>) -> Result<Provider, PortalError> {
    let authority = text(props, "authority");
    let issuer = if authority.starts_with("https://") || authority.starts_with("http://") {
        authority.trim_end_matches('/').to_string()
    } else {
        match id {
            "aad" | "aadB2C" => {
                let host = if authority.is_empty() {
                    "login.microsoftonline.com".to_string()
                } else {
                    authority
                };
                let tenant = match text(props, "signinTenant") {
                    t if t.is_empty() => "organizations".to_string(),
                    t => t,
                };
                format!("https://{host}/{tenant}/v2.0")
            }
            "microsoft" => "https://login.microsoftonline.com/consumers/v2.0".into(),
            "google" => "https://accounts.google.com".into(),
            other => {
                return Err(PortalError::Invalid(format!(
                    "Signing in with '{other}' is not supported: it is not an OpenID Connect provider."
                )));
            }
        }
    };
    Ok(Provider {
        id: id.to_string(),
        issuer,
        client_id: text(props, "clientId"),
        client_secret: text(props, "clientSecret"),
    })
}

/// What the provider publishes about itself, and its keys.
#[derive(Clone)]
pub struct Discovered {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: Option<String>,
    keys: Vec<Value>,
}

/// Discovery documents and keys by issuer.
#[derive(Default)]
pub struct DiscoveryCache(Mutex<HashMap<String, (Instant, Discovered)>>);

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, PortalError> {
    let resp = http.get(url).send().await.map_err(|e| {
        PortalError::Invalid(format!(
            "The identity provider could not be reached: {}",
            e.without_url()
        ))
    })?;
    if !resp.status().is_success() {
        return Err(PortalError::Invalid(format!(
            "The identity provider answered {} to {url}",
            resp.status()
        )));
    }
    resp.json()
        .await
        .map_err(|_| PortalError::Invalid(format!("The identity provider's {url} is not JSON")))
}

impl DiscoveryCache {
    pub async fn get(
        &self,
        http: &reqwest::Client,
        issuer: &str,
        refresh: bool,
    ) -> Result<Discovered, PortalError> {
        if !refresh
            && let Some((at, d)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(issuer)
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(d.clone());
        }
        let doc = get_json(http, &format!("{issuer}/.well-known/openid-configuration")).await?;
        let field = |n: &str| doc.get(n).and_then(Value::as_str).map(str::to_string);
        let missing = |n: &str| {
            PortalError::Invalid(format!("The identity provider's configuration has no {n}"))
        };
        let jwks_uri = field("jwks_uri").ok_or_else(|| missing("jwks_uri"))?;
        let jwks = get_json(http, &jwks_uri).await?;
        let d = Discovered {
            issuer: field("issuer").ok_or_else(|| missing("issuer"))?,
            authorization_endpoint: field("authorization_endpoint")
                .ok_or_else(|| missing("authorization_endpoint"))?,
            token_endpoint: field("token_endpoint").ok_or_else(|| missing("token_endpoint"))?,
            userinfo_endpoint: field("userinfo_endpoint"),
            keys: jwks
                .get("keys")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
        };
        if d.issuer.trim_end_matches('/') != issuer.trim_end_matches('/') {
            return Err(PortalError::Invalid(format!(
                "The identity provider calls itself '{}', not '{issuer}'",
                d.issuer
            )));
        }
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(issuer.to_string(), (Instant::now(), d.clone()));
        Ok(d)
    }
}

/// A sign-in in progress: what the flow cookie holds.
#[derive(Debug, PartialEq)]
pub struct Flow {
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub next: String,
    pub expires: i64,
}

/// The flow cookie's value, signed.
pub fn seal_flow(key: &secret::PortalKey, flow: &Flow) -> String {
    let body = [
        &flow.provider,
        &flow.state,
        &flow.nonce,
        &flow.next,
        &flow.expires.to_string(),
    ]
    .iter()
    .map(|p| secret::encode(p))
    .collect::<Vec<_>>()
    .join(".");
    let sig = key.sign("oidc", &body);
    format!("{body}.{sig}")
}

/// The flow a cookie holds, if it is ours and unexpired.
pub fn open_flow(key: &secret::PortalKey, value: &str, now: i64) -> Option<Flow> {
    let (body, sig) = value.rsplit_once('.')?;
    if !key.verify("oidc", body, sig) {
        return None;
    }
    let parts: Vec<String> = body.split('.').map(secret::decode).collect::<Option<_>>()?;
    let [provider, st, nonce, next, expires] = parts.as_slice() else {
        return None;
    };
    let expires: i64 = expires.parse().ok()?;
    (expires > now).then(|| Flow {
        provider: provider.clone(),
        state: st.clone(),
        nonce: nonce.clone(),
        next: next.clone(),
        expires,
    })
}

/// Where the provider sends the browser back to.
pub fn redirect_uri(public_url: &str, provider: &str) -> String {
    format!("{public_url}/oidc/{provider}/callback")
}

/// The provider's sign-in page for this flow.
pub fn authorization_url(public_url: &str, p: &Provider, d: &Discovered, flow: &Flow) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", &p.client_id)
        .append_pair("redirect_uri", &redirect_uri(public_url, &p.id))
        .append_pair("scope", "openid email profile")
        .append_pair("state", &flow.state)
        .append_pair("nonce", &flow.nonce)
        .finish();
    let sep = if d.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{}{sep}{query}", d.authorization_endpoint)
}

/// Who signed in at the provider.
#[derive(Debug, Clone)]
pub struct Identity {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub first_name: String,
    pub last_name: String,
}

/// How the portal reaches providers: its HTTP client, the discovery cache, its public URL.
pub struct Reach<'a> {
    pub http: &'a reqwest::Client,
    pub discovery: &'a DiscoveryCache,
    pub public_url: &'a str,
}

/// Exchanges the code for tokens and checks the ID token.
pub async fn identity(
    reach: &Reach<'_>,
    p: &Provider,
    flow: &Flow,
    code: &str,
) -> Result<Identity, PortalError> {
    let d = reach.discovery.get(reach.http, &p.issuer, false).await?;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        form_urlencoded::byte_serialize(p.client_id.as_bytes()).collect::<String>(),
        form_urlencoded::byte_serialize(p.client_secret.as_bytes()).collect::<String>()
    ));
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "authorization_code")
        .append_pair("code", code)
        .append_pair("redirect_uri", &redirect_uri(reach.public_url, &p.id))
        .finish();
    let resp = reach
        .http
        .post(&d.token_endpoint)
        .header("authorization", format!("Basic {basic}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            PortalError::Invalid(format!(
                "The identity provider could not be reached: {}",
                e.without_url()
            ))
        })?;
    let status = resp.status();
    let tokens: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let reason = tokens
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("no reason given");
        return Err(PortalError::Invalid(format!(
            "The identity provider refused the sign-in ({status}: {reason})."
        )));
    }
    let id_token = tokens
        .get("id_token")
        .and_then(Value::as_str)
        .ok_or_else(|| PortalError::Invalid("The identity provider gave no ID token.".into()))?;
    let claims = match check_id_token(id_token, &d, p, &flow.nonce) {
        Err(_) => {
            // The provider may have rolled its keys since they were read.
            let fresh = reach.discovery.get(reach.http, &p.issuer, true).await?;
            check_id_token(id_token, &fresh, p, &flow.nonce)?
        }
        ok => ok?,
    };
    let mut claims = claims;
    if !claims.contains_key("email")
        && let (Some(url), Some(access)) = (
            &d.userinfo_endpoint,
            tokens.get("access_token").and_then(Value::as_str),
        )
    {
        // Many providers put the profile in the userinfo answer rather than in the ID token.
        let info = userinfo(reach.http, url, access).await?;
        if info.get("sub") == claims.get("sub") {
            for (k, v) in info {
                claims.entry(k).or_insert(v);
            }
        }
    }
    let c = |n: &str| {
        claims
            .get(n)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let email = c("email");
    if email.is_empty() {
        return Err(PortalError::Invalid(
            "The identity provider gave no email address; ask it for the 'email' scope.".into(),
        ));
    }
    let local = email.split('@').next().unwrap_or_default().to_string();
    let or = |v: String, d: &str| if v.is_empty() { d.to_string() } else { v };
    Ok(Identity {
        subject: c("sub"),
        email_verified: claims.get("email_verified") != Some(&Value::Bool(false)),
        first_name: or(c("given_name"), &or(c("name"), &local)),
        last_name: or(c("family_name"), "-"),
        email,
    })
}

async fn userinfo(
    http: &reqwest::Client,
    url: &str,
    access_token: &str,
) -> Result<Map<String, Value>, PortalError> {
    let resp = http
        .get(url)
        .bearer_auth(access_token)
        .send()
        .await
        .map_err(|e| {
            PortalError::Invalid(format!(
                "The identity provider could not be reached: {}",
                e.without_url()
            ))
        })?;
    if !resp.status().is_success() {
        return Err(PortalError::Invalid(format!(
            "The identity provider's userinfo answered {}",
            resp.status()
        )));
    }
    match resp.json().await {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(PortalError::Invalid(
            "The identity provider's userinfo is not a JSON object".into(),
        )),
    }
}

fn check_id_token(
    token: &str,
    d: &Discovered,
    p: &Provider,
    nonce: &str,
) -> Result<Map<String, Value>, PortalError> {
    let bad = |why: &str| {
        PortalError::Invalid(format!(
            "The identity provider's ID token was refused: {why}."
        ))
    };
    let header = jsonwebtoken::decode_header(token).map_err(|_| bad("it is not a JWT"))?;
    if !matches!(
        header.alg,
        Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::ES256
            | Algorithm::ES384
    ) {
        return Err(bad("its algorithm is not one a provider signs with"));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[&d.issuer]);
    validation.set_audience(&[&p.client_id]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    for k in &d.keys {
        if header.kid.is_some() && k.get("kid").and_then(Value::as_str) != header.kid.as_deref() {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone()) else {
            continue;
        };
        let Ok(key) = DecodingKey::from_jwk(&jwk) else {
            continue;
        };
        if let Ok(data) = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
            if data.claims.get("nonce").and_then(Value::as_str) != Some(nonce) {
                return Err(bad("its nonce is not this sign-in's"));
            }
            return Ok(data.claims);
        }
    }
    Err(bad(
        "no key of the provider verifies it, or it is expired or not for this portal",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn props(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn issuers_follow_apims_providers_and_urls() {
        let p = |id: &str, v: Value| provider(id, &props(v)).map(|p| p.issuer);
        assert_eq!(
            p(
                "aad",
                json!({"clientId": "c", "signinTenant": "contoso.onmicrosoft.com"})
            )
            .unwrap(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0"
        );
        assert_eq!(
            p(
                "aad",
                json!({"clientId": "c", "authority": "https://idp.contoso.com/realms/staff/"})
            )
            .unwrap(),
            "https://idp.contoso.com/realms/staff"
        );
        assert_eq!(
            p("google", json!({"clientId": "c"})).unwrap(),
            "https://accounts.google.com"
        );
        assert!(p("facebook", json!({"clientId": "c"})).is_err());
    }

    #[test]
    fn a_flow_cookie_reads_back_only_signed_and_in_time() {
        let key = crate::secret::PortalKey::random();
        let flow = Flow {
            provider: "aad".into(),
            state: "s".into(),
            nonce: "n".into(),
            next: "/apis".into(),
            expires: 100,
        };
        let sealed = seal_flow(&key, &flow);
        assert_eq!(open_flow(&key, &sealed, 99), Some(flow));
        assert_eq!(open_flow(&key, &sealed, 100), None);
        assert_eq!(open_flow(&key, &sealed.replace(".", "x."), 99), None);
    }
}

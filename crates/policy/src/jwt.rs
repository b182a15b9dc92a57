//! validate-jwt: finds the token, checks its signature against inline keys or an OpenID
//! provider's JWKS, then expiry, audiences, issuers and required claims, with APIM's reasons.

use crate::expr::{Text, V};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Where validate-jwt finds the token.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSource {
    Header(String),
    Query(String),
    Value(Text),
}

/// A key validate-jwt checks signatures with.
#[derive(Debug, Clone, PartialEq)]
pub enum InlineKey {
    /// HS256/384/512: the base64 secret.
    Symmetric(Vec<u8>),
    /// RS256…: modulus and exponent, base64url.
    Rsa { n: String, e: String },
    /// A PEM public key (RSA or EC): Gatehouse's extension for inline ES256 keys.
    Pem(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequiredClaim {
    pub name: String,
    pub match_all: bool,
    pub separator: Option<String>,
    pub values: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Jwt {
    pub source: TokenSource,
    pub status: u16,
    pub message: Option<String>,
    pub require_expiration: bool,
    pub require_scheme: Option<String>,
    pub require_signed: bool,
    pub clock_skew_secs: u64,
    pub output_variable: Option<String>,
    pub openid_urls: Vec<String>,
    pub keys: Vec<InlineKey>,
    pub audiences: Vec<String>,
    pub issuers: Vec<String>,
    pub claims: Vec<RequiredClaim>,
    /// Tokens this policy instance already validated, and its decoded inline keys: compiled
    /// once per document, so a configuration change starts afresh.
    pub memo: Memo,
}

/// Per policy instance: validated tokens (by SHA-256, until their expiry or five minutes) and
/// the inline keys decoded once. Equal to any other memo: it is a cache, not configuration.
#[derive(Clone, Default)]
pub struct Memo(Arc<MemoInner>);

#[derive(Default)]
struct MemoInner {
    tokens: Mutex<HashMap<[u8; 32], (Instant, Value)>>,
    keys: OnceLock<Vec<(Algorithm, DecodingKey)>>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Memo")
    }
}

impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

const MEMO_MAX_AGE: Duration = Duration::from_secs(300);
const MEMO_ENTRIES: usize = 10_000;

/// Why a token was refused: APIM's reason and message.
#[derive(Debug)]
pub struct Refused {
    pub reason: &'static str,
    pub message: String,
}

fn refused(reason: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        reason,
        message: message.into(),
    }
}

fn family(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => "HS",
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => "RS",
        Algorithm::ES256 | Algorithm::ES384 => "ES",
        _ => "other",
    }
}

/// The raw token: from its header (without the scheme), query parameter or expression value.
pub fn extract(
    jwt: &Jwt,
    header: impl Fn(&str) -> Option<String>,
    query: impl Fn(&str) -> Option<String>,
    value: Option<String>,
) -> Result<String, Refused> {
    let raw = match &jwt.source {
        TokenSource::Header(h) => header(h),
        TokenSource::Query(q) => query(q),
        TokenSource::Value(_) => value,
    };
    let raw = raw.map(|r| r.trim().to_string()).filter(|r| !r.is_empty());
    let Some(raw) = raw else {
        return Err(refused("TokenNotPresent", "JWT not present."));
    };
    let token = match raw.split_once(' ') {
        Some((scheme, rest)) => {
            if let Some(want) = &jwt.require_scheme
                && !scheme.eq_ignore_ascii_case(want)
            {
                return Err(refused(
                    "TokenSchemeNotAllowed",
                    format!("The token scheme must be {want}."),
                ));
            }
            rest.trim().to_string()
        }
        None => {
            if jwt.require_scheme.is_some() {
                return Err(refused("TokenSchemeNotAllowed", "The token has no scheme."));
            }
            raw
        }
    };
    Ok(token)
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Validates `token`; returns its claims. `jwks` are the keys of the OpenID providers. A token
/// this policy validated before is accepted from the memo until it expires (at most 5 minutes).
pub fn validate(jwt: &Jwt, token: &str, jwks: &[Value]) -> Result<Value, Refused> {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    {
        let tokens = jwt.memo.0.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((until, claims)) = tokens.get(&digest)
            && *until > Instant::now()
        {
            return Ok(claims.clone());
        }
    }
    let claims = validate_fresh(jwt, token, jwks)?;
    let exp = claims.get("exp").and_then(Value::as_i64);
    let ttl = match exp {
        Some(e) => {
            Duration::from_secs((e - now_secs()).clamp(0, MEMO_MAX_AGE.as_secs() as i64) as u64)
        }
        None => MEMO_MAX_AGE,
    };
    let mut tokens = jwt.memo.0.tokens.lock().unwrap_or_else(|e| e.into_inner());
    if tokens.len() >= MEMO_ENTRIES {
        let now = Instant::now();
        tokens.retain(|_, (until, _)| *until > now);
        if tokens.len() >= MEMO_ENTRIES {
            tokens.clear();
        }
    }
    tokens.insert(digest, (Instant::now() + ttl, claims.clone()));
    Ok(claims)
}

fn inline_keys(jwt: &Jwt) -> &[(Algorithm, DecodingKey)] {
    jwt.memo.0.keys.get_or_init(|| {
        let mut out = Vec::new();
        for k in &jwt.keys {
            match k {
                InlineKey::Symmetric(s) => {
                    out.push((Algorithm::HS256, DecodingKey::from_secret(s)))
                }
                InlineKey::Rsa { n, e } => out.extend(
                    DecodingKey::from_rsa_components(n, e)
                        .ok()
                        .map(|d| (Algorithm::RS256, d)),
                ),
                InlineKey::Pem(p) => {
                    if let Ok(d) = DecodingKey::from_rsa_pem(p.as_bytes()) {
                        out.push((Algorithm::RS256, d));
                    } else if let Ok(d) = DecodingKey::from_ec_pem(p.as_bytes()) {
                        out.push((Algorithm::ES256, d));
                    }
                }
            }
        }
        out
    })
}

fn validate_fresh(jwt: &Jwt, token: &str, jwks: &[Value]) -> Result<Value, Refused> {
    let header = jsonwebtoken::decode_header(token)
        .map_err(|_| refused("JwtInvalid", "JWT is not valid."))?;
    let alg = header.alg;
    let mut keys: Vec<DecodingKey> = inline_keys(jwt)
        .iter()
        .filter(|(a, _)| family(*a) == family(alg))
        .map(|(_, k)| k.clone())
        .collect();
    for k in jwks {
        if let Some(kid) = &header.kid
            && k.get("kid")
                .and_then(Value::as_str)
                .is_some_and(|x| x != kid)
        {
            continue;
        }
        if let Ok(jwk) = serde_json::from_value::<jsonwebtoken::jwk::Jwk>(k.clone())
            && let Ok(key) = DecodingKey::from_jwk(&jwk)
        {
            keys.push(key);
        }
    }
    if keys.is_empty() {
        return Err(refused(
            "TokenSignatureKeyNotFound",
            "Signature key not found.",
        ));
    }
    let mut validation = Validation::new(alg);
    validation.leeway = jwt.clock_skew_secs;
    validation.validate_exp = jwt.require_expiration;
    validation.validate_nbf = true;
    validation.required_spec_claims = if jwt.require_expiration {
        ["exp".to_string()].into()
    } else {
        Default::default()
    };
    if jwt.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&jwt.audiences);
    }
    if !jwt.issuers.is_empty() {
        validation.set_issuer(&jwt.issuers);
    }
    let mut last = refused("TokenSignatureInvalid", "JWT signature is invalid.");
    for key in &keys {
        match jsonwebtoken::decode::<Value>(token, key, &validation) {
            Ok(data) => {
                check_claims(jwt, &data.claims)?;
                return Ok(data.claims);
            }
            Err(e) => {
                last = match e.kind() {
                    ErrorKind::InvalidSignature => continue,
                    ErrorKind::ExpiredSignature => refused(
                        "TokenExpired",
                        "Lifetime validation failed. The token is expired.",
                    ),
                    ErrorKind::ImmatureSignature => refused(
                        "TokenNotYetValid",
                        "Lifetime validation failed. The token is not yet valid.",
                    ),
                    ErrorKind::InvalidAudience => {
                        refused("TokenAudienceNotAllowed", "Audience validation failed.")
                    }
                    ErrorKind::InvalidIssuer => {
                        refused("TokenIssuerNotAllowed", "Issuer validation failed.")
                    }
                    ErrorKind::MissingRequiredClaim(c) => refused(
                        "TokenClaimNotFound",
                        format!("The token has no '{c}' claim."),
                    ),
                    _ => refused("JwtInvalid", "JWT is not valid."),
                };
                return Err(last);
            }
        }
    }
    Err(last)
}

fn claim_values(v: &Value, separator: Option<&str>) -> Vec<String> {
    let list: Vec<String> = match v {
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| x.to_string())
            })
            .collect(),
        Value::String(s) => vec![s.clone()],
        other => vec![other.to_string()],
    };
    match separator {
        Some(sep) if !sep.is_empty() => list
            .iter()
            .flat_map(|s| s.split(sep).map(|p| p.trim().to_string()))
            .collect(),
        _ => list,
    }
}

fn check_claims(jwt: &Jwt, claims: &Value) -> Result<(), Refused> {
    for c in &jwt.claims {
        let Some(v) = claims.get(&c.name) else {
            return Err(refused(
                "TokenClaimNotFound",
                format!("The token has no '{}' claim.", c.name),
            ));
        };
        if c.values.is_empty() {
            continue;
        }
        let have = claim_values(v, c.separator.as_deref());
        let ok = if c.match_all {
            c.values.iter().all(|w| have.contains(w))
        } else {
            c.values.iter().any(|w| have.contains(w))
        };
        if !ok {
            return Err(refused(
                "TokenClaimValueNotAllowed",
                format!("The '{}' claim has a value that is not allowed.", c.name),
            ));
        }
    }
    Ok(())
}

/// The claims as `context.Variables[output-token-variable-name]` holds them.
pub fn as_variable(claims: Value) -> V {
    V::json(claims)
}

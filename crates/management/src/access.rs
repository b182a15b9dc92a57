//! Who may do what through the management API: the admin token, and scoped tokens created by
//! the admin with one of three roles.
//!
//! | role | may |
//! |---|---|
//! | `reader` | GET and HEAD, secrets left out (no `listSecrets`, `listValue`, journal secrets) |
//! | `contributor` | what a reader may, and change resources: PUT, PATCH, DELETE, their actions (`listSecrets`, `regenerate*Key`, …), `PATCH /` |
//! | `operator` | what a reader may, and back up, restore, freeze, drain, digest, replay and hand over the journal, adopt an identity, delete the service: what a move asks of an instance |
//! | admin (the admin token) | everything, and only it manages tokens |
//!
//! Invariants: a token's secret is never stored (its SHA-256 is) nor returned after it was
//! created; a token is `ght_<id>_<secret>`, so it is found by id and checked in constant time;
//! an expired or revoked token is refused like an unknown one; every change is journaled with
//! the caller's id (`admin` or the token's id), never a token's value.

use crate::error::ApiError;
use crate::state::AppState;
use axum::http::{HeaderMap, Method, StatusCode, header};
use base64::Engine;
use gatehouse_store::TokenRecord;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Reader,
    Contributor,
    Operator,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s.to_ascii_lowercase().as_str() {
            "reader" => Some(Role::Reader),
            "contributor" => Some(Role::Contributor),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Contributor => "contributor",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// The caller of a request: who (for the journal) and with which role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `admin`, or the token's id.
    pub id: String,
    pub role: Role,
}

impl Caller {
    pub fn admin() -> Caller {
        Caller {
            id: "admin".into(),
            role: Role::Admin,
        }
    }
}

const PREFIX: &str = "ght_";

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, message)
}

/// The bearer token of a request.
fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        unauthorized(
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        )
    })?;
    value
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| unauthorized("InvalidAuthenticationToken", "The access token is invalid."))
}

/// Who is calling: the admin token, or a scoped token that exists, matches and has not expired.
pub fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = bearer(headers)?;
    if constant_time_eq(token.as_bytes(), state.token.as_bytes()) {
        return Ok(Caller::admin());
    }
    let invalid = || unauthorized("InvalidAuthenticationToken", "The access token is invalid.");
    let (id, secret) = token
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .ok_or_else(invalid)?;
    let record = state.store.token(id)?.ok_or_else(invalid)?;
    if !constant_time_eq(hash(secret).as_bytes(), record.hash.as_bytes()) {
        return Err(invalid());
    }
    if record
        .expires
        .as_deref()
        .and_then(parse_time)
        .is_some_and(|t| t <= time::OffsetDateTime::now_utc())
    {
        return Err(unauthorized(
            "ExpiredAuthenticationToken",
            "The access token has expired.",
        ));
    }
    let role = Role::parse(&record.role).ok_or_else(invalid)?;
    Ok(Caller {
        id: record.id,
        role,
    })
}

fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

/// The paths a move asks of an instance, and backups: the operator's (besides reading).
const OPERATIONS: &[&str] = &[
    "/backup",
    "/restore",
    "/freeze",
    "/drain",
    "/digest",
    "/adoptidentity",
    "/journal/listsecrets",
    "/journal/apply",
];

/// Whether `caller` may send `method` to `path` (below the service, ARM prefix stripped).
pub fn authorize(caller: &Caller, method: &Method, path: &str) -> Result<(), ApiError> {
    let p = path.trim_end_matches('/').to_ascii_lowercase();
    let read = *method == Method::GET || *method == Method::HEAD;
    let tokens = p == "/tokens" || p.starts_with("/tokens/");
    let operation = OPERATIONS.contains(&p.as_str()) || p.starts_with("/operationresults/");
    let allowed = match caller.role {
        Role::Admin => true,
        _ if tokens => false,
        Role::Reader => read,
        Role::Operator => read || operation || (p.is_empty() && *method == Method::DELETE),
        Role::Contributor => read || !(operation || p.is_empty() && *method == Method::DELETE),
    };
    if allowed {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "AuthorizationFailed",
        format!(
            "The token '{}' (role {}) does not have authorization to perform '{method} {}'.",
            caller.id,
            caller.role.name(),
            if p.is_empty() { "/" } else { path }
        ),
    ))
}

/// A new token for `role`: the record to store and the value to hand out once.
pub fn issue(
    role: Role,
    expires: Option<String>,
    description: Option<String>,
) -> (TokenRecord, String) {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let id = format!("t{}", hex::encode(rand::random::<[u8; 6]>()));
    let secret = b64(&rand::random::<[u8; 32]>()).replace(['-', '_'], "x");
    let record = TokenRecord {
        id: id.clone(),
        role: role.name().into(),
        hash: hash(&secret),
        created: crate::rules::now_rfc3339(),
        expires,
        description,
    };
    (record, format!("{PREFIX}{id}_{secret}"))
}

/// A token as the API shows it: never its value or hash.
pub fn render(t: &TokenRecord) -> Value {
    json!({
        "id": t.id,
        "role": t.role,
        "created": t.created,
        "expires": t.expires,
        "description": t.description,
    })
}

/// `POST /tokens {"role", "expires"?, "description"?}`: checks the body.
pub fn token_request(
    body: &serde_json::Map<String, Value>,
) -> Result<(Role, Option<String>, Option<String>), ApiError> {
    for key in body.keys() {
        if !["role", "expires", "description"].contains(&key.as_str()) {
            return Err(ApiError::invalid(
                key,
                format!("'{key}' is not a property of a token: give role, expires and description"),
            ));
        }
    }
    let role = body
        .get("role")
        .and_then(Value::as_str)
        .and_then(Role::parse)
        .ok_or_else(|| {
            ApiError::invalid("role", "'role' must be reader, contributor or operator")
        })?;
    let expires = match body.get("expires") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => {
            let t = parse_time(s).ok_or_else(|| {
                ApiError::invalid(
                    "expires",
                    format!("'expires' must be an RFC 3339 time, not '{s}'"),
                )
            })?;
            if t <= time::OffsetDateTime::now_utc() {
                return Err(ApiError::invalid("expires", "'expires' is in the past"));
            }
            Some(s.clone())
        }
        Some(_) => return Err(ApiError::invalid("expires", "'expires' must be a string")),
    };
    let description = body
        .get("description")
        .and_then(Value::as_str)
        .map(|d| d.chars().take(1000).collect());
    Ok((role, expires, description))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role) -> Caller {
        Caller {
            id: "t1".into(),
            role,
        }
    }

    #[test]
    fn roles_allow_what_the_table_says() {
        use Method as M;
        let cases: &[(Role, Method, &str, bool)] = &[
            (Role::Reader, M::GET, "/apis", true),
            (Role::Reader, M::GET, "/journal", true),
            (Role::Reader, M::PUT, "/apis/a", false),
            (Role::Reader, M::POST, "/subscriptions/s/listSecrets", false),
            (Role::Reader, M::POST, "/journal/listSecrets", false),
            (Role::Reader, M::GET, "/tokens", false),
            (Role::Contributor, M::PUT, "/apis/a", true),
            (Role::Contributor, M::DELETE, "/apis/a", true),
            (
                Role::Contributor,
                M::POST,
                "/subscriptions/s/listSecrets",
                true,
            ),
            (Role::Contributor, M::PATCH, "/", true),
            (Role::Contributor, M::POST, "/backup", false),
            (Role::Contributor, M::POST, "/freeze", false),
            (Role::Contributor, M::DELETE, "/", false),
            (Role::Contributor, M::POST, "/tokens", false),
            (Role::Operator, M::POST, "/backup", true),
            (Role::Operator, M::POST, "/restore", true),
            (Role::Operator, M::GET, "/operationresults/x", true),
            (Role::Operator, M::POST, "/journal/apply", true),
            (Role::Operator, M::DELETE, "/freeze", true),
            (Role::Operator, M::DELETE, "/", true),
            (Role::Operator, M::PUT, "/apis/a", false),
            (Role::Operator, M::DELETE, "/tokens/t2", false),
            (Role::Admin, M::POST, "/tokens", true),
        ];
        for (role, method, path, allowed) in cases {
            let c = if *role == Role::Admin {
                Caller::admin()
            } else {
                caller(*role)
            };
            assert_eq!(
                authorize(&c, method, path).is_ok(),
                *allowed,
                "{role:?} {method} {path}"
            );
        }
    }

    #[test]
    fn issued_tokens_hash_their_secret() {
        let (record, value) = issue(Role::Reader, None, None);
        assert!(value.starts_with(&format!("ght_{}_", record.id)));
        let secret = value.rsplit('_').next().unwrap();
        assert_eq!(record.hash, hash(secret));
        assert!(!record.hash.contains(secret));
    }
}

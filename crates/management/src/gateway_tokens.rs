//! Self-hosted gateway tokens, as APIM makes them: `{gatewayId}&{expiry yyyyMMddHHmm}&{base64
//! HMAC-SHA512 of "{gatewayId}\n{expiry}" with one of the gateway's keys}`, at most 30 days
//! long. Regenerating a key invalidates every token made with it.
//!
//! Invariant: a token is accepted only for a gateway that exists, before its expiry, with a
//! signature one of that gateway's current keys makes (compared in constant time).

use crate::rules::Lookup;
use gatehouse_model::Kind;
use serde_json::Value;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

/// Why a gateway token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the gateway token is malformed")]
    Malformed,
    #[error("the gateway token expired at {0}")]
    Expired(String),
    #[error("the gateway '{0}' does not exist")]
    UnknownGateway(String),
    #[error("the gateway token's signature does not match the gateway's keys (regenerated?)")]
    BadSignature,
    #[error("the store could not be read: {0}")]
    Store(String),
}

/// The longest a token may live.
pub const MAX_LIFETIME: time::Duration = time::Duration::days(30);

/// APIM's expiry stamp in tokens, `yyyyMMddHHmm` (UTC).
pub(crate) fn stamp(at: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}{:02}{:02}",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute()
    )
}

fn parse_stamp(s: &str) -> Option<OffsetDateTime> {
    if s.len() != 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let date = time::Date::from_calendar_date(
        n(0..4)? as i32,
        time::Month::try_from(n(4..6)? as u8).ok()?,
        n(6..8)? as u8,
    )
    .ok()?;
    let t = time::Time::from_hms(n(8..10)? as u8, n(10..12)? as u8, 0).ok()?;
    Some(date.with_time(t).assume_utc())
}

fn signature(key: &str, gateway: &str, expiry: &str) -> Vec<u8> {
    let mut mac = <hmac::Hmac<sha2::Sha512> as hmac::KeyInit>::new_from_slice(key.as_bytes())
        .expect("HMAC takes any key length");
    hmac::Mac::update(&mut mac, format!("{gateway}\n{expiry}").as_bytes());
    hmac::Mac::finalize(mac).into_bytes().to_vec()
}

/// A token for `gateway` signed with `key`, valid until `expiry` (to the minute).
pub fn issue(gateway: &str, key: &str, expiry: OffsetDateTime) -> String {
    let stamp = stamp(expiry);
    let sig = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        signature(key, gateway, &stamp),
    );
    format!("{gateway}&{stamp}&{sig}")
}

/// A token that was accepted: the gateway it is for, the key field that signed it, its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub gateway: String,
    /// `primaryKey` or `secondaryKey`.
    pub key_field: &'static str,
    pub expiry: OffsetDateTime,
}

/// The gateway a token is for, if it is valid now.
pub fn verify(q: &impl Lookup, token: &str, now: OffsetDateTime) -> Result<String, TokenError> {
    verify_detailed(q, token, now).map(|c| c.gateway)
}

/// [`verify`], also telling which key signed the token and until when it is valid.
pub fn verify_detailed(
    q: &impl Lookup,
    token: &str,
    now: OffsetDateTime,
) -> Result<Checked, TokenError> {
    let mut parts = token.splitn(3, '&');
    let (Some(gateway), Some(stamp), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed);
    };
    let expiry = parse_stamp(stamp).ok_or(TokenError::Malformed)?;
    let given = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, sig)
        .map_err(|_| TokenError::Malformed)?;
    if expiry <= now {
        return Err(TokenError::Expired(stamp.to_string()));
    }
    let res = q
        .lookup(&format!("/gateways/{gateway}"))
        .map_err(|e| TokenError::Store(e.to_string()))?
        .filter(|r| r.kind == Kind::Gateway)
        .ok_or_else(|| TokenError::UnknownGateway(gateway.to_string()))?;
    let signed_by = ["primaryKey", "secondaryKey"].into_iter().find(|k| {
        res.properties
            .get(*k)
            .and_then(Value::as_str)
            .is_some_and(|key| bool::from(signature(key, gateway, stamp).ct_eq(&given)))
    });
    match signed_by {
        Some(key_field) => Ok(Checked {
            gateway: gateway.to_string(),
            key_field,
            expiry,
        }),
        None => Err(TokenError::BadSignature),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_read_back() {
        let at = time::macros::datetime!(2026-12-06 23:59 UTC);
        assert_eq!(stamp(at), "202612062359");
        assert_eq!(parse_stamp("202612062359"), Some(at));
        assert!(parse_stamp("2026120623").is_none());
        assert!(parse_stamp("202613062359").is_none());
    }
}

//! Sessions, CSRF tokens and the sign-in limiter.
//!
//! A session is a signed cookie naming the user, its expiry and a fingerprint of the user's
//! password hash: changing the password (or closing the account) ends every session of the
//! account, and signing out revokes the cookie until it would have expired. Cookies are
//! `HttpOnly` and `SameSite=Lax`, and `Secure` whenever the portal is reached over HTTPS.
//!
//! CSRF: every visitor carries a random `gh_csrf` cookie (`SameSite=Strict`); each form holds
//! the cookie's signature, and a POST whose field does not match its cookie is refused.
//!
//! Invariants: the limiter's memory is bounded ([`MAX_TRACKED`] keys); a refused sign-in is
//! counted against both the account and the address it came from.

use crate::secret::{self, PortalKey};
use axum::http::{HeaderMap, HeaderValue, header};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SESSION_COOKIE: &str = "gh_session";
pub const CSRF_COOKIE: &str = "gh_csrf";
/// How long a sign-in lasts.
pub const SESSION_LIFETIME_SECS: i64 = 12 * 3600;

/// Who a valid session cookie names.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub user_id: String,
    pub expires: i64,
    pub fingerprint: String,
    /// The cookie's signature, what sign-out revokes.
    pub signature: String,
}

/// A short digest of a password hash: sessions made before a password change stop matching.
pub fn fingerprint(password_hash: &str) -> String {
    let d = Sha256::digest(password_hash.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// A session cookie's value for the user.
pub fn issue(key: &PortalKey, user_id: &str, fingerprint: &str, now: i64) -> String {
    issue_token(
        key,
        "session",
        user_id,
        fingerprint,
        now + SESSION_LIFETIME_SECS,
    )
}

/// The claim of a session cookie, if it is signed by us and has not expired.
pub fn read(key: &PortalKey, value: &str, now: i64) -> Option<Claim> {
    read_token(key, "session", value, now)
}

/// A signed token naming a user for one purpose until `expires` (sessions, and the links of
/// emails: sign-up confirmation, password reset). The password fingerprint makes a reset link
/// work once: the reset changes the password, and with it the fingerprint.
pub fn issue_token(
    key: &PortalKey,
    purpose: &str,
    user_id: &str,
    fingerprint: &str,
    expires: i64,
) -> String {
    let body = format!("{}.{expires}.{fingerprint}", secret::encode(user_id));
    let sig = key.sign(purpose, &body);
    format!("{body}.{sig}")
}

/// The claim of a token made by [`issue_token`] for `purpose`, if it holds at `now`.
pub fn read_token(key: &PortalKey, purpose: &str, value: &str, now: i64) -> Option<Claim> {
    let (body, sig) = value.rsplit_once('.')?;
    if !key.verify(purpose, body, sig) {
        return None;
    }
    let mut parts = body.split('.');
    let user_id = secret::decode(parts.next()?)?;
    let expires: i64 = parts.next()?.parse().ok()?;
    let fingerprint = parts.next()?.to_string();
    (expires > now).then_some(Claim {
        user_id,
        expires,
        fingerprint,
        signature: sig.to_string(),
    })
}

/// Signatures of signed-out sessions, kept until they would have expired.
#[derive(Default)]
pub struct Revoked(Mutex<HashMap<String, i64>>);

impl Revoked {
    pub fn revoke(&self, claim: &Claim) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_unix();
        map.retain(|_, expires| *expires > now);
        map.insert(claim.signature.clone(), claim.expires);
    }

    pub fn is_revoked(&self, claim: &Claim) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&claim.signature)
    }
}

/// The request's cookies by name (the first of each name).
pub fn cookies(headers: &HeaderMap) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for v in headers.get_all(header::COOKIE) {
        let Ok(text) = v.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                out.entry(k.to_string()).or_insert_with(|| v.to_string());
            }
        }
    }
    out
}

/// A `Set-Cookie` value: HttpOnly always, Secure over HTTPS; `max_age` 0 removes the cookie.
pub fn set_cookie(
    name: &str,
    value: &str,
    max_age: i64,
    secure: bool,
    same_site: &str,
) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite={same_site}{secure}"
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The form field that proves a POST comes from one of our pages.
pub fn csrf_field(key: &PortalKey, cookie: &str) -> String {
    key.sign("csrf", cookie)
}

pub fn csrf_ok(key: &PortalKey, cookie: Option<&str>, field: Option<&str>) -> bool {
    match (cookie, field) {
        (Some(c), Some(f)) if !c.is_empty() => key.verify("csrf", c, f),
        _ => false,
    }
}

/// Failed sign-ins allowed per account in [`WINDOW`].
pub const PER_ACCOUNT: usize = 5;
/// Failed sign-ins allowed per client address in [`WINDOW`].
pub const PER_ADDRESS: usize = 20;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys the limiter remembers at most; the oldest are forgotten first.
pub const MAX_TRACKED: usize = 100_000;

/// Counts failed sign-ins per account and per address.
#[derive(Default)]
pub struct SignInLimiter(Mutex<HashMap<String, Vec<Instant>>>);

impl SignInLimiter {
    fn keys(account: &str, address: &str) -> [(String, usize); 2] {
        [
            (
                format!("account:{}", account.to_ascii_lowercase()),
                PER_ACCOUNT,
            ),
            (format!("address:{address}"), PER_ADDRESS),
        ]
    }

    /// `Err(wait)` when the account or the address has used up its attempts.
    pub fn check(&self, account: &str, address: &str) -> Result<(), Duration> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for (key, limit) in Self::keys(account, address) {
            if let Some(times) = map.get(&key) {
                let recent: Vec<_> = times.iter().filter(|t| now - **t < WINDOW).collect();
                if recent.len() >= limit {
                    let oldest = recent.iter().min().copied().copied().unwrap_or(now);
                    return Err(WINDOW.saturating_sub(now - oldest));
                }
            }
        }
        Ok(())
    }

    pub fn failed(&self, account: &str, address: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, times| times.iter().any(|t| now - *t < WINDOW));
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        for (key, limit) in Self::keys(account, address) {
            let times = map.entry(key).or_default();
            times.retain(|t| now - *t < WINDOW);
            times.push(now);
            if times.len() > limit {
                times.remove(0);
            }
        }
    }

    /// A successful sign-in clears the account's count (not the address's).
    pub fn succeeded(&self, account: &str) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&format!("account:{}", account.to_ascii_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_reads_back_until_it_expires() {
        let key = PortalKey::random();
        let v = issue(&key, "alice.b", "fp", 1000);
        let c = read(&key, &v, 1001).unwrap();
        assert_eq!(
            (c.user_id.as_str(), c.fingerprint.as_str()),
            ("alice.b", "fp")
        );
        assert!(read(&key, &v, 1000 + SESSION_LIFETIME_SECS).is_none());
        let forged = v.replacen(&secret::encode("alice.b"), &secret::encode("bob"), 1);
        assert!(read(&key, &forged, 1001).is_none());
        assert!(read(&PortalKey::random(), &v, 1001).is_none());
    }

    #[test]
    fn a_token_is_good_for_its_purpose_only() {
        let key = PortalKey::random();
        let t = issue_token(&key, "reset", "u", "fp", 2000);
        assert!(read_token(&key, "reset", &t, 1000).is_some());
        assert!(read_token(&key, "confirm", &t, 1000).is_none());
        assert!(
            read(&key, &t, 1000).is_none(),
            "a reset link is not a session"
        );
    }

    #[test]
    fn signing_out_revokes_the_cookie() {
        let key = PortalKey::random();
        let c = read(&key, &issue(&key, "u", "f", now_unix()), now_unix()).unwrap();
        let revoked = Revoked::default();
        assert!(!revoked.is_revoked(&c));
        revoked.revoke(&c);
        assert!(revoked.is_revoked(&c));
    }

    #[test]
    fn csrf_fields_match_their_cookie_only() {
        let key = PortalKey::random();
        let field = csrf_field(&key, "abc");
        assert!(csrf_ok(&key, Some("abc"), Some(&field)));
        assert!(!csrf_ok(&key, Some("abd"), Some(&field)));
        assert!(!csrf_ok(&key, None, Some(&field)));
        assert!(!csrf_ok(&key, Some(""), Some(&key.sign("csrf", ""))));
    }

    #[test]
    fn the_limiter_stops_an_account_after_five_failures() {
        let l = SignInLimiter::default();
        for i in 0..PER_ACCOUNT {
            assert!(l.check("A@x.org", &format!("10.0.0.{i}")).is_ok());
            l.failed("a@x.org", &format!("10.0.0.{i}"));
        }
        assert!(l.check("a@x.org", "10.9.9.9").is_err());
        assert!(l.check("b@x.org", "10.9.9.9").is_ok());
        l.succeeded("a@x.org");
        assert!(l.check("a@x.org", "10.9.9.9").is_ok());
    }

    #[test]
    fn the_limiter_stops_an_address_trying_many_accounts() {
        let l = SignInLimiter::default();
        for i in 0..PER_ADDRESS {
            l.failed(&format!("u{i}@x.org"), "10.0.0.1");
        }
        assert!(l.check("new@x.org", "10.0.0.1").is_err());
        assert!(l.check("new@x.org", "10.0.0.2").is_ok());
    }
}

//! Who is asking: a guest, or a signed-in user with the groups APIM's visibility rules use.
//!
//! Invariant: a user is signed in only while the session cookie is ours, unexpired, not
//! revoked, names an active user, and matches that user's current password.

use crate::error::PortalError;
use crate::session::{self, Claim};
use gatehouse_model::{Kind, StoredResource};
use gatehouse_store::ReadTx;
use serde::Serialize;
use serde_json::Value;

/// A signed-in user as the portal shows and checks them.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub groups: Vec<String>,
    #[serde(skip)]
    pub fingerprint: String,
}

impl User {
    pub fn path(&self) -> String {
        format!("/users/{}", self.id)
    }
    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == "administrators")
    }
}

/// The visitor: `None` for a guest.
#[derive(Debug, Clone, Default)]
pub struct Viewer {
    pub user: Option<User>,
}

impl Viewer {
    /// The groups whose products this visitor sees (APIM: guests, or the user's groups —
    /// every registered user is a developer).
    pub fn groups(&self) -> Vec<String> {
        match &self.user {
            None => vec!["guests".into()],
            Some(u) => {
                let mut g = u.groups.clone();
                if !g.iter().any(|x| x == "developers") {
                    g.push("developers".into());
                }
                g
            }
        }
    }

    pub fn is_admin(&self) -> bool {
        self.user.as_ref().is_some_and(User::is_admin)
    }

    pub fn require_user(&self) -> Result<&User, PortalError> {
        self.user.as_ref().ok_or(PortalError::SignInRequired)
    }

    pub fn require_admin(&self) -> Result<&User, PortalError> {
        let u = self.require_user()?;
        if u.is_admin() {
            Ok(u)
        } else {
            Err(PortalError::Forbidden)
        }
    }
}

fn text(props: &serde_json::Map<String, Value>, name: &str) -> String {
    props
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The user a resource describes, with its groups.
pub fn user_of(r: &ReadTx<'_>, res: &StoredResource) -> Result<User, PortalError> {
    let id = res.path.rsplit('/').next().unwrap_or_default().to_string();
    let mut groups = Vec::new();
    for referrer in r.referrers(&res.path)? {
        if let Some(rest) = referrer.strip_prefix("/groups/")
            && let Some((group, _)) = rest.split_once("/users/")
        {
            groups.push(group.to_string());
        }
    }
    Ok(User {
        id,
        email: text(&res.properties, "email"),
        first_name: text(&res.properties, "firstName"),
        last_name: text(&res.properties, "lastName"),
        groups,
        fingerprint: session::fingerprint(&text(&res.properties, "passwordHash")),
    })
}

/// The user a session claim names, if the claim still holds for them.
pub fn from_claim(r: &ReadTx<'_>, claim: &Claim) -> Result<Option<User>, PortalError> {
    let Some(res) = r.get(&format!("/users/{}", claim.user_id))? else {
        return Ok(None);
    };
    if res.kind != Kind::User
        || res.properties.get("state").and_then(Value::as_str) != Some("active")
    {
        return Ok(None);
    }
    let user = user_of(r, &res)?;
    Ok((user.fingerprint == claim.fingerprint).then_some(user))
}

/// The user with this email (compared without case), if any.
pub fn find_by_email(r: &ReadTx<'_>, email: &str) -> Result<Option<StoredResource>, PortalError> {
    Ok(r.find_by_property(Kind::User, "email", email)?
        .into_iter()
        .next())
}

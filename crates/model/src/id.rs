//! Resource id validation, following APIM's limits (reference §3.1, §3.3).
//!
//! Invariant: an id that passes `validate` is a single non-empty path segment: it contains no
//! `/`, no control character, none of APIM's forbidden characters `*#&+:<>?`, is not `.` or
//! `..`, and fits the kind's length limit. API ids may carry a revision suffix `;rev=N` with N ≥ 1.

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// APIM's common pattern `^[^*#&+:<>?]+$`, 1..=max characters.
    Common { max: usize },
    /// An API id: 1–80 characters, or `{id};rev={n}` up to 256.
    Api,
    /// A policy fragment: `(^[\w]+$)|(^[\w][\w\-]+[\w]$)`, 1–80.
    Fragment,
    /// Policies have the fixed id `policy`.
    Policy,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdError {
    #[error("the id is empty")]
    Empty,
    #[error("the id is {len} characters long; at most {max} are allowed")]
    TooLong { len: usize, max: usize },
    #[error("the id contains the forbidden character {0:?}")]
    ForbiddenChar(char),
    #[error(
        "the id may contain only letters, digits, '_' and '-', and must not start or end with '-'"
    )]
    FragmentPattern,
    #[error("the policy id must be 'policy'")]
    PolicyId,
    #[error("the revision in '{0}' must be ';rev=' followed by a number from 1")]
    Revision(String),
    #[error("'.' and '..' are not valid ids: in a URL they address the resource above")]
    DotSegment,
}

const FORBIDDEN: &[char] = &['*', '#', '&', '+', ':', '<', '>', '?', '/', '\\', '%'];

fn check_common(id: &str, max: usize) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    let len = id.chars().count();
    if len > max {
        return Err(IdError::TooLong { len, max });
    }
    if let Some(c) = id.chars().find(|c| FORBIDDEN.contains(c) || c.is_control()) {
        return Err(IdError::ForbiddenChar(c));
    }
    if id.trim() != id {
        return Err(IdError::ForbiddenChar(' '));
    }
    if is_dot_segment(id) {
        return Err(IdError::DotSegment);
    }
    Ok(())
}

/// Whether a (decoded) path segment is `.` or `..`, which URL resolution removes or turns into
/// the parent: such a segment can never be an id, or a path to one resource would address
/// another (`DELETE /products/..` is `DELETE /` once a client normalises it).
pub fn is_dot_segment(segment: &str) -> bool {
    segment == "." || segment == ".."
}

/// Splits `echo;rev=2` into `("echo", Some(2))`. Returns `None` for the revision when the id
/// has no `;rev=` suffix.
pub fn split_revision(id: &str) -> Result<(&str, Option<u32>), IdError> {
    match id.split_once(";rev=") {
        None => {
            if id.contains(';') {
                return Err(IdError::Revision(id.to_string()));
            }
            Ok((id, None))
        }
        Some((base, rev)) => {
            let n: u32 = rev
                .parse()
                .ok()
                .filter(|n| *n >= 1 && !rev.starts_with('0') && !rev.starts_with('+'))
                .ok_or_else(|| IdError::Revision(id.to_string()))?;
            Ok((base, Some(n)))
        }
    }
}

impl IdRule {
    pub fn validate(self, id: &str) -> Result<(), IdError> {
        match self {
            IdRule::Common { max } => check_common(id, max),
            IdRule::Api => {
                check_common(id, 256)?;
                let (base, _) = split_revision(id)?;
                check_common(base, 80)?;
                if base.contains(';') {
                    return Err(IdError::ForbiddenChar(';'));
                }
                Ok(())
            }
            IdRule::Fragment => {
                check_common(id, 80)?;
                let word = |c: char| c.is_alphanumeric() || c == '_';
                let ok = id.chars().all(|c| word(c) || c == '-')
                    && id.chars().next().is_some_and(word)
                    && id.chars().last().is_some_and(word);
                if ok {
                    Ok(())
                } else {
                    Err(IdError::FragmentPattern)
                }
            }
            IdRule::Policy => {
                if id == "policy" {
                    Ok(())
                } else {
                    Err(IdError::PolicyId)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn api_revision_ids() {
        assert_eq!(split_revision("echo;rev=2").unwrap(), ("echo", Some(2)));
        assert!(IdRule::Api.validate("echo;rev=0").is_err());
        assert!(IdRule::Api.validate("echo;rev=x").is_err());
        assert!(IdRule::Api.validate("echo;v2").is_err());
        assert!(IdRule::Api.validate(&"a".repeat(81)).is_err());
        assert!(
            IdRule::Api
                .validate(&format!("{};rev=3", "a".repeat(80)))
                .is_ok()
        );
    }

    #[test]
    fn dot_segments_are_not_ids() {
        for rule in [IdRule::Common { max: 80 }, IdRule::Api] {
            assert_eq!(rule.validate("."), Err(IdError::DotSegment));
            assert_eq!(rule.validate(".."), Err(IdError::DotSegment));
            assert!(
                rule.validate("...").is_ok(),
                "three dots are an ordinary segment"
            );
            assert!(rule.validate(".hidden").is_ok());
        }
        assert_eq!(IdRule::Api.validate("..;rev=2"), Err(IdError::DotSegment));
    }

    #[test]
    fn fragment_pattern() {
        assert!(IdRule::Fragment.validate("my-frag_1").is_ok());
        assert!(IdRule::Fragment.validate("-bad").is_err());
        assert!(IdRule::Fragment.validate("bad-").is_err());
        assert!(IdRule::Fragment.validate("a b").is_err());
    }

    proptest! {
        #[test]
        fn valid_ids_are_single_safe_segments(id in "\\PC{0,300}") {
            for rule in [IdRule::Common { max: 80 }, IdRule::Common { max: 256 }, IdRule::Api, IdRule::Fragment] {
                if rule.validate(&id).is_ok() {
                    prop_assert!(!id.is_empty());
                    prop_assert!(!id.contains('/'));
                    prop_assert!(!id.chars().any(|c| "*#&+:<>?".contains(c) || c.is_control()));
                    prop_assert!(id.chars().count() <= 256);
                    prop_assert!(!is_dot_segment(&id));
                }
            }
        }

        #[test]
        fn common_ids_within_limit_are_accepted(id in "[a-zA-Z0-9_.-][a-zA-Z0-9_. -]{0,78}[a-zA-Z0-9_.-]") {
            prop_assume!(!is_dot_segment(&id));
            let rule = IdRule::Common { max: 80 };
            prop_assert!(rule.validate(&id).is_ok());
        }

        #[test]
        fn one_forbidden_char_is_rejected(prefix in "[a-z]{1,10}", c in prop::sample::select(vec!['*','#','&','+',':','<','>','?']), suffix in "[a-z]{0,10}") {
            let id = format!("{prefix}{c}{suffix}");
            prop_assert_eq!(IdRule::Common { max: 80 }.validate(&id), Err(IdError::ForbiddenChar(c)));
        }
    }
}

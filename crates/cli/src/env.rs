//! The one place the CLI reads environment variables: configuration is read here and passed
//! down, so that libraries behave the same in tests, in-process and in `serve`.

/// A non-empty environment variable. The CLI is the one place that reads the environment
/// (configuration); the library crates are given what they need.
#[allow(clippy::disallowed_methods)]
pub(crate) fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

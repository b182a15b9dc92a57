//! Policies in the gateway: the documents of every scope compiled from the mirror, the
//! counters rate limits and quotas use, and the request path that runs APIM's phases through
//! the policy engine.
//!
//! Invariants: documents are compiled when the configuration changes, never per request; a
//! request with no policy at any scope takes the plain path (no cost); a document that no
//! longer compiles (a named value it used was deleted) fails its requests closed with 500
//! rather than run without, say, its ip-filter.

mod caches;
mod compile;
mod exchange;
mod health;
mod limits;
mod outside;
mod serve;
mod services;

pub(crate) use caches::{JwksCache, PolicyCache};
pub(crate) use compile::{Policies, Scopes, affects_policies};
pub(crate) use health::BackendHealth;
pub(crate) use limits::{Concurrency, Counters};
pub(crate) use outside::{CustomMetrics, Identity, LogSinks};
pub(crate) use serve::{Served, count_call, serve};

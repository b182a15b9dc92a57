//! What every listener has: limits — how many connections at once, how long a request head may
//! take to arrive, how large it may be — and TLS whose certificate comes from PEM files and is
//! reloaded when they change. The management API (and the portal) are served through
//! [`serve_router`]; the gateway, which serves HTTP/1.x itself, takes [`Limits`],
//! [`ConnectionSlots`] and [`tls::Reloading`] from here.
//!
//! Invariants: no connection is served beyond `max_connections` (an extra one is closed at
//! once); a connection that has not sent a complete request head within the header read
//! timeout is closed, also during the TLS handshake; a certificate that fails to load never
//! replaces the one in use.

mod limits;
mod serve;
pub mod tls;

pub use limits::{ConnectionSlots, Limits, Slot};
pub use serve::serve_router;

//! The client of Gatehouse's management API: how a tool reaches an instance (`transport`: by
//! URL and token, or through a data directory; TLS trust; ids as path segments; errors as one
//! line), the bodies it reads as types (`api`), archive URLs split as APIM's requests take them
//! (`storage_url`). The CLI and the move use it; it knows neither the store nor the handlers.

pub mod api;
pub mod storage_url;
pub mod transport;

pub use api::Endpoints;
pub use transport::{ApiFailure, Client, path_segment, polling};

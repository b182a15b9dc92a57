//! Gatehouse's resource model: the kinds of resources an instance holds, their ids and
//! property schemas, paths relative to the service, `$filter` expressions and the `Snapshot`.
//!
//! This crate knows nothing of HTTP, SQL or storage: it is pure data and validation, shared by
//! every other crate.

pub mod backend;
pub mod files;
pub mod filter;
pub mod id;
pub mod keys;
pub mod kind;
pub mod path;
pub mod props;
pub mod snapshot;

pub use filter::{Filter, FilterError};
pub use id::{IdError, IdRule, is_dot_segment};
pub use kind::{KINDS, Kind, KindSpec};
pub use path::{PathError, ResourcePath, Target, check_no_dot_segments, resolve, strip_arm_prefix};
pub use props::FieldError;
pub use snapshot::{
    HOSTNAME_TYPES, HostnameConfiguration, SKUS, ServiceSettings, Sku, Snapshot, StoredResource,
};

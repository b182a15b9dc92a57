//! Backup and restore of a whole instance: the archive format (`archive`), its keys (`key`),
//! and the engines that write an archive from a store and restore one into a store (`engine`).
//!
//! Invariants: archives are encrypted and authenticated end to end (age) and carry a manifest
//! with per-section counts and SHA-256; nothing is restored until the whole archive has been
//! verified; a restore is one store transaction. This crate knows nothing of HTTP.

pub mod archive;
pub mod engine;
pub mod key;
pub mod storage;

pub use archive::{ArchiveError, Manifest, SectionInfo, SegmentRange};
pub use engine::{
    BackupError, BackupOptions, RestoreOptions, RestoreOutcome, RestorePlan, backup_to_file,
    restore_from_file, verify,
};
pub use key::BackupKey;

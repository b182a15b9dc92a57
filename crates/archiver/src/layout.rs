//! Object names in an archive's container, and its indexes: `index.json` (the bases, the days
//! that have segments, how far the archive reaches) and one `index-YYYY-MM-DD.json` per day
//! (that day's segments). Names sort by revision.

use gatehouse_backup::SegmentRange;
use serde::{Deserialize, Serialize};

pub const INDEX: &str = "index.json";

pub fn base_name(revision: u64) -> String {
    format!("base-{revision:020}.ghbk")
}

pub fn segment_name(first: u64, last: u64) -> String {
    format!("seg-{first:020}-{last:020}.ghseg")
}

pub fn day_index_name(day: &str) -> String {
    format!("index-{day}.json")
}

/// The day (`YYYY-MM-DD`) of an RFC 3339 time.
pub fn day_of(at: &str) -> String {
    at.get(..10).unwrap_or("0000-00-00").to_string()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub bases: Vec<BaseEntry>,
    /// Days with segments, oldest first.
    pub days: Vec<String>,
    /// The last revision archived (in a base or a segment), and its commit time.
    pub last_revision: u64,
    #[serde(default)]
    pub last_at: Option<String>,
    /// The instance that writes this archive: another one's chain never mixes into it.
    #[serde(default)]
    pub instance: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BaseEntry {
    pub name: String,
    pub revision: u64,
    /// When the base was taken (RFC 3339).
    pub at: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayIndex {
    pub segments: Vec<SegmentEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentEntry {
    pub name: String,
    #[serde(flatten)]
    pub range: SegmentRange,
    pub bytes: u64,
}

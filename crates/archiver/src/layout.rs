//! Object names in an archive's container, and its indexes: `index.json` (the bases, the days
//! that have segments, how far the archive reaches) and one `index-YYYY-MM-DD.json` per day
//! (that day's segments). Names sort by revision.
//!
//! Invariant: the indexes are not encrypted, so what they name is checked before use
//! ([`Index::check`], [`DayIndex::check`]): a damaged or tampered index cannot make a restore
//! or retention read, write or delete an object (or a local file) that is not the archive's.

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

fn is_day(day: &str) -> bool {
    let b = day.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

impl Index {
    /// Whether every name in the index is one an archive writes.
    pub fn check(&self) -> Result<(), String> {
        if let Some(b) = self.bases.iter().find(|b| b.name != base_name(b.revision)) {
            return Err(format!(
                "it names '{}' for the base at revision {}",
                b.name, b.revision
            ));
        }
        match self.days.iter().find(|d| !is_day(d)) {
            Some(d) => Err(format!("'{d}' is not a day (YYYY-MM-DD)")),
            None => Ok(()),
        }
    }
}

impl DayIndex {
    /// Whether every segment is named for its revisions, and its revisions make sense.
    pub fn check(&self) -> Result<(), String> {
        let bad = self.segments.iter().find(|s| {
            let r = &s.range;
            s.name != segment_name(r.first, r.last) || r.previous >= r.first || r.first > r.last
        });
        match bad {
            Some(s) => Err(format!(
                "it names '{}' for the segment of revisions {}..={} after {}",
                s.name, s.range.first, s.range.last, s.range.previous
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_an_archive_does_not_write_are_refused() {
        let base = |name: &str| BaseEntry {
            name: name.into(),
            revision: 7,
            at: "2026-12-07T10:00:00Z".into(),
            bytes: 1,
        };
        let mut index = Index {
            bases: vec![base(&base_name(7))],
            days: vec!["2026-12-07".into()],
            ..Index::default()
        };
        assert_eq!(index.check(), Ok(()));
        index.bases.push(base("../../etc/passwd"));
        assert!(index.check().unwrap_err().contains("'../../etc/passwd'"));
        index.bases.pop();
        index.days.push("../x".into());
        assert!(index.check().unwrap_err().contains("'../x' is not a day"));

        let segment = |name: String, previous, first, last| SegmentEntry {
            name,
            range: SegmentRange {
                previous,
                first,
                last,
                first_at: String::new(),
                last_at: String::new(),
            },
            bytes: 1,
        };
        let mut day = DayIndex {
            segments: vec![segment(segment_name(8, 9), 7, 8, 9)],
        };
        assert_eq!(day.check(), Ok(()));
        day.segments.push(segment("../seg".into(), 9, 10, 11));
        assert!(day.check().is_err());
        day.segments[1] = segment(segment_name(10, 11), 12, 10, 11);
        assert!(
            day.check().is_err(),
            "a segment cannot follow a later revision"
        );
    }
}

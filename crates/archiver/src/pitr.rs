//! A point in time from a continuous archive: the newest base at or before the point, then
//! the segments after it up to the point — all downloaded and verified (every segment
//! decrypts and authenticates, its hashes match, and the chain of revisions has no gap) before
//! the caller changes anything. What to replay is returned with the base, to be applied with
//! it in one transaction (`RestoreOptions::replay`).

use crate::layout::{BaseEntry, SegmentEntry, day_of};
use crate::remote::Archive;
use gatehouse_backup::BackupKey;
use gatehouse_store::JournalEntry;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The point a restore goes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Point {
    Latest,
    Revision(u64),
    Time(OffsetDateTime),
}

#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    #[error("{0}")]
    Storage(#[from] gatehouse_backup::storage::StorageError),
    #[error("the continuous archive at {0} holds no base archive yet")]
    Empty(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("segment {name} is damaged: {reason}")]
    Damaged { name: String, reason: String },
    #[error(
        "revisions {from}..={to} are missing from the archive (no segment holds them; the next one is {next}): pass --allow-gap to restore to revision {last_good}, the last one before the gap"
    )]
    Gap {
        from: u64,
        to: u64,
        next: String,
        last_good: u64,
    },
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A point fetched and verified: the base archive (a local file) and what to replay after it.
#[derive(Debug)]
pub struct PointInTime {
    pub base: BaseEntry,
    pub base_file: PathBuf,
    pub replay: Vec<JournalEntry>,
    /// The revision the restore lands on, and its commit time.
    pub revision: u64,
    pub at: String,
    pub segments: usize,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Whether `at` (RFC 3339) is at or before `t`.
fn not_after(at: &str, t: OffsetDateTime) -> bool {
    OffsetDateTime::parse(at, &Rfc3339).is_ok_and(|a| a <= t)
}

/// Fetches and verifies what restoring to `point` takes, into `dir`. With `allow_gap`, a gap
/// in the chain ends the restore at the last revision before it instead of failing.
pub async fn fetch_point(
    archive: &Archive,
    key: &BackupKey,
    point: &Point,
    allow_gap: bool,
    dir: &Path,
) -> Result<PointInTime, PitrError> {
    let index = archive.index().await?;
    let display = format!("{archive:?}");
    let base = match point {
        Point::Latest => index.bases.last(),
        Point::Revision(n) => index.bases.iter().rev().find(|b| b.revision <= *n),
        Point::Time(t) => index.bases.iter().rev().find(|b| not_after(&b.at, *t)),
    }
    .cloned()
    .ok_or_else(|| match point {
        Point::Latest => PitrError::Empty(display.clone()),
        _ => PitrError::OutOfRange(format!(
            "the archive's oldest base is {}: nothing restores to a point before it",
            index
                .bases
                .first()
                .map(|b| format!("revision {} ({})", b.revision, b.at))
                .unwrap_or_else(|| "missing".into())
        )),
    })?;
    if let Point::Revision(n) = point
        && *n > index.last_revision
    {
        return Err(PitrError::OutOfRange(format!(
            "the archive reaches revision {} ({}); revision {n} is not in it",
            index.last_revision,
            index.last_at.as_deref().unwrap_or("-")
        )));
    }
    let segments = segments_after(archive, &index.days, &base).await?;
    let base_file = dir.join(&base.name);
    archive.download(&base.name, &base_file).await?;
    let mut chain = Chain {
        through: base.revision,
        at: base.at.clone(),
        replay: Vec::new(),
        used: 0,
        passed: false,
    };
    for segment in segments {
        if chain.reached(point) {
            break;
        }
        if segment.range.first > chain.through.saturating_add(1) {
            if allow_gap {
                break;
            }
            return Err(PitrError::Gap {
                from: chain.through + 1,
                to: segment.range.first - 1,
                next: segment.name,
                last_good: chain.through,
            });
        }
        let local = dir.join(&segment.name);
        archive
            .download(&segment.name, &local)
            .await
            .map_err(|e| PitrError::Damaged {
                name: segment.name.clone(),
                reason: format!("it cannot be read from storage ({e})"),
            })?;
        let (_, entries) = crate::segment::read(&local, key).map_err(|e| PitrError::Damaged {
            name: segment.name.clone(),
            reason: e.to_string(),
        })?;
        chain.take(entries, point);
        chain.used += 1;
        let _ = std::fs::remove_file(&local);
    }
    if let Point::Revision(n) = point
        && chain.through < *n
        && !allow_gap
    {
        return Err(PitrError::OutOfRange(format!(
            "the archive's segments end at revision {}; revision {n} is not in them",
            chain.through
        )));
    }
    Ok(PointInTime {
        base,
        base_file,
        replay: chain.replay,
        revision: chain.through,
        at: chain.at,
        segments: chain.used,
    })
}

/// The revisions gathered so far.
struct Chain {
    through: u64,
    at: String,
    replay: Vec<JournalEntry>,
    used: usize,
    /// A change after the point was seen: nothing further is needed.
    passed: bool,
}

impl Chain {
    fn reached(&self, point: &Point) -> bool {
        if self.passed {
            return true;
        }
        match point {
            Point::Latest => false,
            Point::Revision(n) => self.through >= *n,
            Point::Time(_) => false,
        }
    }

    /// Takes the entries after what is gathered, up to the point (segments may overlap: a
    /// node that restarted cuts again what it had cut).
    fn take(&mut self, entries: Vec<JournalEntry>, point: &Point) {
        let gathered = self.through;
        for e in entries {
            if e.revision <= gathered {
                continue;
            }
            let within = match point {
                Point::Latest => true,
                Point::Revision(n) => e.revision <= *n,
                Point::Time(t) => not_after(&e.at, *t),
            };
            if !within {
                self.passed = true;
                return;
            }
            self.through = e.revision;
            self.at = e.at.clone();
            self.replay.push(e);
        }
    }
}

/// The segments that may follow `base`, oldest first, from the day indexes of its day on.
async fn segments_after(
    archive: &Archive,
    days: &[String],
    base: &BaseEntry,
) -> Result<Vec<SegmentEntry>, PitrError> {
    // A segment is indexed under the day its first change was made: one that began the day
    // before the base and runs past it is in that day's index.
    let from_day = OffsetDateTime::parse(&base.at, &Rfc3339)
        .map(|t| rfc3339(t - time::Duration::days(1)))
        .map(|d| day_of(&d))
        .unwrap_or_default();
    let mut out = Vec::new();
    for day in days.iter().filter(|d| **d >= from_day) {
        out.extend(
            archive
                .day(day)
                .await?
                .segments
                .into_iter()
                .filter(|s| s.range.last > base.revision),
        );
    }
    out.sort_by_key(|s| (s.range.first, s.range.last));
    Ok(out)
}

/// The commit time a point names, for messages.
pub fn describe(point: &Point) -> String {
    match point {
        Point::Latest => "the latest point".into(),
        Point::Revision(n) => format!("revision {n}"),
        Point::Time(t) => rfc3339(*t),
    }
}

//! One journal segment: the backup archive format (encrypted, compressed, every section
//! hashed) with one section, `journal` — the entries of whole, contiguous revisions, secrets
//! opened — and a manifest naming the revisions held and the one they follow.

use gatehouse_backup::archive::{self, ArchiveWriter, Visitor};
use gatehouse_backup::{ArchiveError, BackupKey, Manifest, SegmentRange};
use gatehouse_model::ServiceSettings;
use gatehouse_store::JournalEntry;
use serde::{Deserialize, Serialize};
use std::path::Path;

const SECTION: &str = "journal";

/// A journal entry as a segment holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryLine {
    pub seq: u64,
    pub revision: u64,
    pub at: String,
    pub path: String,
    pub kind: String,
    pub op: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub refs: Vec<String>,
    #[serde(default)]
    pub actor: Option<String>,
}

impl From<&JournalEntry> for EntryLine {
    fn from(e: &JournalEntry) -> Self {
        EntryLine {
            seq: e.seq,
            revision: e.revision,
            at: e.at.clone(),
            path: e.path.clone(),
            kind: e.kind.clone(),
            op: e.op.clone(),
            value: e.value.clone(),
            refs: e.refs.clone(),
            actor: e.actor.clone(),
        }
    }
}

impl From<EntryLine> for JournalEntry {
    fn from(e: EntryLine) -> Self {
        JournalEntry {
            seq: e.seq,
            revision: e.revision,
            at: e.at,
            path: e.path,
            kind: e.kind,
            op: e.op,
            value: e.value,
            refs: e.refs,
            actor: e.actor,
        }
    }
}

/// Writes `entries` (whole revisions, oldest first, secrets opened) following `previous` as a
/// segment at `path`.
pub fn write(
    path: &Path,
    key: &BackupKey,
    service: &ServiceSettings,
    previous: u64,
    entries: &[JournalEntry],
) -> Result<Manifest, ArchiveError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Err(ArchiveError::Corrupt(
            "a segment needs at least one entry".into(),
        ));
    };
    let mut writer = ArchiveWriter::create(path, key)?;
    writer.begin_section(SECTION)?;
    for e in entries {
        writer.line(&EntryLine::from(e))?;
    }
    writer.finish(Manifest {
        format_version: archive::FORMAT_VERSION,
        gatehouse_version: env!("CARGO_PKG_VERSION").to_string(),
        service_name: service.name.clone(),
        region: service.location.clone(),
        sku: service.sku.clone(),
        source_revision: last.revision,
        created_at_utc: last.at.clone(),
        expires_at_utc: None,
        include: None,
        entity_count: 0,
        sections: Vec::new(),
        segment: Some(SegmentRange {
            previous,
            first: first.revision,
            last: last.revision,
            first_at: first.at.clone(),
            last_at: last.at.clone(),
        }),
    })
}

struct Collect {
    lines: Vec<EntryLine>,
    error: Option<String>,
}

impl Visitor for Collect {
    fn section(&mut self, name: &str) -> Result<(), ArchiveError> {
        if name != SECTION {
            return Err(ArchiveError::Corrupt(format!(
                "a segment holds only '{SECTION}', not '{name}'"
            )));
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), ArchiveError> {
        match serde_json::from_slice(line) {
            Ok(l) => self.lines.push(l),
            Err(e) => {
                self.error.get_or_insert_with(|| e.to_string());
            }
        }
        Ok(())
    }
}

/// Reads a segment back, verified: it decrypts and authenticates, its hashes match, and its
/// entries are exactly the whole revisions its manifest names, in order.
pub fn read(
    path: &Path,
    key: &BackupKey,
) -> Result<(SegmentRange, Vec<JournalEntry>), ArchiveError> {
    let mut collect = Collect {
        lines: Vec::new(),
        error: None,
    };
    let manifest = archive::read_verified(path, key, &mut collect)?;
    if let Some(e) = collect.error {
        return Err(ArchiveError::Corrupt(format!(
            "an entry does not parse: {e}"
        )));
    }
    let range = manifest
        .segment
        .ok_or_else(|| ArchiveError::Corrupt("this archive is not a journal segment".into()))?;
    let mut expected = range.first;
    for line in &collect.lines {
        if line.revision == expected + 1 {
            expected += 1;
        } else if line.revision != expected {
            return Err(ArchiveError::Corrupt(format!(
                "revision {} follows revision {expected} in a segment of revisions {}..={}",
                line.revision, range.first, range.last
            )));
        }
    }
    if collect.lines.is_empty() || expected != range.last || range.previous >= range.first {
        return Err(ArchiveError::Corrupt(format!(
            "the entries do not cover revisions {}..={} as the manifest says",
            range.first, range.last
        )));
    }
    Ok((range, collect.lines.into_iter().map(Into::into).collect()))
}

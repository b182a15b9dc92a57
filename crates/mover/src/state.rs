//! The move file: the options, what each step did, and where the move stands. Saved after
//! every step (and every catch-up round) by writing a new file and renaming it over the old
//! one, so a crash at any point leaves the last whole state.

use crate::options::MoveOptions;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    Pending,
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub name: String,
    pub status: StepStatus,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub duration_ms: u64,
    /// Time spent waiting on DNS caches (the old TTL), not counted as the move's own work.
    #[serde(default)]
    pub waited_ms: u64,
    #[serde(default)]
    pub detail: Value,
}

/// One side of the move as preflight found it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    pub name: String,
    pub region: String,
    pub sku: String,
    pub management_url: String,
    pub gateway_url: String,
    #[serde(default)]
    pub hostnames: Vec<Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    pub requests: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveState {
    pub version: u32,
    pub id: String,
    pub started_at: String,
    pub options: MoveOptions,
    pub steps: Vec<StepRecord>,
    #[serde(default)]
    pub source: Option<InstanceInfo>,
    #[serde(default)]
    pub target: Option<InstanceInfo>,
    /// The archive's source revision: catch-up replays the journal after it.
    #[serde(default)]
    pub archive_revision: Option<u64>,
    #[serde(default)]
    pub archive_entities: u64,
    #[serde(default)]
    pub archive_bytes: u64,
    /// The source revision whose changes are all on the target.
    #[serde(default)]
    pub applied_through: u64,
    #[serde(default)]
    pub changes_replayed: u64,
    /// The source's digest when it was frozen (a delete-first move compares against it).
    #[serde(default)]
    pub source_digest: Option<gatehouse_client::api::Digest>,
    /// Gateway traffic counters at preflight, to report what each side served during the move.
    #[serde(default)]
    pub source_traffic_start: Option<Traffic>,
    #[serde(default)]
    pub target_traffic_start: Option<Traffic>,
    #[serde(default)]
    pub source_traffic_end: Option<Traffic>,
    #[serde(default)]
    pub target_traffic_end: Option<Traffic>,
    /// The DNS record before the cutover, and when the cutover was written (ms since epoch).
    #[serde(default)]
    pub dns_before: Option<crate::dns::Answer>,
    #[serde(default)]
    pub dns_changed_at_ms: Option<i64>,
    /// When the source stopped serving in a delete-first move (ms since epoch).
    #[serde(default)]
    pub source_deleted_at_ms: Option<i64>,
    #[serde(default)]
    pub downtime_ms: u64,
    /// The source has handed over: it is a read-only standby and the target is authoritative.
    #[serde(default)]
    pub handed_over: bool,
    #[serde(default)]
    pub overlay_applied: Vec<crate::overlay::Applied>,
    #[serde(default)]
    pub smoke_requests: u64,
    #[serde(default)]
    pub outcome: Option<String>,
}

impl MoveState {
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    pub fn step_mut(&mut self, name: &str) -> &mut StepRecord {
        let i = self
            .steps
            .iter()
            .position(|s| s.name == name)
            .expect("every step of the plan has a record");
        &mut self.steps[i]
    }

    pub fn done(&self, name: &str) -> bool {
        self.step(name)
            .is_some_and(|s| s.status == StepStatus::Done)
    }

    pub fn load(path: &Path) -> Result<MoveState> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the move file {}", path.display()))?;
        let s: MoveState = serde_json::from_str(&text)
            .with_context(|| format!("the move file {} is damaged", path.display()))?;
        if s.version != STATE_VERSION {
            anyhow::bail!(
                "the move file {} has version {}; this gatehouse reads version {STATE_VERSION}",
                path.display(),
                s.version
            );
        }
        Ok(s)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self)?;
        write_private(path, &text)
            .with_context(|| format!("cannot replace the move file {}", path.display()))
    }
}

/// Writes a file only its owner can read (the move file names token files and keys): a
/// temporary file (created 0600) renamed into place once written and synced, so a crash
/// leaves the old file or the new one, never half of one.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

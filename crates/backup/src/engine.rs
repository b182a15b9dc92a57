//! Backup and restore engines over the store.
//!
//! Invariants: a backup reads one consistent snapshot (one read transaction at revision N) and
//! never blocks writers; a restore reads the whole archive and checks everything (key, hashes,
//! format, expiry, tier, every path and reference) before it changes anything, then replaces
//! the target's configuration in one store transaction — a crash at any moment leaves the
//! target as it was or fully restored. The target keeps its own name and region.

use crate::archive::{self, ArchiveError, ArchiveWriter, Manifest, Visitor};
use crate::key::BackupKey;
use gatehouse_model::{KINDS, Kind, ResourcePath, ServiceSettings, Sku};
use gatehouse_store::{Store, StoreError, UsageRow};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("Cannot restore: backup expired")]
    Expired,
    #[error("Cannot restore: current SKU is '{current}', backup SKU is '{backup}'")]
    TierMismatch { current: String, backup: String },
    #[error("Cannot restore: {0}")]
    Invalid(String),
}

/// One resource line of a section.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    path: String,
    properties: Map<String, Value>,
}

#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// The archive cannot be restored after this long.
    pub expires_after: Option<std::time::Duration>,
}

/// Progress of a long operation: work done and the total, in entities.
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("formatting a time cannot fail")
}

/// Writes a backup of the whole instance to a local file.
pub fn backup_to_file(
    store: &Store,
    path: &Path,
    key: &BackupKey,
    opts: &BackupOptions,
    progress: Progress<'_>,
) -> Result<Manifest, BackupError> {
    let mut writer = ArchiveWriter::create(path, key)?;
    store
        .read(|r| -> Result<Manifest, BackupError> {
            let service = r.service()?.ok_or(StoreError::NoService)?;
            let total = r.resource_count()?;
            let mut done = 0u64;
            progress(0, total);
            writer.begin_section("service")?;
            writer.line(&service)?;
            for spec in KINDS {
                writer.begin_section(spec.name)?;
                r.for_each_of_kind(spec.kind, |res| {
                    writer
                        .line(&Line {
                            path: res.path,
                            properties: res.properties,
                        })
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    done += 1;
                    if done.is_multiple_of(5000) {
                        progress(done, total);
                    }
                    Ok(())
                })?;
            }
            writer.begin_section("refs")?;
            r.for_each_ref(|from, to| {
                writer
                    .line(&[from, to])
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })?;
            writer.begin_section("usage")?;
            for row in r.usage(i64::MIN / 2, i64::MAX / 2)? {
                writer.line(&row)?;
            }
            progress(total, total);
            let created = now();
            let manifest = Manifest {
                format_version: archive::FORMAT_VERSION,
                gatehouse_version: env!("CARGO_PKG_VERSION").to_string(),
                service_name: service.name.clone(),
                region: service.location.clone(),
                sku: service.sku.clone(),
                source_revision: r.revision(),
                created_at_utc: rfc3339(created),
                expires_at_utc: opts
                    .expires_after
                    .map(|d| rfc3339(created + time::Duration::seconds(d.as_secs() as i64))),
                include: None,
                entity_count: 0,
                sections: Vec::new(),
            };
            Ok(manifest)
        })
        .and_then(|manifest| Ok(writer.finish(manifest)?))
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub allow_tier_change: bool,
}

/// What a restore would change, per resource type: `(added, changed, removed)` ids.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    pub manifest: Option<Manifest>,
    pub changes: BTreeMap<String, KindDiff>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KindDiff {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

/// Checks done before a restore: expiry and tier.
fn check_manifest(
    m: &Manifest,
    target: &ServiceSettings,
    opts: &RestoreOptions,
) -> Result<(), BackupError> {
    if let Some(exp) = &m.expires_at_utc {
        let t = time::OffsetDateTime::parse(exp, &time::format_description::well_known::Rfc3339)
            .map_err(|_| BackupError::Invalid(format!("the expiry '{exp}' is not a date")))?;
        if now() > t {
            return Err(BackupError::Expired);
        }
    }
    if m.sku.name != target.sku.name && !opts.allow_tier_change {
        return Err(BackupError::TierMismatch {
            current: target.sku.name.clone(),
            backup: m.sku.name.clone(),
        });
    }
    Ok(())
}

/// Pass one: reads everything, checks each line's shape and every reference; optionally
/// compares with the target (dry run).
struct Checker<'a> {
    section: String,
    kind: Option<Kind>,
    paths: HashSet<String>,
    refs: Vec<(String, String)>,
    parents: Vec<(String, String)>,
    service: Option<ServiceSettings>,
    /// Target resources by kind name: path → properties JSON text (for the dry run).
    target: Option<&'a HashMap<String, HashMap<String, String>>>,
    diff: BTreeMap<String, KindDiff>,
}

impl Visitor for Checker<'_> {
    fn section(&mut self, name: &str) -> Result<(), ArchiveError> {
        self.section = name.to_string();
        self.kind = Kind::from_name(name);
        if self.kind.is_none() && !["service", "refs", "usage"].contains(&name) {
            return Err(ArchiveError::Corrupt(format!("unknown section '{name}'")));
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), ArchiveError> {
        let bad =
            |what: String| ArchiveError::Corrupt(format!("section '{}': {what}", self.section));
        match (self.section.as_str(), self.kind) {
            ("service", _) => {
                self.service = Some(
                    serde_json::from_slice(line)
                        .map_err(|e| bad(format!("service settings: {e}")))?,
                );
            }
            ("refs", _) => {
                let (from, to): (String, String) =
                    serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
                self.refs.push((from, to));
            }
            ("usage", _) => {
                let _: UsageRow = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
            }
            (_, Some(kind)) => {
                let l: Line = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
                let p = ResourcePath::parse_stored(&l.path)
                    .map_err(|e| bad(format!("{}: {e}", l.path)))?;
                if p.kind != kind {
                    return Err(bad(format!("{} is not a {}", l.path, kind.name())));
                }
                let parent = p.parent_string();
                if !parent.is_empty() {
                    self.parents.push((l.path.clone(), parent));
                }
                if let Some(target) = self.target {
                    let diff = self.diff.entry(kind.name().to_string()).or_default();
                    let text = serde_json::to_string(&l.properties).unwrap_or_default();
                    match target.get(kind.name()).and_then(|m| m.get(&l.path)) {
                        None => diff.added.push(l.path.clone()),
                        Some(old) if *old != text => diff.changed.push(l.path.clone()),
                        Some(_) => {}
                    }
                }
                if !self.paths.insert(l.path.clone()) {
                    return Err(bad(format!("{} appears twice", l.path)));
                }
            }
            _ => return Err(bad("unexpected line".into())),
        }
        Ok(())
    }
}

impl Checker<'_> {
    fn finish(&mut self) -> Result<ServiceSettings, BackupError> {
        for (from, to) in &self.refs {
            if !self.paths.contains(from) || !self.paths.contains(to) {
                return Err(BackupError::Invalid(format!(
                    "the reference from {from} to {to} does not resolve inside the archive"
                )));
            }
        }
        for (child, parent) in &self.parents {
            if !self.paths.contains(parent) {
                return Err(BackupError::Invalid(format!(
                    "{child} has no parent {parent} in the archive"
                )));
            }
        }
        if let Some(target) = self.target {
            for (kind, paths) in target {
                let diff = self.diff.entry(kind.clone()).or_default();
                for p in paths.keys() {
                    if !self.paths.contains(p) {
                        diff.removed.push(p.clone());
                    }
                }
            }
            for d in self.diff.values_mut() {
                d.added.sort();
                d.changed.sort();
                d.removed.sort();
            }
            self.diff.retain(|_, d| {
                !(d.added.is_empty() && d.changed.is_empty() && d.removed.is_empty())
            });
        }
        self.service
            .clone()
            .ok_or_else(|| BackupError::Invalid("the archive has no service settings".into()))
    }
}

fn target_resources(store: &Store) -> Result<HashMap<String, HashMap<String, String>>, StoreError> {
    store.read(|r| {
        let mut out: HashMap<String, HashMap<String, String>> = HashMap::new();
        r.for_each_resource(|res| {
            out.entry(res.kind.name().to_string()).or_default().insert(
                res.path.clone(),
                serde_json::to_string(&res.properties).unwrap_or_default(),
            );
            Ok(())
        })?;
        Ok(out)
    })
}

/// Verifies an archive completely against a target; with `dry_run`, also returns what would
/// change. Changes nothing.
pub fn verify(
    store: &Store,
    path: &Path,
    key: &BackupKey,
    opts: &RestoreOptions,
    dry_run: bool,
) -> Result<RestorePlan, BackupError> {
    let target_settings = store.read(|r| r.service())?.ok_or(StoreError::NoService)?;
    let (plain, _) = archive::read_plain_manifest(path)?;
    check_manifest(&plain, &target_settings, opts)?;
    let target = if dry_run {
        Some(target_resources(store)?)
    } else {
        None
    };
    let mut checker = Checker {
        section: String::new(),
        kind: None,
        paths: HashSet::new(),
        refs: Vec::new(),
        parents: Vec::new(),
        service: None,
        target: target.as_ref(),
        diff: BTreeMap::new(),
    };
    let manifest = archive::read_verified(path, key, &mut checker)?;
    checker.finish()?;
    Ok(RestorePlan {
        manifest: Some(manifest),
        changes: checker.diff,
    })
}

/// Pass two: streams the verified archive into the store inside one write transaction.
struct Applier<'t, 'c> {
    tx: &'t mut gatehouse_store::WriteTx<'c>,
    section: String,
    kind: Option<Kind>,
    service: Option<ServiceSettings>,
    done: u64,
    total: u64,
    progress: Progress<'t>,
}

impl Visitor for Applier<'_, '_> {
    fn section(&mut self, name: &str) -> Result<(), ArchiveError> {
        self.section = name.to_string();
        self.kind = Kind::from_name(name);
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), ArchiveError> {
        let store_err = |e: StoreError| ArchiveError::Corrupt(e.to_string());
        match (self.section.as_str(), self.kind) {
            ("service", _) => self.service = serde_json::from_slice(line).ok(),
            ("refs", _) => {
                let (from, to): (String, String) = serde_json::from_slice(line)
                    .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
                self.tx.restore_ref(&from, &to).map_err(store_err)?;
            }
            ("usage", _) => {
                let row: UsageRow = serde_json::from_slice(line)
                    .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
                self.tx.restore_usage(&row).map_err(store_err)?;
            }
            (_, Some(_)) => {
                let l: Line = serde_json::from_slice(line)
                    .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
                let p = ResourcePath::parse_stored(&l.path)
                    .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
                self.tx
                    .restore_resource(&p, l.properties)
                    .map_err(store_err)?;
                self.done += 1;
                if self.done.is_multiple_of(5000) {
                    (self.progress)(self.done, self.total);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// What a restore did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOutcome {
    pub manifest: Manifest,
    pub revision: u64,
    pub entities: u64,
}

/// Verifies the archive, then replaces the target's configuration with it in one transaction.
/// The target keeps its name, region and tier.
pub fn restore_from_file(
    store: &Store,
    path: &Path,
    key: &BackupKey,
    opts: &RestoreOptions,
    progress: Progress<'_>,
) -> Result<RestoreOutcome, BackupError> {
    let plan = verify(store, path, key, opts, false)?;
    let manifest = plan.manifest.expect("verify returns the manifest");
    let total = manifest.entity_count;
    let committed = store.write(|tx| -> Result<u64, BackupError> {
        let target = tx.service()?.ok_or(StoreError::NoService)?;
        tx.replace_all(&json!({
            "restoredFrom": manifest.service_name,
            "sourceRegion": manifest.region,
            "sourceRevision": manifest.source_revision,
            "createdAtUtc": manifest.created_at_utc,
            "entities": manifest.entity_count,
        }))?;
        let mut applier = Applier {
            tx,
            section: String::new(),
            kind: None,
            service: None,
            done: 0,
            total,
            progress: &mut *progress,
        };
        archive::read_verified(path, key, &mut applier)?;
        let source = applier.service.take();
        let done = applier.done;
        if let Some(src) = source {
            // Region-bound settings stay the target's own (as APIM): name, location, tier.
            let merged = ServiceSettings {
                name: target.name.clone(),
                location: target.location.clone(),
                sku: Sku {
                    ..target.sku.clone()
                },
                publisher_email: src.publisher_email,
                publisher_name: src.publisher_name,
                notification_sender_email: src.notification_sender_email,
                created_at_utc: target.created_at_utc.clone(),
            };
            tx.restore_service(&merged)?;
        }
        Ok(done)
    })?;
    progress(committed.value, total);
    Ok(RestoreOutcome {
        manifest,
        revision: committed.revision,
        entities: committed.value,
    })
}

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
    /// A selective backup: these APIs and products (`/apis/{id}`, `/products/{id}`) with what
    /// they need. `None` backs up the whole instance.
    pub include: Option<Vec<String>>,
}

/// Scans policy XML for what it needs from elsewhere: `{{named value}}` names and
/// `include-fragment` ids.
fn policy_needs(xml: &str) -> (Vec<String>, Vec<String>) {
    let mut names = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else { break };
        names.push(after[..j].trim().to_string());
        rest = &after[j + 2..];
    }
    let mut fragments = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find("fragment-id=") {
        let after = &rest[i + 12..];
        let quote = after.chars().next().unwrap_or('"');
        let inner = &after[1..];
        if let Some(j) = inner.find(quote) {
            fragments.push(inner[..j].to_string());
        }
        rest = inner;
    }
    (names, fragments)
}

/// The paths a selective backup holds: the included APIs (with every revision) and products,
/// everything below them, what they reference, the APIs in the products, the subscriptions
/// scoped to them and their owners, the named values and fragments their policies use, and
/// group memberships whose group and user are both included.
fn selection(
    r: &gatehouse_store::ReadTx<'_>,
    include: &[String],
) -> Result<HashSet<String>, BackupError> {
    let mut queue: Vec<String> = Vec::new();
    let api_with_revisions = |id: &str, queue: &mut Vec<String>| -> Result<(), StoreError> {
        queue.push(format!("/apis/{id}"));
        let prefix = format!("/apis/{id};rev=");
        for a in r.children(Kind::Api, "")? {
            if a.path.starts_with(&prefix) {
                queue.push(a.path);
            }
        }
        Ok(())
    };
    for item in include {
        let rel = gatehouse_model::strip_arm_prefix(item);
        let parsed = ResourcePath::parse_stored(rel)
            .ok()
            .filter(|p| matches!(p.kind, Kind::Api | Kind::Product));
        let Some(p) = parsed else {
            return Err(BackupError::Invalid(format!(
                "include: '{item}' is not /apis/{{id}} or /products/{{id}}"
            )));
        };
        if r.get(&p.as_string())?.is_none() {
            return Err(BackupError::Invalid(format!(
                "include: {} does not exist",
                p.as_string()
            )));
        }
        match p.kind {
            Kind::Api => api_with_revisions(p.id(), &mut queue)?,
            _ => queue.push(p.as_string()),
        }
    }
    let mut set: HashSet<String> = HashSet::new();
    while let Some(path) = queue.pop() {
        if set.contains(&path) {
            continue;
        }
        let Some(res) = r.get(&path)? else { continue };
        set.insert(path.clone());
        for d in r.descendants(&path)? {
            // Memberships are added at the end, only for included users.
            if d.kind != Kind::GroupUser {
                queue.push(d.path);
            }
        }
        for target in r.references_of(&path)? {
            queue.push(target);
        }
        match res.kind {
            Kind::ProductApi => api_with_revisions(res.name(), &mut queue)?,
            Kind::Api | Kind::Product => {
                for referrer in r.referrers(&path)? {
                    if referrer.starts_with("/subscriptions/") {
                        queue.push(referrer);
                    }
                }
            }
            k if k.is_policy() || k == Kind::PolicyFragment => {
                let xml = res
                    .properties
                    .get("value")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or_default();
                let (names, fragments) = policy_needs(xml);
                for n in names {
                    for nv in r.find_by_property(Kind::NamedValue, "displayName", &n)? {
                        queue.push(nv.path);
                    }
                }
                for f in fragments {
                    queue.push(format!("/policyFragments/{f}"));
                }
            }
            _ => {}
        }
    }
    for link in r
        .children(Kind::Group, "")?
        .iter()
        .flat_map(|g| r.descendants(&g.path).unwrap_or_default())
    {
        if link.kind == Kind::GroupUser
            && set.contains(&format!("/users/{}", link.name()))
            && set.contains(link.path.rsplitn(3, '/').nth(2).unwrap_or_default())
        {
            set.insert(link.path);
        }
    }
    Ok(set)
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
            let selected = opts
                .include
                .as_deref()
                .map(|i| selection(r, i))
                .transpose()?;
            let wanted = |path: &str| selected.as_ref().is_none_or(|s| s.contains(path));
            let total = selected
                .as_ref()
                .map(|s| s.len() as u64)
                .map_or_else(|| r.resource_count(), Ok)?;
            let mut done = 0u64;
            progress(0, total);
            writer.begin_section("service")?;
            writer.line(&service)?;
            for spec in KINDS {
                writer.begin_section(spec.name)?;
                r.for_each_of_kind(spec.kind, |res| {
                    if !wanted(&res.path) {
                        return Ok(());
                    }
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
                if !wanted(&from) {
                    return Ok(());
                }
                writer
                    .line(&[from, to])
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            })?;
            writer.begin_section("usage")?;
            if selected.is_none() {
                for row in r.usage(i64::MIN / 2, i64::MAX / 2)? {
                    writer.line(&row)?;
                }
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
                include: opts.include.clone(),
                entity_count: 0,
                sections: Vec::new(),
                segment: None,
            };
            Ok(manifest)
        })
        .and_then(|manifest| Ok(writer.finish(manifest)?))
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub allow_tier_change: bool,
    /// Who restores, for the journal (`None`: the store's own `system`).
    pub actor: Option<String>,
    /// Journal entries (secrets in plaintext) replayed after the archive in the same
    /// transaction: a point-in-time restore's changes since its base.
    pub replay: Vec<gatehouse_store::JournalEntry>,
}

/// What a restore would change, per resource type: `(added, changed, removed)` ids.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RestorePlan {
    pub manifest: Option<Manifest>,
    pub changes: BTreeMap<String, KindDiff>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
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
    /// For a selective archive: the target's paths, which references may resolve to.
    merge_into: Option<HashSet<String>>,
    /// The archive's resources as `target` holds them (for the dry run's diff).
    archived: HashMap<String, HashMap<String, String>>,
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
                if self.target.is_some() {
                    let text = serde_json::to_string(&l.properties).unwrap_or_default();
                    let of_kind = self.archived.entry(kind.name().to_string()).or_default();
                    of_kind.insert(l.path.clone(), text);
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
        // A selective archive merges into the target: what it references may be there.
        let resolves = |p: &String| {
            self.paths.contains(p) || self.merge_into.as_ref().is_some_and(|t| t.contains(p))
        };
        for (from, to) in &self.refs {
            if !resolves(from) || !resolves(to) {
                return Err(BackupError::Invalid(format!(
                    "the reference from {from} to {to} does not resolve inside the archive{}",
                    if self.merge_into.is_some() {
                        " or the target"
                    } else {
                        ""
                    }
                )));
            }
        }
        for (child, parent) in &self.parents {
            if !resolves(parent) {
                return Err(BackupError::Invalid(format!(
                    "{child} has no parent {parent} in the archive{}",
                    if self.merge_into.is_some() {
                        " or the target"
                    } else {
                        ""
                    }
                )));
            }
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
    let merge_into = match &plain.include {
        None => None,
        Some(_) => Some(store.read(|r| {
            let mut paths = HashSet::new();
            r.for_each_resource(|res| {
                paths.insert(res.path);
                Ok(())
            })?;
            Ok::<_, StoreError>(paths)
        })?),
    };
    let mut checker = Checker {
        merge_into,
        section: String::new(),
        kind: None,
        paths: HashSet::new(),
        refs: Vec::new(),
        parents: Vec::new(),
        service: None,
        target: target.as_ref(),
        archived: HashMap::new(),
    };
    let manifest = archive::read_verified(path, key, &mut checker)?;
    checker.finish()?;
    let changes = match &target {
        None => BTreeMap::new(),
        Some(before) if !opts.replay.is_empty() => {
            diff_after_replay(store, path, key, &manifest, opts, before)?
        }
        Some(before) => {
            let mut changes = diff_states(before, &checker.archived);
            if checker.merge_into.is_some() {
                // A merge removes nothing.
                changes.values_mut().for_each(|d| d.removed.clear());
                changes.retain(|_, d| !(d.added.is_empty() && d.changed.is_empty()));
            }
            changes
        }
    };
    Ok(RestorePlan {
        manifest: Some(manifest),
        changes,
    })
}

/// A point-in-time restore's plan. What the replayed changes do on top of the archive cannot be
/// judged line by line, so the whole restore runs in a transaction that is always taken back
/// and what it leaves is compared with the current state.
fn diff_after_replay(
    store: &Store,
    path: &Path,
    key: &BackupKey,
    manifest: &Manifest,
    opts: &RestoreOptions,
    before: &HashMap<String, HashMap<String, String>>,
) -> Result<BTreeMap<String, KindDiff>, BackupError> {
    let actor = opts
        .actor
        .as_deref()
        .unwrap_or(gatehouse_store::SYSTEM_ACTOR);
    let after = store.trial_as(actor, |tx| -> Result<_, BackupError> {
        apply_archive(tx, path, key, manifest, opts, &mut |_, _| {})?;
        let mut after: HashMap<String, HashMap<String, String>> = HashMap::new();
        tx.for_each_resource(|res| {
            let text = serde_json::to_string(&res.properties).unwrap_or_default();
            after
                .entry(res.kind.name().to_string())
                .or_default()
                .insert(res.path, text);
            Ok(())
        })?;
        Ok(after)
    })?;
    Ok(diff_states(before, &after.value))
}

/// Per kind, the paths `after` adds to, changes in and removes from `before`.
fn diff_states(
    before: &HashMap<String, HashMap<String, String>>,
    after: &HashMap<String, HashMap<String, String>>,
) -> BTreeMap<String, KindDiff> {
    let empty = HashMap::new();
    let mut out: BTreeMap<String, KindDiff> = BTreeMap::new();
    for kind in before.keys().chain(after.keys()) {
        let (old, new) = (
            before.get(kind).unwrap_or(&empty),
            after.get(kind).unwrap_or(&empty),
        );
        let mut diff = KindDiff::default();
        for (path, text) in new {
            match old.get(path) {
                None => diff.added.push(path.clone()),
                Some(was) if was != text => diff.changed.push(path.clone()),
                Some(_) => {}
            }
        }
        diff.removed = old
            .keys()
            .filter(|p| !new.contains_key(*p))
            .cloned()
            .collect();
        diff.added.sort();
        diff.changed.sort();
        diff.removed.sort();
        if !(diff.added.is_empty() && diff.changed.is_empty() && diff.removed.is_empty()) {
            out.insert(kind.clone(), diff);
        }
    }
    out
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
    /// A selective archive is merged: each resource is written (and journaled) over the
    /// target's, nothing else is removed.
    merge: bool,
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
                if self.merge {
                    self.tx.put(&p, l.properties, &[]).map_err(store_err)?;
                } else {
                    self.tx
                        .restore_resource(&p, l.properties)
                        .map_err(store_err)?;
                }
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

/// Writes a verified archive, then the changes to replay on top of it, into `tx`: everything
/// but the journal-level bookkeeping of a restore. Returns the entities written.
fn apply_archive(
    tx: &mut gatehouse_store::WriteTx<'_>,
    path: &Path,
    key: &BackupKey,
    manifest: &Manifest,
    opts: &RestoreOptions,
    progress: Progress<'_>,
) -> Result<u64, BackupError> {
    let total = manifest.entity_count;
    let target = tx.service()?.ok_or(StoreError::NoService)?;
    let merge = manifest.include.is_some();
    if !merge {
        tx.replace_all(&json!({
            "restoredFrom": manifest.service_name,
            "sourceRegion": manifest.region,
            "sourceRevision": manifest.source_revision,
            "createdAtUtc": manifest.created_at_utc,
            "entities": manifest.entity_count,
        }))?;
    }
    let mut applier = Applier {
        merge,
        tx,
        section: String::new(),
        kind: None,
        service: None,
        done: 0,
        total,
        progress: &mut *progress,
    };
    archive::read_verified(path, key, &mut applier)?;
    let source = applier.service.take().filter(|_| !merge);
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
            hostname_configurations: target.hostname_configurations.clone(),
        };
        tx.restore_service(&merged)?;
    }
    for entry in &opts.replay {
        tx.apply_entry(entry)?;
    }
    Ok(done)
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
    let actor = opts
        .actor
        .as_deref()
        .unwrap_or(gatehouse_store::SYSTEM_ACTOR);
    let committed = store.write_as(actor, |tx| {
        apply_archive(tx, path, key, &manifest, opts, &mut *progress)
    })?;
    progress(committed.value, total);
    Ok(RestoreOutcome {
        manifest,
        revision: committed.revision,
        entities: committed.value,
    })
}

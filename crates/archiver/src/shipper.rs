//! The task a serving node runs with `--archive`: it follows the store's commits, cuts the
//! journal into segments (closed at most `segment_after` after their first change, or at
//! `max_segment_entries`), takes base archives (at the start, after a restore, on a schedule),
//! and uploads them in order from a queue on disk that survives restarts; while storage is
//! unreachable the queue grows (bounded: past `max_queued` files cutting pauses, and the
//! changes wait in the journal) and the lag shows in the status.
//!
//! Invariants: a queue file is complete (written, synced, renamed) before the revisions in it
//! count as cut; it leaves the queue only after its upload and the indexes naming it are
//! written; on a shared store one node at a time ships (the store's `archive` lease).

use crate::layout::{BaseEntry, SegmentEntry, base_name, day_of, segment_name};
use crate::remote::Archive;
use gatehouse_backup::{BackupKey, BackupOptions, archive};
use gatehouse_store::{JournalEntry, Lease, Store};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};

/// The meta key of the last revision cut into the queue.
const CUT_META: &str = "archive_cut";
/// The meta key of the last revision uploaded and indexed.
const UPLOADED_META: &str = "archive_uploaded";
const LEASE: &str = "archive";
/// The meta key of this instance's identity in its archive.
const INSTANCE_META: &str = "archive_instance";

/// This instance's identity in archives (made once, kept in the store).
fn instance_id(store: &Store) -> Result<String, String> {
    if let Some(id) = store
        .read(|r| r.meta(INSTANCE_META))
        .map_err(|e| e.to_string())?
    {
        return Ok(id);
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    store
        .set_meta(INSTANCE_META, &id)
        .map_err(|e| e.to_string())?;
    Ok(id)
}

pub struct ShipperConfig {
    pub archive: Archive,
    pub key: Arc<BackupKey>,
    pub segment_after: Duration,
    pub max_segment_entries: u64,
    pub queue_dir: PathBuf,
    pub max_queued: usize,
    pub base_every: Option<crate::schedule::BaseSchedule>,
    /// Which bases to keep (applied after each base is uploaded).
    pub keep: crate::retention::Keep,
    /// This node's name, for the lease on a shared store.
    pub node: String,
}

/// How far archiving has come, for `GET /` and `/metrics`.
#[derive(Default)]
pub struct ArchiveStatus {
    /// The last revision uploaded and indexed, and its commit time (Unix ms).
    pub archived_revision: AtomicU64,
    archived_at_ms: AtomicI64,
    /// The commit time (Unix ms) of the oldest change not uploaded yet; 0 when none waits.
    oldest_waiting_ms: AtomicI64,
    pub queued_files: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Where the archive goes (`account/container/folder`, never a key): a move from the
    /// archive checks it is the one it reads.
    destination: Mutex<Option<String>>,
    /// On a shared store, the node that ships now (holds the lease).
    shipped_by: Mutex<Option<String>>,
    /// Set by the uploader when it dropped queued revisions another node had archived: the
    /// cutter's position may be behind the archive, so it reads it again.
    reposition: AtomicBool,
}

fn unix_ms(at: &str) -> i64 {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl ArchiveStatus {
    /// Seconds since the oldest change not yet in storage was committed (0 when none waits).
    pub fn lag_seconds(&self) -> f64 {
        match self.oldest_waiting_ms.load(Ordering::Relaxed) {
            0 => 0.0,
            at => (now_ms() - at).max(0) as f64 / 1000.0,
        }
    }

    pub fn render(&self) -> Value {
        let at = self.archived_at_ms.load(Ordering::Relaxed);
        json!({
            "lastArchivedRevision": self.archived_revision.load(Ordering::Relaxed),
            "lastArchivedAt": time::OffsetDateTime::from_unix_timestamp_nanos(at as i128 * 1_000_000)
                .ok().filter(|_| at > 0)
                .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok()),
            "lagSeconds": self.lag_seconds(),
            "queuedFiles": self.queued_files.load(Ordering::Relaxed),
            "lastError": *self.last_error.lock().unwrap_or_else(|e| e.into_inner()),
            "destination": *self.destination.lock().unwrap_or_else(|e| e.into_inner()),
            "shippedBy": *self.shipped_by.lock().unwrap_or_else(|e| e.into_inner()),
        })
    }

    /// Prometheus lines.
    pub fn metrics(&self) -> String {
        format!(
            "# HELP gatehouse_archive_revision The last revision in the continuous archive.\n# TYPE gatehouse_archive_revision gauge\ngatehouse_archive_revision {}\n# HELP gatehouse_archive_lag_seconds Age of the oldest change not yet archived.\n# TYPE gatehouse_archive_lag_seconds gauge\ngatehouse_archive_lag_seconds {:.3}\n# HELP gatehouse_archive_queued_files Segments and bases waiting for upload.\n# TYPE gatehouse_archive_queued_files gauge\ngatehouse_archive_queued_files {}\n",
            self.archived_revision.load(Ordering::Relaxed),
            self.lag_seconds(),
            self.queued_files.load(Ordering::Relaxed),
        )
    }

    fn waiting_since(&self, at: &str) {
        let _ = self.oldest_waiting_ms.compare_exchange(
            0,
            unix_ms(at).max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn failed(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }
}

/// Runs the cutter and the uploader until `stop` turns true.
pub async fn ship_forever(
    store: Arc<Store>,
    config: ShipperConfig,
    status: Arc<ArchiveStatus>,
    stop: watch::Receiver<bool>,
) {
    *status.destination.lock().unwrap_or_else(|e| e.into_inner()) =
        Some(format!("{:?}", config.archive));
    if let Err(e) = std::fs::create_dir_all(&config.queue_dir) {
        status.failed(Some(format!("{}: {e}", config.queue_dir.display())));
        return;
    }
    let config = Arc::new(config);
    let wake = Arc::new(Notify::new());
    let uploader = tokio::spawn(upload_forever(
        store.clone(),
        config.clone(),
        status.clone(),
        wake.clone(),
        stop.clone(),
    ));
    cut_forever(store, config, status, wake, stop).await;
    let _ = uploader.await;
}

/// The last revision the archive holds for sure: cut into the queue on disk (uploaded, on a
/// shared store, where the queue is one node's). Journal retention keeps what is after it.
pub fn archived_through(store: &Store) -> Result<u64, gatehouse_store::StoreError> {
    let key = if store.is_shared() {
        UPLOADED_META
    } else {
        CUT_META
    };
    Ok(store
        .read(|r| r.meta(key))?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| e.to_string())?
}

/// What the cutter decided to do next.
enum Next {
    Base { restart_chain: bool },
    Cut(Vec<JournalEntry>),
    WaitUntil(Instant),
    WaitForChange,
}

async fn cut_forever(
    store: Arc<Store>,
    config: Arc<ShipperConfig>,
    status: Arc<ArchiveStatus>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut revisions = store.subscribe();
    let mut cutter = Cutter::default();
    while !*stop.borrow() {
        let next = match cutter.next(&store, &config, &status).await {
            Ok(next) => next,
            Err(e) => {
                status.failed(Some(e.clone()));
                tracing::warn!(error = %e, "continuous archive: cutting failed; retrying");
                Next::WaitUntil(Instant::now() + Duration::from_secs(1))
            }
        };
        let done = match next {
            Next::Base { restart_chain } => cutter.base(&store, &config, restart_chain).await,
            Next::Cut(entries) => cutter.cut(&store, &config, &status, entries).await,
            Next::WaitUntil(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    _ = stop.changed() => {}
                }
                Ok(())
            }
            Next::WaitForChange => {
                tokio::select! {
                    _ = revisions.changed() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                Ok(())
            }
        };
        match done {
            Ok(()) => wake.notify_one(),
            Err(e) => {
                status.failed(Some(e.clone()));
                tracing::warn!(error = %e, "continuous archive: cutting failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[derive(Default)]
struct Cutter {
    /// The last revision cut (`None` until read from the store).
    through: Option<u64>,
    /// When the oldest entry not yet cut was first seen.
    first_seen: Option<Instant>,
    last_base: Option<std::time::SystemTime>,
}

impl Cutter {
    async fn next(
        &mut self,
        store: &Arc<Store>,
        config: &ShipperConfig,
        status: &ArchiveStatus,
    ) -> Result<Next, String> {
        if store.is_shared() && !self.my_turn(store, config, status).await? {
            return Ok(Next::WaitUntil(Instant::now() + Duration::from_secs(2)));
        }
        if status.reposition.swap(false, Ordering::Relaxed) {
            self.through = None;
        }
        if queued(&config.queue_dir).len() >= config.max_queued {
            return Ok(Next::WaitUntil(Instant::now() + Duration::from_millis(200)));
        }
        let shared = store.is_shared();
        let Some(through) = self.through else {
            let (through, floor) = blocking(store, move |s| {
                let key = if shared { UPLOADED_META } else { CUT_META };
                s.read(|r| Ok((r.meta(key)?, r.journal_floor()?)))
                    .map_err(|e: gatehouse_store::StoreError| e.to_string())
            })
            .await?;
            match through.and_then(|t| t.parse::<u64>().ok()) {
                Some(t) if t >= floor => self.through = Some(t),
                _ => {
                    return Ok(Next::Base {
                        restart_chain: true,
                    });
                }
            }
            return Ok(Next::WaitUntil(Instant::now()));
        };
        if config.base_every.as_ref().is_some_and(|every| {
            let now = std::time::SystemTime::now();
            self.last_base.is_none_or(|b| every.due(b, now))
        }) {
            return Ok(Next::Base {
                restart_chain: false,
            });
        }
        let max = config.max_segment_entries;
        let entries = blocking(store, move |s| {
            s.read(|r| r.journal_revisions(through, max))
                .map_err(|e| e.to_string())
        })
        .await?;
        if let Some(pos) = entries
            .iter()
            .position(|e| e.path == "/" && e.op == "replace")
        {
            // A restore replaced everything: what came before it is cut, then a new base.
            let replaced = entries[pos].revision;
            let before: Vec<JournalEntry> = entries
                .into_iter()
                .filter(|e| e.revision < replaced)
                .collect();
            return Ok(if before.is_empty() {
                Next::Base {
                    restart_chain: true,
                }
            } else {
                Next::Cut(before)
            });
        }
        if entries.is_empty() {
            self.first_seen = None;
            return Ok(Next::WaitForChange);
        }
        let due = *self.first_seen.get_or_insert_with(Instant::now) + config.segment_after;
        if entries.len() as u64 >= max || Instant::now() >= due {
            Ok(Next::Cut(entries))
        } else {
            Ok(Next::WaitUntil(due))
        }
    }

    /// On a shared store, whether this node ships now (it holds or took the lease). When
    /// another node does, this one reports how far that node has archived.
    async fn my_turn(
        &mut self,
        store: &Arc<Store>,
        config: &ShipperConfig,
        status: &ArchiveStatus,
    ) -> Result<bool, String> {
        let (node, ttl) = (config.node.clone(), Duration::from_secs(10));
        let (lease, uploaded) = blocking(store, move |s| {
            let lease = s.take_lease(LEASE, &node, ttl).map_err(|e| e.to_string())?;
            let uploaded = s
                .read(|r| r.meta(UPLOADED_META))
                .map_err(|e| e.to_string())?;
            Ok((lease, uploaded.and_then(|u| u.parse::<u64>().ok())))
        })
        .await?;
        let holder = match &lease {
            Lease::Ours => config.node.clone(),
            Lease::Theirs(other) => other.clone(),
        };
        *status.shipped_by.lock().unwrap_or_else(|e| e.into_inner()) = Some(holder);
        if let Lease::Theirs(_) = lease {
            // What the shipping node archived is this instance's archive too.
            status
                .archived_revision
                .fetch_max(uploaded.unwrap_or(0), Ordering::Relaxed);
            self.through = None; // read again when this node's turn comes
            return Ok(false);
        }
        Ok(true)
    }

    /// Cuts `entries` into a segment in the queue.
    async fn cut(
        &mut self,
        store: &Arc<Store>,
        config: &Arc<ShipperConfig>,
        status: &ArchiveStatus,
        mut entries: Vec<JournalEntry>,
    ) -> Result<(), String> {
        let previous = self.through.unwrap_or(0);
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (first, last, first_at) = (first.revision, last.revision, first.at.clone());
        let c = config.clone();
        blocking(store, move |s| {
            let service = s
                .read(|r| r.service())
                .map_err(|e| e.to_string())?
                .ok_or("the store holds no service")?;
            for e in &mut entries {
                s.open_entry(e).map_err(|e| e.to_string())?;
            }
            let name = format!("{last:020}-0-seg-{first:020}.ghseg");
            write_queued(&c.queue_dir, &name, |path| {
                crate::segment::write(path, &c.key, &service, previous, &entries)
                    .map(drop)
                    .map_err(|e| e.to_string())
            })?;
            if !s.is_shared() {
                s.set_meta(CUT_META, &last.to_string())
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
        .await?;
        status.waiting_since(&first_at);
        self.through = Some(last);
        self.first_seen = None;
        Ok(())
    }

    /// Takes a base archive into the queue. A base after a restore (or with nothing archived
    /// yet) restarts the chain of segments at its revision; a scheduled one leaves it.
    async fn base(
        &mut self,
        store: &Arc<Store>,
        config: &Arc<ShipperConfig>,
        restart_chain: bool,
    ) -> Result<(), String> {
        let c = config.clone();
        let revision = blocking(store, move |s| {
            let tmp = tempfile::Builder::new()
                .prefix(".base-")
                .suffix(".tmp")
                .tempfile_in(&c.queue_dir)
                .map_err(|e| e.to_string())?
                .into_temp_path();
            let manifest = gatehouse_backup::backup_to_file(
                s,
                &tmp,
                &c.key,
                &BackupOptions::default(),
                &mut |_, _| {},
            )
            .map_err(|e| e.to_string())?;
            let revision = manifest.source_revision;
            sync(&tmp)?;
            tmp.persist(c.queue_dir.join(format!("{revision:020}-1-base.ghbk")))
                .map_err(|e| e.to_string())?;
            if restart_chain && !s.is_shared() {
                s.set_meta(CUT_META, &revision.to_string())
                    .map_err(|e| e.to_string())?;
            }
            Ok(revision)
        })
        .await?;
        if restart_chain {
            self.through = Some(revision);
        }
        self.last_base = Some(std::time::SystemTime::now());
        tracing::info!(revision, "continuous archive: base archive taken");
        Ok(())
    }
}

fn sync(path: &Path) -> Result<(), String> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a queue file complete before it appears under `name`.
fn write_queued(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let tmp = tempfile::Builder::new()
        .prefix(".seg-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| e.to_string())?
        .into_temp_path();
    write(&tmp)?;
    sync(&tmp)?;
    tmp.persist(dir.join(name)).map_err(|e| e.to_string())
}

/// The queue's files, oldest revision first (temporary files left out).
fn queued(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| !n.starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

async fn upload_forever(
    store: Arc<Store>,
    config: Arc<ShipperConfig>,
    status: Arc<ArchiveStatus>,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(250);
    while !*stop.borrow() {
        let files = queued(&config.queue_dir);
        status
            .queued_files
            .store(files.len() as u64, Ordering::Relaxed);
        let next = if store.is_shared() {
            match continuation(&store, &config, &status, &files).await {
                Ok(next) => next,
                Err(e) => {
                    status.failed(Some(e));
                    None
                }
            }
        } else {
            files.first().cloned()
        };
        let Some(next) = next.as_ref() else {
            if files.is_empty() {
                status.oldest_waiting_ms.store(0, Ordering::Relaxed);
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = stop.changed() => {}
            }
            continue;
        };
        match upload_one(&store, &config, &status, next).await {
            Ok(()) => {
                status.failed(None);
                backoff = Duration::from_millis(250);
                let _ = std::fs::remove_file(next);
            }
            Err(e) => {
                status.failed(Some(e.clone()));
                tracing::warn!(error = %e, queued = files.len(), "continuous archive: upload failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// On a shared store, where nodes take turns (the lease) and each has its own queue: the queued
/// file that continues the archive — a base, or the segment following the last revision
/// uploaded by any node. Files the archive already covers (another node re-cut them from the
/// journal while this one was away) are dropped; a segment after a gap waits for the re-cut
/// that fills it. `None` while another node holds the lease or nothing fits yet.
async fn continuation(
    store: &Arc<Store>,
    config: &ShipperConfig,
    status: &ArchiveStatus,
    files: &[PathBuf],
) -> Result<Option<PathBuf>, String> {
    if files.is_empty() {
        return Ok(None);
    }
    let node = config.node.clone();
    let (lease, uploaded) = blocking(store, move |s| {
        let lease = s
            .take_lease(LEASE, &node, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let uploaded = s
            .read(|r| r.meta(UPLOADED_META))
            .map_err(|e| e.to_string())?;
        Ok((lease, uploaded.and_then(|u| u.parse::<u64>().ok())))
    })
    .await?;
    if let Lease::Theirs(_) = lease {
        return Ok(None);
    }
    for file in files {
        let (manifest, _) = archive::read_plain_manifest(file).map_err(|e| e.to_string())?;
        let (Some(range), Some(uploaded)) = (&manifest.segment, uploaded) else {
            return Ok(Some(file.clone())); // a base, or nothing uploaded yet
        };
        if range.previous == uploaded {
            return Ok(Some(file.clone()));
        }
        if range.previous < uploaded {
            tracing::info!(file = %file.display(), uploaded, "continuous archive: dropping revisions another node archived");
            let _ = std::fs::remove_file(file);
            status.reposition.store(true, Ordering::Relaxed);
        }
    }
    Ok(None)
}

/// Uploads one queue file and writes the indexes that name it.
async fn upload_one(
    store: &Arc<Store>,
    config: &ShipperConfig,
    status: &ArchiveStatus,
    path: &Path,
) -> Result<(), String> {
    let (manifest, _) = archive::read_plain_manifest(path).map_err(|e| e.to_string())?;
    let archive = &config.archive;
    let me = blocking(store, instance_id).await?;
    let mut index = archive.index().await.map_err(|e| e.to_string())?;
    match &index.instance {
        Some(other) if *other != me => {
            return Err(format!(
                "the archive at {archive:?} belongs to another instance ({other}): give this one a folder of its own (--archive)"
            ));
        }
        _ => index.instance = Some(me),
    }
    let (name, revision, at) = match &manifest.segment {
        Some(range) => (
            segment_name(range.first, range.last),
            range.last,
            range.last_at.clone(),
        ),
        None => (
            base_name(manifest.source_revision),
            manifest.source_revision,
            manifest.created_at_utc.clone(),
        ),
    };
    let bytes = archive
        .upload(&name, path)
        .await
        .map_err(|e| e.to_string())?;
    match manifest.segment {
        Some(range) => {
            let day = day_of(&range.first_at);
            let mut day_index = archive.day(&day).await.map_err(|e| e.to_string())?;
            if !day_index.segments.iter().any(|s| s.name == name) {
                day_index.segments.push(SegmentEntry {
                    name: name.clone(),
                    range,
                    bytes,
                });
                archive
                    .put_day(&day, &day_index)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            if !index.days.contains(&day) {
                index.days.push(day);
                index.days.sort();
            }
        }
        None => {
            if !index.bases.iter().any(|b| b.name == name) {
                index.bases.push(BaseEntry {
                    name: name.clone(),
                    revision,
                    at: at.clone(),
                    bytes,
                });
                index.bases.sort_by_key(|b| b.revision);
            }
        }
    }
    if revision >= index.last_revision {
        index.last_revision = revision;
        index.last_at = Some(at.clone());
    }
    archive.put_index(&index).await.map_err(|e| e.to_string())?;
    if !name.ends_with(".ghseg") && config.keep.any() {
        let forgotten = crate::retention::forget(archive, &config.keep)
            .await
            .map_err(|e| e.to_string())?;
        if forgotten.bases + forgotten.segments > 0 {
            tracing::info!(
                bases = forgotten.bases,
                segments = forgotten.segments,
                "continuous archive: retention removed what no kept base needs"
            );
        }
    }
    blocking(store, move |s| {
        // Never backwards: a base another node's queue held may be older than the archive.
        let was = s
            .read(|r| r.meta(UPLOADED_META))
            .map_err(|e| e.to_string())?;
        if was
            .and_then(|w| w.parse::<u64>().ok())
            .is_none_or(|w| w < revision)
        {
            s.set_meta(UPLOADED_META, &revision.to_string())
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
    .await?;
    if status
        .archived_revision
        .fetch_max(revision, Ordering::Relaxed)
        <= revision
    {
        status.archived_at_ms.store(unix_ms(&at), Ordering::Relaxed);
    }
    status.oldest_waiting_ms.store(0, Ordering::Relaxed);
    Ok(())
}

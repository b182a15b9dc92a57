//! APIM's backup and restore contract: `POST /backup` and `POST /restore` answer 202 with
//! `Location: …/operationresults/{id}`; polling gives 202 with progress while the operation
//! runs, then 200 with the service resource, or the error envelope with `BackupFailed` or
//! `RestoreFailed`. One backup or restore runs at a time per instance (409 otherwise).
//!
//! Storage here is a `file://` URL (`storageAccount`), a folder (`containerName`) and a file
//! name (`backupName`); the archive appears under its final name only when complete.

use crate::error::ApiError;
use crate::long_running::{HEARTBEAT, LEASE, LEASE_TTL, failure_code};
use crate::state::AppState;
use axum::http::StatusCode;
use gatehouse_backup::storage::{Location, StorageError};
use gatehouse_backup::{BackupKey, BackupOptions, RestoreOptions};
use gatehouse_store::Lease;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::long_running::{
    OpStatus, Operation, RETRY_AFTER_SECONDS, progress_body, status_body,
};

/// The instance's long-running operations.
pub struct Operations {
    ops: Mutex<HashMap<String, Arc<Operation>>>,
    busy: Mutex<Option<String>>,
    /// This node, as operation records and leases name it (made at start).
    pub node: String,
    /// The instance's configured backup key (`--backup-key-file`, `GATEHOUSE_BACKUP_KEY`).
    pub default_key: Option<String>,
    /// Storage accounts configured on the server, by the name requests use as
    /// `storageAccount`: where they are (a storage URL) and their key.
    pub accounts: HashMap<String, StorageAccount>,
    /// The region of S3 storage (`AWS_REGION` where the server starts); `us-east-1` if none.
    pub s3_region: Option<String>,
    /// Where the key made at the first backup without one lives (`backup.key` in the data
    /// directory, 0600), so that a stock APIM client — which cannot send `encryptionKey` —
    /// gets encrypted backups it can restore.
    pub key_file: Option<std::path::PathBuf>,
}

/// A storage account configured on the server (`[storage-accounts.NAME]` in gatehouse.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct StorageAccount {
    /// `az://ACCOUNT`, `file:///folder`, `s3://`, `s3+http(s)://host:port` or `gs://`.
    pub url: String,
    #[serde(default)]
    pub access_key: Option<String>,
}

impl Default for Operations {
    fn default() -> Self {
        // The host's name (where Linux tells it) makes the records readable to operators;
        // the random part tells apart two nodes, or two runs, on one host.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        Operations {
            ops: Default::default(),
            busy: Default::default(),
            node: format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            default_key: None,
            accounts: HashMap::new(),
            s3_region: None,
            key_file: None,
        }
    }
}

impl Operations {
    pub fn new(default_key: Option<String>, accounts: HashMap<String, StorageAccount>) -> Self {
        Operations {
            default_key,
            accounts,
            ..Default::default()
        }
    }

    /// The file a key made at first use is kept in.
    pub fn with_key_file(mut self, path: std::path::PathBuf) -> Self {
        self.key_file = Some(path);
        self
    }

    /// S3 storage in `region` (else `us-east-1`).
    pub fn with_s3_region(mut self, region: Option<String>) -> Self {
        self.s3_region = region;
        self
    }

    /// An operation this node runs or ran.
    pub fn get(&self, id: &str) -> Option<Arc<Operation>> {
        self.ops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// An operation by id: this node's, else the record another node of the store wrote.
    pub async fn find(
        &self,
        store: &Arc<gatehouse_store::Store>,
        id: &str,
    ) -> Result<Option<Arc<Operation>>, ApiError> {
        if let Some(op) = self.get(id) {
            return Ok(Some(op));
        }
        let key = id.to_string();
        let found = crate::respond::blocking(store, move |s| {
            let Some(record) = s.operation(&key)? else {
                return Ok(None);
            };
            let holder = s.lease_holder(crate::long_running::LEASE)?;
            Ok(Some(Operation::from_record(
                &key,
                &record,
                holder.as_deref(),
            )))
        })
        .await?;
        Ok(found.map(Arc::new))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackupRestoreParameters {
    pub storage_account: String,
    pub container_name: String,
    pub backup_name: String,
    #[serde(default)]
    pub access_type: Option<String>,
    #[serde(default)]
    pub access_key: Option<String>,
    #[serde(default)]
    pub client_id: Option<String>,
    /// Extension: the archive key (a passphrase or an age secret key).
    #[serde(default)]
    pub encryption_key: Option<String>,
    /// Extension: restore only reports what would change.
    #[serde(default)]
    pub dry_run: bool,
    /// Extension: backup expiry, in days or as an ISO 8601 duration (`P30D`, `PT12H`).
    #[serde(default)]
    pub expires_after: Option<Value>,
    /// Extension: restore into a different tier.
    #[serde(default)]
    pub allow_tier_change: bool,
    /// Extension: back up only these APIs and products (`/apis/{id}`, `/products/{id}`) with
    /// what they need; restoring such an archive merges it into the target.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Extension, restore from a continuous archive (`backupName` names its folder): the state
    /// at this time (RFC 3339) …
    #[serde(default)]
    pub point_in_time: Option<String>,
    /// … or at this revision …
    #[serde(default)]
    pub revision: Option<u64>,
    /// … or the newest point in it.
    #[serde(default)]
    pub latest: bool,
    /// Who asked (for the journal of a restore): set by the server, never read from the body.
    #[serde(skip)]
    pub actor: String,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

fn parse_params(body: &[u8]) -> Result<BackupRestoreParameters, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        invalid(format!(
            "invalid parameters at '{}': {}",
            e.path(),
            e.inner()
        ))
    })
}

fn location(ops: &Operations, p: &BackupRestoreParameters) -> Result<Location, ApiError> {
    let (account, access) = account_of(ops, p)?;
    Location::new(&account, &p.container_name, &p.backup_name, &access)
        .map_err(|e| invalid(e.to_string()))
}

/// The point a restore from a continuous archive goes to, if it asks for one.
fn point_of(p: &BackupRestoreParameters) -> Result<Option<gatehouse_archiver::Point>, ApiError> {
    use gatehouse_archiver::Point;
    Ok(match (&p.point_in_time, p.revision, p.latest) {
        (None, None, false) => None,
        (Some(t), None, false) => Some(Point::Time(
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    ApiError::invalid(
                        "pointInTime",
                        format!("'pointInTime' must be an RFC 3339 time such as 2026-12-01T10:00:00Z, not '{t}'"),
                    )
                })?,
        )),
        (None, Some(n), false) => Some(Point::Revision(n)),
        (None, None, true) => Some(Point::Latest),
        _ => {
            return Err(invalid(
                "give one of 'pointInTime', 'revision' and 'latest', not several",
            ));
        }
    })
}

/// The continuous archive a point-in-time restore reads: the container, `backupName` its folder.
fn archive_of(
    ops: &Operations,
    p: &BackupRestoreParameters,
) -> Result<gatehouse_archiver::Archive, ApiError> {
    let (account, access) = account_of(ops, p)?;
    Ok(gatehouse_archiver::Archive {
        account,
        container: p.container_name.clone(),
        folder: p.backup_name.clone(),
        access,
    })
}

/// The storage account a request names, and how to reach it.
fn account_of(
    ops: &Operations,
    p: &BackupRestoreParameters,
) -> Result<(String, gatehouse_backup::storage::Access), ApiError> {
    // A managed identity is the server's own credential for the account: the storage
    // account configured on the server under that name (`[storage-accounts.NAME]`).
    let identity = match p.access_type.as_deref() {
        None => false,
        Some(t) if t.eq_ignore_ascii_case("AccessKey") => false,
        Some(t)
            if t.eq_ignore_ascii_case("SystemAssignedManagedIdentity")
                || t.eq_ignore_ascii_case("UserAssignedManagedIdentity") =>
        {
            true
        }
        Some(t) => {
            return Err(invalid(format!(
                "accessType '{t}' is not supported: use AccessKey, SystemAssignedManagedIdentity or UserAssignedManagedIdentity"
            )));
        }
    };
    if identity && !ops.accounts.contains_key(&p.storage_account) {
        return Err(invalid(format!(
            "accessType '{}' uses the credentials configured on the server for the storage account, and none is configured for '{}': add [storage-accounts.{}] to gatehouse.toml",
            p.access_type.as_deref().unwrap_or_default(),
            p.storage_account,
            p.storage_account
        )));
    }
    // A name configured on the server wins; the request's accessKey, if any, overrides its key.
    let (account, key) = match ops.accounts.get(&p.storage_account) {
        Some(a) => {
            let account = a
                .url
                .strip_prefix("az://")
                .unwrap_or(&a.url)
                .trim_end_matches('/')
                .to_string();
            (
                account,
                p.access_key.clone().or_else(|| a.access_key.clone()),
            )
        }
        None => (p.storage_account.clone(), p.access_key.clone()),
    };
    let access = gatehouse_backup::storage::Access {
        key,
        region: ops.s3_region.clone(),
    };
    Ok((account, access))
}

fn parse_days(v: &Value) -> Result<std::time::Duration, ApiError> {
    let secs = match v {
        Value::Number(n) => n.as_f64().map(|d| d * 86400.0),
        Value::String(s) => {
            let u = s.to_ascii_uppercase();
            if let Some(d) = u.strip_prefix('P').and_then(|r| r.strip_suffix('D')) {
                d.parse::<f64>().ok().map(|d| d * 86400.0)
            } else if let Some(h) = u.strip_prefix("PT").and_then(|r| r.strip_suffix('H')) {
                h.parse::<f64>().ok().map(|h| h * 3600.0)
            } else if let Some(m) = u.strip_prefix("PT").and_then(|r| r.strip_suffix('M')) {
                m.parse::<f64>().ok().map(|m| m * 60.0)
            } else if let Some(s) = u.strip_prefix("PT").and_then(|r| r.strip_suffix('S')) {
                s.parse::<f64>().ok()
            } else {
                None
            }
        }
        _ => None,
    };
    match secs {
        Some(s) if s >= 0.0 => Ok(std::time::Duration::from_secs_f64(s)),
        _ => Err(invalid(format!(
            "'expiresAfter' must be days or an ISO 8601 duration such as P30D; {v} is not"
        ))),
    }
}

/// The key a backup or restore uses: the request's `encryptionKey`, else the instance's
/// configured key, else the one kept in the data directory — made there by the first backup
/// that needs it (said in the operation's outcome as `keyCreated`). Returns whether it was
/// made now.
fn key_of(
    ops: &Operations,
    p: &BackupRestoreParameters,
    kind: &str,
) -> Result<(BackupKey, Option<String>), ApiError> {
    if let Some(text) = p.encryption_key.clone().or_else(|| ops.default_key.clone()) {
        return Ok((BackupKey::parse(&text).map_err(invalid)?, None));
    }
    let no_key = || {
        invalid(
            "no backup key: pass 'encryptionKey', or start the instance with --backup-key-file or GATEHOUSE_BACKUP_KEY",
        )
    };
    let path = ops.key_file.as_ref().ok_or_else(no_key)?;
    if path.exists() {
        return Ok((BackupKey::from_file(path).map_err(invalid)?, None));
    }
    if kind != "backup" {
        return Err(no_key());
    }
    let text = BackupKey::generate();
    gatehouse_store::write_private_file(path, format!("{text}\n").as_bytes()).map_err(|e| {
        ApiError::internal(format!(
            "the backup key could not be written to {}: {e}",
            path.display()
        ))
    })?;
    tracing::warn!(path = %path.display(), "made a backup key for a backup that named none: keep a copy of it, restores need it");
    Ok((
        BackupKey::parse(&text).map_err(invalid)?,
        Some(path.display().to_string()),
    ))
}

fn failure(kind: &'static str, e: gatehouse_backup::BackupError) -> OpStatus {
    use gatehouse_backup::{ArchiveError, BackupError};
    let status = match &e {
        BackupError::Store(_) | BackupError::Archive(ArchiveError::Io(_)) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    OpStatus::Failed {
        status,
        code: failure_code(kind),
        message: e.to_string(),
    }
}

fn storage_failure(kind: &'static str, e: StorageError) -> OpStatus {
    OpStatus::Failed {
        status: match e {
            StorageError::Invalid(_) | StorageError::NotFound(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        },
        code: failure_code(kind),
        message: e.to_string(),
    }
}

/// Refuses a restore whose source is not there before an operation starts: the archive, or
/// for a point in time the continuous archive's index.
async fn restorable(
    state: &Arc<AppState>,
    params: &BackupRestoreParameters,
    location: &Location,
    point_in_time: bool,
) -> Result<(), ApiError> {
    let refuse = |message: String| ApiError::new(StatusCode::BAD_REQUEST, "RestoreFailed", message);
    if point_in_time {
        let archive = archive_of(&state.operations, params)?;
        return match archive.index().await {
            Ok(index) if !index.bases.is_empty() => Ok(()),
            Ok(_) => Err(refuse(format!(
                "there is no continuous archive in folder '{}' of container '{}'",
                params.backup_name, params.container_name
            ))),
            Err(e) => Err(refuse(e.to_string())),
        };
    }
    match location.exists().await {
        Ok(true) => Ok(()),
        Ok(false) => Err(refuse(format!(
            "the backup '{}' does not exist in container '{}'",
            params.backup_name, params.container_name
        ))),
        Err(e) => Err(refuse(e.to_string())),
    }
}

/// Starts a backup or restore; returns the operation id.
pub async fn start(
    state: &Arc<AppState>,
    kind: &'static str,
    body: &[u8],
    actor: &str,
) -> Result<String, ApiError> {
    let mut params = parse_params(body)?;
    params.actor = actor.to_string();
    let location = location(&state.operations, &params)?;
    let (key, key_created) = key_of(&state.operations, &params, kind)?;
    let expires = params.expires_after.as_ref().map(parse_days).transpose()?;
    let point = point_of(&params)?;
    if kind == "backup" && point.is_some() {
        return Err(invalid(
            "'pointInTime', 'revision' and 'latest' are for a restore",
        ));
    }
    if kind == "restore" {
        restorable(state, &params, &location, point.is_some()).await?;
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    claim(state, &id, kind).await?;
    let op = Arc::new(Operation::new(kind));
    state
        .operations
        .ops
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id.clone(), op.clone());
    let st = state.clone();
    let op_id = id.clone();
    tokio::spawn(async move {
        let heartbeat = tokio::spawn(heartbeat(st.clone(), op_id.clone(), op.clone()));
        let status = run(&st, kind, &op, location, key, params, expires).await;
        if let Some(path) = key_created {
            let mut outcome = op.outcome.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(Value::Object(o)) = outcome.as_mut() {
                o.insert("keyCreated".into(), json!(path));
            }
        }
        if let OpStatus::Failed { message, .. } = &status {
            tracing::warn!(operation = %op_id, error = %message, "{kind} failed");
        }
        heartbeat.abort();
        finish(&st, &op_id, &op, status).await;
    });
    Ok(id)
}

/// Makes `id` the one backup or restore running: on this node, and with the store's lease
/// across the nodes of a shared store; its record written for every node to read.
async fn claim(state: &Arc<AppState>, id: &str, kind: &'static str) -> Result<(), ApiError> {
    let refuse = |running: &str| {
        ApiError::conflict(format!(
            "Another backup or restore is in progress on this service (operation {running}); wait for it to finish."
        ))
    };
    {
        let mut busy = state
            .operations
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(running) = busy.as_ref() {
            return Err(refuse(running));
        }
        *busy = Some(id.to_string());
    }
    let holder = format!("{}/{id}", state.operations.node);
    let record = Operation::new(kind).record(&state.operations.node);
    let op_id = id.to_string();
    let claimed = crate::respond::blocking(&state.store, move |s| {
        if s.is_shared()
            && let Lease::Theirs(other) = s.take_lease(LEASE, &holder, LEASE_TTL)?
        {
            return Ok(Err(other));
        }
        s.put_operation(&op_id, &record)?;
        Ok(Ok(()))
    })
    .await;
    let release = || {
        *state
            .operations
            .busy
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None
    };
    match claimed {
        Ok(Ok(())) => Ok(()),
        Ok(Err(other)) => {
            release();
            let running = other.rsplit('/').next().unwrap_or(&other).to_string();
            Err(refuse(&running))
        }
        Err(e) => {
            release();
            Err(e)
        }
    }
}

/// While the operation runs on a shared store: renews its lease and writes its progress.
async fn heartbeat(state: Arc<AppState>, id: String, op: Arc<Operation>) {
    if !state.store.is_shared() {
        return;
    }
    let holder = format!("{}/{id}", state.operations.node);
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let record = op.record(&state.operations.node);
        let (holder, key) = (holder.clone(), id.clone());
        let renewed = crate::respond::blocking(&state.store, move |s| {
            let lease = s.take_lease(LEASE, &holder, LEASE_TTL)?;
            s.put_operation(&key, &record)?;
            Ok(lease)
        })
        .await;
        match renewed {
            Ok(Lease::Ours) => {}
            Ok(Lease::Theirs(other)) => {
                tracing::warn!(operation = %id, holder = %other, "another node took this operation's lease (this node could not renew it in time)")
            }
            Err(e) => {
                tracing::warn!(operation = %id, error = ?e.internal, "the operation's lease could not be renewed")
            }
        }
    }
}

/// Records the operation's end (retried while the store is unreachable, for up to two
/// minutes: until then other nodes report it running), then lets the next one start.
async fn finish(state: &Arc<AppState>, id: &str, op: &Arc<Operation>, status: OpStatus) {
    // Recorded and the lease released before the end is shown: a client that saw it may start
    // the next operation at once, on any node.
    let record = op.record_as(&state.operations.node, status.clone());
    let holder = format!("{}/{id}", state.operations.node);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut wait = Duration::from_millis(200);
    loop {
        let (record, holder, key) = (record.clone(), holder.clone(), id.to_string());
        let written = crate::respond::blocking(&state.store, move |s| {
            s.put_operation(&key, &record)?;
            Ok(s.release_lease(LEASE, &holder)?)
        })
        .await;
        match written {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(operation = %id, error = ?e.internal, "the operation's end could not be recorded yet; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(operation = %id, error = ?e.internal, "the operation's end could not be recorded; other nodes will report it failed");
                break;
            }
        }
    }
    *op.status.lock().unwrap_or_else(|e| e.into_inner()) = status;
    *state
        .operations
        .busy
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = None;
}

/// The work of one operation: the archive is built or read in a local temporary file, and
/// moved to or from storage as a whole.
async fn run(
    state: &Arc<AppState>,
    kind: &'static str,
    op: &Arc<Operation>,
    location: Location,
    key: BackupKey,
    params: BackupRestoreParameters,
    expires: Option<std::time::Duration>,
) -> OpStatus {
    let tmp = match tempfile::Builder::new()
        .prefix("gatehouse-archive-")
        .tempfile()
    {
        Ok(t) => t.into_temp_path(),
        Err(e) => return storage_failure(kind, StorageError::Io(e)),
    };
    let store = state.store.clone();
    let op2 = op.clone();
    let tmp_path = tmp.to_path_buf();
    if kind == "backup" {
        let built = tokio::task::spawn_blocking(move || {
            let mut progress = |done: u64, total: u64| op2.progress(done, total);
            gatehouse_backup::backup_to_file(
                &store,
                &tmp_path,
                &key,
                &BackupOptions {
                    expires_after: expires,
                    include: params.include.clone(),
                },
                &mut progress,
            )
        })
        .await;
        let manifest = match built {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return failure(kind, e),
            Err(e) => {
                return storage_failure(
                    kind,
                    StorageError::Invalid(format!("the backup worker failed: {e}")),
                );
            }
        };
        return match location.upload(&tmp).await {
            Ok(bytes) => {
                tracing::info!(entities = manifest.entity_count, revision = manifest.source_revision, bytes, location = %location.display, "backup done");
                *op.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(json!({
                    "revision": manifest.source_revision,
                    "entities": manifest.entity_count,
                    "bytes": bytes,
                }));
                OpStatus::Succeeded(None)
            }
            Err(e) => storage_failure(kind, e),
        };
    }
    let mut replay = Vec::new();
    let work = tempfile::Builder::new().prefix("gatehouse-pitr-").tempdir();
    let tmp_path = match (point_of(&params), work) {
        (Ok(Some(point)), Ok(work)) => {
            let archive = match archive_of(&state.operations, &params) {
                Ok(a) => a,
                Err(e) => return storage_failure(kind, StorageError::Invalid(e.message)),
            };
            match gatehouse_archiver::fetch_point(&archive, &key, &point, false, work.path()).await
            {
                Ok(fetched) => {
                    replay = fetched.replay;
                    let kept = work.keep();
                    let _ = std::fs::rename(&fetched.base_file, &tmp_path);
                    let _ = std::fs::remove_dir_all(kept);
                    tmp_path
                }
                Err(e) => {
                    return OpStatus::Failed {
                        status: StatusCode::BAD_REQUEST,
                        code: failure_code(kind),
                        message: e.to_string(),
                    };
                }
            }
        }
        _ => {
            if let Err(e) = location.download(&tmp).await {
                return storage_failure(kind, e);
            }
            tmp_path
        }
    };
    let opts = RestoreOptions {
        allow_tier_change: params.allow_tier_change,
        actor: Some(params.actor.clone()),
        replay,
    };
    let dry_run = params.dry_run;
    let result = tokio::task::spawn_blocking(move || {
        let mut progress = |done: u64, total: u64| op2.progress(done, total);
        if dry_run {
            gatehouse_backup::verify(&store, &tmp_path, &key, &opts, true).map(|plan| {
                OpStatus::Succeeded(Some(serde_json::to_value(plan).unwrap_or(Value::Null)))
            })
        } else {
            gatehouse_backup::restore_from_file(&store, &tmp_path, &key, &opts, &mut progress).map(
                |out| {
                    tracing::info!(
                        entities = out.entities,
                        revision = out.revision,
                        "restore done"
                    );
                    *op2.outcome.lock().unwrap_or_else(|e| e.into_inner()) = Some(json!({
                        "revision": out.revision,
                        "entities": out.entities,
                        "sourceRevision": out.manifest.source_revision,
                    }));
                    OpStatus::Succeeded(None)
                },
            )
        }
    })
    .await;
    drop(tmp);
    match result {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => failure(kind, e),
        Err(e) => storage_failure(
            kind,
            StorageError::Invalid(format!("the restore worker failed: {e}")),
        ),
    }
}

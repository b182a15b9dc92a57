//! Where archives live, through the `object_store` crate: local folders, Azure Blob Storage,
//! S3 (and S3-compatible servers), Google Cloud Storage.
//!
//! A location is APIM's triple — storage account, container, blob name — plus the access key:
//!
//! | `storageAccount` | meaning | `accessKey` |
//! |---|---|---|
//! | `NAME` | Azure account `NAME` (`https://NAME.blob.core.windows.net`); `devstoreaccount1` is the Azure Storage emulator (Azurite) at `AZURITE_BLOB_STORAGE_URL` or `http://127.0.0.1:10000` | the account key |
//! | `file:///folder` | a local folder; the container is a sub-folder | — |
//! | `s3://` | Amazon S3 (region from `AWS_REGION`, else `us-east-1`); the container is the bucket | `ACCESS_KEY_ID:SECRET` |
//! | `s3+http://host:port`, `s3+https://host` | an S3-compatible server (path-style) | `ACCESS_KEY_ID:SECRET` |
//! | `gs://` | Google Cloud Storage; the container is the bucket | the service account key (JSON) |
//!
//! Invariants: an upload is multipart and the object appears under its name only when the
//! upload completes; transient errors are retried with backoff (object_store's retry policy);
//! downloads stream to a local file, so memory does not grow with the archive.

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0}")]
    Invalid(String),
    #[error("storage error on {location}: {source}")]
    Store {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("the backup '{0}' does not exist")]
    NotFound(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// One archive's place in storage.
pub struct Location {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    /// For messages: `account/container/name`, never the key.
    pub display: String,
}

const PART: usize = 8 * 1024 * 1024;

/// Transient errors are retried with exponential backoff (0.1 s doubling to 5 s), at most 6
/// times and within 60 s, so a storage outage fails a backup in about a minute, not hours.
fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: std::time::Duration::from_secs(60),
    }
}

fn plain_name(what: &str, v: &str) -> Result<(), StorageError> {
    if v.is_empty()
        || v == "."
        || v == ".."
        || v.contains('/')
        || v.contains('\\')
        || v.chars().any(char::is_control)
    {
        return Err(StorageError::Invalid(format!(
            "'{what}' must be a plain name, not '{v}'"
        )));
    }
    Ok(())
}

fn err(location: &str) -> impl Fn(object_store::Error) -> StorageError + '_ {
    move |source| match source {
        object_store::Error::NotFound { .. } => StorageError::NotFound(location.to_string()),
        source => StorageError::Store {
            location: location.to_string(),
            source,
        },
    }
}

/// How to reach a storage account: its key (Azure account key, S3 `KEY_ID:SECRET`, GCS service
/// account JSON) and, for S3, its region (default `us-east-1`). The caller supplies both: this
/// crate reads no environment.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub key: Option<String>,
    pub region: Option<String>,
}

impl Access {
    pub fn key(key: Option<String>) -> Access {
        Access { key, region: None }
    }
}

/// A store for an account and container (the bucket, the Azure container, or a sub-folder).
pub fn open_container(
    account: &str,
    container: &str,
    access: &Access,
) -> Result<(Arc<dyn ObjectStore>, String), StorageError> {
    plain_name("containerName", container)?;
    let key = access.key.as_deref().filter(|k| !k.is_empty());
    let display = format!("{account}/{container}");
    let store: Arc<dyn ObjectStore> = if let Some(root) = account.strip_prefix("file://") {
        let dir = Path::new(root).join(container);
        std::fs::create_dir_all(&dir)?;
        Arc::new(
            object_store::local::LocalFileSystem::new_with_prefix(&dir).map_err(|e| {
                StorageError::Invalid(format!("the folder {} cannot be used: {e}", dir.display()))
            })?,
        )
    } else if let Some(endpoint) =
        account
            .strip_prefix("s3+")
            .or(if account == "s3://" { Some("") } else { None })
    {
        let (id, secret) = key.and_then(|k| k.split_once(':')).ok_or_else(|| {
            StorageError::Invalid("an S3 'accessKey' must be ACCESS_KEY_ID:SECRET".into())
        })?;
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(container)
            .with_access_key_id(id)
            .with_secret_access_key(secret)
            .with_region(access.region.as_deref().unwrap_or("us-east-1"))
            .with_retry(retry());
        if !endpoint.is_empty() {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        Arc::new(
            b.build()
                .map_err(|e| StorageError::Invalid(format!("S3 storage '{account}': {e}")))?,
        )
    } else if account == "gs://" {
        let key = key.ok_or_else(|| {
            StorageError::Invalid("a GCS 'accessKey' must be the service account key (JSON)".into())
        })?;
        Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::new()
                .with_bucket_name(container)
                .with_service_account_key(key)
                .with_retry(retry())
                .build()
                .map_err(|e| StorageError::Invalid(format!("GCS storage: {e}")))?,
        )
    } else if account.contains("://") {
        return Err(StorageError::Invalid(format!(
            "storageAccount '{account}' is not supported: use an Azure account name, file:///folder, s3://, s3+http(s)://host or gs://"
        )));
    } else {
        if account.is_empty() || !account.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(StorageError::Invalid(format!(
                "'{account}' is not a valid Azure storage account name"
            )));
        }
        let mut b = object_store::azure::MicrosoftAzureBuilder::new()
            .with_account(account)
            .with_container_name(container)
            .with_retry(retry());
        if account == "devstoreaccount1" {
            b = b.with_use_emulator(true);
        }
        if let Some(k) = key {
            b = b.with_access_key(k);
        } else if account != "devstoreaccount1" {
            return Err(StorageError::Invalid(
                "'accessKey' is required for an Azure storage account".into(),
            ));
        }
        Arc::new(
            b.build()
                .map_err(|e| StorageError::Invalid(format!("Azure storage '{account}': {e}")))?,
        )
    };
    Ok((store, display))
}

impl Location {
    pub fn new(
        account: &str,
        container: &str,
        name: &str,
        access: &Access,
    ) -> Result<Location, StorageError> {
        plain_name("backupName", name)?;
        let (store, display) = open_container(account, container, access)?;
        Ok(Location {
            store,
            path: ObjectPath::from(name),
            display: format!("{display}/{name}"),
        })
    }

    /// An object in a folder of the container (`folder` may be empty, or `a/b`).
    pub fn in_folder(
        account: &str,
        container: &str,
        folder: &str,
        name: &str,
        access: &Access,
    ) -> Result<Location, StorageError> {
        for part in folder.split('/').filter(|p| !p.is_empty()) {
            plain_name("folder", part)?;
        }
        plain_name("name", name)?;
        let (store, display) = open_container(account, container, access)?;
        let folder = folder.trim_matches('/');
        let path = if folder.is_empty() {
            name.to_string()
        } else {
            format!("{folder}/{name}")
        };
        Ok(Location {
            store,
            display: format!("{display}/{path}"),
            path: ObjectPath::from(path),
        })
    }

    /// Uploads a local file as this object (multipart; the object appears when complete).
    pub async fn upload(&self, local: &Path) -> Result<u64, StorageError> {
        let upload = self
            .store
            .put_multipart(&self.path)
            .await
            .map_err(err(&self.display))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut file = std::fs::File::open(local)?;
        let mut buf = vec![0u8; PART];
        let mut total = 0u64;
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            writer
                .wait_for_capacity(4)
                .await
                .map_err(err(&self.display))?;
            writer.write(&buf[..n]);
            total += n as u64;
        }
        writer.finish().await.map_err(err(&self.display))?;
        Ok(total)
    }

    /// Downloads this object into a local file.
    pub async fn download(&self, local: &Path) -> Result<u64, StorageError> {
        let result = self
            .store
            .get(&self.path)
            .await
            .map_err(err(&self.display))?;
        let mut stream = result.into_stream();
        let mut file = std::io::BufWriter::new(std::fs::File::create(local)?);
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(err(&self.display))?;
            file.write_all(&chunk)?;
            total += chunk.len() as u64;
        }
        file.flush()?;
        Ok(total)
    }

    /// Writes a small object at once (an index).
    pub async fn put_bytes(&self, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.store
            .put(&self.path, bytes.into())
            .await
            .map_err(err(&self.display))?;
        Ok(())
    }

    /// Reads a small object whole; `None` if there is none.
    pub async fn get_bytes(&self) -> Result<Option<Vec<u8>>, StorageError> {
        match self.store.get(&self.path).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(err(&self.display))?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(err(&self.display)(e)),
        }
    }

    pub async fn delete(&self) -> Result<(), StorageError> {
        match self.store.delete(&self.path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(err(&self.display)(e)),
        }
    }

    pub async fn exists(&self) -> Result<bool, StorageError> {
        match self.store.head(&self.path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(err(&self.display)(e)),
        }
    }
}

impl Location {
    /// Reads the plain manifest from the archive's trailer with two ranged reads (no key needed,
    /// not verified; see `archive::read_plain_manifest`).
    pub async fn plain_manifest(&self) -> Result<crate::archive::Manifest, StorageError> {
        let meta = self
            .store
            .head(&self.path)
            .await
            .map_err(err(&self.display))?;
        let len = meta.size;
        let bad = |m: &str| StorageError::Invalid(format!("{}: {m}", self.display));
        if len < 22 {
            return Err(bad("not a Gatehouse backup archive"));
        }
        let tail = self
            .store
            .get_range(&self.path, len - 12..len)
            .await
            .map_err(err(&self.display))?;
        if &tail[4..] != crate::archive::END_MAGIC {
            return Err(bad("not a Gatehouse backup archive, or truncated"));
        }
        let mlen = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
        if mlen + 22 > len {
            return Err(bad("the trailer is damaged"));
        }
        let json = self
            .store
            .get_range(&self.path, len - 12 - mlen..len - 12)
            .await
            .map_err(err(&self.display))?;
        serde_json::from_slice(&json).map_err(|e| bad(&format!("the manifest is not valid: {e}")))
    }
}

/// The objects in a container: `(name, size)`.
pub async fn list(
    account: &str,
    container: &str,
    access: &Access,
) -> Result<Vec<(String, u64)>, StorageError> {
    let (store, display) = open_container(account, container, access)?;
    let mut out = Vec::new();
    let mut stream = store.list(None);
    while let Some(meta) = stream.next().await {
        let meta = meta.map_err(err(&display))?;
        out.push((meta.location.to_string(), meta.size));
    }
    out.sort();
    Ok(out)
}

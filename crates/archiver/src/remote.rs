//! The archive's container in object storage (any storage backups use) and its indexes.

use crate::layout::{DayIndex, INDEX, Index, day_index_name};
use gatehouse_backup::storage::{Access, Location, StorageError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// Where a continuous archive lives: a storage account, a container, and a folder in it
/// (empty: the container's root).
#[derive(Clone)]
pub struct Archive {
    pub account: String,
    pub container: String,
    pub folder: String,
    pub access: Access,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the access key.
        write!(f, "{}/{}/{}", self.account, self.container, self.folder)
    }
}

impl Archive {
    pub fn location(&self, name: &str) -> Result<Location, StorageError> {
        Location::in_folder(
            &self.account,
            &self.container,
            &self.folder,
            name,
            &self.access,
        )
    }

    async fn get_json<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, StorageError> {
        match self.location(name)?.get_bytes().await? {
            None => Ok(T::default()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::Invalid(format!(
                    "{}/{name} is not a valid index: {e}",
                    self.container
                ))
            }),
        }
    }

    async fn put_json(&self, name: &str, value: &impl Serialize) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec_pretty(value)
            .map_err(|e| StorageError::Invalid(format!("{name}: {e}")))?;
        self.location(name)?.put_bytes(bytes).await
    }

    /// The archive's index (empty if the archive has none yet).
    pub async fn index(&self) -> Result<Index, StorageError> {
        let index: Index = self.get_json(INDEX).await?;
        index
            .check()
            .map_err(|e| StorageError::Invalid(format!("{self:?}/{INDEX} is damaged: {e}")))?;
        Ok(index)
    }

    pub async fn put_index(&self, index: &Index) -> Result<(), StorageError> {
        self.put_json(INDEX, index).await
    }

    pub async fn day(&self, day: &str) -> Result<DayIndex, StorageError> {
        let name = day_index_name(day);
        let index: DayIndex = self.get_json(&name).await?;
        index
            .check()
            .map_err(|e| StorageError::Invalid(format!("{self:?}/{name} is damaged: {e}")))?;
        Ok(index)
    }

    pub async fn put_day(&self, day: &str, index: &DayIndex) -> Result<(), StorageError> {
        self.put_json(&day_index_name(day), index).await
    }

    pub async fn upload(&self, name: &str, local: &Path) -> Result<u64, StorageError> {
        self.location(name)?.upload(local).await
    }

    pub async fn download(&self, name: &str, local: &Path) -> Result<u64, StorageError> {
        self.location(name)?.download(local).await
    }
}

//! A folder on disk ↔ [`Files`].
//!
//! Invariant: reading skips `.git` and follows no symbolic link; writing creates only paths
//! that [`archive::clean_path`](crate::archive::clean_path) accepts, below the folder.

use crate::archive::{ArchiveError, LIMITS, clean_path};
use crate::item::Files;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0}: a file or folder name is not UTF-8")]
    NotUtf8(PathBuf),
    #[error("{0}")]
    Archive(#[from] ArchiveError),
}

/// Every file below `root` (`/`-separated relative paths), without `.git`.
pub fn read_dir(root: &Path) -> Result<Files, DirError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| DirError::Io(p, e)
    };
    let mut files = Files::new();
    let mut total = 0u64;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io(&path))?;
            if entry.file_name() == ".git" || kind.is_symlink() {
                continue;
            }
            if kind.is_dir() {
                pending.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .to_str()
                .ok_or_else(|| DirError::NotUtf8(path.clone()))?
                .replace(std::path::MAIN_SEPARATOR, "/");
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            total += bytes.len() as u64;
            if files.len() >= LIMITS.max_files {
                return Err(ArchiveError::TooManyFiles(LIMITS.max_files).into());
            }
            if total > LIMITS.max_total_bytes {
                return Err(ArchiveError::TooLarge(LIMITS.max_total_bytes).into());
            }
            files.insert(rel, bytes);
        }
    }
    Ok(files)
}

/// Writes `files` below `root`, creating folders as needed.
pub fn write_dir(root: &Path, files: &Files) -> Result<(), DirError> {
    for (rel, bytes) in files {
        let Some(rel) = clean_path(rel)? else {
            continue;
        };
        let path = root.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DirError::Io(parent.to_path_buf(), e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| DirError::Io(path.clone(), e))?;
    }
    Ok(())
}

/// The names at the top of a folder that an export writes (its root policy and collection
/// folders), so that `export --clean` removes exactly those and nothing else.
pub fn exported_names(root: &Path) -> Result<Vec<PathBuf>, DirError> {
    let mut names: Vec<&str> = crate::layout::ENTRIES
        .iter()
        .filter_map(|e| e.folder.first().copied())
        .collect();
    names.push(crate::layout::POLICY_FILE);
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|n| root.join(n))
        .filter(|p| p.exists())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_round_trips_without_git() {
        let tmp = tempfile::tempdir().unwrap();
        let files: Files = [
            ("policy.xml".to_string(), b"<policies/>".to_vec()),
            (
                "named values/x/namedValueInformation.json".to_string(),
                b"{}".to_vec(),
            ),
        ]
        .into_iter()
        .collect();
        write_dir(tmp.path(), &files).unwrap();
        std::fs::create_dir_all(tmp.path().join(".git/objects")).unwrap();
        std::fs::write(tmp.path().join(".git/objects/x"), b"x").unwrap();
        assert_eq!(read_dir(tmp.path()).unwrap(), files);
        let names = exported_names(tmp.path()).unwrap();
        assert_eq!(names.len(), 2);
    }
}

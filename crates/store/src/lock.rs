//! The exclusive claim of one process on a data directory.
//!
//! Two processes on one data directory would each write `endpoints.json`, and the second to
//! stop would delete the first's; a restore on the files of a running instance would change
//! its database under it. So whoever serves, backs up or restores a data directory holds
//! `gatehouse.lock` locked (an OS file lock, `flock`) for as long as it works: the lock goes
//! with the process, also when it is killed, and the file names the holder for the next one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in a data directory.
pub use gatehouse_model::files::LOCK as LOCK_FILE;

/// A held lock on a data directory; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the data directory {dir} is in use by process {pid} ({holder}); stop it first, or use another --data-dir"
    )]
    Held {
        dir: PathBuf,
        pid: String,
        holder: String,
    },
    #[error("cannot lock the data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl DataDirLock {
    /// Locks `dir` (creating it if needed) for this process, recording its PID and `purpose`
    /// (e.g. "gatehouse serve"); fails naming the holder if another process has it.
    pub fn acquire(dir: &Path, purpose: &str) -> Result<DataDirLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let (pid, holder) = read_holder(&mut file);
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid,
                    holder,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}\n{purpose}", std::process::id()).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(DataDirLock { _file: file, path })
    }

    /// The PID of the process holding `dir`'s lock, if one does.
    pub fn holder(dir: &Path) -> Option<u32> {
        let mut file = File::open(dir.join(LOCK_FILE)).ok()?;
        match file.try_lock_shared() {
            Ok(()) => None,
            Err(_) => read_holder(&mut file).0.parse().ok(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_holder(file: &mut File) -> (String, String) {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut lines = text.lines();
    let pid = lines.next().unwrap_or("?").trim().to_string();
    let holder = lines.next().unwrap_or("gatehouse").trim().to_string();
    (pid, holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(dir.path(), "gatehouse serve").unwrap();
        assert_eq!(DataDirLock::holder(dir.path()), Some(std::process::id()));
        let e = DataDirLock::acquire(dir.path(), "gatehouse restore").unwrap_err();
        let message = e.to_string();
        assert!(
            message.contains(&std::process::id().to_string())
                && message.contains("gatehouse serve"),
            "{message}"
        );
        drop(held);
        assert_eq!(DataDirLock::holder(dir.path()), None);
        DataDirLock::acquire(dir.path(), "gatehouse restore").unwrap();
    }
}

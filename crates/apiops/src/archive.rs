//! A folder in one HTTP body: zip (what `GET /export` answers), tar or gzip'd tar (what
//! `gatehouse import` sends; `POST /import` takes all three).
//!
//! Invariants: reading never writes to disk and never follows a path out of the folder
//! (absolute paths, `..`, backslashes and links are refused); the number of files and the
//! unpacked sizes are bounded, so a small body cannot unpack into a huge one; writing is
//! deterministic (sorted entries, fixed timestamps).

use crate::item::Files;
use std::io::{Cursor, Read, Write};

/// Bounds on what an archive may unpack to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_files: usize,
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
}

pub const LIMITS: Limits = Limits {
    max_files: 200_000,
    max_file_bytes: 64 << 20,
    max_total_bytes: 512 << 20,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    #[error("the body is not a zip, tar or gzip'd tar archive: {0}")]
    Unreadable(String),
    #[error("the archive entry '{0}' is not a relative path inside the folder")]
    UnsafePath(String),
    #[error("the archive entry '{0}' is a link; only files and folders are allowed")]
    Link(String),
    #[error("the archive holds more than {0} files")]
    TooManyFiles(usize),
    #[error("the archive entry '{0}' unpacks to more than {1} bytes")]
    FileTooLarge(String, u64),
    #[error("the archive unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("the archive holds '{0}' twice")]
    Duplicate(String),
}

/// A safe relative path: `/`-separated, no empty, `.` or `..` segment, no backslash or NUL;
/// a leading `./` is dropped. `None` for a folder entry (ends with `/`).
pub fn clean_path(raw: &str) -> Result<Option<String>, ArchiveError> {
    let unsafe_path = || ArchiveError::UnsafePath(raw.to_string());
    let trimmed = raw.trim_start_matches("./");
    if trimmed.is_empty() || trimmed.ends_with('/') {
        return Ok(None);
    }
    if trimmed.starts_with('/') || trimmed.contains('\\') || trimmed.contains('\0') {
        return Err(unsafe_path());
    }
    if trimmed
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == ".." || s.len() > 255)
    {
        return Err(unsafe_path());
    }
    Ok(Some(trimmed.to_string()))
}

struct Collector {
    files: Files,
    total: u64,
    limits: Limits,
}

impl Collector {
    fn add(&mut self, raw: &str, mut reader: impl Read) -> Result<(), ArchiveError> {
        let Some(path) = clean_path(raw)? else {
            return Ok(());
        };
        if self.files.len() >= self.limits.max_files {
            return Err(ArchiveError::TooManyFiles(self.limits.max_files));
        }
        let mut bytes = Vec::new();
        (&mut reader)
            .take(self.limits.max_file_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| ArchiveError::Unreadable(e.to_string()))?;
        if bytes.len() as u64 > self.limits.max_file_bytes {
            return Err(ArchiveError::FileTooLarge(path, self.limits.max_file_bytes));
        }
        self.total += bytes.len() as u64;
        if self.total > self.limits.max_total_bytes {
            return Err(ArchiveError::TooLarge(self.limits.max_total_bytes));
        }
        if self.files.insert(path.clone(), bytes).is_some() {
            return Err(ArchiveError::Duplicate(path));
        }
        Ok(())
    }
}

/// Unpacks a zip, tar or gzip'd tar body into memory.
pub fn read(body: &[u8], limits: Limits) -> Result<Files, ArchiveError> {
    let mut c = Collector {
        files: Files::new(),
        total: 0,
        limits,
    };
    if body.starts_with(b"PK\x03\x04") || body.starts_with(b"PK\x05\x06") {
        read_zip(body, &mut c)?;
    } else if body.starts_with(&[0x1f, 0x8b]) {
        let gz = flate2::read::GzDecoder::new(body);
        read_tar(gz, &mut c)?;
    } else {
        read_tar(body, &mut c)?;
    }
    Ok(c.files)
}

fn read_zip(body: &[u8], c: &mut Collector) -> Result<(), ArchiveError> {
    let bad = |e: zip::result::ZipError| ArchiveError::Unreadable(e.to_string());
    let mut zip = zip::ZipArchive::new(Cursor::new(body)).map_err(bad)?;
    for i in 0..zip.len() {
        let entry = zip.by_index(i).map_err(bad)?;
        let name = entry.name().map_err(bad)?.to_string();
        if entry.is_symlink() {
            return Err(ArchiveError::Link(name));
        }
        if entry.is_dir() {
            continue;
        }
        c.add(&name, entry)?;
    }
    Ok(())
}

fn read_tar(body: impl Read, c: &mut Collector) -> Result<(), ArchiveError> {
    let bad = |e: std::io::Error| ArchiveError::Unreadable(e.to_string());
    let mut tar = tar::Archive::new(body);
    for entry in tar.entries().map_err(bad)? {
        let entry = entry.map_err(bad)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => c.add(&name, entry)?,
            tar::EntryType::Directory | tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {
            }
            _ => return Err(ArchiveError::Link(name)),
        }
    }
    Ok(())
}

/// A zip of the files, deflated, entries in path order with a fixed timestamp.
pub fn zip(files: &Files) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(zip::DateTime::default())
        .unix_permissions(0o644);
    for (path, bytes) in files {
        w.start_file(path.as_str(), options)
            .expect("writing to memory cannot fail");
        w.write_all(bytes).expect("writing to memory cannot fail");
    }
    w.finish()
        .expect("writing to memory cannot fail")
        .into_inner()
}

/// A gzip'd tar of the files (entries in path order, fixed timestamps).
pub fn tar_gz(files: &Files) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (path, bytes) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, bytes.as_slice())
            .expect("writing to memory cannot fail");
    }
    b.into_inner()
        .and_then(|gz| gz.finish())
        .expect("writing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Files {
        [
            ("policy.xml", "<policies/>"),
            ("named values/a b/namedValueInformation.json", "{}"),
            (
                "apis/echo;rev=2/apiInformation.json",
                "{\"properties\": {}}",
            ),
        ]
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect()
    }

    #[test]
    fn zip_and_tar_carry_the_files_and_are_deterministic() {
        let files = sample();
        assert_eq!(read(&zip(&files), LIMITS).unwrap(), files);
        assert_eq!(read(&tar_gz(&files), LIMITS).unwrap(), files);
        assert_eq!(zip(&files), zip(&files));
    }

    #[test]
    fn paths_out_of_the_folder_are_refused() {
        for bad in ["/etc/passwd", "../x", "a/../../x", "a\\..\\x", "a//b"] {
            assert_eq!(
                clean_path(bad),
                Err(ArchiveError::UnsafePath(bad.to_string())),
                "{bad}"
            );
        }
        assert_eq!(clean_path("./a/b").unwrap().as_deref(), Some("a/b"));
        assert_eq!(clean_path("a/").unwrap(), None);
    }

    #[test]
    fn limits_hold() {
        let files = sample();
        let small = Limits {
            max_files: 2,
            ..LIMITS
        };
        assert_eq!(
            read(&zip(&files), small),
            Err(ArchiveError::TooManyFiles(2))
        );
        let tiny = Limits {
            max_file_bytes: 5,
            ..LIMITS
        };
        assert!(matches!(
            read(&tar_gz(&files), tiny),
            Err(ArchiveError::FileTooLarge(..))
        ));
        assert!(matches!(
            read(b"not an archive at all, not even close, really", LIMITS),
            Err(ArchiveError::Unreadable(_))
        ));
    }
}

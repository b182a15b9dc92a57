//! The archive format, version 1 (documented in docs/backup-format.md):
//!
//! ```text
//! "GHBACKUP" (8 bytes) | format version (u16 BE)
//! age stream (ChaCha20-Poly1305 STREAM, file key wrapped by scrypt or X25519)
//!   └ zstd stream of records:
//!       1 u16 name            section start
//!       2 u32 len, bytes      section data (JSON lines)
//!       3                     section end
//!       4 u32 len, manifest   the manifest (JSON), last
//!       0                     end of archive
//! manifest JSON (plain copy, for `inspect` without the key) | u32 BE length | "GHBKEND1"
//! ```
//!
//! Invariants: nothing is trusted until the whole encrypted stream has been read: age
//! authenticates every 64 KiB chunk and the final one (so a flipped byte or a truncation fails),
//! each section's SHA-256 and count must equal the inner manifest's, and the plain manifest must
//! equal the inner one. Memory does not grow with the archive: everything streams.

use crate::key::BackupKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const MAGIC: &[u8; 8] = b"GHBACKUP";
pub const END_MAGIC: &[u8; 8] = b"GHBKEND1";
pub const FORMAT_VERSION: u16 = 1;

const TAG_END: u8 = 0;
const TAG_SECTION: u8 = 1;
const TAG_DATA: u8 = 2;
const TAG_SECTION_END: u8 = 3;
const TAG_MANIFEST: u8 = 4;
const CHUNK: usize = 256 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SectionInfo {
    pub name: String,
    pub count: u64,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u16,
    pub gatehouse_version: String,
    pub service_name: String,
    pub region: String,
    pub sku: gatehouse_model::Sku,
    pub source_revision: u64,
    pub created_at_utc: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_utc: Option<String>,
    /// The API and product ids of a selective backup; absent for a whole instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
    pub entity_count: u64,
    pub sections: Vec<SectionInfo>,
    /// For a journal segment of a continuous archive: the revisions it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentRange>,
}

/// The revisions a journal segment holds, and the one before them (the chain a point-in-time
/// restore checks for gaps).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SegmentRange {
    /// The last revision of the segment (or base) this one follows.
    pub previous: u64,
    pub first: u64,
    pub last: u64,
    /// Commit times (RFC 3339) of the first and last revisions.
    pub first_at: String,
    pub last_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a Gatehouse backup archive (the file does not start with GHBACKUP)")]
    NotAnArchive,
    #[error(
        "archive format version {0} is not supported by this Gatehouse (it reads version {FORMAT_VERSION})"
    )]
    UnsupportedVersion(u16),
    #[error("the archive is truncated or its trailer is damaged: {0}")]
    Truncated(String),
    #[error("wrong backup key: the archive cannot be decrypted with the key given")]
    WrongKey,
    #[error("the archive is damaged: {0}")]
    Corrupt(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes one archive to a local file, section by section.
pub struct ArchiveWriter {
    out: Option<
        zstd::stream::write::Encoder<'static, age::stream::StreamWriter<BufWriter<std::fs::File>>>,
    >,
    sections: Vec<SectionInfo>,
    current: Option<(String, Sha256, u64, u64)>,
    buffer: Vec<u8>,
}

impl ArchiveWriter {
    pub fn create(path: &Path, key: &BackupKey) -> Result<ArchiveWriter, ArchiveError> {
        let file = std::fs::File::create(path)?;
        let mut w = BufWriter::new(file);
        w.write_all(MAGIC)?;
        w.write_all(&FORMAT_VERSION.to_be_bytes())?;
        let age = key.encryptor().wrap_output(w)?;
        let zstd = zstd::stream::write::Encoder::new(age, 3)?;
        Ok(ArchiveWriter {
            out: Some(zstd),
            sections: Vec::new(),
            current: None,
            buffer: Vec::with_capacity(CHUNK),
        })
    }

    fn out(&mut self) -> &mut impl Write {
        self.out.as_mut().expect("writer not finished")
    }

    pub fn begin_section(&mut self, name: &str) -> Result<(), ArchiveError> {
        self.end_section()?;
        let name_bytes = name.as_bytes();
        let len = u16::try_from(name_bytes.len())
            .map_err(|_| ArchiveError::Corrupt("section name too long".into()))?;
        let out = self.out();
        out.write_all(&[TAG_SECTION])?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(name_bytes)?;
        self.current = Some((name.to_string(), Sha256::new(), 0, 0));
        Ok(())
    }

    /// Appends one JSON line to the current section.
    pub fn line(&mut self, value: &impl Serialize) -> Result<(), ArchiveError> {
        serde_json::to_writer(&mut self.buffer, value)
            .map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        self.buffer.push(b'\n');
        if let Some((_, _, count, _)) = self.current.as_mut() {
            *count += 1;
        }
        if self.buffer.len() >= CHUNK {
            self.flush_chunk()?;
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<(), ArchiveError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buffer);
        if let Some((_, hash, _, bytes)) = self.current.as_mut() {
            hash.update(&buf);
            *bytes += buf.len() as u64;
        }
        let out = self.out();
        out.write_all(&[TAG_DATA])?;
        out.write_all(&(buf.len() as u32).to_be_bytes())?;
        out.write_all(&buf)?;
        self.buffer = buf;
        self.buffer.clear();
        Ok(())
    }

    fn end_section(&mut self) -> Result<(), ArchiveError> {
        self.flush_chunk()?;
        if let Some((name, hash, count, bytes)) = self.current.take() {
            self.out().write_all(&[TAG_SECTION_END])?;
            self.sections.push(SectionInfo {
                name,
                count,
                bytes,
                sha256: hex::encode(hash.finalize()),
            });
        }
        Ok(())
    }

    /// Writes the manifest (with the section list filled in), closes the encryption and writes
    /// the plain trailer. Returns the manifest as written.
    pub fn finish(mut self, mut manifest: Manifest) -> Result<Manifest, ArchiveError> {
        self.end_section()?;
        manifest.sections = std::mem::take(&mut self.sections);
        manifest.entity_count = manifest
            .sections
            .iter()
            .filter(|s| !["service", "refs", "usage"].contains(&s.name.as_str()))
            .map(|s| s.count)
            .sum();
        let json =
            serde_json::to_vec(&manifest).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
        let mut zstd = self.out.take().expect("writer not finished");
        zstd.write_all(&[TAG_MANIFEST])?;
        zstd.write_all(&(json.len() as u32).to_be_bytes())?;
        zstd.write_all(&json)?;
        zstd.write_all(&[TAG_END])?;
        let age = zstd.finish()?;
        let mut w = age.finish()?;
        w.write_all(&json)?;
        w.write_all(&(json.len() as u32).to_be_bytes())?;
        w.write_all(END_MAGIC)?;
        let file = w
            .into_inner()
            .map_err(|e| ArchiveError::Io(e.into_error()))?;
        file.sync_all()?;
        Ok(manifest)
    }
}

/// Reads the plain manifest copy from the trailer (no key needed; not yet verified).
pub fn read_plain_manifest(path: &Path) -> Result<(Manifest, u64), ArchiveError> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    let mut head = [0u8; 10];
    if len < 10 || f.read_exact(&mut head).is_err() || &head[..8] != MAGIC {
        return Err(ArchiveError::NotAnArchive);
    }
    let version = u16::from_be_bytes([head[8], head[9]]);
    if version != FORMAT_VERSION {
        return Err(ArchiveError::UnsupportedVersion(version));
    }
    if len < 10 + 12 {
        return Err(ArchiveError::Truncated(
            "the file ends before its trailer".into(),
        ));
    }
    f.seek(SeekFrom::End(-12))?;
    let mut tail = [0u8; 12];
    f.read_exact(&mut tail)?;
    if &tail[4..] != END_MAGIC {
        return Err(ArchiveError::Truncated(
            "the end marker GHBKEND1 is missing".into(),
        ));
    }
    let mlen = u32::from_be_bytes([tail[0], tail[1], tail[2], tail[3]]) as u64;
    if mlen + 12 + 10 > len {
        return Err(ArchiveError::Truncated(
            "the trailer's manifest length is out of range".into(),
        ));
    }
    f.seek(SeekFrom::End(-(12 + mlen as i64)))?;
    let mut json = vec![0u8; mlen as usize];
    f.read_exact(&mut json)?;
    let manifest: Manifest = serde_json::from_slice(&json)
        .map_err(|e| ArchiveError::Truncated(format!("the plain manifest is not valid: {e}")))?;
    let encrypted_len = len - 10 - 12 - mlen;
    Ok((manifest, encrypted_len))
}

/// Receives the archive's content as it is read.
pub trait Visitor {
    fn section(&mut self, name: &str) -> Result<(), ArchiveError>;
    /// One JSON line of the current section.
    fn line(&mut self, line: &[u8]) -> Result<(), ArchiveError>;
}

fn read_u32(r: &mut impl Read) -> Result<u32, ArchiveError> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(truncation)?;
    Ok(u32::from_be_bytes(b))
}

fn truncation(e: std::io::Error) -> ArchiveError {
    ArchiveError::Corrupt(format!(
        "the encrypted content does not authenticate or ends early ({e})"
    ))
}

/// Reads and verifies the whole archive, passing every line to `visitor`. Returns the verified
/// manifest. Fails — before the caller has acted on anything it could not undo — on a wrong
/// key, a flipped byte, a truncation, a hash or count mismatch.
pub fn read_verified(
    path: &Path,
    key: &BackupKey,
    visitor: &mut dyn Visitor,
) -> Result<Manifest, ArchiveError> {
    let (plain, encrypted_len) = read_plain_manifest(path)?;
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(10))?;
    let limited = BufReader::new(f.take(encrypted_len));
    let decryptor = age::Decryptor::new_buffered(limited)
        .map_err(|e| ArchiveError::Corrupt(format!("the encryption header is damaged: {e}")))?;
    let identity = key.identity();
    let reader = decryptor
        .decrypt(std::iter::once(identity.as_ref()))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys | age::DecryptError::DecryptionFailed => {
                ArchiveError::WrongKey
            }
            age::DecryptError::ExcessiveWork { .. } => ArchiveError::Corrupt(
                "the archive asks for an excessive key-derivation work factor".into(),
            ),
            other => ArchiveError::Corrupt(format!("the encryption header is damaged: {other}")),
        })?;
    let mut r = zstd::stream::read::Decoder::new(reader).map_err(truncation)?;
    let mut sections: Vec<SectionInfo> = Vec::new();
    let mut current: Option<(String, Sha256, u64, u64)> = None;
    let mut buf = Vec::new();
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag).map_err(truncation)?;
        match tag[0] {
            TAG_SECTION => {
                let mut l = [0u8; 2];
                r.read_exact(&mut l).map_err(truncation)?;
                let mut name = vec![0u8; u16::from_be_bytes(l) as usize];
                r.read_exact(&mut name).map_err(truncation)?;
                let name = String::from_utf8(name)
                    .map_err(|_| ArchiveError::Corrupt("a section name is not UTF-8".into()))?;
                if current.is_some() {
                    return Err(ArchiveError::Corrupt(
                        "a section starts inside another".into(),
                    ));
                }
                visitor.section(&name)?;
                current = Some((name, Sha256::new(), 0, 0));
            }
            TAG_DATA => {
                let len = read_u32(&mut r)? as usize;
                if len > 64 * 1024 * 1024 {
                    return Err(ArchiveError::Corrupt(
                        "a data chunk is implausibly large".into(),
                    ));
                }
                buf.resize(len, 0);
                r.read_exact(&mut buf).map_err(truncation)?;
                let (_, hash, count, bytes) = current
                    .as_mut()
                    .ok_or_else(|| ArchiveError::Corrupt("data outside a section".into()))?;
                hash.update(&buf);
                *bytes += len as u64;
                for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    *count += 1;
                    visitor.line(line)?;
                }
            }
            TAG_SECTION_END => {
                let (name, hash, count, bytes) = current
                    .take()
                    .ok_or_else(|| ArchiveError::Corrupt("a section ends twice".into()))?;
                sections.push(SectionInfo {
                    name,
                    count,
                    bytes,
                    sha256: hex::encode(hash.finalize()),
                });
            }
            TAG_MANIFEST => {
                let len = read_u32(&mut r)? as usize;
                let mut json = vec![0u8; len];
                r.read_exact(&mut json).map_err(truncation)?;
                let manifest: Manifest = serde_json::from_slice(&json).map_err(|e| {
                    ArchiveError::Corrupt(format!("the manifest is not valid: {e}"))
                })?;
                let mut end = [0u8; 1];
                r.read_exact(&mut end).map_err(truncation)?;
                if end[0] != TAG_END {
                    return Err(ArchiveError::Corrupt("content after the manifest".into()));
                }
                // Reading to the end makes age check the final chunk (truncation).
                let mut rest = Vec::new();
                r.read_to_end(&mut rest).map_err(truncation)?;
                if !rest.is_empty() {
                    return Err(ArchiveError::Corrupt(
                        "content after the end of the archive".into(),
                    ));
                }
                if manifest.sections != sections {
                    let detail = manifest
                        .sections
                        .iter()
                        .zip(sections.iter())
                        .find(|(a, b)| a != b)
                        .map(|(a, _)| {
                            format!("section '{}' does not match its hash or count", a.name)
                        })
                        .unwrap_or_else(|| "the section list does not match".into());
                    return Err(ArchiveError::Corrupt(detail));
                }
                if manifest != plain {
                    return Err(ArchiveError::Corrupt("the plain manifest in the trailer differs from the encrypted one (it was altered)".into()));
                }
                return Ok(manifest);
            }
            other => {
                return Err(ArchiveError::Corrupt(format!(
                    "unknown record type {other}"
                )));
            }
        }
    }
}

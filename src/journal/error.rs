//! Why reading or recovering a journal failed, with the file and byte offset
//! an operator needs to look at and what to do about it.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::format::HeaderError;

/// A journal or snapshot problem that recovery cannot decide on its own.
#[derive(Debug)]
pub enum JournalError {
    /// The operating system refused an operation on `path`.
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// Bad bytes with valid data after them, or sequence numbers that break
    /// the total order. Nothing on disk was changed.
    Corrupt {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Bytes beyond the durable point that are not a frame: a write a crash
    /// cut short, which recovery would zero. Reported by `verify`, which
    /// changes nothing.
    TornTail {
        file: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An operation was refused to protect data (e.g. pruning without a
    /// snapshot that covers the pruned records).
    Refused { path: PathBuf, reason: String },
    /// The file does not start with this journal's magic bytes.
    BadMagic { file: PathBuf, found: [u8; 8] },
    /// Written by a build with a different on-disk format.
    UnsupportedVersion {
        file: PathBuf,
        found: u32,
        supported: u32,
    },
    /// Another process, or another engine or writer in this process, holds
    /// the lock on this journal directory (its `LOCK` file). Nothing was
    /// changed.
    Locked { dir: PathBuf },
}

impl JournalError {
    /// The file and byte offset the error is about, where it has both.
    pub fn location(&self) -> Option<(&Path, u64)> {
        match self {
            JournalError::Corrupt { file, offset, .. }
            | JournalError::TornTail { file, offset, .. } => Some((file, *offset)),
            JournalError::BadMagic { file, .. } => Some((file, 0)),
            JournalError::UnsupportedVersion { file, .. } => Some((file, 8)),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        JournalError::Io {
            path: path.into(),
            action,
            source,
        }
    }

    pub(crate) fn corrupt(
        file: impl Into<PathBuf>,
        offset: usize,
        reason: impl Into<String>,
    ) -> Self {
        JournalError::Corrupt {
            file: file.into(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }

    pub(crate) fn header(file: impl Into<PathBuf>, error: HeaderError) -> Self {
        let file = file.into();
        match error {
            HeaderError::Short(len) => JournalError::corrupt(
                file,
                0,
                format!("file is {len} bytes, too short for its header"),
            ),
            HeaderError::Magic(found) => JournalError::BadMagic { file, found },
            HeaderError::Version(found) => JournalError::UnsupportedVersion {
                file,
                found,
                supported: super::format::FORMAT_VERSION,
            },
            HeaderError::Crc => JournalError::corrupt(file, 0, "header checksum mismatch"),
            HeaderError::Reserved => {
                JournalError::corrupt(file, 0, "a reserved header field is not zero")
            }
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
            JournalError::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "journal corrupt in {} at byte offset {offset}: {reason}. \
                 This is not a torn write at the tail, so recovery stopped and changed nothing on disk. \
                 Restore the file from a replica or backup; moving it aside instead loses every record from this point on",
                file.display()
            ),
            JournalError::TornTail {
                file,
                offset,
                reason,
            } => write!(
                f,
                "torn tail in {} at byte offset {offset}: {reason}. Recovery (starting the engine or `ringledger run` on \
                 the directory) zeroes it; the records in it were never made durable",
                file.display()
            ),
            JournalError::Refused { path, reason } => {
                write!(f, "{}: {reason}", path.display())
            }
            JournalError::BadMagic { file, found } => write!(
                f,
                "{} is not a ringledger journal or snapshot file (starts with {:02x?}); \
                 move it out of the journal directory",
                file.display(),
                found
            ),
            JournalError::UnsupportedVersion {
                file,
                found,
                supported,
            } => write!(
                f,
                "{} uses journal format version {found}, but this build reads only version {supported}; \
                 open it with the build that wrote it",
                file.display()
            ),
            JournalError::Locked { dir } => write!(
                f,
                "journal directory {} is in use by another process or engine (it holds the lock on {}); \
                 nothing was changed. Stop the other one first, or use another journal directory",
                dir.display(),
                dir.join(super::lock::LOCK_FILE).display()
            ),
        }
    }
}

impl std::error::Error for JournalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            JournalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<JournalError> for io::Error {
    fn from(e: JournalError) -> io::Error {
        let kind = match &e {
            JournalError::Io { source, .. } => source.kind(),
            JournalError::Locked { .. } => io::ErrorKind::ResourceBusy,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

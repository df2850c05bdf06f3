//! One writer per journal directory: an exclusive advisory lock on
//! `DIR/LOCK`, held by whoever may modify the directory.
//!
//! Two writers on one directory would append to the same segment, and one's
//! recovery would zero the other's in-flight frame as a "torn tail". So
//! [`recover`](super::recover) and [`JournalWriter::open`](super::JournalWriter::open)
//! take the lock, and a [`JournalWriter`](super::JournalWriter) keeps it until
//! it is dropped. The engine takes it once ([`lock_dir`]) and hands the same
//! [`DirLock`] to [`recover_locked`](super::recover_locked) and then to
//! [`JournalWriter::open_locked`](super::JournalWriter::open_locked), so no
//! other writer can slip in between recovery and the first append.
//!
//! The lock is `flock(2)`-style (std's [`File::try_lock`]): it belongs to the
//! open file, so it conflicts between two processes and between two
//! [`DirLock`]s of one process alike, and the kernel drops it when the file
//! is closed or the process dies, even by SIGKILL: a crash never leaves a
//! stale lock behind. `LOCK` itself is an empty file that is never removed
//! (removing it would let a second writer lock a fresh inode while the first
//! still holds the old one); its presence means nothing. Like every advisory
//! lock it binds only code that asks for it, and it is only as reliable as
//! the file system's `flock` (local file systems are fine).
//!
//! Readers take no lock: [`replay`](super::replay) and
//! [`read_records`](super::read_records) never write, so they may read a live
//! journal (its last frame may then look torn; they report it and leave it).

use std::path::{Path, PathBuf};

use super::error::JournalError;
use crate::storage::{OsStorage, Storage};

/// The lock file in a journal directory.
pub const LOCK_FILE: &str = "LOCK";

/// The exclusive lock on a journal directory; released when dropped.
///
/// Holding it is what entitles code to modify the directory: recover it
/// ([`super::recover_locked`]), append to it (a [`super::JournalWriter`]
/// owns one), write snapshots into it or prune it.
///
/// It also carries the storage the directory lives on, so whatever is handed
/// the lock (recovery, the writer) reaches the same disk.
#[derive(Debug)]
pub struct DirLock<S: Storage = OsStorage> {
    dir: PathBuf,
    storage: S,
    /// Held for as long as the lock is: dropping it releases the lock.
    _held: S::Lock,
}

impl<S: Storage> DirLock<S> {
    /// The storage the directory lives on.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The locked journal directory, as given to [`lock_dir`].
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of the lock file (`dir/LOCK`).
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }
}

/// Takes the exclusive lock on the journal directory `dir` (created if
/// missing), without waiting: if another process or another
/// engine/writer in this process holds it, returns [`JournalError::Locked`]
/// having changed nothing but, at most, creating `dir` and its empty `LOCK`.
pub fn lock_dir(dir: impl AsRef<Path>) -> Result<DirLock, JournalError> {
    lock_dir_in(&OsStorage, dir)
}

/// [`lock_dir`] on `storage`.
pub fn lock_dir_in<S: Storage>(
    storage: &S,
    dir: impl AsRef<Path>,
) -> Result<DirLock<S>, JournalError> {
    let dir = dir.as_ref().to_path_buf();
    storage
        .create_dir_all(&dir)
        .map_err(|e| JournalError::io(&dir, "create journal directory", e))?;
    let path = dir.join(LOCK_FILE);
    match storage.try_lock(&path) {
        Ok(Some(held)) => Ok(DirLock {
            dir,
            storage: storage.clone(),
            _held: held,
        }),
        Ok(None) => Err(JournalError::Locked { dir }),
        Err(e) => Err(JournalError::io(&path, "lock", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        assert_send::<DirLock>();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("journal");
        let first = lock_dir(&dir).unwrap();
        assert_eq!(first.dir(), dir);
        assert_eq!(first.lock_file(), dir.join(LOCK_FILE));
        let err = lock_dir(&dir).unwrap_err();
        assert!(
            matches!(&err, JournalError::Locked { dir: d } if *d == dir),
            "{err:?}"
        );
        drop(first);
        let again = lock_dir(&dir).unwrap();
        assert!(dir.join(LOCK_FILE).exists());
        drop(again);
        // The lock file stays (removing it would race with a new locker).
        assert!(dir.join(LOCK_FILE).exists());
    }
}

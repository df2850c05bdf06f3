//! The one seam through which the journal and snapshot code reach the disk.
//!
//! The journal's promises (a process crash loses nothing acknowledged in
//! `async` mode, a power loss nothing acknowledged in `sync` mode, damage is
//! told apart from a torn write) depend on what the disk does when it
//! misbehaves: short and torn writes, a failed fdatasync, a full disk, pages
//! persisted in any order at a power cut, bits that rot. Those cannot be
//! provoked on a real disk at will, so everything the journal does to files
//! goes through [`Storage`]: [`OsStorage`] is the real file system, exactly
//! as the journal used it before the seam, and [`sim::SimStorage`] is a disk
//! in memory whose faults come from one seeded PRNG, which the simulator
//! (`tests/simulation.rs`, `examples/simulate.rs`) drives.
//!
//! Static dispatch: the journal types take the storage as a generic
//! parameter defaulting to [`OsStorage`], so the real path compiles to the
//! same calls as before (a frame in `async` mode is still one `memcpy` into
//! the map, with no indirection).

pub mod sim;

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use memmap2::{MmapOptions, MmapRaw};

/// How a file is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write, created if missing and emptied if not.
    CreateTruncate,
    /// Read and write, created if missing, contents kept.
    Create,
}

/// What the journal needs to know about a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub is_dir: bool,
    pub bytes: u64,
}

/// A file system: the operations the journal, its snapshots and its lock
/// use, and nothing else. Paths are absolute or relative as the caller gives
/// them; a missing file or directory is an error of kind `NotFound`.
pub trait Storage: Clone + fmt::Debug + Send + Sync + 'static {
    type File: StorageFile<Map = Self::Map>;
    type Map: StorageMap;
    /// Held while a directory is locked; dropping it releases the lock.
    type Lock: fmt::Debug + Send + Sync + 'static;

    /// Whether the journal writer may do slow work on helper threads
    /// (preparing the next segment, the periodic fdatasync of `async` mode,
    /// syncing a finished segment). A simulated disk says no: everything
    /// then happens inline, in an order fixed by the calls, so a seed
    /// replays exactly; `async` mode's durable point then moves only on an
    /// explicit [`crate::journal::JournalWriter::sync`].
    const HELPER_THREADS: bool;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    fn info(&self, path: &Path) -> io::Result<FileInfo>;
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Self::File>;
    /// The whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// The names of the entries of `dir`, in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// An exclusive lock on the file `path` (created if missing), without
    /// waiting: `None` if someone else holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Self::Lock>>;
}

/// An open file.
pub trait StorageFile: fmt::Debug + Send + Sync + Sized + 'static {
    type Map: StorageMap;

    /// The file's length in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Reads at most `buf.len()` bytes at `at`; 0 at the end of the file.
    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<usize>;
    /// Writes at most `buf.len()` bytes at `at` (a short write is allowed).
    fn write_at(&self, buf: &[u8], at: u64) -> io::Result<usize>;
    fn sync_data(&self) -> io::Result<()>;
    fn sync_all(&self) -> io::Result<()>;
    /// Makes the file `bytes` long with its blocks allocated (reading as
    /// zeros where nothing was written), so later writes below that length
    /// cannot meet a full disk.
    fn allocate(&self, bytes: u64) -> io::Result<()>;
    /// Maps the whole file, shared and writable. `populate`: read it in and
    /// map it in one go instead of one fault per page.
    fn map(&self, populate: bool) -> io::Result<Self::Map>;

    /// Writes all of `buf` at `at`, going on after short writes.
    fn write_all_at(&self, mut buf: &[u8], mut at: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write_at(buf, at) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "failed to write whole buffer",
                    ))
                }
                Ok(n) => {
                    buf = &buf[n..];
                    at += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A shared, writable map of a whole file: stores go to the page cache with
/// no system call.
pub trait StorageMap: fmt::Debug + Send + Sync + 'static {
    /// Stores `bytes` at `at`; an error if they do not fit the map.
    fn write(&self, bytes: &[u8], at: usize) -> io::Result<()>;
    /// Makes `[from, from + len)` durable (an fdatasync of that range).
    fn flush_range(&self, from: usize, len: usize) -> io::Result<()>;
    /// Touches every page (storing the zero each holds), so later stores do
    /// not fault.
    fn touch_pages(&self);
}

/// The real file system through `std::fs`, `flock` and `mmap`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OsStorage;

impl Storage for OsStorage {
    type File = OsFile;
    type Map = OsMap;
    type Lock = File;

    const HELPER_THREADS: bool = true;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::create_dir_all(dir)
    }

    fn info(&self, path: &Path) -> io::Result<FileInfo> {
        let meta = fs::metadata(path)?;
        Ok(FileInfo {
            is_dir: meta.is_dir(),
            bytes: meta.len(),
        })
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<OsFile> {
        let mut options = OpenOptions::new();
        options.read(true);
        match mode {
            OpenMode::Read => {}
            OpenMode::ReadWrite => {
                options.write(true);
            }
            OpenMode::CreateTruncate => {
                options.write(true).create(true).truncate(true);
            }
            OpenMode::Create => {
                options.write(true).create(true).truncate(false);
            }
        }
        options.open(path).map(OsFile)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            // A name that is not UTF-8 is not one of the journal's.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<File>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A file of [`OsStorage`].
#[derive(Debug)]
pub struct OsFile(File);

impl StorageFile for OsFile {
    type Map = OsMap;

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<usize> {
        self.0.read_at(buf, at)
    }

    fn write_at(&self, buf: &[u8], at: u64) -> io::Result<usize> {
        self.0.write_at(buf, at)
    }

    #[inline]
    fn write_all_at(&self, buf: &[u8], at: u64) -> io::Result<()> {
        self.0.write_all_at(buf, at)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }

    fn allocate(&self, bytes: u64) -> io::Result<()> {
        allocate(&self.0, bytes)
    }

    fn map(&self, populate: bool) -> io::Result<OsMap> {
        let mut options = MmapOptions::new();
        if populate {
            // Pages read in and mapped in one call, not one fault per page.
            options.populate();
        }
        // The map is only sound while no one else truncates or rewrites the
        // file under it. Segments live in a directory the journal writer
        // holds the lock of (`DirLock`), so no other ringledger writer
        // touches them, and the writer never truncates a mapped segment: it
        // stores frames only at offsets checked against the map's length.
        // (A process outside the lock that truncated a segment would make
        // the next store fault, as with any mapped file.)
        options.map_raw(&self.0).map(|map| OsMap(Arc::new(map)))
    }
}

/// A map of an [`OsFile`]. Cloning shares the one mapping.
#[derive(Clone, Debug)]
pub struct OsMap(Arc<MmapRaw>);

impl StorageMap for OsMap {
    #[inline]
    fn write(&self, bytes: &[u8], at: usize) -> io::Result<()> {
        let map = &self.0;
        if at
            .checked_add(bytes.len())
            .is_none_or(|end| end > map.len())
        {
            return Err(io::Error::other(format!(
                "{} bytes at offset {at} do not fit the {}-byte segment",
                bytes.len(),
                map.len()
            )));
        }
        // `at..at + bytes.len()` lies inside the map (checked just above),
        // which the `Arc` keeps mapped; `bytes` is the caller's own buffer,
        // not part of the map, so the ranges do not overlap. Only the
        // journal writer stores into the map; its sync helper only msyncs
        // it (no Rust reference to the bytes), and no one truncates the file
        // while it is mapped (see `OsFile::map`).
        // SAFETY: in bounds, non-overlapping, and this is the only writer.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), map.as_mut_ptr().add(at), bytes.len());
        }
        Ok(())
    }

    fn flush_range(&self, from: usize, len: usize) -> io::Result<()> {
        self.0.flush_range(from, len)
    }

    fn touch_pages(&self) {
        const PAGE: usize = 4096;
        for at in (0..self.0.len()).step_by(PAGE) {
            // A volatile store, so the compiler keeps it although it writes
            // the value already there. Nobody else stores into the map yet:
            // the journal touches a spare segment before handing it over.
            // SAFETY: `at < len` keeps the pointer inside the live map; u8
            // needs no alignment.
            unsafe { self.0.as_mut_ptr().add(at).write_volatile(0) };
        }
    }
}

/// Reserves `bytes` of blocks for `file` (reading as zeros) without writing them.
#[cfg(target_os = "linux")]
fn allocate(file: &File, bytes: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let len = libc::off_t::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment size too large"))?;
    // SAFETY: `fallocate` only reads its integer arguments; the descriptor
    // is valid for the duration of the call because `file` is borrowed.
    let done = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if done == 0 {
        return Ok(());
    }
    match io::Error::last_os_error() {
        // A file system without fallocate: write the zeros instead.
        e if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
            zero_fill(&OsFile(file.try_clone()?), 0, bytes)
        }
        e => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(file: &File, bytes: u64) -> io::Result<()> {
    zero_fill(&OsFile(file.try_clone()?), 0, bytes)
}

/// Writes real zeros (not a sparse hole) over `[from, to)`.
pub fn zero_fill<F: StorageFile>(file: &F, from: u64, to: u64) -> io::Result<()> {
    const CHUNK_BYTES: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK_BYTES.min(to.saturating_sub(from)) as usize];
    let mut at = from;
    while at < to {
        let n = CHUNK_BYTES.min(to - at) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

//! A disk in memory that misbehaves on purpose, from one seeded PRNG.
//!
//! It models what the journal's promises depend on:
//! - a page cache in front of the medium: writes (and stores through a map)
//!   change what reads see at once, but reach the medium only on an
//!   fdatasync / msync / fsync of them;
//! - a **process crash** ([`SimStorage::crash`]): handles and locks die,
//!   the page cache survives;
//! - a **power loss** ([`SimStorage::power_loss`]): every page written since
//!   its last sync is, independently, kept, dropped or torn at a 512-byte
//!   sector (so pages persist in any order), a file's size is the synced one
//!   or the new one, and each unsynced directory change (create, rename,
//!   remove) independently happens or not;
//! - faults, each with a probability per operation that the seed draws
//!   ([`Faults::swarm`]): short writes, torn writes (a prefix written, then
//!   EIO), EIO on fdatasync (the pages it should have written are, each at
//!   random, written or lost for good while the page cache keeps showing
//!   them: Linux marks them clean, which is why a failed fsync must never be
//!   retried), ENOSPC when a file grows, slow syncs (simulated time);
//! - bit rot ([`SimStorage::rot`]): a bit of the medium flips, and reads see it.
//!
//! Everything is single-threaded in effect (one lock around the disk) and
//! iterates in a defined order, so the same seed and the same calls give the
//! same run; [`SimStorage::trace_hash`] fingerprints every operation and
//! fault decision to prove it.
//!
//! Directories are simplified: creating one is durable at once.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{FileInfo, OpenMode, Storage, StorageFile, StorageMap};

/// The unit in which unsynced data survives a power loss, or not.
pub const SIM_PAGE_BYTES: usize = 4096;
/// The unit a page may be torn at.
pub const SIM_SECTOR_BYTES: usize = 512;

/// Fault probabilities, per operation of the kind.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Faults {
    /// A write stores only a prefix and says so (the caller must go on).
    pub write_short: f64,
    /// A write stores a prefix (possibly empty) and fails with EIO.
    pub write_eio: f64,
    /// An fdatasync / msync / fsync of a file fails with EIO.
    pub sync_eio: f64,
    /// An fsync of a directory fails with EIO (its entries' changes since
    /// its last sync stay undurable).
    pub dir_sync_eio: f64,
    /// A write or allocation that grows a file fails with ENOSPC.
    pub enospc: f64,
    /// A sync takes 10-200 ms of simulated time instead of ~0.1 ms.
    pub sync_slow: f64,
}

impl Faults {
    /// No faults at all: only crashes and power losses.
    pub fn calm() -> Faults {
        Faults::default()
    }

    /// Swarm testing: each kind is off for about half the seeds and on for
    /// the others at a rate between rare and a storm, so some seeds are calm
    /// and some are storms, and every mix of kinds is tried.
    pub fn swarm(rng: &mut impl Rng) -> Faults {
        let mut draw = |storm: f64| {
            if rng.random_bool(0.5) {
                0.0
            } else {
                storm * rng.random::<f64>().powi(2)
            }
        };
        Faults {
            write_short: draw(0.2),
            write_eio: draw(0.01),
            sync_eio: draw(0.02),
            dir_sync_eio: draw(0.02),
            enospc: draw(0.02),
            sync_slow: draw(0.3),
        }
    }
}

/// How many of each fault the disk injected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    pub short_writes: u64,
    pub torn_writes: u64,
    pub sync_eio: u64,
    pub enospc: u64,
    pub slow_syncs: u64,
    pub crashes: u64,
    pub power_losses: u64,
    /// Unsynced pages a power loss dropped or tore.
    pub pages_lost: u64,
    pub rot: u64,
}

impl FaultCounts {
    pub fn add(&mut self, other: &FaultCounts) {
        self.short_writes += other.short_writes;
        self.torn_writes += other.torn_writes;
        self.sync_eio += other.sync_eio;
        self.enospc += other.enospc;
        self.slow_syncs += other.slow_syncs;
        self.crashes += other.crashes;
        self.power_losses += other.power_losses;
        self.pages_lost += other.pages_lost;
        self.rot += other.rot;
    }
}

/// A simulated disk; clones share it.
#[derive(Clone, Debug)]
pub struct SimStorage {
    disk: Arc<Mutex<Disk>>,
}

#[derive(Debug)]
struct Disk {
    rng: ChaCha8Rng,
    faults: Faults,
    /// Faults are injected only while armed (the simulator disarms them to
    /// take a reference reading, for instance).
    armed: bool,
    now_us: u64,
    inodes: Vec<Inode>,
    /// What the running process sees.
    names: BTreeMap<PathBuf, usize>,
    /// What survives a power loss.
    durable_names: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
    /// Bumped by a crash: handles of an earlier process are dead.
    incarnation: u64,
    counts: FaultCounts,
    /// A running hash of every event (see [`SimStorage::trace_hash`]).
    trace: u64,
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see: the page cache over the medium.
    data: Vec<u8>,
    /// What the medium holds.
    durable: Vec<u8>,
    /// Pages written since their last sync.
    dirty: BTreeSet<usize>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO: {what}"))
}

fn enospc() -> io::Error {
    io::Error::new(
        io::ErrorKind::StorageFull,
        "simulated ENOSPC: no space left on device",
    )
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file or directory", path.display()),
    )
}

impl Disk {
    fn note(&mut self, event: &str, a: u64, b: u64) {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
        self.trace = xxh3_64_with_seed(&bytes, xxh3_64_with_seed(event.as_bytes(), self.trace));
    }

    fn chance(&mut self, p: f64) -> bool {
        self.armed && p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    fn check(&self, incarnation: u64) -> io::Result<()> {
        if incarnation == self.incarnation {
            return Ok(());
        }
        Err(io::Error::other(
            "stale handle: the process that opened it crashed",
        ))
    }

    fn inode_of(&self, path: &Path) -> io::Result<usize> {
        self.names.get(path).copied().ok_or_else(|| not_found(path))
    }

    fn mark_dirty(&mut self, inode: usize, from: usize, to: usize) {
        if from < to {
            let node = &mut self.inodes[inode];
            node.dirty
                .extend(from / SIM_PAGE_BYTES..to.div_ceil(SIM_PAGE_BYTES));
        }
    }

    /// A write of `buf` at `at`, with its faults.
    fn write(&mut self, inode: usize, buf: &[u8], at: u64) -> io::Result<usize> {
        let at = at as usize;
        let mut n = buf.len();
        let grows = at + n > self.inodes[inode].data.len();
        let mut failure = None;
        if grows && self.chance(self.faults.enospc) {
            self.counts.enospc += 1;
            self.note("enospc", inode as u64, at as u64);
            return Err(enospc());
        }
        if n > 1 && self.chance(self.faults.write_short) {
            n = self.rng.random_range(1..n);
            self.counts.short_writes += 1;
        } else if self.chance(self.faults.write_eio) {
            n = self.rng.random_range(0..=n);
            self.counts.torn_writes += 1;
            failure = Some(eio("write"));
        }
        self.note("write", inode as u64, (at as u64) << 20 | n as u64);
        let data = &mut self.inodes[inode].data;
        if at + n > data.len() {
            data.resize(at + n, 0);
        }
        data[at..at + n].copy_from_slice(&buf[..n]);
        self.mark_dirty(inode, at, at + n);
        match failure {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }

    /// Time passes and the sync may fail; the pages a failed sync should
    /// have written are each written or lost for good.
    fn sync_faults(&mut self, pages: &[(usize, usize)], eio_p: f64) -> io::Result<()> {
        let slow = self.chance(self.faults.sync_slow);
        self.now_us += if slow {
            self.counts.slow_syncs += 1;
            self.rng.random_range(10_000..200_000)
        } else {
            100
        };
        if !self.chance(eio_p) {
            return Ok(());
        }
        self.counts.sync_eio += 1;
        self.note("sync_eio", pages.len() as u64, 0);
        for &(inode, page) in pages {
            if self.rng.random_bool(0.5) {
                self.persist_page(inode, page);
            }
            self.inodes[inode].dirty.remove(&page);
        }
        Err(eio("fdatasync"))
    }

    fn persist_page(&mut self, inode: usize, page: usize) {
        let node = &mut self.inodes[inode];
        let from = page * SIM_PAGE_BYTES;
        let to = (from + SIM_PAGE_BYTES).min(node.data.len());
        if from >= to {
            return;
        }
        if node.durable.len() < to {
            node.durable.resize(to, 0);
        }
        node.durable[from..to].copy_from_slice(&node.data[from..to]);
    }

    /// Syncs the pages of `inode` that overlap `[from, to)` (None: the
    /// whole file, and its size).
    fn sync(&mut self, inode: usize, range: Option<(usize, usize)>) -> io::Result<()> {
        let pages: Vec<(usize, usize)> = self.inodes[inode]
            .dirty
            .iter()
            .filter(|&&p| {
                range.is_none_or(|(from, to)| {
                    p * SIM_PAGE_BYTES < to && (p + 1) * SIM_PAGE_BYTES > from
                })
            })
            .map(|&p| (inode, p))
            .collect();
        self.note("sync", inode as u64, pages.len() as u64);
        self.sync_faults(&pages, self.faults.sync_eio)?;
        for &(_, page) in &pages {
            self.persist_page(inode, page);
            self.inodes[inode].dirty.remove(&page);
        }
        if range.is_none() {
            let node = &mut self.inodes[inode];
            let len = node.data.len();
            node.durable.resize(len, 0);
        }
        Ok(())
    }

    fn new_inode(&mut self) -> usize {
        self.inodes.push(Inode::default());
        self.inodes.len() - 1
    }
}

impl SimStorage {
    /// A blank disk whose faults and power-loss choices all come from `seed`,
    /// injecting `faults`.
    pub fn new(seed: u64, faults: Faults) -> SimStorage {
        let mut dirs = BTreeSet::new();
        dirs.insert(PathBuf::from("/"));
        SimStorage {
            disk: Arc::new(Mutex::new(Disk {
                rng: ChaCha8Rng::seed_from_u64(seed),
                faults,
                armed: true,
                now_us: 0,
                inodes: Vec::new(),
                names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                dirs,
                locks: BTreeSet::new(),
                incarnation: 0,
                counts: FaultCounts::default(),
                trace: 0,
            })),
        }
    }

    /// Replaces the fault rates (a test that wants one fault at one point).
    pub fn set_faults(&self, faults: Faults) {
        self.disk.lock().faults = faults;
    }

    /// Turns fault injection on or off (crashes and power losses are always
    /// the caller's to order).
    pub fn set_armed(&self, armed: bool) {
        self.disk.lock().armed = armed;
    }

    /// Simulated time: advanced by syncs (slow ones a lot) and by [`Self::advance_us`].
    pub fn now_us(&self) -> u64 {
        self.disk.lock().now_us
    }

    pub fn advance_us(&self, us: u64) {
        self.disk.lock().now_us += us;
    }

    pub fn counts(&self) -> FaultCounts {
        self.disk.lock().counts
    }

    /// A fingerprint of every operation and fault decision so far.
    pub fn trace_hash(&self) -> u64 {
        self.disk.lock().trace
    }

    /// Mixes an event of the caller's into the trace.
    pub fn note(&self, event: &str, a: u64, b: u64) {
        self.disk.lock().note(event, a, b);
    }

    /// The process dies: its handles and locks with it; the page cache
    /// (and so every write it made) survives.
    pub fn crash(&self) {
        let mut disk = self.disk.lock();
        disk.incarnation += 1;
        disk.locks.clear();
        disk.counts.crashes += 1;
        disk.note("crash", 0, 0);
    }

    /// The power fails (and the process with it): only what was synced is
    /// sure to survive; every unsynced page and directory change
    /// independently survives or not, a page possibly torn at a sector.
    pub fn power_loss(&self) {
        let mut guard = self.disk.lock();
        let disk = &mut *guard;
        disk.incarnation += 1;
        disk.locks.clear();
        disk.counts.power_losses += 1;
        disk.note("power_loss", 0, 0);
        for inode in 0..disk.inodes.len() {
            let (data_len, durable_len) = {
                let node = &disk.inodes[inode];
                (node.data.len(), node.durable.len())
            };
            let len = if data_len != durable_len && disk.rng.random_bool(0.5) {
                data_len
            } else {
                durable_len
            };
            let mut next = disk.inodes[inode].durable.clone();
            next.resize(len, 0);
            let dirty: Vec<usize> = disk.inodes[inode].dirty.iter().copied().collect();
            for page in dirty {
                let from = page * SIM_PAGE_BYTES;
                let to = (from + SIM_PAGE_BYTES).min(data_len).min(len);
                if from >= to {
                    continue;
                }
                let keep = match disk.rng.random_range(0..3) {
                    0 => 0,
                    1 => to - from,
                    _ => {
                        let sectors = (to - from).div_ceil(SIM_SECTOR_BYTES);
                        (disk.rng.random_range(0..sectors) * SIM_SECTOR_BYTES).min(to - from)
                    }
                };
                if keep < to - from && disk.inodes[inode].data[from..to] != next[from..to] {
                    disk.counts.pages_lost += 1;
                }
                next[from..from + keep]
                    .copy_from_slice(&disk.inodes[inode].data[from..from + keep]);
                disk.note("page", inode as u64, (page as u64) << 16 | keep as u64);
            }
            let node = &mut disk.inodes[inode];
            node.durable = next.clone();
            node.data = next;
            node.dirty.clear();
        }
        let paths: BTreeSet<PathBuf> = disk
            .names
            .keys()
            .chain(disk.durable_names.keys())
            .cloned()
            .collect();
        for path in paths {
            let now = disk.names.get(&path).copied();
            let synced = disk.durable_names.get(&path).copied();
            if now == synced {
                continue;
            }
            let kept = if disk.rng.random_bool(0.5) {
                now
            } else {
                synced
            };
            disk.note("name", kept.map_or(u64::MAX, |i| i as u64), 0);
            match kept {
                Some(inode) => {
                    disk.names.insert(path.clone(), inode);
                    disk.durable_names.insert(path, inode);
                }
                None => {
                    disk.names.remove(&path);
                    disk.durable_names.remove(&path);
                }
            }
        }
    }

    /// Flips bit `bit` of byte `offset` of `path` on the medium (and so in
    /// what reads see). [`Self::heal`] undoes it.
    pub fn rot(&self, path: &Path, offset: usize, bit: u8) -> io::Result<()> {
        self.flip(path, offset, bit)?;
        self.disk.lock().counts.rot += 1;
        Ok(())
    }

    /// Undoes [`Self::rot`], as restoring the byte from a replica would.
    pub fn heal(&self, path: &Path, offset: usize, bit: u8) -> io::Result<()> {
        self.flip(path, offset, bit)
    }

    fn flip(&self, path: &Path, offset: usize, bit: u8) -> io::Result<()> {
        let mut disk = self.disk.lock();
        let inode = disk.inode_of(path)?;
        let node = &mut disk.inodes[inode];
        if offset >= node.data.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("offset {offset} is beyond the end of {}", path.display()),
            ));
        }
        node.data[offset] ^= 1 << (bit % 8);
        if offset < node.durable.len() {
            node.durable[offset] ^= 1 << (bit % 8);
        }
        disk.note("flip", inode as u64, offset as u64);
        Ok(())
    }

    /// The bytes of `path` as reads see them, without faults (for checks).
    pub fn contents(&self, path: &Path) -> io::Result<Vec<u8>> {
        let disk = self.disk.lock();
        let inode = disk.inode_of(path)?;
        Ok(disk.inodes[inode].data.clone())
    }

    /// Whether every byte of `path` in `[from, to)` is on the medium (its
    /// pages synced since they were last written).
    pub fn is_durable(&self, path: &Path, from: usize, to: usize) -> bool {
        let disk = self.disk.lock();
        let Ok(inode) = disk.inode_of(path) else {
            return false;
        };
        if disk.durable_names.get(path) != Some(&inode) {
            return false;
        }
        let node = &disk.inodes[inode];
        to <= node.durable.len()
            && node.data[from..to] == node.durable[from..to]
            && !node
                .dirty
                .iter()
                .any(|&p| p * SIM_PAGE_BYTES < to && (p + 1) * SIM_PAGE_BYTES > from)
    }
}

impl Storage for SimStorage {
    type File = SimFile;
    type Map = SimMap;
    type Lock = SimLock;

    const HELPER_THREADS: bool = false;

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk.lock();
        for ancestor in dir.ancestors() {
            if !ancestor.as_os_str().is_empty() {
                disk.dirs.insert(ancestor.to_path_buf());
            }
        }
        Ok(())
    }

    fn info(&self, path: &Path) -> io::Result<FileInfo> {
        let disk = self.disk.lock();
        if disk.dirs.contains(path) {
            return Ok(FileInfo {
                is_dir: true,
                bytes: 0,
            });
        }
        let inode = disk.inode_of(path)?;
        Ok(FileInfo {
            is_dir: false,
            bytes: disk.inodes[inode].data.len() as u64,
        })
    }

    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<SimFile> {
        let mut disk = self.disk.lock();
        let inode = match (disk.names.get(path).copied(), mode) {
            (Some(inode), OpenMode::CreateTruncate) => {
                disk.inodes[inode].data.clear();
                disk.inodes[inode].dirty.clear();
                inode
            }
            (Some(inode), _) => inode,
            (None, OpenMode::Create | OpenMode::CreateTruncate) => {
                let parent = path.parent().unwrap_or(Path::new(""));
                if !parent.as_os_str().is_empty() && !disk.dirs.contains(parent) {
                    return Err(not_found(parent));
                }
                let inode = disk.new_inode();
                disk.names.insert(path.to_path_buf(), inode);
                inode
            }
            (None, _) => return Err(not_found(path)),
        };
        disk.note("open", inode as u64, 0);
        Ok(SimFile {
            storage: self.clone(),
            inode,
            incarnation: disk.incarnation,
            writable: mode != OpenMode::Read,
        })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.contents(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut disk = self.disk.lock();
        let inode = disk.inode_of(from)?;
        disk.names.remove(from);
        disk.names.insert(to.to_path_buf(), inode);
        disk.note("rename", inode as u64, 0);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut disk = self.disk.lock();
        let inode = disk.inode_of(path)?;
        disk.names.remove(path);
        disk.note("remove", inode as u64, 0);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let disk = self.disk.lock();
        if !disk.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(disk
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut disk = self.disk.lock();
        disk.note("sync_dir", 0, 0);
        let eio_p = disk.faults.dir_sync_eio;
        disk.sync_faults(&[], eio_p)?;
        let now: Vec<(PathBuf, usize)> = disk
            .names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        disk.durable_names.retain(|p, _| p.parent() != Some(dir));
        disk.durable_names.extend(now);
        Ok(())
    }

    fn try_lock(&self, path: &Path) -> io::Result<Option<SimLock>> {
        drop(self.open(path, OpenMode::Create)?);
        let mut disk = self.disk.lock();
        if !disk.locks.insert(path.to_path_buf()) {
            return Ok(None);
        }
        Ok(Some(SimLock {
            storage: self.clone(),
            path: path.to_path_buf(),
            incarnation: disk.incarnation,
        }))
    }
}

/// A held lock of a [`SimStorage`]; released when dropped (or by a crash).
#[derive(Debug)]
pub struct SimLock {
    storage: SimStorage,
    path: PathBuf,
    incarnation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut disk = self.storage.disk.lock();
        if disk.incarnation == self.incarnation {
            disk.locks.remove(&self.path);
        }
    }
}

/// An open file of a [`SimStorage`].
#[derive(Debug)]
pub struct SimFile {
    storage: SimStorage,
    inode: usize,
    incarnation: u64,
    writable: bool,
}

impl SimFile {
    fn writable(&self) -> io::Result<()> {
        if self.writable {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "file opened read-only",
        ))
    }
}

impl StorageFile for SimFile {
    type Map = SimMap;

    fn size(&self) -> io::Result<u64> {
        let disk = self.storage.disk.lock();
        disk.check(self.incarnation)?;
        Ok(disk.inodes[self.inode].data.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], at: u64) -> io::Result<usize> {
        let disk = self.storage.disk.lock();
        disk.check(self.incarnation)?;
        let data = &disk.inodes[self.inode].data;
        let at = (at as usize).min(data.len());
        let n = buf.len().min(data.len() - at);
        buf[..n].copy_from_slice(&data[at..at + n]);
        Ok(n)
    }

    fn write_at(&self, buf: &[u8], at: u64) -> io::Result<usize> {
        self.writable()?;
        let mut disk = self.storage.disk.lock();
        disk.check(self.incarnation)?;
        disk.write(self.inode, buf, at)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut disk = self.storage.disk.lock();
        disk.check(self.incarnation)?;
        disk.sync(self.inode, None)
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }

    fn allocate(&self, bytes: u64) -> io::Result<()> {
        self.writable()?;
        let mut disk = self.storage.disk.lock();
        disk.check(self.incarnation)?;
        let bytes = bytes as usize;
        if bytes <= disk.inodes[self.inode].data.len() {
            return Ok(());
        }
        let enospc_p = disk.faults.enospc;
        if disk.chance(enospc_p) {
            disk.counts.enospc += 1;
            disk.note("enospc", self.inode as u64, bytes as u64);
            return Err(enospc());
        }
        disk.note("allocate", self.inode as u64, bytes as u64);
        disk.inodes[self.inode].data.resize(bytes, 0);
        Ok(())
    }

    fn map(&self, _populate: bool) -> io::Result<SimMap> {
        self.writable()?;
        Ok(SimMap {
            len: self.size()? as usize,
            storage: self.storage.clone(),
            inode: self.inode,
            incarnation: self.incarnation,
        })
    }
}

/// A shared, writable map of a [`SimFile`]: stores change the page cache
/// (never fail, never short: the blocks are allocated), msync syncs a range.
#[derive(Debug)]
pub struct SimMap {
    storage: SimStorage,
    inode: usize,
    incarnation: u64,
    len: usize,
}

impl StorageMap for SimMap {
    fn write(&self, bytes: &[u8], at: usize) -> io::Result<()> {
        if at.checked_add(bytes.len()).is_none_or(|end| end > self.len) {
            return Err(io::Error::other(format!(
                "{} bytes at offset {at} do not fit the {}-byte segment",
                bytes.len(),
                self.len
            )));
        }
        let mut disk = self.storage.disk.lock();
        disk.check(self.incarnation)?;
        let data = &mut disk.inodes[self.inode].data;
        if data.len() < at + bytes.len() {
            data.resize(at + bytes.len(), 0);
        }
        data[at..at + bytes.len()].copy_from_slice(bytes);
        disk.mark_dirty(self.inode, at, at + bytes.len());
        disk.note("store", self.inode as u64, at as u64);
        Ok(())
    }

    fn flush_range(&self, from: usize, len: usize) -> io::Result<()> {
        let mut disk = self.storage.disk.lock();
        disk.check(self.incarnation)?;
        disk.sync(self.inode, Some((from, from + len)))
    }

    fn touch_pages(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_file(storage: &SimStorage, path: &Path, bytes: &[u8]) -> SimFile {
        let file = storage.open(path, OpenMode::CreateTruncate).unwrap();
        file.write_all_at(bytes, 0).unwrap();
        file
    }

    #[test]
    fn synced_data_survives_a_power_loss_and_unsynced_pages_may_not() {
        let storage = SimStorage::new(7, Faults::calm());
        let dir = Path::new("/j");
        storage.create_dir_all(dir).unwrap();
        let path = dir.join("a");
        let file = write_file(&storage, &path, &[1; 3 * SIM_PAGE_BYTES]);
        file.sync_all().unwrap();
        storage.sync_dir(dir).unwrap();
        file.write_all_at(&[2; 3 * SIM_PAGE_BYTES], 0).unwrap();
        assert!(!storage.is_durable(&path, 0, 1));
        let mut seen = BTreeSet::new();
        for _ in 0..20 {
            storage.power_loss();
            let bytes = storage.contents(&path).unwrap();
            assert_eq!(bytes.len(), 3 * SIM_PAGE_BYTES);
            assert!(bytes.iter().all(|&b| b == 1 || b == 2));
            seen.insert(bytes.iter().filter(|&&b| b == 2).count());
            let file = storage.open(&path, OpenMode::ReadWrite).unwrap();
            file.write_all_at(&[2; 3 * SIM_PAGE_BYTES], 0).unwrap();
            file.write_all_at(&[1; 3 * SIM_PAGE_BYTES], 0).unwrap();
            file.sync_data().unwrap();
            file.write_all_at(&[2; 3 * SIM_PAGE_BYTES], 0).unwrap();
        }
        assert!(seen.len() > 2, "pages survive independently: {seen:?}");
    }

    #[test]
    fn an_unsynced_create_may_vanish_and_a_crash_keeps_the_page_cache() {
        let storage = SimStorage::new(1, Faults::calm());
        let dir = Path::new("/j");
        storage.create_dir_all(dir).unwrap();
        let path = dir.join("a");
        let file = write_file(&storage, &path, b"hello");
        storage.crash();
        assert!(
            file.write_all_at(b"x", 0).is_err(),
            "a dead process's handle"
        );
        assert_eq!(storage.contents(&path).unwrap(), b"hello");
        let mut vanished = false;
        for _ in 0..20 {
            storage.power_loss();
            if storage.info(&path).is_err() {
                vanished = true;
                break;
            }
        }
        assert!(vanished);
    }

    #[test]
    fn the_same_seed_makes_the_same_faults() {
        let run = |seed| {
            let faults = Faults {
                write_short: 0.3,
                write_eio: 0.1,
                sync_eio: 0.1,
                dir_sync_eio: 0.1,
                enospc: 0.1,
                sync_slow: 0.3,
            };
            let storage = SimStorage::new(seed, faults);
            storage.create_dir_all(Path::new("/j")).unwrap();
            let file = storage
                .open(Path::new("/j/a"), OpenMode::CreateTruncate)
                .unwrap();
            for i in 0..200u64 {
                let _ = file.write_all_at(&[i as u8; 700], i * 300);
                let _ = file.sync_data();
            }
            storage.power_loss();
            (storage.trace_hash(), storage.counts())
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3).0, run(4).0);
    }

    #[test]
    fn a_lock_is_exclusive_and_dies_with_its_process() {
        let storage = SimStorage::new(1, Faults::calm());
        storage.create_dir_all(Path::new("/j")).unwrap();
        let lock = storage.try_lock(Path::new("/j/LOCK")).unwrap();
        assert!(lock.is_some());
        assert!(storage.try_lock(Path::new("/j/LOCK")).unwrap().is_none());
        storage.crash();
        let again = storage.try_lock(Path::new("/j/LOCK")).unwrap();
        assert!(again.is_some());
        drop(lock);
        assert!(storage.try_lock(Path::new("/j/LOCK")).unwrap().is_none());
    }
}

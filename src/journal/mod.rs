//! The journal: every input batch, in order, on disk before its outcomes are
//! released, so replaying it rebuilds the exact Ledger.
//!
//! Format in brief (full description in `journal/README.md`):
//! - `dir/<first_seq:020>.seg` segment files, preallocated to `segment_bytes`
//!   (real zeros in `sync` mode, for cheaper fdatasyncs; sparse in `async`
//!   mode), each starting with a 48-byte header (magic `RLJSEG`, format
//!   version, first seq, the chain's value before its first frame, header
//!   CRC).
//! - One frame per drained batch, 8-byte aligned: a 128-bit checksum
//!   (XXH3-128) of everything after it, the frame length (u32, 0 = end of
//!   data), record count, kind, first seq, durable seq (everything up to it
//!   was fdatasynced before the frame was written), the parent (the previous
//!   frame's checksum: a hash chain, so a frame dropped, repeated, moved or
//!   spliced in from another journal is caught even though its own checksum
//!   holds), and the records, each a [`Stamped`] in bincode with fixed-width
//!   little-endian integers. A clean shutdown ends with a mark frame (no
//!   records), synced. One checksum per batch rather than per record: it
//!   costs ~20-40 ns per small frame, and a torn batch was never
//!   acknowledged anyway.
//! - `dir/<last_seq:020>.snap` snapshots: a 56-byte header (magic `RLJSNAP`,
//!   version, last seq, payload length, the chain head at the last seq,
//!   payload CRC, header CRC) and the bincode of the whole [`crate::Ledger`].
//!
//! - `dir/LOCK`: an empty file whose exclusive advisory lock (`flock`) marks
//!   the one party allowed to modify the directory (see below).
//!
//! Recovery ([`recover`]) = newest valid snapshot + records after it. Bad
//! bytes beyond the durable point (the newest of the last fdatasync, the
//! newest snapshot and the clean-shutdown mark) are a torn tail and are
//! zeroed with a warning; bad bytes at or before it are corruption and stop
//! recovery without touching the disk.
//!
//! One writer per directory: whatever may modify it holds the lock on
//! `dir/LOCK` ([`lock_dir`] → [`DirLock`]). [`recover`] takes it for its own
//! duration; a [`JournalWriter`] holds it from open until dropped, and its
//! owner is the one that writes snapshots ([`write_snapshot`]) and prunes
//! ([`prune`]); those two, and [`check_meta`], take no lock themselves and
//! are for the lock holder only. A second locker gets
//! [`JournalError::Locked`] and changes nothing. The kernel releases the lock
//! when the holder exits or is killed. Readers ([`replay`], [`read_records`])
//! take no lock and never write, so they may read a live journal.
//!
//! Take the lock once to recover and then append, so no other writer can get
//! in between:
//!
//! ```no_run
//! use ringledger::journal::{lock_dir, recover_locked, JournalConfig, JournalWriter};
//! use ringledger::LedgerConfig;
//!
//! let lock = lock_dir("data/journal")?; // JournalError::Locked if in use
//! let recovered = recover_locked(&lock, LedgerConfig::default())?;
//! for warning in &recovered.warnings {
//!     eprintln!("warning: {warning}");
//! }
//! let mut ledger = recovered.ledger;
//! let mut journal = JournalWriter::open_locked(lock, JournalConfig::default())?;
//! journal.resume(recovered.chain_head)?;
//! // per drained batch: journal.commit(&batch)?; ledger.apply_batch(&batch, ..);
//! // now and then, after journal.sync()?:
//! //     write_snapshot(journal.dir(), &ledger, journal.chain_head())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
pub(crate) mod format;
mod frames;
mod lock;
mod meta;
pub(crate) mod recover;
pub(crate) mod scan;
pub(crate) mod snapshot;
mod verify;
mod writer;

use std::fmt;
use std::str::FromStr;

pub use self::error::JournalError;
pub use self::format::{ChainHead, FORMAT_VERSION, FRAME_BODY_BYTES_MAX, GENESIS};
pub use self::frames::{read_frames, RawFrame, RawFrames};
pub use self::lock::{lock_dir, lock_dir_in, DirLock, LOCK_FILE};
pub use self::meta::{
    check_meta, check_meta_in, read_meta, read_meta_in, read_scale, Meta, META_FILE,
};
pub use self::recover::{
    read_records, recover, recover_locked, replay, replay_with_progress, Progress, Records,
    Recovered, Replay,
};
pub use self::snapshot::{prune, prune_in, retain, retain_in, write_snapshot, write_snapshot_in};
pub use self::verify::{verify, Verified};
pub use self::writer::{JournalWriter, ASYNC_SYNC_INTERVAL, SEGMENT_BYTES_MIN};
#[cfg(feature = "nats")]
pub(crate) use self::{scan::decode_lone_frame, snapshot::check_snapshot};

#[cfg(doc)]
use crate::request::Stamped;

/// When a batch's outcomes may be released (see DESIGN.md, "Durability modes").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// No journal: pure core speed, nothing survives a restart.
    None,
    /// Bytes written to the OS page cache: survives a process crash.
    #[default]
    Async,
    /// fdatasync per batch (group commit): survives power loss.
    Sync,
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Durability::None),
            "async" => Ok(Durability::Async),
            "sync" => Ok(Durability::Sync),
            other => Err(format!(
                "unknown durability mode {other:?}: expected one of none, async, sync"
            )),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Durability::None => "none",
            Durability::Async => "async",
            Durability::Sync => "sync",
        })
    }
}

/// How the journal is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// A segment is preallocated to this size and rolled when the next frame
    /// does not fit (a frame larger than a segment gets a segment to itself).
    pub segment_bytes: u64,
    pub durability: Durability,
}

/// 64 MiB: about a million typical records per segment.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            durability: Durability::Async,
        }
    }
}

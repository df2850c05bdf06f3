//! Snapshots: the whole Ledger at a seq, so recovery replays only the tail.
//! Written to a temp file, fsynced, renamed and the directory fsynced, so a
//! `.snap` file either is complete or does not exist.

use std::io;
use std::path::{Path, PathBuf};

use super::error::JournalError;
use super::format::{
    check_magic_version, parse_snapshot_header, snapshot_header, ChainHead, HeaderError, BINCODE,
    SNAPSHOT_HEADER_BYTES, SNAPSHOT_MAGIC,
};
use super::scan::{list_numbered, list_segments};
use crate::ledger::{Ledger, LedgerConfig};
use crate::storage::{OpenMode, OsStorage, Storage, StorageFile};

pub(crate) fn snapshot_name(last_seq: u64) -> String {
    format!("{last_seq:020}.snap")
}

/// Writes `ledger` as `<dir>/<last_seq:020>.snap` and returns its path.
///
/// Call [`super::JournalWriter::sync`] first: a snapshot that is durable while
/// the journal records it covers are still in the page cache is still
/// correct (recovery starts from it), but the journal then has a hole that
/// only this snapshot covers.
///
/// `head` is the journal's chain at the Ledger's last seq
/// ([`super::JournalWriter::chain_head`] after that sync): recovery from the
/// snapshot checks that the journal after it continues that chain, and
/// `verify` that the journal before it leads there. A head at another seq
/// is refused (`InvalidInput`), and nothing is written.
///
/// Takes no lock: call it only while holding `dir`'s lock, i.e. as the owner
/// of the directory's [`super::JournalWriter`] (pass [`super::JournalWriter::dir`])
/// or of a [`super::DirLock`]. A snapshot written beside another process's
/// live journal would become that journal's recovery starting point.
pub fn write_snapshot(
    dir: impl AsRef<Path>,
    ledger: &Ledger,
    head: ChainHead,
) -> io::Result<PathBuf> {
    write_snapshot_in(&OsStorage, dir, ledger, head)
}

/// [`write_snapshot`] on `storage`.
pub fn write_snapshot_in<S: Storage>(
    storage: &S,
    dir: impl AsRef<Path>,
    ledger: &Ledger,
    head: ChainHead,
) -> io::Result<PathBuf> {
    let dir = dir.as_ref();
    if head.seq != ledger.last_seq() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the chain head given is at seq {}, the ledger at seq {}: a snapshot records the chain at its own seq",
                head.seq,
                ledger.last_seq()
            ),
        ));
    }
    storage.create_dir_all(dir)?;
    let payload = bincode::encode_to_vec(ledger, BINCODE).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot encode the ledger: {e}"),
        )
    })?;
    let header = snapshot_header(head, &payload);
    let name = snapshot_name(ledger.last_seq());
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let file = storage.open(&tmp, OpenMode::CreateTruncate)?;
    file.write_all_at(&header, 0)?;
    file.write_all_at(&payload, header.len() as u64)?;
    file.sync_all()?;
    drop(file);
    storage.rename(&tmp, &path)?;
    storage.sync_dir(dir)?;
    Ok(path)
}

/// The snapshots of `dir` by seq, oldest first. Every file named like a
/// snapshot must start like one (magic, version, a whole header): a stray
/// file is an error naming it, whatever its number, never skipped silently.
/// (A real snapshot whose checksums fail is still listed: recovery passes
/// over it with a warning and falls back to an older one.)
pub(crate) fn list_snapshots<S: Storage>(
    storage: &S,
    dir: &Path,
) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let snapshots = list_numbered(storage, dir, ".snap")?;
    for (_, path) in &snapshots {
        let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
        let filled = storage
            .open(path, OpenMode::Read)
            .and_then(|file| read_up_to(&file, &mut header))
            .map_err(|e| JournalError::io(path, "read snapshot", e))?;
        let header = &header[..filled];
        check_magic_version(header, SNAPSHOT_MAGIC, SNAPSHOT_HEADER_BYTES)
            .map_err(|e| JournalError::header(path, e))?;
    }
    Ok(snapshots)
}

/// The seq of the newest snapshot in `dir` (0: none). A snapshot is written
/// only once the journal is synced through its seq, so this is a lower bound
/// of the durable point, whether or not the snapshot itself is intact.
pub(crate) fn snapshot_floor<S: Storage>(storage: &S, dir: &Path) -> Result<u64, JournalError> {
    Ok(list_snapshots(storage, dir)?
        .last()
        .map_or(0, |(seq, _)| *seq))
}

/// Reads from the start of `file` until `buf` is full or the file ends;
/// returns how much was read.
pub(crate) fn read_up_to<F: StorageFile>(file: &F, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Why a snapshot file was passed over; fatal kinds are returned as errors.
pub(crate) enum Rejected {
    /// The byte offset of the bad field or region, and what is wrong there.
    Skip(u64, String),
    Fatal(JournalError),
}

impl Rejected {
    /// As an error naming the snapshot and offset, for callers that cannot
    /// pass over a snapshot (`verify`).
    pub fn into_error(self, path: &Path) -> JournalError {
        match self {
            Rejected::Skip(offset, reason) => JournalError::Corrupt {
                file: path.to_path_buf(),
                offset,
                reason: format!("snapshot: {reason}"),
            },
            Rejected::Fatal(e) => e,
        }
    }
}

/// Reads and fully checks one snapshot: header, payload CRC, decode, seq
/// agreement and the Ledger's own invariants. Returns the Ledger and the
/// journal's chain head it records.
pub(crate) fn load<S: Storage>(
    storage: &S,
    path: &Path,
    name_seq: u64,
) -> Result<(Ledger, ChainHead), Rejected> {
    let bytes = storage
        .read(path)
        .map_err(|e| Rejected::Fatal(JournalError::io(path, "read snapshot", e)))?;
    decode(path, &bytes, name_seq)
}

/// [`load`] once the file is read: `path` only names it in errors.
fn decode(path: &Path, bytes: &[u8], name_seq: u64) -> Result<(Ledger, ChainHead), Rejected> {
    let skip = |offset: usize, reason: String| Rejected::Skip(offset as u64, reason);
    let header = match parse_snapshot_header(bytes) {
        Ok(h) => h,
        Err(e @ (HeaderError::Magic(_) | HeaderError::Version(_))) => {
            return Err(Rejected::Fatal(JournalError::header(path, e)))
        }
        Err(HeaderError::Short(len)) => return Err(skip(0, format!("only {len} bytes long"))),
        Err(HeaderError::Crc) => return Err(skip(0, "header checksum mismatch".into())),
        Err(HeaderError::Reserved) => {
            return Err(skip(12, "a reserved header field is not zero".into()))
        }
    };
    let at = SNAPSHOT_HEADER_BYTES;
    let payload = &bytes[at..];
    let last_seq = header.head.seq;
    if last_seq != name_seq {
        return Err(skip(
            16,
            format!("header says seq {last_seq}, name says {name_seq}"),
        ));
    }
    if header.payload_bytes != payload.len() as u64 {
        return Err(skip(
            24,
            format!(
                "payload is {} bytes, header says {}",
                payload.len(),
                header.payload_bytes
            ),
        ));
    }
    if crc32c::crc32c(payload) != header.payload_crc {
        return Err(skip(at, "payload checksum mismatch".into()));
    }
    let (ledger, used) =
        decode_ledger(payload).map_err(|e| skip(at, format!("payload does not decode: {e}")))?;
    if used != payload.len() {
        return Err(skip(
            at + used,
            format!(
                "{} unexplained bytes after the ledger",
                payload.len() - used
            ),
        ));
    }
    if ledger.last_seq() != last_seq {
        return Err(skip(
            at,
            format!(
                "ledger inside is at seq {}, header says {last_seq}",
                ledger.last_seq()
            ),
        ));
    }
    ledger
        .check_invariants()
        .map_err(|e| skip(at, format!("ledger inside breaks an invariant: {e}")))?;
    Ok((ledger, header.head))
}

/// Bytes of memory a snapshot may make the decoder reserve ahead of reading,
/// per payload byte. bincode reserves room for a container's claimed length
/// before reading its entries, so a damaged (or forged) length with a good
/// checksum would otherwise reserve anything, up to a capacity-overflow
/// panic or an aborting allocation. Every entry of every container in a
/// Ledger takes at least one payload byte (most take 8 or more) and none
/// more than about 100 bytes of memory (a book, a session), so a real
/// snapshot stays far below this, containers nested in containers included.
const RESERVED_BYTES_PER_PAYLOAD_BYTE: usize = 256;

/// Decodes a Ledger, refusing (bincode's `LimitExceeded`) any container
/// whose reservation would pass [`RESERVED_BYTES_PER_PAYLOAD_BYTE`] times
/// the payload. bincode's limit is a const: the smallest of a few powers of
/// 16 that covers the bound is used (at most 16 times looser).
fn decode_ledger(payload: &[u8]) -> Result<(Ledger, usize), bincode::error::DecodeError> {
    let bound = payload
        .len()
        .saturating_mul(RESERVED_BYTES_PER_PAYLOAD_BYTE)
        .max(1 << 20);
    macro_rules! within {
        ($($shift:literal)*) => {
            $(if bound <= 1usize << $shift {
                return bincode::decode_from_slice(payload, BINCODE.with_limit::<{ 1usize << $shift }>());
            })*
        };
    }
    within!(20 24 28 32 36 40 44 48 52 56 60);
    bincode::decode_from_slice(payload, BINCODE.with_limit::<{ usize::MAX }>())
}

/// A snapshot's bytes from elsewhere (a replication bootstrap fetches them
/// from JetStream's object store; the `snapshot` fuzz target makes them up),
/// checked exactly as recovery checks a snapshot file named for `name_seq`:
/// the Ledger and the chain head at its seq, or why they cannot be trusted.
pub(crate) fn check_snapshot(bytes: &[u8], name_seq: u64) -> Result<(Ledger, ChainHead), String> {
    decode(Path::new(&snapshot_name(name_seq)), bytes, name_seq).map_err(
        |rejected| match rejected {
            Rejected::Skip(at, why) => format!("at byte {at}: {why}"),
            Rejected::Fatal(e) => e.to_string(),
        },
    )
}

/// The snapshot recovery starts from: its Ledger, the chain head it
/// records, and its file (None: no snapshot, a fresh Ledger).
pub(crate) type Start = (Ledger, ChainHead, Option<PathBuf>);

/// The newest snapshot that passes every check, or a fresh Ledger. Each
/// snapshot passed over adds a warning naming it and why.
pub(crate) fn load_newest<S: Storage>(
    storage: &S,
    dir: &Path,
    config: LedgerConfig,
    warnings: &mut Vec<String>,
) -> Result<Start, JournalError> {
    for (seq, path) in list_snapshots(storage, dir)?.into_iter().rev() {
        match load(storage, &path, seq) {
            Ok((ledger, head)) => {
                if ledger.config() != config {
                    warnings.push(format!(
                        "snapshot {} was taken with {:?}; it keeps that configuration, not the requested {:?}",
                        path.display(),
                        ledger.config(),
                        config
                    ));
                }
                return Ok((ledger, head, Some(path)));
            }
            Err(Rejected::Skip(offset, why)) => warnings.push(format!(
                "snapshot {} skipped: {why} (at byte offset {offset}); falling back to an older snapshot or the full journal",
                path.display()
            )),
            Err(Rejected::Fatal(e)) => return Err(e),
        }
    }
    Ok((Ledger::new(config), ChainHead::GENESIS, None))
}

/// Removes journal segments whose every record is at or below `upto_seq`,
/// once a valid snapshot at or above `upto_seq` is confirmed on disk. The
/// last segment is always kept (the writer appends to it). Returns the
/// removed paths.
///
/// Recovery falls back to an older snapshot if the newest is damaged; that
/// fallback needs the segments after the older one, so prune to the
/// second-newest snapshot's seq if you want that safety net.
///
/// Takes no lock: call it only while holding `dir`'s lock (as the owner of
/// its [`super::JournalWriter`] or of a [`super::DirLock`]).
pub fn prune(dir: impl AsRef<Path>, upto_seq: u64) -> Result<Vec<PathBuf>, JournalError> {
    prune_in(&OsStorage, dir, upto_seq)
}

/// [`prune`] on `storage`.
pub fn prune_in<S: Storage>(
    storage: &S,
    dir: impl AsRef<Path>,
    upto_seq: u64,
) -> Result<Vec<PathBuf>, JournalError> {
    let dir = dir.as_ref();
    let covered = list_numbered(storage, dir, ".snap")?
        .into_iter()
        .rev()
        .filter(|(seq, _)| *seq >= upto_seq)
        .any(|(seq, path)| load(storage, &path, seq).is_ok());
    if !covered {
        return Err(JournalError::Refused {
            path: dir.to_path_buf(),
            reason: format!(
                "no valid snapshot at seq {upto_seq} or later; refusing to prune journal segments recovery would need. \
                 Write a snapshot first"
            ),
        });
    }
    let segments = list_segments(storage, dir)?;
    let mut removed = Vec::new();
    for pair in segments.windows(2) {
        if pair[1].first_seq <= upto_seq.saturating_add(1) {
            storage
                .remove_file(&pair[0].path)
                .map_err(|e| JournalError::io(&pair[0].path, "remove segment", e))?;
            removed.push(pair[0].path.clone());
        }
    }
    if !removed.is_empty() {
        storage
            .sync_dir(dir)
            .map_err(|e| JournalError::io(dir, "sync the journal directory", e))?;
    }
    Ok(removed)
}

/// Retention after a snapshot: keeps the newest `snapshots_kept` snapshots,
/// removes the older ones, and prunes the segments the oldest kept snapshot
/// covers ([`prune`]), so recovery can still fall back from a damaged newest
/// snapshot to the previous one and the journal after it. 0 keeps
/// everything. Returns the removed paths.
///
/// Takes no lock: call it only while holding `dir`'s lock (the engine does,
/// after each snapshot).
pub fn retain(dir: impl AsRef<Path>, snapshots_kept: usize) -> Result<Vec<PathBuf>, JournalError> {
    retain_in(&OsStorage, dir, snapshots_kept)
}

/// [`retain`] on `storage`.
pub fn retain_in<S: Storage>(
    storage: &S,
    dir: impl AsRef<Path>,
    snapshots_kept: usize,
) -> Result<Vec<PathBuf>, JournalError> {
    let dir = dir.as_ref();
    if snapshots_kept == 0 {
        return Ok(Vec::new());
    }
    let snapshots = list_snapshots(storage, dir)?;
    let keep_from = snapshots.len().saturating_sub(snapshots_kept);
    let Some(&(oldest_kept, _)) = snapshots.get(keep_from) else {
        return Ok(Vec::new());
    };
    let mut removed = prune_in(storage, dir, oldest_kept)?;
    for (_, path) in &snapshots[..keep_from] {
        storage
            .remove_file(path)
            .map_err(|e| JournalError::io(path, "remove snapshot", e))?;
        removed.push(path.clone());
    }
    if keep_from > 0 {
        storage
            .sync_dir(dir)
            .map_err(|e| JournalError::io(dir, "sync the journal directory", e))?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload whose checksum holds but whose first container (the
    /// accounts' direct table, right after the 20-byte config) claims
    /// `entries`: found by the `snapshot` fuzz target, where bincode
    /// reserved room for the claimed length before reading a single entry
    /// (a panic past `isize::MAX` bytes, an aborting allocation below).
    fn claiming(entries: u64) -> Vec<u8> {
        let mut payload = bincode::encode_to_vec(Ledger::default(), BINCODE).unwrap();
        payload[20..28].copy_from_slice(&entries.to_le_bytes());
        let mut file = snapshot_header(ChainHead::GENESIS, &payload).to_vec();
        file.extend_from_slice(&payload);
        file
    }

    #[test]
    fn a_snapshot_claiming_a_huge_container_is_refused_without_reserving_it() {
        for entries in [1 << 61, 1 << 40, 1 << 20] {
            let refused = check_snapshot(&claiming(entries), 0)
                .map(|_| ())
                .unwrap_err();
            assert!(refused.contains("does not decode"), "{entries}: {refused}");
        }
    }
}

//! `verify`: an audit of a journal directory that writes nothing. Every
//! frame is checked (checksum, chain, seqs, records), the chain across
//! segments, and every snapshot against a replay up to its seq: the same
//! digest and the same chain head. An auditor compares the head it prints
//! with one published earlier: equal heads mean the same records in the
//! same order up to there.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use super::error::JournalError;
use super::format::{ChainHead, Frame};
use super::scan::{decode_frame, list_segments, require_dir, Scanner};
use super::snapshot::{list_snapshots, load, snapshot_floor};
use crate::ledger::{Ledger, LedgerConfig};
use crate::request::Stamped;
use crate::storage::OsStorage;

/// What [`verify`] found in a directory where everything checks out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// Records in the journal's segments.
    pub records: u64,
    pub segments: usize,
    /// The first seq the segments hold (None: no segments). Above 1 when
    /// segments a snapshot covers were pruned; the replay then starts from
    /// the oldest snapshot that covers them.
    pub first_seq: Option<u64>,
    /// Snapshots checked against the replay (digest and chain head).
    pub snapshots_checked: usize,
    /// Snapshots older than the journal's first seq: each checked on its own
    /// (checksums, decode, invariants) but not against a replay, since the
    /// records before them were pruned.
    pub snapshots_before_journal: usize,
    /// The chain's head: the journal's last record and the hash an auditor
    /// compares.
    pub head: ChainHead,
    /// The replayed Ledger's digest at `head.seq`.
    pub digest: u64,
}

/// Checks `dir` end to end without changing it (files are only opened for
/// reading, and no lock is taken: `LOCK` is not even created), so it works
/// on a read-only copy. Replays under `config`, the limits the journal was
/// written with (its meta file). The first problem found is the error, with
/// its file and byte offset: damage, a broken chain, a sequence gap, a
/// snapshot that disagrees with the replay, or a torn tail
/// ([`JournalError::TornTail`]: harmless to recovery, which zeroes it, but
/// not a journal an auditor should sign off).
pub fn verify(dir: impl AsRef<Path>, config: LedgerConfig) -> Result<Verified, JournalError> {
    let dir = dir.as_ref();
    let storage = OsStorage;
    require_dir(&storage, dir)?;
    let segments = list_segments(&storage, dir)?;
    let segment_count = segments.len();
    let first_seq = segments.first().map(|s| s.first_seq);
    let mut snapshots: VecDeque<(u64, PathBuf)> = list_snapshots(&storage, dir)?.into();

    // Where the replay starts: seq 0, or the oldest snapshot that covers
    // what pruning removed.
    let mut ledger = Ledger::new(config);
    let mut snapshots_before_journal = 0;
    if let Some(first) = first_seq.filter(|&first| first > 1) {
        while snapshots.front().is_some_and(|(seq, _)| *seq + 1 < first) {
            let (seq, path) = snapshots.pop_front().expect("front exists");
            load(&storage, &path, seq).map_err(|r| r.into_error(&path))?;
            snapshots_before_journal += 1;
        }
        let Some((seq, path)) = snapshots.front() else {
            return Err(JournalError::Refused {
                path: dir.to_path_buf(),
                reason: format!(
                    "the journal starts at seq {first} (pruned) and no snapshot covers the seqs before it"
                ),
            });
        };
        ledger = load(&storage, path, *seq)
            .map_err(|r| r.into_error(path))?
            .0;
    }

    let mut scanner = Scanner::new(storage, segments, 0, snapshot_floor(&storage, dir)?);
    let mut check = Checker {
        snapshots,
        checked: 0,
    };
    let mut records: Vec<Stamped> = Vec::new();
    let mut record_count = 0;
    while let Some(frame) = scanner.next_frame()? {
        records.clear();
        decode_frame(
            scanner.records(&frame),
            &frame,
            scanner.path(),
            &mut records,
        )?;
        record_count += u64::from(frame.count);
        if frame.is_mark() {
            continue;
        }
        let before = ChainHead {
            seq: frame.first_seq - 1,
            checksum: frame.parent,
        };
        check.at(before, &ledger, scanner.path(), &frame)?;
        let have = ledger.last_seq();
        if frame.last_seq() <= have {
            continue;
        }
        if frame.first_seq > have + 1 {
            return Err(JournalError::corrupt(
                scanner.path(),
                frame.offset,
                format!(
                    "records {}..={} are missing from the journal (it goes on at seq {})",
                    have + 1,
                    frame.first_seq - 1,
                    frame.first_seq
                ),
            ));
        }
        let skip = (have + 1 - frame.first_seq) as usize;
        ledger.apply_batch(&records[skip..], |_, _| {});
        let after = ChainHead {
            seq: frame.last_seq(),
            checksum: frame.checksum,
        };
        check.at(after, &ledger, scanner.path(), &frame)?;
    }
    if let Some(torn) = scanner.torn.take() {
        return Err(JournalError::TornTail {
            file: torn.path.clone(),
            offset: torn.offset as u64,
            reason: format!(
                "{} ({} bytes from there on lie beyond the durable point, seq {})",
                torn.reason,
                torn.file_bytes - torn.offset,
                torn.durable_seq
            ),
        });
    }
    if let Some((seq, path)) = check.snapshots.front() {
        return Err(JournalError::Corrupt {
            file: path.clone(),
            offset: 16,
            reason: format!(
                "snapshot at seq {seq} is beyond the journal's last seq {}: records {}..={seq} are only in the snapshot",
                scanner.head().seq,
                scanner.head().seq + 1
            ),
        });
    }
    Ok(Verified {
        records: record_count,
        segments: segment_count,
        first_seq,
        snapshots_checked: check.checked,
        snapshots_before_journal,
        head: scanner.head(),
        digest: ledger.digest(),
    })
}

/// The snapshots not yet reached by the replay, oldest first.
struct Checker {
    snapshots: VecDeque<(u64, PathBuf)>,
    checked: usize,
}

impl Checker {
    /// The replay stands at `head` with `ledger` (at or before `head.seq`),
    /// just before or after `frame` in `file`: checks the snapshots at
    /// that seq, and refuses one whose seq falls inside the frame.
    fn at(
        &mut self,
        head: ChainHead,
        ledger: &Ledger,
        file: &Path,
        frame: &Frame,
    ) -> Result<(), JournalError> {
        while let Some((seq, path)) = self.snapshots.front() {
            let (seq, path) = (*seq, path.clone());
            if seq > head.seq {
                return Ok(());
            }
            if seq < head.seq {
                return Err(JournalError::corrupt(
                    file,
                    frame.offset,
                    format!(
                        "snapshot {} is at seq {seq}, inside the frame holding seqs {}..={}: \
                         the journal has no chain value there to check it against",
                        path.display(),
                        frame.first_seq,
                        frame.last_seq()
                    ),
                ));
            }
            let (snapshot, recorded) =
                load(&OsStorage, &path, seq).map_err(|r| r.into_error(&path))?;
            if recorded != head {
                return Err(JournalError::Corrupt {
                    file: path.clone(),
                    offset: 32,
                    reason: format!(
                        "snapshot records chain head {recorded} at seq {seq}, but the journal's chain there is {head} \
                         ({} at byte offset {}): the snapshot is not of this journal, or the journal was altered",
                        file.display(),
                        frame.offset
                    ),
                });
            }
            // Only a replay that reached the snapshot's seq can vouch for its
            // state (a pruned journal's replay starts from this snapshot).
            if ledger.last_seq() == seq && snapshot.digest() != ledger.digest() {
                return Err(JournalError::Corrupt {
                    file: path.clone(),
                    offset: 56,
                    reason: format!(
                        "snapshot's Ledger has digest {:016x}, but replaying the journal to seq {seq} gives {:016x}",
                        snapshot.digest(),
                        ledger.digest()
                    ),
                });
            }
            self.snapshots.pop_front();
            self.checked += 1;
        }
        Ok(())
    }
}

//! Rebuilding the Ledger: newest valid snapshot, then every journal record
//! after it, in frames, through `Ledger::apply_batch`. Also the read-only
//! paths: `replay` for audits and timing, `read_records` for `inspect`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::error::JournalError;
use super::format::Frame;
use super::scan::{decode_frame, list_segments, Scanner, TornTail};
use super::snapshot::load_newest;
use crate::ledger::{Ledger, LedgerConfig};
use crate::request::Stamped;

/// The state recovery rebuilt and what it had to say about the files.
#[derive(Debug)]
pub struct Recovered {
    pub ledger: Ledger,
    /// The seq of the snapshot recovery started from (0: none, fresh Ledger).
    pub snapshot_seq: u64,
    /// Journal records applied on top of the snapshot.
    pub records_replayed: u64,
    /// Skipped snapshots and truncated torn tails, one line each.
    pub warnings: Vec<String>,
}

/// A read-only rebuild with its cost, for the `replay` command.
#[derive(Debug)]
pub struct Replay {
    pub recovered: Recovered,
    /// Wall time of snapshot load plus journal scan, decode and apply.
    pub elapsed: Duration,
    /// Bytes of journal segments read.
    pub journal_bytes: u64,
}

impl Replay {
    pub fn records_per_sec(&self) -> f64 {
        self.recovered.records_replayed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Rebuilds the Ledger from `dir` and repairs a torn tail so a writer can
/// append after the last good record.
///
/// Torn tail: bad bytes at the very end of the last segment with nothing
/// valid after them. That batch's outcomes were never released, so its bytes
/// are zeroed (the file keeps its preallocated length) and a warning names
/// the file and offset. Anything else bad stops recovery with
/// [`JournalError::Corrupt`] before a single byte is changed.
pub fn recover(dir: impl AsRef<Path>, config: LedgerConfig) -> Result<Recovered, JournalError> {
    let (mut recovered, torn, _) = rebuild(dir.as_ref(), config, true)?;
    if let Some(torn) = torn {
        zero_tail(&torn)?;
        recovered
            .warnings
            .push(format!("{}; zeroed them", torn.describe()));
    }
    Ok(recovered)
}

/// Rebuilds the Ledger like [`recover`] but never writes: a torn tail is only
/// reported. `from_snapshot: false` replays the whole journal from seq 1.
pub fn replay(
    dir: impl AsRef<Path>,
    config: LedgerConfig,
    from_snapshot: bool,
) -> Result<Replay, JournalError> {
    let start = Instant::now();
    let (mut recovered, torn, journal_bytes) = rebuild(dir.as_ref(), config, from_snapshot)?;
    let elapsed = start.elapsed();
    if let Some(torn) = torn {
        recovered.warnings.push(format!(
            "{}; left in place (replay is read-only)",
            torn.describe()
        ));
    }
    Ok(Replay {
        recovered,
        elapsed,
        journal_bytes,
    })
}

/// Reads, checks and applies frame by frame on the calling thread.
///
/// Reading + CRC + decode (~70-85 ns per record in `benches/journal.rs`) and
/// applying (~90 ns) cost about the same, so a reader thread could in theory
/// halve a rebuild on two idle cores. Tried (commit cb47c7b on branch
/// `journal`): on this shared 2-core machine (load 8-11) the two were within
/// noise of each other (this loop 5.1-5.7, the reader thread 5.2-6.0 M
/// records/s in alternating runs), so the simpler loop stays until a quiet
/// machine shows otherwise.
fn rebuild(
    dir: &Path,
    config: LedgerConfig,
    from_snapshot: bool,
) -> Result<(Recovered, Option<TornTail>, u64), JournalError> {
    let mut warnings = Vec::new();
    let (mut ledger, snapshot_seq) = if from_snapshot {
        load_newest(dir, config, &mut warnings)?
    } else {
        (Ledger::new(config), 0)
    };
    let mut scanner = Scanner::new(list_segments(dir)?, snapshot_seq);
    let mut batch: Vec<Stamped> = Vec::new();
    let mut records_replayed = 0u64;
    while let Some(frame) = scanner.next_frame()? {
        let have = ledger.last_seq();
        if frame.last_seq() <= have {
            continue;
        }
        let skip = have.saturating_sub(frame.first_seq - 1) as usize;
        if frame.first_seq + skip as u64 != have + 1 {
            return Err(gap(scanner.path(), &frame, have, snapshot_seq));
        }
        batch.clear();
        decode_frame(scanner.records(&frame), &frame, scanner.path(), &mut batch)?;
        ledger.apply_batch(&batch[skip..], |_, _| {});
        records_replayed += (batch.len() - skip) as u64;
    }
    let torn = scanner.torn.take();
    Ok((
        Recovered {
            ledger,
            snapshot_seq,
            records_replayed,
            warnings,
        },
        torn,
        scanner.bytes_read,
    ))
}

fn gap(path: &Path, frame: &Frame, have: u64, snapshot_seq: u64) -> JournalError {
    JournalError::corrupt(
        path,
        frame.offset,
        format!(
            "records {}..{} are missing: the state is at seq {have} (snapshot {snapshot_seq}) but the journal continues at seq {}; \
             were segments pruned while the snapshot covering them is now damaged or gone?",
            have + 1,
            frame.first_seq - 1,
            frame.first_seq
        ),
    )
}

/// Zeroes the torn bytes in place, keeping the file's preallocated length, so
/// the next writer finds end-of-data exactly where the good records stop.
fn zero_tail(torn: &TornTail) -> Result<(), JournalError> {
    let fail = |e| JournalError::io(&torn.path, "zero the torn tail of", e);
    let file = OpenOptions::new()
        .write(true)
        .open(&torn.path)
        .map_err(fail)?;
    let zeros = vec![0u8; (torn.file_bytes - torn.offset).min(1 << 20)];
    let mut at = torn.offset;
    while at < torn.file_bytes {
        let n = zeros.len().min(torn.file_bytes - at);
        file.write_all_at(&zeros[..n], at as u64).map_err(fail)?;
        at += n;
    }
    file.sync_data().map_err(fail)
}

/// Streams journal records with seq ≥ `from_seq`, for `inspect` and audits.
/// Read-only. Ends quietly at a torn tail (see [`Records::torn_tail`]);
/// yields one `Err` and then stops at corruption.
pub fn read_records(dir: impl AsRef<Path>, from_seq: u64) -> Result<Records, JournalError> {
    Ok(Records {
        scanner: Scanner::new(list_segments(dir.as_ref())?, from_seq.saturating_sub(1)),
        from_seq,
        batch: Vec::new(),
        next: 0,
        done: false,
    })
}

/// The iterator [`read_records`] returns.
pub struct Records {
    scanner: Scanner,
    from_seq: u64,
    batch: Vec<Stamped>,
    next: usize,
    done: bool,
}

impl Records {
    /// After the iterator ends: where the journal's torn tail starts, if any.
    pub fn torn_tail(&self) -> Option<String> {
        self.scanner.torn.as_ref().map(TornTail::describe)
    }
}

impl Iterator for Records {
    type Item = Result<Stamped, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if let Some(record) = self.batch.get(self.next) {
                self.next += 1;
                if record.stamp.seq >= self.from_seq {
                    return Some(Ok(*record));
                }
                continue;
            }
            let frame = match self.scanner.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            self.next = 0;
            self.batch.clear();
            if frame.last_seq() < self.from_seq {
                continue;
            }
            if let Err(e) = decode_frame(
                self.scanner.records(&frame),
                &frame,
                self.scanner.path(),
                &mut self.batch,
            ) {
                self.done = true;
                return Some(Err(e));
            }
        }
        self.done = true;
        None
    }
}

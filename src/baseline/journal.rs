//! The baselines' write-ahead log: one fixed-size binary record per accepted
//! mutating operation, appended in one total order under one mutex, written
//! to the file before the operation answers. It exists so the benchmark can
//! compare the engine and the baselines at equal durability.
//!
//! `Sync` durability uses group commit: whoever finds no fsync running
//! becomes the leader, syncs everything written so far and wakes everyone
//! whose record that covered; the others wait. The fsync runs on a second
//! handle to the file without the append mutex, so appends go on meanwhile.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use parking_lot::{Condvar, Mutex};

use crate::money::Units;
use crate::request::{InstrumentId, Symbol};

/// Bytes in one record.
pub const RECORD_LEN: usize = 48;

/// When an operation's record must be on its way to disk before it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Written to the OS page cache: survives a process crash.
    Async,
    /// Also `fdatasync`ed (group commit): survives power loss.
    Sync,
}

/// What an accepted operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    OpenAccount = 1,
    Deposit = 2,
    Withdraw = 3,
    Transfer = 4,
    ListInstrument = 5,
    Reserve = 6,
    Confirm = 7,
    Cancel = 8,
}

impl Op {
    fn from_u8(code: u8) -> Option<Op> {
        Some(match code {
            1 => Op::OpenAccount,
            2 => Op::Deposit,
            3 => Op::Withdraw,
            4 => Op::Transfer,
            5 => Op::ListInstrument,
            6 => Op::Reserve,
            7 => Op::Confirm,
            8 => Op::Cancel,
            _ => return None,
        })
    }
}

/// One journal record. Little-endian layout, 48 bytes:
/// `seq u64 | op u8 | partial u8 | 0u16 | instrument u32 | a u64 | b u64 | amount i64 | qty u64`.
///
/// | op | a | b | amount | qty | instrument |
/// |---|---|---|---|---|---|
/// | open_account | account | | | | |
/// | deposit, withdraw | account | | amount | | |
/// | transfer | from | to | amount | | |
/// | list_instrument | symbol bytes 0..8 | symbol bytes 8..16 | price | supply | new id |
/// | reserve | reservation | account | cost | shares taken | instrument |
/// | confirm, cancel | reservation | | | | |
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// Position in the journal's total order, from 1; set when appended.
    pub seq: u64,
    pub op: Op,
    pub partial: bool,
    pub instrument: u32,
    pub a: u64,
    pub b: u64,
    pub amount: Units,
    pub qty: u64,
}

impl Record {
    pub fn new(op: Op, a: u64, b: u64, amount: Units) -> Record {
        Record {
            seq: 0,
            op,
            partial: false,
            instrument: 0,
            a,
            b,
            amount,
            qty: 0,
        }
    }

    /// A listing's record: the symbol's 16 bytes travel in `a` and `b`.
    pub fn listing(id: InstrumentId, symbol: Symbol, supply: u64, price: Units) -> Record {
        let bytes = symbol.bytes();
        let mut low = [0u8; 8];
        let mut high = [0u8; 8];
        low.copy_from_slice(&bytes[..8]);
        high.copy_from_slice(&bytes[8..]);
        Record {
            instrument: id.0,
            qty: supply,
            ..Record::new(
                Op::ListInstrument,
                u64::from_le_bytes(low),
                u64::from_le_bytes(high),
                price,
            )
        }
    }

    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut bytes = [0u8; RECORD_LEN];
        bytes[0..8].copy_from_slice(&self.seq.to_le_bytes());
        bytes[8] = self.op as u8;
        bytes[9] = u8::from(self.partial);
        bytes[12..16].copy_from_slice(&self.instrument.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.a.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.b.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.amount.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.qty.to_le_bytes());
        bytes
    }

    pub fn decode(bytes: &[u8; RECORD_LEN]) -> Option<Record> {
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let mut instrument = [0u8; 4];
        instrument.copy_from_slice(&bytes[12..16]);
        Some(Record {
            seq: u64_at(0),
            op: Op::from_u8(bytes[8])?,
            partial: bytes[9] != 0,
            instrument: u32::from_le_bytes(instrument),
            a: u64_at(16),
            b: u64_at(24),
            amount: u64_at(32) as i64,
            qty: u64_at(40),
        })
    }
}

struct Appender {
    file: File,
    /// Sequence of the last record appended (written to the page cache).
    written_seq: u64,
    /// Sequence of the last record known durable (`Sync` only).
    synced_seq: u64,
    /// Whether a leader is running an fsync right now.
    syncing: bool,
}

/// An append-only journal file shared by every thread of one bank.
///
/// ```
/// use ringledger::baseline::{Bank, BankConfig, BaselineJournal, Durability, MutexBank, Op};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("bank.journal");
/// let journal = BaselineJournal::create(&path, Durability::Sync).unwrap();
/// let bank = MutexBank::new(BankConfig::with_accounts(16), Some(journal));
/// bank.open_funded(0..2, 500).unwrap();
/// assert!(bank.withdraw(0, 501).is_err()); // refused: not journaled
/// let ops: Vec<Op> = BaselineJournal::read(&path).unwrap().iter().map(|r| r.op).collect();
/// assert_eq!(ops, [Op::OpenAccount, Op::Deposit, Op::OpenAccount, Op::Deposit]);
/// ```
pub struct BaselineJournal {
    appender: Mutex<Appender>,
    synced: Condvar,
    /// A second handle for the leader's fsync, used without the mutex.
    sync_file: File,
    durability: Durability,
}

impl BaselineJournal {
    /// Creates (or truncates) the journal file at `path`.
    pub fn create(path: &Path, durability: Durability) -> io::Result<BaselineJournal> {
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        let sync_file = file.try_clone()?;
        Ok(BaselineJournal {
            appender: Mutex::new(Appender {
                file,
                written_seq: 0,
                synced_seq: 0,
                syncing: false,
            }),
            synced: Condvar::new(),
            sync_file,
            durability,
        })
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Records appended so far.
    pub fn records_written(&self) -> u64 {
        self.appender.lock().written_seq
    }

    /// Appends `record` at the end of the total order and writes it to the
    /// file; returns its sequence for [`BaselineJournal::make_durable`].
    /// A journal that cannot be written stops the bank with a panic: an
    /// acknowledged operation must never be missing from it.
    pub(super) fn append(&self, mut record: Record) -> u64 {
        let mut appender = self.appender.lock();
        record.seq = appender.written_seq + 1;
        if let Err(error) = appender.file.write_all(&record.encode()) {
            panic!(
                "baseline journal: writing record {} failed: {error}",
                record.seq
            );
        }
        appender.written_seq = record.seq;
        record.seq
    }

    /// Returns once record `seq` is as durable as the journal promises:
    /// at once for `Async`, after an fdatasync covering it for `Sync`.
    pub(super) fn make_durable(&self, seq: u64) {
        if self.durability == Durability::Async {
            return;
        }
        let mut appender = self.appender.lock();
        while appender.synced_seq < seq {
            if appender.syncing {
                self.synced.wait(&mut appender);
                continue;
            }
            appender.syncing = true;
            let target = appender.written_seq;
            let result =
                parking_lot::MutexGuard::unlocked(&mut appender, || self.sync_file.sync_data());
            appender.syncing = false;
            if let Err(error) = result {
                self.synced.notify_all();
                panic!("baseline journal: fdatasync up to record {target} failed: {error}");
            }
            appender.synced_seq = target;
            self.synced.notify_all();
        }
    }

    /// Reads every record of a journal file back, in file order.
    pub fn read(path: &Path) -> io::Result<Vec<Record>> {
        let mut bytes = Vec::new();
        File::open(path)?.read_to_end(&mut bytes)?;
        if bytes.len() % RECORD_LEN != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: {} bytes is not a whole number of {RECORD_LEN}-byte records",
                    path.display(),
                    bytes.len()
                ),
            ));
        }
        bytes
            .chunks_exact(RECORD_LEN)
            .enumerate()
            .map(|(i, chunk)| {
                let chunk: &[u8; RECORD_LEN] = chunk.try_into().expect("chunks are RECORD_LEN");
                Record::decode(chunk).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: record at offset {} has an unknown op code {}",
                            path.display(),
                            i * RECORD_LEN,
                            chunk[8]
                        ),
                    )
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_through_its_bytes() {
        let record = Record {
            seq: 7,
            op: Op::Reserve,
            partial: true,
            instrument: 3,
            a: 11,
            b: u64::MAX,
            amount: -5,
            qty: 42,
        };
        assert_eq!(Record::decode(&record.encode()), Some(record));
    }

    #[test]
    fn unknown_op_code_does_not_decode() {
        let mut bytes = Record::new(Op::Deposit, 1, 0, 10).encode();
        bytes[8] = 0;
        assert_eq!(Record::decode(&bytes), None);
    }
}

//! The baselines' write-ahead log: the engine's own journal (the same
//! [`JournalWriter`], the same frames of [`Stamped`] records, the same
//! durability modes) behind a leader/follower group commit on the model of
//! PostgreSQL's WAL, so the comparison measures the designs, not two
//! journals of different quality.
//!
//! How a record gets to disk:
//! 1. [`BaselineJournal::append`] (PostgreSQL's `XLogInsert`): the record
//!    takes the next sequence number and joins the queue, under one short
//!    mutex, with no I/O. The mutex bank calls it while it still holds its
//!    business locks, so the sequence order is the order the locks
//!    serialized the operations in.
//! 2. [`BaselineJournal::make_durable`] (`XLogFlush`): a caller whose record
//!    is not yet written and who finds no leader becomes the leader: it takes
//!    everything queued so far, writes it as ONE frame with
//!    [`JournalWriter::commit`] (a copy into the mapped segment for `async`;
//!    a `pwrite` and one `fdatasync` for `sync`) and wakes every follower.
//!    A caller who finds a leader at work parks until it is done and then
//!    looks again: its record may have been in that group, or it leads the
//!    next one. So one write (and one fdatasync) serves every record queued
//!    while the previous group was being written, as in the engine, whose
//!    business thread journals each drained batch as one frame.
//!
//! A write or sync that fails stops every caller with a panic: an
//! acknowledged operation must never be missing from the journal.

use std::path::{Path, PathBuf};

use parking_lot::{Condvar, Mutex};

use crate::journal::{self, Durability, JournalConfig, JournalError, JournalWriter};
use crate::request::{Request, Stamp, Stamped};

/// The queue of records appended but not yet written, and who is writing.
struct Queue {
    /// Records waiting for the next leader, in sequence order.
    pending: Vec<Stamped>,
    /// The sequence the next appended record takes.
    next_seq: u64,
    /// Every record up to this sequence is written as the durability asks.
    written_seq: u64,
    /// Whether a leader is writing a group right now.
    leading: bool,
    /// Why the journal stopped, once a write or sync failed.
    failed: Option<String>,
    /// Groups (frames) the leaders have written.
    groups_written: u64,
}

/// The writer and the leader's spare buffer; locked only by the leader.
struct Leader {
    writer: JournalWriter,
    /// Swapped with the queue's buffer, so taking a group allocates nothing.
    spare: Vec<Stamped>,
}

/// A journal directory shared by every thread of one bank.
///
/// ```
/// use ringledger::baseline::{Bank, BankConfig, BaselineJournal, MutexBank};
/// use ringledger::journal::Durability;
/// use ringledger::Request;
///
/// let dir = tempfile::tempdir().unwrap();
/// let journal = BaselineJournal::create(dir.path(), Durability::Sync).unwrap();
/// let bank = MutexBank::new(BankConfig::with_accounts(16), Some(journal));
/// bank.open_funded(0..1, 500).unwrap();
/// assert!(bank.withdraw(0, 501).is_err()); // refused: not journaled
/// drop(bank);
/// let records = BaselineJournal::read(dir.path()).unwrap();
/// assert_eq!(records[0].request, Request::OpenAccount { account: 0 });
/// assert_eq!(records[1].request, Request::Deposit { account: 0, amount: 500 });
/// assert_eq!(records.len(), 2);
/// ```
pub struct BaselineJournal {
    queue: Mutex<Queue>,
    /// Signalled whenever a leader finishes (or fails) a group.
    written: Condvar,
    leader: Mutex<Leader>,
    durability: Durability,
    dir: PathBuf,
}

impl BaselineJournal {
    /// Opens the journal in `dir` (created if missing; appended to after its
    /// last record otherwise) with the engine's default segment size.
    /// `Durability::None` is refused: a bank without a journal takes `None`.
    pub fn create(dir: &Path, durability: Durability) -> Result<BaselineJournal, JournalError> {
        if durability == Durability::None {
            return Err(JournalError::io(
                dir,
                "open a baseline journal in",
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "durability none has no journal: pass no journal to the bank instead",
                ),
            ));
        }
        let writer = JournalWriter::open(
            dir,
            JournalConfig {
                durability,
                ..JournalConfig::default()
            },
        )?;
        let next_seq = writer.next_seq().unwrap_or(1);
        Ok(BaselineJournal {
            queue: Mutex::new(Queue {
                pending: Vec::new(),
                next_seq,
                written_seq: next_seq - 1,
                leading: false,
                failed: None,
                groups_written: 0,
            }),
            written: Condvar::new(),
            leader: Mutex::new(Leader {
                writer,
                spare: Vec::new(),
            }),
            durability,
            dir: dir.to_path_buf(),
        })
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records appended so far (queued or written).
    pub fn records_appended(&self) -> u64 {
        self.queue.lock().next_seq - 1
    }

    /// Groups written so far: one frame (and, for `sync`, one fdatasync)
    /// each; fewer than the records whenever callers overlapped.
    pub fn groups_written(&self) -> u64 {
        self.queue.lock().groups_written
    }

    /// Gives `request` the next sequence number and queues it; returns the
    /// sequence for [`BaselineJournal::make_durable`]. No I/O.
    pub(super) fn append(&self, request: Request) -> u64 {
        let mut queue = self.queue.lock();
        let seq = queue.next_seq;
        queue.next_seq += 1;
        queue.pending.push(Stamped::new(
            Stamp {
                seq,
                ..Stamp::default()
            },
            request,
        ));
        seq
    }

    /// Returns once record `seq` is written as the durability asks (page
    /// cache for `async`, fdatasync'ed for `sync`), leading a group commit
    /// when nobody else is (see the module docs).
    pub(super) fn make_durable(&self, seq: u64) {
        let mut queue = self.queue.lock();
        loop {
            if let Some(why) = &queue.failed {
                panic!("baseline journal: {why}");
            }
            if queue.written_seq >= seq {
                return;
            }
            if queue.leading {
                self.written.wait(&mut queue);
                continue;
            }
            queue.leading = true;
            let last_seq = queue.next_seq - 1;
            let mut leader = self.leader.lock();
            let Leader { writer, spare } = &mut *leader;
            std::mem::swap(&mut queue.pending, spare);
            let result = parking_lot::MutexGuard::unlocked(&mut queue, || {
                let result = writer.commit(spare);
                spare.clear();
                result
            });
            drop(leader);
            queue.leading = false;
            match result {
                Ok(()) => {
                    queue.written_seq = last_seq;
                    queue.groups_written += 1;
                }
                Err(error) => {
                    queue.failed = Some(format!(
                        "writing records up to {last_seq} in {} failed: {error}",
                        self.dir.display()
                    ))
                }
            }
            self.written.notify_all();
        }
    }

    /// Reads every record of a journal directory back, in sequence order
    /// (with the engine's reader: a torn tail ends the list quietly).
    pub fn read(dir: &Path) -> Result<Vec<Stamped>, JournalError> {
        journal::read_records(dir, 1)?.collect()
    }
}

impl Drop for BaselineJournal {
    /// Writes whatever is still queued (records of operations that were
    /// never waited for), so the file holds every appended record.
    fn drop(&mut self) {
        let last_seq = self.queue.get_mut().next_seq - 1;
        if self.queue.get_mut().failed.is_none() {
            self.make_durable(last_seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_leader_writes_everything_queued_as_one_group() {
        for durability in [Durability::Async, Durability::Sync] {
            let dir = tempfile::tempdir().unwrap();
            let journal = BaselineJournal::create(dir.path(), durability).unwrap();
            for account in 0..3 {
                assert_eq!(
                    journal.append(Request::OpenAccount { account }),
                    account + 1
                );
            }
            // The first record's wait writes all three, as one frame.
            journal.make_durable(1);
            assert_eq!(journal.groups_written(), 1);
            journal.make_durable(3);
            assert_eq!(journal.groups_written(), 1, "already written: no new group");
            let records = BaselineJournal::read(dir.path()).unwrap();
            let seqs: Vec<u64> = records.iter().map(|r| r.stamp.seq).collect();
            assert_eq!(seqs, [1, 2, 3]);
            assert_eq!(records[2].request, Request::OpenAccount { account: 2 });
        }
    }

    #[test]
    fn records_never_waited_for_are_written_when_the_journal_closes() {
        let dir = tempfile::tempdir().unwrap();
        let journal = BaselineJournal::create(dir.path(), Durability::Async).unwrap();
        journal.append(Request::OpenAccount { account: 7 });
        drop(journal);
        let records = BaselineJournal::read(dir.path()).unwrap();
        assert_eq!(records.len(), 1);
    }

    #[test]
    fn a_reopened_journal_continues_its_numbering() {
        let dir = tempfile::tempdir().unwrap();
        let journal = BaselineJournal::create(dir.path(), Durability::Sync).unwrap();
        journal.append(Request::OpenAccount { account: 1 });
        drop(journal);
        let journal = BaselineJournal::create(dir.path(), Durability::Sync).unwrap();
        assert_eq!(journal.append(Request::OpenAccount { account: 2 }), 2);
    }

    #[test]
    fn durability_none_has_no_journal() {
        let dir = tempfile::tempdir().unwrap();
        let err = BaselineJournal::create(dir.path(), Durability::None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("durability none"), "{err}");
    }
}

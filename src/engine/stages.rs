//! What follows the business thread, as in the Disruptor's consumer graph:
//! each applied group (stamped inputs, the outcomes they earned, the rebate
//! credits applied so far) goes down a chain of stages, each with one job.
//! A durability mode is a composition of stages, not a flag tested in the
//! business loop:
//!
//! | durability            | composition                                              |
//! |-----------------------|----------------------------------------------------------|
//! | `none`                | [`Answer`]                                               |
//! | `async`, `sync`       | [`Journal`] (inline) → [`Answer`]                        |
//! | same, flusher thread  | [`Flushed`]: the flusher thread journals, then answers   |
//! | `replicated` (`nats`) | [`Journal`] (inline) → replication thread → answering   |
//!
//! Whoever answers also counts the rebate credits as settled (barriers wait
//! for that): a credit is settled exactly when an acknowledged request would
//! be, in every mode.
//!
//! A group may hold outcomes and no inputs: requests answered without being
//! applied (shed while the replication backlog is full, see
//! [`Stage::shedding`]). Such outcomes still go down the chain, with no
//! frame, so that each client gets its answers in the order it sent.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::flusher::Flusher;
use super::outbox::Responses;
use super::Shared;
use crate::journal::{ChainHead, Durability, JournalWriter};
use crate::outcome::Outcome;
use crate::request::Stamped;

/// The first stage after the business thread.
pub(super) trait Stage: Send {
    /// Takes an applied group, leaving `inputs` and `held` empty (capacity
    /// kept where it can); either may be empty. `credits_applied`: the
    /// running count of rebate credits applied through this group. False if
    /// the engine must stop (the failure is recorded in `shared`); nothing
    /// held is released then.
    fn take(
        &mut self,
        shared: &Shared,
        inputs: &mut Vec<Stamped>,
        held: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
    ) -> bool;

    /// Whether groups should gather across batches until the ring runs dry
    /// (each take waits for an fdatasync on the business thread).
    fn gathers(&self) -> bool {
        false
    }

    /// Whether the business thread should answer gateway requests
    /// `unavailable` now without applying them (rebate credits are still
    /// applied), because the stages after it cannot keep up and what they
    /// hold would grow without bound. Asked once per batch: it costs an
    /// atomic load or two at most.
    fn shedding(&mut self) -> bool {
        false
    }

    /// Waits until everything taken is fdatasynced on the local disk
    /// (before a snapshot) and returns the journal directory and the
    /// journal's chain head (what the snapshot records); `Ok(None)` without
    /// a journal, `Err(())` if the journal failed.
    fn sync(&mut self, shared: &Shared) -> Result<Option<(PathBuf, ChainHead)>, ()>;

    /// Lets the stages after this one finish what they were given, and
    /// hands back the journal writer (with its directory) for a clean close.
    fn finish(self: Box<Self>) -> Option<(PathBuf, JournalWriter)>;
}

/// A stage after the journal: gets each journaled group with the frame the
/// journal wrote for it.
pub(super) trait AfterJournal: Send {
    fn journaled(
        &mut self,
        shared: &Shared,
        frame: &[u8],
        last_seq: u64,
        held: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
    );

    /// Outcomes with nothing journaled for them, after everything handed
    /// before them.
    fn passed(&mut self, shared: &Shared, held: &mut Vec<(u32, Outcome)>, credits_applied: u64);

    /// See [`Stage::shedding`].
    fn shedding(&mut self) -> bool {
        false
    }

    /// Lets this stage finish what it was given.
    fn finish(&mut self) {}
}

/// Answers every held outcome at once and counts the credits as settled.
pub(super) struct Answer {
    responses: Responses,
}

impl Answer {
    pub fn new() -> Answer {
        Answer {
            responses: Responses::new(),
        }
    }

    fn release(&mut self, shared: &Shared, held: &mut Vec<(u32, Outcome)>, credits: u64) {
        shared.publish_credits(credits);
        self.responses.adopt_new_clients(shared);
        for (client, outcome) in held.drain(..) {
            self.responses.send(client, outcome);
        }
        self.responses.wake_answered(shared);
    }
}

impl Stage for Answer {
    fn take(
        &mut self,
        shared: &Shared,
        inputs: &mut Vec<Stamped>,
        held: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
    ) -> bool {
        inputs.clear();
        self.release(shared, held, credits_applied);
        true
    }

    fn sync(&mut self, _: &Shared) -> Result<Option<(PathBuf, ChainHead)>, ()> {
        Ok(None)
    }

    fn finish(self: Box<Self>) -> Option<(PathBuf, JournalWriter)> {
        None
    }
}

impl AfterJournal for Answer {
    fn journaled(
        &mut self,
        shared: &Shared,
        _: &[u8],
        _: u64,
        held: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
    ) {
        self.release(shared, held, credits_applied);
    }

    fn passed(&mut self, shared: &Shared, held: &mut Vec<(u32, Outcome)>, credits_applied: u64) {
        self.release(shared, held, credits_applied);
    }
}

/// The journal, written on the business thread: one frame per group (async:
/// a copy into the page cache; sync: plus one fdatasync), then the next
/// stage.
pub(super) struct Journal<Next: AfterJournal> {
    dir: PathBuf,
    writer: Box<JournalWriter>,
    next: Next,
}

impl<Next: AfterJournal> Journal<Next> {
    pub fn new(dir: PathBuf, writer: JournalWriter, next: Next) -> Journal<Next> {
        Journal {
            dir,
            writer: Box::new(writer),
            next,
        }
    }
}

impl<Next: AfterJournal> Stage for Journal<Next> {
    fn take(
        &mut self,
        shared: &Shared,
        inputs: &mut Vec<Stamped>,
        held: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
    ) -> bool {
        let Some(last_seq) = inputs.last().map(|s| s.stamp.seq) else {
            // Nothing to journal (never an empty frame), maybe outcomes.
            if !held.is_empty() {
                self.next.passed(shared, held, credits_applied);
            }
            return true;
        };
        if let Err(e) = self.writer.commit(inputs) {
            shared.fail_journal(format!(
                "journal write failed, nothing more is accepted: {e}"
            ));
            return false;
        }
        shared
            .journal_synced_seq
            .store(self.writer.durable_seq(), Ordering::Release);
        inputs.clear();
        self.next.journaled(
            shared,
            self.writer.last_frame(),
            last_seq,
            held,
            credits_applied,
        );
        true
    }

    fn gathers(&self) -> bool {
        self.writer.durability() == Durability::Sync
    }

    fn shedding(&mut self) -> bool {
        self.next.shedding()
    }

    fn sync(&mut self, shared: &Shared) -> Result<Option<(PathBuf, ChainHead)>, ()> {
        if let Err(e) = self.writer.sync() {
            shared.fail_journal(format!(
                "journal fdatasync failed, nothing more is accepted: {e}"
            ));
            return Err(());
        }
        shared
            .journal_synced_seq
            .store(self.writer.durable_seq(), Ordering::Release);
        Ok(Some((self.dir.clone(), self.writer.chain_head())))
    }

    fn finish(mut self: Box<Self>) -> Option<(PathBuf, JournalWriter)> {
        self.next.finish();
        Some((self.dir, *self.writer))
    }
}

/// The flusher thread: it journals, then answers (see `flusher`).
pub(super) struct Flushed {
    pub dir: PathBuf,
    pub flusher: Flusher,
}

impl Stage for Flushed {
    fn take(
        &mut self,
        _: &Shared,
        inputs: &mut Vec<Stamped>,
        held: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
    ) -> bool {
        if self.flusher.failed() {
            return false;
        }
        self.flusher.send(inputs, held, credits_applied);
        true
    }

    fn sync(&mut self, _: &Shared) -> Result<Option<(PathBuf, ChainHead)>, ()> {
        match self.flusher.sync_and_wait() {
            Some(head) => Ok(Some((self.dir.clone(), head))),
            None => Err(()),
        }
    }

    fn finish(mut self: Box<Self>) -> Option<(PathBuf, JournalWriter)> {
        // Once the ring is closed and drained, the flusher has been sent
        // everything: it writes and answers the rest, then stops.
        let writer = self.flusher.finish()?;
        Some((self.dir, writer))
    }
}

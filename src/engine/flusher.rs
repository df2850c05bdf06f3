//! The journal flusher: a thread that writes (and in `sync` mode
//! fdatasyncs) the inputs the business thread applied, then answers their
//! clients, so the business thread goes on applying the next requests while
//! the disk works and never waits for it.
//!
//! The business thread sends each applied batch, inputs and outcomes, over
//! a channel. The flusher takes everything queued, writes one frame per
//! batch, syncs once for all of them (group commit; in `async` mode only when a
//! snapshot asks), publishes the last seq it fdatasynced (snapshots wait for
//! it), counts the rebate credits among them as answered (barriers wait
//! for that), then puts every outcome on its client's response queue,
//! waking each client once. This is the LMAX pipeline's
//! journaller and publisher in one thread.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam::channel::{self, Receiver, Sender};

use super::outbox::Responses;
use super::{PanicGuard, Shared};
use crate::journal::{ChainHead, Durability, JournalWriter};
use crate::outcome::Outcome;
use crate::request::Stamped;

/// Which thread writes the journal.
///
/// Measured on the reference 2-core machine (`cargo bench --bench engine`,
/// one run, pipelined withdrawals): inline was as fast or faster in every
/// case (async 7.5M vs 6.8M req/s with 1 gateway, 7.4M vs 7.0M with 2; sync
/// 1.75M vs 1.66M and 2.66M vs 2.63M), because a third busy thread on two
/// cores costs more than the write it takes off the business thread. So
/// inline is the default; the flusher is there for machines with a core to
/// give it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JournalThread {
    /// The business thread writes (and syncs) each group itself, then
    /// answers its clients. In `sync` mode it waits out each fdatasync.
    #[default]
    Business,
    /// A flusher thread writes, syncs and answers while the business thread
    /// applies the next requests.
    Flusher,
}

impl std::fmt::Display for JournalThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JournalThread::Business => "business",
            JournalThread::Flusher => "flusher",
        })
    }
}

impl std::str::FromStr for JournalThread {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "business" => Ok(JournalThread::Business),
            "flusher" => Ok(JournalThread::Flusher),
            other => Err(format!(
                "unknown journal thread {other:?}: expected business or flusher"
            )),
        }
    }
}

/// One applied batch: its inputs (consecutive seqs) and their outcomes, in
/// the same order.
#[derive(Default)]
struct Group {
    inputs: Vec<Stamped>,
    outcomes: Vec<(u32, Outcome)>,
    /// fdatasync after writing this group, whatever the durability mode.
    sync: bool,
    /// Rebate credits the business thread had applied through this group,
    /// counted as answered once the group is written (and synced).
    credits_applied: u64,
}

/// The business thread's handle on the flusher.
pub(super) struct Flusher {
    groups: Option<Sender<Group>>,
    recycled: Receiver<Group>,
    /// The journal's chain head as of the flusher's last round.
    head: Arc<parking_lot::Mutex<ChainHead>>,
    /// Marked failed if the flusher stops on an error or a panic.
    shared: Arc<Shared>,
    handle: Option<JoinHandle<JournalWriter>>,
    /// Highest seq handed over so far.
    sent: u64,
}

impl Flusher {
    /// Starts the flusher thread, which owns `writer` until [`Flusher::finish`]
    /// and answers every client from now on. `last_seq` is the last seq
    /// already in the journal.
    pub fn spawn(writer: JournalWriter, last_seq: u64, shared: Arc<Shared>) -> io::Result<Flusher> {
        let (groups_tx, groups_rx) = channel::unbounded::<Group>();
        let (recycled_tx, recycled_rx) = channel::unbounded();
        let head = Arc::new(parking_lot::Mutex::new(writer.chain_head()));
        let thread_head = Arc::clone(&head);
        let thread_shared = Arc::clone(&shared);
        let handle = thread::Builder::new()
            .name("ringledger-flusher".into())
            .spawn(move || {
                let shared = thread_shared;
                let writer = run(writer, &groups_rx, &recycled_tx, &thread_head, &shared);
                // Clients registered too late to be answered get an error
                // instead of waiting.
                drop(shared.registrations.lock().drain(..));
                writer
            })?;
        Ok(Flusher {
            groups: Some(groups_tx),
            recycled: recycled_rx,
            sent: last_seq,
            head,
            shared,
            handle: Some(handle),
        })
    }

    /// Hands over `inputs` and their `outcomes`, leaving empty vectors
    /// (reused from an earlier group when one has come back) in their place.
    pub fn send(
        &mut self,
        inputs: &mut Vec<Stamped>,
        outcomes: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
    ) {
        if inputs.is_empty() && outcomes.is_empty() {
            return;
        }
        if let Some(last) = inputs.last() {
            self.sent = last.stamp.seq;
        }
        // Outcomes with no inputs (answered without being applied) go too:
        // their answers follow the ones sent before them.
        let mut group = self.recycled.try_recv().unwrap_or_default();
        std::mem::swap(&mut group.inputs, inputs);
        std::mem::swap(&mut group.outcomes, outcomes);
        group.credits_applied = credits_applied;
        if let Some(groups) = &self.groups {
            // A send fails only if the flusher stopped on an error, which
            // `failed` reports.
            let _ = groups.send(group);
        }
    }

    pub fn failed(&self) -> bool {
        self.shared.failed.load(Ordering::Acquire)
    }

    /// Has the flusher fdatasync everything sent so far (in any durability
    /// mode) and waits for it: before a snapshot, which must never cover
    /// records the journal does not hold durably. Returns the journal's
    /// chain head then (what the snapshot records); None if the flusher
    /// failed. For rare pauses only: it polls instead of parking.
    pub fn sync_and_wait(&mut self) -> Option<ChainHead> {
        if let Some(groups) = &self.groups {
            let group = Group {
                sync: true,
                ..Group::default()
            };
            let _ = groups.send(group);
        }
        let mut round = 0u32;
        while self.shared.journal_synced_seq.load(Ordering::Acquire) < self.sent {
            let stopped = match &self.handle {
                Some(handle) => handle.is_finished(),
                None => true,
            };
            if self.failed() || stopped {
                return None;
            }
            if round < 64 {
                thread::yield_now();
            } else {
                thread::sleep(Duration::from_micros(20));
            }
            round = round.saturating_add(1);
        }
        Some(*self.head.lock())
    }

    /// Lets the flusher write and answer what it was sent, stops it and
    /// takes the writer back. None if the flusher thread panicked.
    pub fn finish(&mut self) -> Option<JournalWriter> {
        drop(self.groups.take());
        self.handle.take()?.join().ok()
    }
}

fn run(
    mut writer: JournalWriter,
    groups: &Receiver<Group>,
    recycled: &Sender<Group>,
    head: &parking_lot::Mutex<ChainHead>,
    shared: &Shared,
) -> JournalWriter {
    let syncs = writer.durability() == Durability::Sync;
    let mut responses = Responses::new();
    // Declared after the response queues so that, unwinding, it marks the
    // engine failed before they close and wake their clients.
    let _guard = PanicGuard {
        shared,
        thread: "journal flusher",
    };
    let mut taken: Vec<Group> = Vec::new();
    while let Ok(first) = groups.recv() {
        taken.push(first);
        taken.extend(groups.try_iter());
        let mut written = taken.iter().try_for_each(|g| writer.append(&g.inputs));
        if written.is_ok() && (syncs || taken.iter().any(|g| g.sync)) {
            written = writer.sync();
        }
        if let Err(e) = written {
            shared.fail_journal(format!(
                "journal write failed, nothing more is accepted: {e}"
            ));
            // Dropping `responses` closes every queue: clients get the failure.
            return writer;
        }
        // Before the synced seq, so whoever sees that reach a seq finds the
        // chain head at least that far.
        *head.lock() = writer.chain_head();
        shared
            .journal_synced_seq
            .store(writer.durable_seq(), Ordering::Release);
        responses.adopt_new_clients(shared);
        if let Some(credits) = taken.iter().map(|g| g.credits_applied).max() {
            shared.publish_credits(credits);
        }
        for mut group in taken.drain(..) {
            for (client, outcome) in group.outcomes.drain(..) {
                responses.send(client, outcome);
            }
            group.inputs.clear();
            group.sync = false;
            let _ = recycled.send(group);
        }
        responses.wake_answered(shared);
    }
    writer
}

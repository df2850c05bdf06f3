//! The business thread: the single writer of all state. It drains a batch
//! from the ring, stamps it (sequence, one clock read per batch), applies it
//! to the Ledger, hands rebate jobs to the side thread and answers each
//! client on its own response queue.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;

use super::flusher::{Flusher, FLUSHER_WAKE};
use super::{Clock, EngineError, Envelope, Shared};
use crate::journal::{self, Durability, JournalWriter};
use crate::ledger::Ledger;
use crate::outcome::{Outcome, Reply};
use crate::rebate::RebateJob;
use crate::request::{Request, Stamp, Stamped};
use crate::ring::{Consumer, Producer};

/// How long, in sync mode, the ring must stay dry before a group of held
/// requests is fdatasync'ed: a fraction of one fdatasync here (measured
/// p50 0.14 ms, p99 0.21 ms after a 64 KiB batch on the reference disk).
const SYNC_LINGER: Duration = Duration::from_micros(50);

pub(super) struct Business {
    pub shared: Arc<Shared>,
    pub consumer: Consumer<Envelope>,
    pub ledger: Ledger,
    pub clock: Arc<dyn Clock>,
    pub batch_max: usize,
    pub core: Option<core_affinity::CoreId>,
    pub jobs: Sender<RebateJob>,
    /// Where inputs are journaled (absent: durability none).
    pub journal: Option<(PathBuf, Sink)>,
    pub snapshot_every: Option<u64>,
}

/// Who writes the journal (see [`super::JournalThread`]).
pub(super) enum Sink {
    /// This thread, inline, before releasing each group's outcomes.
    Business(JournalWriter),
    /// The flusher thread.
    Flusher(Flusher),
}

/// Marks the engine failed if the business thread unwinds, so clients get an
/// error that says so instead of a bare "stopped".
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0
                .fail("the business thread panicked; see the panic message above".into());
        }
    }
}

pub(super) fn spawn(business: Business) -> Result<JoinHandle<Ledger>, EngineError> {
    thread::Builder::new()
        .name("ringledger-business".into())
        .spawn(move || business.run())
        .map_err(EngineError::Io)
}

impl Business {
    fn run(mut self) -> Ledger {
        let shared = Arc::clone(&self.shared);
        if let Some(core) = self.core {
            if !core_affinity::set_for_current(core) {
                eprintln!(
                    "ringledger: pinning the business thread to core {} failed; running unpinned",
                    core.id
                );
            }
        }
        let mut outbox = Outbox::new(self.batch_max);
        let mut envelopes: Vec<Envelope> = Vec::with_capacity(self.batch_max);
        let mut batch: Vec<Stamped> = Vec::with_capacity(self.batch_max);
        let mut seq = self.ledger.last_seq();
        let mut time_ms = self.ledger.now_ms();
        // Outcomes of seqs up to here have been released.
        let mut released = seq;
        let mut last_snapshot_seq = seq;
        let mut dispatched = shared.rebates_dispatched.load(Ordering::Acquire);
        let mut answered = 0u64;
        let rebate_session = shared.rebate_session.load(Ordering::Acquire);
        let mut linger_until: Option<Instant> = None;
        let journaling = self.journal.is_some();
        let on_flusher = matches!(self.journal, Some((_, Sink::Flusher(_))));
        // Declared after the outbox (which owns the response queues) so that,
        // unwinding, it marks the engine failed before they close and wake
        // their clients.
        let _guard = PanicGuard(&shared);

        loop {
            if let Some((_, Sink::Flusher(flusher))) = &self.journal {
                if flusher.failed() {
                    break;
                }
                let durable = flusher.durable();
                if durable > released {
                    outbox.release((durable - released) as usize);
                    released = durable;
                }
            }
            envelopes.clear();
            // Nothing to do until a request (or the flusher's wake-up)
            // arrives: sleep on the ring. Otherwise never sleep: take what
            // is there, and when the ring runs dry, journal and release.
            let idle = outbox.inputs.is_empty() && (on_flusher || outbox.is_empty());
            let take = |envelope: Envelope| {
                if envelope.client != FLUSHER_WAKE {
                    envelopes.push(envelope);
                }
            };
            let drained = if idle {
                match self.consumer.wait_drain(self.batch_max, take) {
                    Ok(drained) => drained,
                    Err(_) => break,
                }
            } else {
                self.consumer.drain(self.batch_max, take)
            };
            if envelopes.is_empty() {
                if drained > 0 || idle {
                    continue;
                }
                // Group commit: an fdatasync costs the same for one request
                // as for thousands, and a parked gateway takes microseconds
                // to wake and send more, so in sync mode the ring must stay
                // dry for a moment before the group is closed. (The flusher
                // needs no linger: what arrives while it syncs is its next
                // group.)
                if self.syncs() && !on_flusher {
                    let deadline =
                        *linger_until.get_or_insert_with(|| Instant::now() + SYNC_LINGER);
                    if Instant::now() < deadline {
                        std::thread::yield_now();
                        continue;
                    }
                }
                linger_until = None;
                if !self.journal_inputs(&shared, &mut outbox, &mut released) {
                    break;
                }
                continue;
            }
            linger_until = None;
            time_ms = time_ms.max(self.clock.now_ms());
            batch.clear();
            batch.extend(envelopes.iter().map(|e| {
                seq += 1;
                Stamped::new(
                    Stamp {
                        seq,
                        time_ms,
                        session: e.session,
                        req: e.req,
                    },
                    e.request,
                )
            }));
            outbox.adopt_new_clients(&shared, &envelopes);

            // Applying before the journal write is safe because nothing the
            // Ledger did is visible until its outcome is released, and
            // outcomes are released only after the write (see
            // `journal_inputs`). A rebate credit is sequenced after its
            // deposit, so any journal prefix is consistent.
            let ledger = &mut self.ledger;
            ledger.apply_batch(&batch, |i, applied| {
                let envelope = &envelopes[i];
                if let Some(job) = applied.rebate {
                    dispatched += 1;
                    let _ = self.jobs.send(job);
                    shared
                        .rebates_dispatched
                        .store(dispatched, Ordering::Release);
                }
                match (&envelope.request, &applied.outcome) {
                    (Request::CreditRebate { .. }, _) if envelope.session == rebate_session => {
                        answered += 1;
                        shared.rebates_answered.store(answered, Ordering::Release);
                    }
                    (Request::ListInstrument { symbol, .. }, Ok(Reply::Listed { instrument })) => {
                        shared.directory.write().insert(*symbol, *instrument);
                    }
                    _ => {}
                }
                if journaling {
                    outbox.hold(envelope.client, applied.outcome);
                } else {
                    outbox.send(envelope.client, applied.outcome);
                }
            });
            if !journaling {
                outbox.wake_answered();
                continue;
            }
            outbox.inputs.extend_from_slice(&batch);
            if outbox.inputs.len() >= self.batch_max
                && !self.journal_inputs(&shared, &mut outbox, &mut released)
            {
                break;
            }
            if self
                .snapshot_every
                .is_some_and(|every| seq - last_snapshot_seq >= every)
            {
                if !self.snapshot(&shared, &mut outbox, &mut released) {
                    break;
                }
                last_snapshot_seq = seq;
            }
        }
        // Queues of clients registered too late to be adopted close now, so
        // those clients get an error instead of waiting.
        drop(shared.registrations.lock().drain(..));
        if let Some((dir, sink)) = self.journal.take() {
            let writer = match sink {
                Sink::Business(writer) => Some(writer),
                Sink::Flusher(mut flusher) => {
                    // Once the ring is closed and drained the flusher has
                    // everything; after a failure, what the ring still holds
                    // is dropped (its clients get the failure).
                    let consumer = &mut self.consumer;
                    let writer = flusher.finish(|| {
                        consumer.drain(usize::MAX, drop);
                    });
                    if !shared.failed.load(Ordering::Acquire) && flusher.durable() >= released {
                        outbox.release((flusher.durable() - released) as usize);
                    }
                    writer
                }
            };
            if let Some(mut writer) = writer {
                if !shared.failed.load(Ordering::Acquire)
                    && self.ledger.last_seq() > last_snapshot_seq
                    && writer.sync().is_ok()
                {
                    if let Err(e) = journal::write_snapshot(&dir, &self.ledger) {
                        eprintln!("ringledger: shutdown snapshot failed (the journal still has everything): {e}");
                    }
                }
            }
        }
        self.ledger
    }

    fn syncs(&self) -> bool {
        match &self.journal {
            Some((_, Sink::Business(writer))) => writer.durability() == Durability::Sync,
            _ => false,
        }
    }

    /// Journals the held inputs as one group. Inline: written as one frame
    /// (async: to the page cache; sync: plus one fdatasync), then their
    /// outcomes are released. Flusher: handed over; outcomes are released
    /// when it reports back. Returns false if the journal failed: the engine
    /// stops and nothing held is released.
    fn journal_inputs(&mut self, shared: &Shared, outbox: &mut Outbox, released: &mut u64) -> bool {
        match &mut self.journal {
            None => {}
            Some((_, Sink::Flusher(flusher))) => {
                flusher.send(&mut outbox.inputs);
                return true;
            }
            Some((_, Sink::Business(writer))) => {
                if let Err(e) = writer.commit(&outbox.inputs) {
                    shared.fail(format!(
                        "journal write failed, nothing more is accepted: {e}"
                    ));
                    return false;
                }
                outbox.inputs.clear();
            }
        }
        outbox.release(outbox.held.len());
        *released = self.ledger.last_seq();
        true
    }

    /// Journals and releases everything applied, then writes a snapshot.
    /// Taken only when everything applied is journaled, so a snapshot never
    /// holds unacknowledged state. False if the journal failed.
    fn snapshot(&mut self, shared: &Shared, outbox: &mut Outbox, released: &mut u64) -> bool {
        if !self.journal_inputs(shared, outbox, released) {
            return false;
        }
        if let Some((_, Sink::Flusher(flusher))) = &self.journal {
            if !flusher.wait_durable() {
                return false;
            }
            let durable = flusher.durable();
            outbox.release((durable - *released) as usize);
            *released = durable;
        }
        if let Some((dir, _)) = &self.journal {
            if let Err(e) = journal::write_snapshot(dir, &self.ledger) {
                let seq = self.ledger.last_seq();
                eprintln!("ringledger: snapshot at seq {seq} failed (the journal still has everything): {e}");
            }
        }
        true
    }
}

/// `last_release` of a client id whose queue has not been adopted yet.
const NOT_ADOPTED: u64 = u64::MAX;

/// Outcomes waiting to be released, and the inputs they wait on.
struct Outbox {
    /// Each client's response queue, by client id (None: dropped client).
    responses: Vec<Option<Producer<Outcome>>>,
    /// Outcomes not yet released, oldest first (one per input, in seq order).
    held: VecDeque<(u32, Outcome)>,
    inputs: Vec<Stamped>,
    /// Clients answered in the current release, woken once each at its end.
    woken: Vec<u32>,
    release_number: u64,
    last_release: Vec<u64>,
}

impl Outbox {
    fn new(capacity: usize) -> Outbox {
        Outbox {
            responses: Vec::new(),
            held: VecDeque::with_capacity(capacity),
            inputs: Vec::with_capacity(capacity),
            woken: Vec::new(),
            // Adoption marks a client with 0, so numbering starts at 1: a
            // client answered in the very first release is still woken.
            release_number: 1,
            last_release: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn hold(&mut self, client: u32, outcome: Outcome) {
        self.held.push_back((client, outcome));
    }

    /// Hands the `count` oldest held outcomes to their clients, waking each
    /// client once.
    fn release(&mut self, count: usize) {
        let mut held = std::mem::take(&mut self.held);
        for (client, outcome) in held.drain(..count.min(held.len())) {
            self.send(client, outcome);
        }
        self.held = held;
        self.wake_answered();
    }

    /// Puts an outcome on its client's queue without waking the client yet
    /// (see `wake_answered`). The client keeps no more in flight than its
    /// queue holds, so this never waits; a dropped client's queue is closed
    /// and forgotten.
    fn send(&mut self, client: u32, outcome: Outcome) {
        let index = client as usize;
        let Some(producer) = &self.responses[index] else {
            return;
        };
        if producer.push_deferring_wake(outcome).is_err() {
            self.responses[index] = None;
        } else if self.last_release[index] != self.release_number {
            self.last_release[index] = self.release_number;
            self.woken.push(client);
        }
    }

    /// Wakes, once each, the clients answered since the last call.
    fn wake_answered(&mut self) {
        self.release_number += 1;
        for client in self.woken.drain(..) {
            if let Some(producer) = &self.responses[client as usize] {
                producer.wake();
            }
        }
    }

    /// Takes over the response queues of clients created since the last
    /// batch. Locks only when a batch carries a client not seen before.
    fn adopt_new_clients(&mut self, shared: &Shared, envelopes: &[Envelope]) {
        let newest = envelopes
            .iter()
            .map(|e| e.client as usize)
            .max()
            .unwrap_or(0);
        if newest < self.responses.len() {
            return;
        }
        for (id, producer) in shared.registrations.lock().drain(..) {
            let id = id as usize;
            if self.responses.len() <= id {
                self.responses.resize_with(id + 1, || None);
                self.last_release.resize(id + 1, NOT_ADOPTED);
            }
            self.responses[id] = Some(producer);
            self.last_release[id] = 0;
        }
    }
}

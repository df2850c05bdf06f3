//! The business thread: the single writer of all state. It drains a batch
//! from the ring, stamps it (sequence, one clock read per batch), applies it
//! to the Ledger, hands rebate jobs to the side thread and answers each
//! client on its own response queue.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;

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
    pub journal: Option<(PathBuf, JournalWriter)>,
    pub snapshot_every: Option<u64>,
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
        let mut last_snapshot_seq = seq;
        let mut dispatched = shared.rebates_dispatched.load(Ordering::Acquire);
        let mut answered = 0u64;
        let rebate_session = shared.rebate_session.load(Ordering::Acquire);
        let mut linger_until: Option<Instant> = None;
        let journaling = self.journal.is_some();
        // Declared after the outbox (which owns the response queues) so that,
        // unwinding, it marks the engine failed before they close and wake
        // their clients.
        let _guard = PanicGuard(&shared);

        loop {
            envelopes.clear();
            // While outcomes wait for the journal, never sleep: take what is
            // there, and when the ring runs dry, flush and release.
            let drained = if outbox.is_empty() {
                match self
                    .consumer
                    .wait_drain(self.batch_max, |envelope| envelopes.push(envelope))
                {
                    Ok(drained) => drained,
                    Err(_) => break,
                }
            } else {
                self.consumer
                    .drain(self.batch_max, |envelope| envelopes.push(envelope))
            };
            if drained == 0 {
                if outbox.is_empty() {
                    continue;
                }
                // Group commit: an fdatasync costs the same for one request
                // as for thousands, and a parked gateway takes microseconds
                // to wake and send more, so in sync mode the ring must stay
                // dry for a moment before the group is closed.
                if self.syncs() {
                    let deadline =
                        *linger_until.get_or_insert_with(|| Instant::now() + SYNC_LINGER);
                    if Instant::now() < deadline {
                        std::thread::yield_now();
                        continue;
                    }
                }
                linger_until = None;
                if !self.flush(&shared, &mut outbox, &mut last_snapshot_seq) {
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
            // outcomes are released only after the write (see `flush`). A
            // rebate credit is sequenced after its deposit, so any journal
            // prefix is consistent.
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
            match &self.journal {
                None => outbox.wake_answered(),
                Some(_) => {
                    outbox.inputs.extend_from_slice(&batch);
                    if outbox.inputs.len() >= self.batch_max
                        && !self.flush(&shared, &mut outbox, &mut last_snapshot_seq)
                    {
                        break;
                    }
                }
            }
        }
        // Queues of clients registered too late to be adopted close now, so
        // those clients get an error instead of waiting.
        drop(shared.registrations.lock().drain(..));
        if let Some((dir, writer)) = &mut self.journal {
            if !shared.failed.load(Ordering::Acquire)
                && self.ledger.last_seq() > last_snapshot_seq
                && writer.sync().is_ok()
            {
                if let Err(e) = journal::write_snapshot(dir, &self.ledger) {
                    eprintln!("ringledger: shutdown snapshot failed (the journal still has everything): {e}");
                }
            }
        }
        self.ledger
    }

    fn syncs(&self) -> bool {
        self.journal
            .as_ref()
            .is_some_and(|(_, writer)| writer.durability() == Durability::Sync)
    }

    /// Writes the held inputs to the journal as one frame (async: to the
    /// page cache; sync: plus one fdatasync, a group commit), then releases
    /// their outcomes. Returns false if the journal failed: the engine stops
    /// and nothing held is released.
    fn flush(&mut self, shared: &Shared, outbox: &mut Outbox, last_snapshot_seq: &mut u64) -> bool {
        if let Some((dir, writer)) = &mut self.journal {
            if let Err(e) = writer.commit(&outbox.inputs) {
                shared.fail(format!(
                    "journal write failed, nothing more is accepted: {e}"
                ));
                return false;
            }
            outbox.inputs.clear();
            // Snapshots are taken only here, when everything applied is
            // journaled, so a snapshot never holds unacknowledged state.
            let seq = self.ledger.last_seq();
            if self
                .snapshot_every
                .is_some_and(|every| seq - *last_snapshot_seq >= every)
            {
                *last_snapshot_seq = seq;
                if let Err(e) = journal::write_snapshot(dir, &self.ledger) {
                    eprintln!("ringledger: snapshot at seq {seq} failed (the journal still has everything): {e}");
                }
            }
        }
        outbox.release();
        true
    }
}

/// `last_release` of a client id whose queue has not been adopted yet.
const NOT_ADOPTED: u64 = u64::MAX;

/// Outcomes waiting to be released, and the inputs they wait on.
struct Outbox {
    /// Each client's response queue, by client id (None: dropped client).
    responses: Vec<Option<Producer<Outcome>>>,
    held: Vec<(u32, Outcome)>,
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
            held: Vec::with_capacity(capacity),
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
        self.held.push((client, outcome));
    }

    /// Hands every held outcome to its client, waking each client once.
    fn release(&mut self) {
        let mut held = std::mem::take(&mut self.held);
        for (client, outcome) in held.drain(..) {
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

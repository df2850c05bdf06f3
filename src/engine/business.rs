//! The business thread: the single writer of all state. It drains a batch
//! from the ring, stamps it (sequence, one clock read per batch), applies it
//! to the Ledger, hands rebate jobs to the side thread and answers each
//! client on its own response queue.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam::channel::Sender;

use super::{Clock, EngineError, Envelope, Shared};
use crate::journal::{self, JournalWriter};
use crate::ledger::Ledger;
use crate::outcome::{Outcome, Reply};
use crate::rebate::RebateJob;
use crate::request::{Request, Stamp, Stamped};
use crate::ring::{Consumer, Producer};

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
        let mut responses: Vec<Option<Producer<Outcome>>> = Vec::new();
        // Clients answered in the current batch, woken once each at its end.
        let mut answered_in_batch: Vec<u32> = Vec::with_capacity(self.batch_max);
        let mut batch_number = 0u64;
        let mut last_answered_batch: Vec<u64> = Vec::new();
        let mut envelopes: Vec<Envelope> = Vec::with_capacity(self.batch_max);
        let mut batch: Vec<Stamped> = Vec::with_capacity(self.batch_max);
        let mut seq = self.ledger.last_seq();
        let mut time_ms = self.ledger.now_ms();
        let mut last_snapshot_seq = seq;
        let mut dispatched = shared.rebates_dispatched.load(Ordering::Acquire);
        let mut answered = 0u64;
        let rebate_session = shared.rebate_session.load(Ordering::Acquire);
        // Declared after the response queues so that, unwinding, it marks the
        // engine failed before they close and wake their clients.
        let _guard = PanicGuard(&shared);

        for job in self.ledger.pending_rebates() {
            dispatched += 1;
            let _ = self.jobs.send(job);
        }
        shared
            .rebates_dispatched
            .store(dispatched, Ordering::Release);

        loop {
            envelopes.clear();
            let drained = self
                .consumer
                .wait_drain(self.batch_max, |envelope| envelopes.push(envelope));
            if drained.is_err() {
                break;
            }
            if envelopes.is_empty() {
                continue;
            }
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
            adopt_new_clients(&shared, &mut responses, &envelopes);
            if last_answered_batch.len() < responses.len() {
                last_answered_batch.resize(responses.len(), 0);
            }
            batch_number += 1;

            // Durable before applied: no outcome of this batch is released
            // unless its inputs reached the journal (async: page cache; sync:
            // fdatasync, one per batch = group commit).
            if let Some((_, writer)) = &mut self.journal {
                if let Err(e) = writer.commit(&batch) {
                    shared.fail(format!(
                        "journal write failed, nothing more is accepted: {e}"
                    ));
                    break;
                }
            }

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
                let client = envelope.client as usize;
                let slot = &mut responses[client];
                if let Some(producer) = slot {
                    // The client keeps no more in flight than its queue
                    // holds, so this never waits; a dropped client's queue
                    // is closed and forgotten.
                    if producer.push_deferring_wake(applied.outcome).is_err() {
                        *slot = None;
                    } else if last_answered_batch[client] != batch_number {
                        last_answered_batch[client] = batch_number;
                        answered_in_batch.push(envelope.client);
                    }
                }
            });
            for client in answered_in_batch.drain(..) {
                if let Some(producer) = &responses[client as usize] {
                    producer.wake();
                }
            }
            if let (Some(every), Some((dir, _))) = (self.snapshot_every, &self.journal) {
                if seq - last_snapshot_seq >= every {
                    last_snapshot_seq = seq;
                    if let Err(e) = journal::write_snapshot(dir, &self.ledger) {
                        eprintln!("ringledger: snapshot at seq {seq} failed (the journal still has everything): {e}");
                    }
                }
            }
        }
        if let Some((dir, _)) = &self.journal {
            if !shared.failed.load(Ordering::Acquire) && self.ledger.last_seq() > last_snapshot_seq
            {
                if let Err(e) = journal::write_snapshot(dir, &self.ledger) {
                    eprintln!("ringledger: shutdown snapshot failed (the journal still has everything): {e}");
                }
            }
        }
        self.ledger
    }
}

/// Takes over the response queues of clients created since the last batch.
/// Locks only when a batch carries a client this thread has not seen.
fn adopt_new_clients(
    shared: &Shared,
    responses: &mut Vec<Option<Producer<Outcome>>>,
    envelopes: &[Envelope],
) {
    let newest = envelopes
        .iter()
        .map(|e| e.client as usize)
        .max()
        .unwrap_or(0);
    if newest < responses.len() {
        return;
    }
    for (id, producer) in shared.registrations.lock().drain(..) {
        let id = id as usize;
        if responses.len() <= id {
            responses.resize_with(id + 1, || None);
        }
        responses[id] = Some(producer);
    }
}

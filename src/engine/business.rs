//! The business thread: the single writer of all state. It drains a batch
//! (rebate credits from their lane first, then gateway requests from the
//! ring), stamps it (sequence, one clock read per batch), applies it to the
//! Ledger, hands rebate jobs to the side thread and answers each client on
//! its own response queue.
//!
//! Backpressure from the rebate thread: the owed backlog (jobs handed over,
//! credits not yet applied) never exceeds `rebate_backlog_max`, because a
//! batch takes at most as many gateway requests as the backlog has room for
//! (any of them may be a deposit). At the limit it takes none, and waits for
//! credits while the gateways' requests wait in the ring.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;

use super::flusher::Flusher;
use super::outbox::Responses;
use super::{Clock, EngineError, Envelope, PanicGuard, Shared};
use crate::journal::{self, Durability, JournalWriter};
use crate::ledger::Ledger;
use crate::outcome::{Outcome, Reply};
use crate::rebate::RebateJob;
use crate::request::{Request, Stamp, Stamped};
use crate::ring::Consumer;

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
    /// Rebate credits from the side thread (see `rebater`).
    pub credits: Consumer<Envelope>,
    pub rebate_backlog_max: u64,
    /// Where inputs are journaled (absent: durability none).
    pub journal: Option<(PathBuf, Sink)>,
    pub snapshot_every: Option<u64>,
    /// Snapshots kept after each new one (the newest included); segments
    /// the oldest kept one covers are pruned.
    pub snapshots_kept: usize,
}

/// Who writes the journal (see [`super::JournalThread`]).
pub(super) enum Sink {
    /// This thread, inline, before releasing each group's outcomes.
    Business(Box<JournalWriter>),
    /// The flusher thread.
    Flusher(Flusher),
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
        let on_flusher = matches!(self.journal, Some((_, Sink::Flusher(_))));
        let journaling = self.journal.is_some();
        let group_every_batch = !self.syncs_inline();
        // Who answers clients: this thread, unless the flusher does.
        let mut responses = (!on_flusher).then(Responses::new);
        let mut held: Vec<(u32, Outcome)> = Vec::with_capacity(self.batch_max);
        // Stamped inputs not yet journaled; each batch is stamped straight
        // onto the end and applied from there.
        let mut inputs: Vec<Stamped> = Vec::with_capacity(self.batch_max);
        let mut envelopes: Vec<Envelope> = Vec::with_capacity(self.batch_max);
        let mut seq = self.ledger.last_seq();
        let mut time_ms = self.ledger.now_ms();
        let mut last_snapshot_seq = seq;
        let mut dispatched = shared.rebates_dispatched.load(Ordering::Acquire);
        let mut answered = 0u64;
        let mut backlog_peak = shared.rebate_backlog_peak.load(Ordering::Relaxed);
        let mut linger_until: Option<Instant> = None;
        // Declared after the response queues so that, unwinding, it marks
        // the engine failed before they close and wake their clients.
        let _guard = PanicGuard {
            shared: &shared,
            thread: "business",
        };

        loop {
            if let Some((_, Sink::Flusher(flusher))) = &self.journal {
                if flusher.failed() {
                    break;
                }
            }
            envelopes.clear();
            // Credits first: each one shrinks the backlog, making room for
            // gateway requests in this same batch.
            let credits = self
                .credits
                .drain(self.batch_max, |envelope| envelopes.push(envelope));
            let backlog = dispatched - answered - credits as u64;
            let room = self.rebate_backlog_max.saturating_sub(backlog);
            let take = (self.batch_max - credits).min(room.try_into().unwrap_or(usize::MAX));
            let drained = credits
                + if take > 0 {
                    self.consumer
                        .drain(take, |envelope| envelopes.push(envelope))
                } else {
                    0
                };
            // Nothing held and nothing unjournaled: sleep until a credit
            // arrives, or a request when there is room for one. Otherwise
            // never sleep: take what is there, and when the ring runs dry,
            // journal the held inputs and release their outcomes. (Credits
            // have no outcome to hold, so a batch of only credits leaves
            // `held` empty with inputs still to write.)
            let idle = held.is_empty() && inputs.is_empty();
            if drained == 0 {
                if idle {
                    if self.consumer.is_disconnected() {
                        break;
                    }
                    if self.credits.is_disconnected() {
                        // The rebate thread is gone: it panicked (and failed
                        // the engine), so no credit will make room again.
                        break;
                    }
                    let (ring, lane) = (&self.consumer, &self.credits);
                    ring.wait_until(|| lane.ready() || (room > 0 && ring.ready()));
                    continue;
                }
                // Only inline sync holds outcomes across batches. Group
                // commit: an fdatasync costs the same for one request as for
                // thousands, and a parked gateway takes microseconds to wake
                // and send more, so the ring must stay dry for a moment
                // before the group is closed.
                let deadline = *linger_until.get_or_insert_with(|| Instant::now() + SYNC_LINGER);
                if Instant::now() < deadline {
                    std::thread::yield_now();
                    continue;
                }
                linger_until = None;
                if !self.journal_held(
                    &shared,
                    &mut inputs,
                    &mut held,
                    answered,
                    responses.as_mut(),
                ) {
                    break;
                }
                continue;
            }
            linger_until = None;
            time_ms = time_ms.max(self.clock.now_ms());
            let first = inputs.len();
            inputs.extend(envelopes.iter().map(|e| {
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
            if let Some(responses) = &mut responses {
                responses.adopt_new_clients(&shared);
            }

            // Applying before the journal write is safe because nothing the
            // Ledger did is visible until its outcome is released, and
            // outcomes are released only after the write (see
            // `journal_held`). A rebate credit is sequenced after its
            // deposit, so any journal prefix is consistent.
            let ledger = &mut self.ledger;
            ledger.apply_batch(&inputs[first..], |i, applied| {
                if i < credits {
                    // Nobody waits for a credit's answer; the Ledger keeps
                    // a refused one owed (see `Ledger::unpaid_rebates`).
                    answered += 1;
                    return;
                }
                let envelope = &envelopes[i];
                if let Some(job) = applied.rebate {
                    dispatched += 1;
                    // Never waits: the channel holds as many jobs as the
                    // backlog may reach (see `room`).
                    let _ = self.jobs.send(job);
                    shared
                        .rebates_dispatched
                        .store(dispatched, Ordering::Release);
                }
                if let (Request::ListInstrument { symbol, .. }, Ok(Reply::Listed { instrument })) =
                    (&envelope.request, &applied.outcome)
                {
                    shared.directory.write().insert(*symbol, *instrument);
                }
                match &mut responses {
                    Some(responses) if !journaling => {
                        responses.send(envelope.client, applied.outcome)
                    }
                    _ => held.push((envelope.client, applied.outcome)),
                }
            });
            if !journaling && credits > 0 {
                shared.publish_credits(answered);
            }
            if dispatched - answered > backlog_peak {
                backlog_peak = dispatched - answered;
                shared
                    .rebate_backlog_peak
                    .store(backlog_peak, Ordering::Relaxed);
            }
            if !journaling {
                inputs.clear();
                if let Some(responses) = &mut responses {
                    responses.wake_answered(&shared);
                }
                continue;
            }
            // Every batch is journaled at once, except inline in sync mode:
            // the flusher's disk work then overlaps the next batch's apply,
            // and an inline async write is a copy into the page cache (no
            // system call), cheaper than holding the outcomes. Inline sync
            // writes wait for an fdatasync each, so there inputs gather until
            // the ring runs dry (plus a linger) or a batch's worth is held.
            if (group_every_batch || inputs.len() >= self.batch_max)
                && !self.journal_held(
                    &shared,
                    &mut inputs,
                    &mut held,
                    answered,
                    responses.as_mut(),
                )
            {
                break;
            }
            if self
                .snapshot_every
                .is_some_and(|every| seq - last_snapshot_seq >= every)
            {
                if !self.snapshot(
                    &shared,
                    &mut inputs,
                    &mut held,
                    answered,
                    responses.as_mut(),
                ) {
                    break;
                }
                last_snapshot_seq = seq;
            }
        }
        if let Some((dir, sink)) = self.journal.take() {
            let writer = match sink {
                Sink::Business(writer) => Some(*writer),
                // Once the ring is closed and drained, the flusher has been
                // sent everything: it writes and answers the rest, then stops.
                Sink::Flusher(mut flusher) => flusher.finish(),
            };
            if let Some(mut writer) = writer {
                if !shared.failed.load(Ordering::Acquire) && writer.sync().is_ok() {
                    if self.ledger.last_seq() > last_snapshot_seq {
                        self.write_snapshot(&dir);
                    }
                    if let Err(e) = writer.close() {
                        eprintln!("ringledger: writing the clean-shutdown mark failed (the journal still has everything): {e}");
                    }
                }
            }
        }
        // Everything accepted is answered now (the flusher, if any, has
        // stopped). Queues of clients registered too late to be adopted close
        // now, so those clients get an error instead of waiting. Not earlier:
        // the flusher adopts a client when it first answers it, possibly
        // after this thread has left its loop.
        drop(shared.registrations.lock().drain(..));
        self.ledger
    }

    /// Whether this thread fdatasyncs the journal itself.
    fn syncs_inline(&self) -> bool {
        match &self.journal {
            Some((_, Sink::Business(writer))) => writer.durability() == Durability::Sync,
            _ => false,
        }
    }

    /// Journals the held inputs. Inline: written as one frame (async: to the
    /// page cache; sync: plus one fdatasync), then their outcomes are
    /// released and the `credits_applied` so far (all among the inputs
    /// journaled by now) count as answered for barriers. Flusher: inputs,
    /// outcomes and the count are handed over; it writes, then answers and
    /// counts. A barrier thus returns only once the credits are as durable as
    /// the durability mode makes an acknowledged request, which is when a
    /// baseline counts its credits too (the bench's settled clock). Returns
    /// false if the journal failed: the engine stops and nothing held is
    /// released.
    fn journal_held(
        &mut self,
        shared: &Shared,
        inputs: &mut Vec<Stamped>,
        held: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
        responses: Option<&mut Responses>,
    ) -> bool {
        match &mut self.journal {
            None => {}
            Some((_, Sink::Flusher(flusher))) => {
                flusher.send(inputs, held, credits_applied);
                return true;
            }
            Some((_, Sink::Business(writer))) => {
                if let Err(e) = writer.commit(inputs) {
                    shared.fail_journal(format!(
                        "journal write failed, nothing more is accepted: {e}"
                    ));
                    return false;
                }
                shared
                    .journal_synced_seq
                    .store(writer.durable_seq(), Ordering::Release);
                inputs.clear();
                shared.publish_credits(credits_applied);
            }
        }
        if let Some(responses) = responses {
            for (client, outcome) in held.drain(..) {
                responses.send(client, outcome);
            }
            responses.wake_answered(shared);
        }
        true
    }

    /// Journals everything applied, waits until it is fdatasynced, then
    /// writes a snapshot, so a snapshot never holds state the journal lacks
    /// durably (recovery counts on it: damage a snapshot covers is
    /// corruption, never a torn tail). False if the journal failed.
    fn snapshot(
        &mut self,
        shared: &Shared,
        inputs: &mut Vec<Stamped>,
        held: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
        responses: Option<&mut Responses>,
    ) -> bool {
        if !self.journal_held(shared, inputs, held, credits_applied, responses) {
            return false;
        }
        let dir = match &mut self.journal {
            None => return true,
            Some((dir, Sink::Flusher(flusher))) => {
                if !flusher.sync_and_wait() {
                    return false;
                }
                dir.clone()
            }
            Some((dir, Sink::Business(writer))) => {
                if let Err(e) = writer.sync() {
                    shared.fail_journal(format!(
                        "journal fdatasync failed, nothing more is accepted: {e}"
                    ));
                    return false;
                }
                shared
                    .journal_synced_seq
                    .store(writer.durable_seq(), Ordering::Release);
                dir.clone()
            }
        };
        self.write_snapshot(&dir);
        true
    }

    /// Writes a snapshot of the Ledger (the journal must be synced through
    /// it) and prunes what the snapshots kept make unnecessary. A failure
    /// costs only recovery time: the journal still has everything.
    fn write_snapshot(&self, dir: &std::path::Path) {
        let seq = self.ledger.last_seq();
        if let Err(e) = journal::write_snapshot(dir, &self.ledger) {
            eprintln!(
                "ringledger: snapshot at seq {seq} failed (the journal still has everything): {e}"
            );
            return;
        }
        if let Err(e) = journal::retain(dir, self.snapshots_kept) {
            eprintln!("ringledger: pruning after the snapshot at seq {seq} failed (nothing needed was removed): {e}");
        }
    }
}

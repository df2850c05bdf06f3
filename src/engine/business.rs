//! The business thread: the single writer of all state. It drains a batch
//! (rebate credits from their lane first, then gateway requests from the
//! ring), stamps it (sequence, one clock read per batch), applies it to the
//! Ledger, hands rebate jobs to the side thread and sends the applied group
//! downstream: to the stages that journal, replicate and answer it, as the
//! durability mode composes them (see `stages`).
//!
//! Backpressure from the rebate thread: the owed backlog (jobs handed over,
//! credits not yet applied) never exceeds `rebate_backlog_max`, because a
//! batch takes at most as many gateway requests as the backlog has room for
//! (any of them may be a deposit). At the limit it takes none, and waits for
//! credits while the gateways' requests wait in the ring.
//!
//! Shedding: while the stages downstream say they cannot keep up (the
//! replication backlog is full, see `Stage::shedding`), a batch still
//! drains gateway requests but answers each `unavailable` without applying
//! or journaling it: its number stays unused, so a retry later is applied
//! exactly once. Rebate credits are applied and journaled as usual. The
//! answers go downstream like any other, after the earlier ones.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;

use super::events::EventBuffers;
use super::stages::Stage;
use super::{Clock, EngineError, Envelope, PanicGuard, Shared};
use crate::journal;
use crate::ledger::Ledger;
use crate::outcome::{Outcome, Reject, Reply};
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
    /// What follows this thread: journaling, replication and answering, as
    /// the durability mode composes them (see `stages`).
    pub downstream: Box<dyn Stage>,
    pub snapshot_every: Option<u64>,
    /// Snapshots kept after each new one (the newest included); segments
    /// the oldest kept one covers are pruned.
    pub snapshots_kept: usize,
    /// Requests drained per batch, for monitoring.
    pub batch_sizes: Option<prometheus::Histogram>,
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
        let group_every_batch = !self.downstream.gathers();
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
        let mut event_buffers = EventBuffers::default();
        // Declared after the response queues so that, unwinding, it marks
        // the engine failed before they close and wake their clients.
        let _guard = PanicGuard {
            shared: &shared,
            thread: "business",
        };

        loop {
            if shared.failed.load(Ordering::Acquire) {
                break;
            }
            envelopes.clear();
            let shedding = self.downstream.shedding();
            // Credits first: each one shrinks the backlog, making room for
            // gateway requests in this same batch.
            let credits = self
                .credits
                .drain(self.batch_max, |envelope| envelopes.push(envelope));
            let backlog = dispatched - answered - credits as u64;
            // Shed requests owe no rebate: no room needed for them.
            let room = if shedding {
                u64::MAX
            } else {
                self.rebate_backlog_max.saturating_sub(backlog)
            };
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
                    if room == 0 {
                        shared.hurry_rebates();
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
                    // Spin, never yield: a yield can hand the core to another
                    // thread for a whole scheduler slice, far past the linger.
                    std::hint::spin_loop();
                    continue;
                }
                linger_until = None;
                if !self
                    .downstream
                    .take(&shared, &mut inputs, &mut held, answered)
                {
                    break;
                }
                continue;
            }
            linger_until = None;
            if let Some(sizes) = &self.batch_sizes {
                sizes.observe(drained as f64);
            }
            time_ms = time_ms.max(self.clock.now_ms());
            let first = inputs.len();
            // Shedding: only the credits are applied.
            let applied = if shedding { credits } else { drained };
            inputs.extend(envelopes[..applied].iter().map(|e| {
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

            // Applying before the journal write is safe because nothing the
            // Ledger did is visible until its outcome is released, and
            // outcomes are released only after the write (see `stages`). A
            // rebate credit is sequenced after its
            // deposit, so any journal prefix is consistent.
            let ledger = &mut self.ledger;
            let first_held = held.len();
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
                held.push((envelope.client, applied.outcome));
            });
            event_buffers.hand_over(ledger, &mut held[first_held..]);
            held.extend(
                envelopes[applied..]
                    .iter()
                    .map(|e| (e.client, Err(Reject::Unavailable))),
            );
            if dispatched - answered > backlog_peak {
                backlog_peak = dispatched - answered;
                shared
                    .rebate_backlog_peak
                    .store(backlog_peak, Ordering::Relaxed);
            }
            // Every batch goes downstream at once, except inline in sync
            // mode: the flusher's disk work then overlaps the next batch's
            // apply, and an inline async write is a copy into the page cache
            // (no system call), cheaper than holding the outcomes. Inline
            // sync writes wait for an fdatasync each, so there inputs gather
            // until the ring runs dry (plus a linger) or a batch's worth is
            // held (inputs, or outcomes: shed requests have no input).
            if (group_every_batch || inputs.len() >= self.batch_max || held.len() >= self.batch_max)
                && !self
                    .downstream
                    .take(&shared, &mut inputs, &mut held, answered)
            {
                break;
            }
            if self
                .snapshot_every
                .is_some_and(|every| seq - last_snapshot_seq >= every)
            {
                if !self.snapshot(&shared, &mut inputs, &mut held, answered) {
                    break;
                }
                last_snapshot_seq = seq;
            }
        }
        let Business {
            downstream,
            ledger,
            snapshots_kept,
            ..
        } = self;
        if let Some((dir, mut writer)) = downstream.finish() {
            if !shared.failed.load(Ordering::Acquire) && writer.sync().is_ok() {
                if ledger.last_seq() > last_snapshot_seq {
                    write_snapshot(&dir, &ledger, writer.chain_head(), snapshots_kept);
                }
                if let Err(e) = writer.close() {
                    eprintln!("ringledger: writing the clean-shutdown mark failed (the journal still has everything): {e}");
                }
            }
        }
        // Everything accepted is answered now (the flusher, if any, has
        // stopped). Queues of clients registered too late to be adopted close
        // now, so those clients get an error instead of waiting. Not earlier:
        // the flusher adopts a client when it first answers it, possibly
        // after this thread has left its loop.
        drop(shared.registrations.lock().drain(..));
        ledger
    }

    /// Sends everything applied downstream, waits until the journal holds
    /// it fdatasynced, then writes a snapshot, so a snapshot never holds
    /// state the journal lacks durably (recovery counts on it: damage a
    /// snapshot covers is corruption, never a torn tail). False if the
    /// journal failed.
    fn snapshot(
        &mut self,
        shared: &Shared,
        inputs: &mut Vec<Stamped>,
        held: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
    ) -> bool {
        if !self.downstream.take(shared, inputs, held, credits_applied) {
            return false;
        }
        match self.downstream.sync(shared) {
            Err(()) => false,
            Ok(None) => true,
            Ok(Some((dir, head))) => {
                write_snapshot(&dir, &self.ledger, head, self.snapshots_kept);
                true
            }
        }
    }
}

/// Writes a snapshot of the Ledger (the journal must be synced through it;
/// `head` is its chain there)
/// and prunes what the snapshots kept make unnecessary. A failure costs only
/// recovery time: the journal still has everything.
fn write_snapshot(
    dir: &std::path::Path,
    ledger: &Ledger,
    head: journal::ChainHead,
    snapshots_kept: usize,
) {
    let seq = ledger.last_seq();
    if let Err(e) = journal::write_snapshot(dir, ledger, head) {
        eprintln!(
            "ringledger: snapshot at seq {seq} failed (the journal still has everything): {e}"
        );
        return;
    }
    if let Err(e) = journal::retain(dir, snapshots_kept) {
        eprintln!("ringledger: pruning after the snapshot at seq {seq} failed (nothing needed was removed): {e}");
    }
}

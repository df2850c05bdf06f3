//! The rebate side thread: computes each deposit's rebate with the
//! [`RebatePolicy`] away from the business thread and sends it back as an
//! ordinary `CreditRebate` request, so it is sequenced (and journaled) like
//! any other input. The Ledger ignores a credit for a rebate that is no
//! longer owed, which makes a repeated credit harmless.
//!
//! Credits travel on a lane of their own, a small ring that the business
//! thread drains before the gateways' ring, never through the gateways'
//! ring: when the owed backlog is at its limit the business thread stops
//! taking gateway requests, and the credits that bring the backlog down
//! must still get through. The business thread never waits for this thread
//! (its job sends cannot find the channel full); this thread waits for the
//! business thread only when the lane is full, which the business thread
//! always drains first. So the two cannot deadlock.

use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam::channel::Receiver;

use super::{EngineError, Envelope, Shared};
use crate::rebate::{RebateJob, RebatePolicy};
use crate::request::{Request, SessionId};
use crate::ring::{Producer, Waker};

/// Slots in the credit lane: enough to keep the business thread's batches
/// full of credits when they pile up.
pub(super) const LANE_CAPACITY: usize = 1024;

/// How long the thread waits, without asking to be woken, for more jobs
/// after a group: short against the settling of a deposit (a rebate is side
/// work, credited "soon"), long against a deposit's time, so groups are large
/// while deposits flow.
pub(super) const LINGER: Duration = Duration::from_micros(200);

/// The session rebate credits are stamped with: none (0). Credits are
/// unnumbered; the deposit's sequence number is their identity.
pub(super) const REBATE_SESSION: SessionId = 0;

struct PanicGuard(Arc<Shared>);

/// The lane's sending end. Dropping it, as the thread ends (even by a
/// panic), closes the lane and wakes the business thread, which may be
/// parked on its own ring waiting for credits, to notice.
struct Lane {
    producer: Option<Producer<Envelope>>,
    waker: Waker<Envelope>,
}

impl Drop for Lane {
    fn drop(&mut self) {
        drop(self.producer.take());
        self.waker.wake();
    }
}

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0
                .fail("the rebate thread panicked (is the RebatePolicy sound?)".into());
        }
    }
}

pub(super) fn spawn(
    shared: Arc<Shared>,
    policy: Box<dyn RebatePolicy>,
    jobs: Receiver<RebateJob>,
    lane: Producer<Envelope>,
    waker: Waker<Envelope>,
    linger: Duration,
) -> Result<JoinHandle<()>, EngineError> {
    thread::Builder::new()
        .name("ringledger-rebates".into())
        .spawn(move || {
            let _ = shared.rebater.set(thread::current());
            let lane = Lane {
                producer: Some(lane),
                waker,
            };
            // Declared after the lane, so it marks the engine failed before
            // the lane closes.
            let _guard = PanicGuard(shared);
            let Some(producer) = &lane.producer else {
                return;
            };
            serve(
                &jobs,
                |job| credit(&*policy, job),
                producer,
                &lane.waker,
                || thread::park_timeout(linger),
            );
        })
        .map_err(EngineError::Io)
}

/// The credit for `job`: the policy's rebate, or none if the policy
/// answered outside 0..=deposit (that would mint or destroy money).
fn credit(policy: &dyn RebatePolicy, job: RebateJob) -> Envelope {
    let amount = policy.rebate(&job);
    let amount = if (0..=job.amount).contains(&amount) {
        amount
    } else {
        0
    };
    Envelope {
        client: NO_CLIENT,
        session: REBATE_SESSION,
        req: 0,
        request: Request::CreditRebate {
            deposit_seq: job.deposit_seq,
            amount,
        },
    }
}

/// Turns jobs into credits on the lane until the business thread drops its
/// sender (shutdown) or the lane refuses a credit (the business thread is
/// gone).
///
/// Jobs are taken in groups: after a group the thread lingers (`linger`:
/// parked for `LINGER` without asking to be woken) and takes whatever piled
/// up meanwhile. So while deposits flow, neither side pays a wake-up per
/// deposit (the business thread's sends find nobody waiting: no system
/// call; its credits come back a group at a time: one wake-up). Only a
/// linger that found nothing sends the thread back to a blocking receive,
/// which the next job wakes. Whoever needs credits now (the business thread
/// with the backlog at its limit, a barrier, shutdown) cuts the linger short
/// (`Shared::hurry_rebates`).
fn serve(
    jobs: &Receiver<RebateJob>,
    mut credit: impl FnMut(RebateJob) -> Envelope,
    producer: &Producer<Envelope>,
    waker: &Waker<Envelope>,
    mut linger: impl FnMut(),
) {
    'idle: while let Ok(first) = jobs.recv() {
        let mut next = Some(first);
        loop {
            let mut group = 0usize;
            while let Some(job) = next.take().or_else(|| jobs.try_recv().ok()) {
                if producer.push_deferring_wake(credit(job)).is_err() {
                    return;
                }
                group += 1;
                // The lane is small: wake the business thread as it fills,
                // not only at the end of a long group.
                if group.is_multiple_of(LANE_CAPACITY / 2) {
                    waker.wake();
                }
            }
            if group == 0 {
                continue 'idle;
            }
            // The business thread parks on the gateways' ring (watching the
            // lane too); wake it there.
            waker.wake();
            linger();
        }
    }
}

/// The `client` of a credit: nobody is answered.
pub(super) const NO_CLIENT: u32 = u32::MAX;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rebate::RateRebate;
    use crate::ring::{self, WaitStrategy};

    fn job(deposit_seq: u64) -> RebateJob {
        RebateJob {
            deposit_seq,
            account: 1,
            amount: 10_000,
        }
    }

    /// Jobs that pile up while the thread works or lingers are taken as one
    /// group, with one linger after each group, and a linger that finds
    /// nothing sends the thread back to a blocking receive (no linger more).
    #[test]
    fn jobs_piled_up_are_credited_as_one_group_per_linger() {
        let (lane, mut credits) = ring::channel(LANE_CAPACITY, WaitStrategy::Block);
        let waker = credits.waker();
        let (jobs_tx, jobs) = crossbeam::channel::unbounded();
        for seq in 1..=3 {
            jobs_tx.send(job(seq)).unwrap();
        }
        let mut jobs_tx = Some(jobs_tx);
        // The credits found on the lane at each linger, by deposit.
        let mut groups: Vec<Vec<u64>> = Vec::new();
        serve(
            &jobs,
            |job| credit(&RateRebate::default(), job),
            &lane,
            &waker,
            || {
                let mut group = Vec::new();
                credits.drain(LANE_CAPACITY, |envelope| match envelope.request {
                    Request::CreditRebate { deposit_seq, .. } => group.push(deposit_seq),
                    other => panic!("not a credit: {other:?}"),
                });
                groups.push(group);
                match groups.len() {
                    // Deposits made while the thread lingers.
                    1 => {
                        for seq in 4..=5 {
                            jobs_tx.as_ref().unwrap().send(job(seq)).unwrap();
                        }
                    }
                    // Nothing more: the shutdown ends the blocking receive
                    // the thread goes back to.
                    _ => drop(jobs_tx.take()),
                }
            },
        );
        assert_eq!(groups, vec![vec![1, 2, 3], vec![4, 5]]);
    }
}

//! The baselines' rebates, done the way their designs would: a deposit
//! queues a job (the seed's job row, queued with the deposit) and one worker
//! thread (the queue worker) computes each rebate with the engine's
//! [`RateRebate`] and credits it to the wallet, journaling the credit as the
//! engine does (`CreditRebate`). The engine's side thread does the same
//! work, so a benchmark that waits for every credit compares equal work.
//!
//! The queue is bounded ([`REBATE_BACKLOG_MAX`]): at the bound a deposit
//! waits for room (backpressure), so the owed backlog cannot grow without
//! limit when deposits outrun the worker. A deposit queues its job after
//! releasing its locks, so the worker, which takes the wallet's lock to
//! credit, can always make room.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam::channel::{self, Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use super::journal::BaselineJournal;
use crate::money::Units;
use crate::rebate::{RateRebate, RebateJob, RebatePolicy};

/// Most rebates waiting in the queue; at the bound a deposit waits for
/// room. The engine's default owed-backlog bound, so both designs hold
/// deposits back at the same depth.
pub const REBATE_BACKLOG_MAX: usize = crate::engine::REBATE_BACKLOG_MAX_DEFAULT;
/// Most jobs the worker credits before waiting once for their records.
const CREDITS_PER_GROUP_MAX: usize = 256;

/// A queued rebate: the job and the slot of its wallet.
pub(super) struct Job {
    pub slot: usize,
    pub job: RebateJob,
}

/// How one bank credits a rebate: applies `amount` to the job's wallet and
/// journals it, returning the record's sequence (None when not journaled,
/// or when the credit was refused for overflow and so not applied).
pub(super) type Credit = Box<dyn FnMut(&Job, Units) -> Option<u64> + Send>;

/// Rebates owed and paid so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RebateCounts {
    /// Jobs queued by deposits.
    pub queued: u64,
    /// Jobs the worker has finished (credited, or refused for overflow).
    pub credited: u64,
}

impl RebateCounts {
    /// Rebates still owed.
    pub fn owed(&self) -> u64 {
        self.queued - self.credited
    }
}

struct Progress {
    queued: AtomicU64,
    credited: AtomicU64,
    /// Pairs with `settled`; holds nothing, the counts are atomics.
    lock: Mutex<()>,
    settled: Condvar,
}

/// The job queue and its worker thread, owned by one bank.
pub(super) struct RebateDesk {
    sender: Option<Sender<Job>>,
    worker: Option<JoinHandle<()>>,
    progress: Arc<Progress>,
}

impl RebateDesk {
    /// Starts the worker, crediting with `credit` and waiting for the
    /// credits' records in `journal`.
    pub fn start(
        policy: RateRebate,
        journal: Option<Arc<BaselineJournal>>,
        credit: Credit,
    ) -> RebateDesk {
        let (sender, jobs) = channel::bounded(REBATE_BACKLOG_MAX);
        let progress = Arc::new(Progress {
            queued: AtomicU64::new(0),
            credited: AtomicU64::new(0),
            lock: Mutex::new(()),
            settled: Condvar::new(),
        });
        let worker_progress = Arc::clone(&progress);
        let worker = thread::Builder::new()
            .name("baseline-rebates".into())
            .spawn(move || work(policy, journal, credit, &jobs, &worker_progress))
            .expect("starting the baseline rebate worker");
        RebateDesk {
            sender: Some(sender),
            worker: Some(worker),
            progress,
        }
    }

    /// Queues the rebate of a deposit, waiting while the backlog is full.
    pub fn queue(&self, job: Job) {
        self.progress.queued.fetch_add(1, Ordering::AcqRel);
        let sender = self.sender.as_ref().expect("open until the desk drops");
        if sender.send(job).is_err() {
            panic!("the baseline rebate worker stopped");
        }
    }

    pub fn counts(&self) -> RebateCounts {
        // Credited first: a job is counted queued before it can be credited,
        // so this order never shows more credited than queued.
        let credited = self.progress.credited.load(Ordering::Acquire);
        RebateCounts {
            queued: self.progress.queued.load(Ordering::Acquire),
            credited,
        }
    }

    /// Parks until every rebate queued before the call is credited.
    pub fn settle(&self) {
        let target = self.progress.queued.load(Ordering::Acquire);
        let mut guard = self.progress.lock.lock();
        while self.progress.credited.load(Ordering::Acquire) < target {
            // The timeout only guards against a worker that died.
            let timed_out = self
                .progress
                .settled
                .wait_for(&mut guard, Duration::from_millis(100))
                .timed_out();
            if timed_out && self.worker.as_ref().is_none_or(|w| w.is_finished()) {
                panic!("the baseline rebate worker stopped with rebates owed");
            }
        }
    }
}

impl Drop for RebateDesk {
    /// Closes the queue; the worker credits what is left, then ends.
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

fn work(
    policy: RateRebate,
    journal: Option<Arc<BaselineJournal>>,
    mut credit: Credit,
    jobs: &Receiver<Job>,
    progress: &Progress,
) {
    while let Ok(first) = jobs.recv() {
        let mut last_seq = None;
        let mut done = 0;
        for job in std::iter::once(first).chain(jobs.try_iter().take(CREDITS_PER_GROUP_MAX - 1)) {
            let amount = policy.rebate(&job.job);
            if let Some(seq) = credit(&job, amount) {
                last_seq = Some(seq);
            }
            done += 1;
        }
        // One wait covers the group: a record is durable once a later one is.
        if let (Some(journal), Some(seq)) = (&journal, last_seq) {
            journal.make_durable(seq);
        }
        progress.credited.fetch_add(done, Ordering::AcqRel);
        let _guard = progress.lock.lock();
        progress.settled.notify_all();
    }
}

//! The rebates a Ledger owes: one per accepted deposit, in deposit order,
//! settled by a `CreditRebate` for the deposit's sequence number.
//!
//! A credit that would overflow its account's balance (the balance grew
//! after the deposit) is refused, and the rebate moves to `unpaid`: still
//! owed, visible (`Ledger::unpaid_rebates`, `ringledger inspect`), but out
//! of the queue, so it never holds back the rebates behind it. It is not
//! dispatched again on its own: the same credit would fail the same way
//! until the balance comes down, so retrying it on every start would only
//! repeat the refusal. A credit for it that fits (sent once the balance has
//! room) still pays it, exactly once.

use std::collections::{BTreeMap, VecDeque};

use bincode::{Decode, Encode};

use crate::money::Units;
use crate::rebate::RebateJob;
use crate::request::AccountId;

/// A rebate whose credit was refused for overflow: still owed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct UnpaidRebate {
    pub job: RebateJob,
    /// The amount the refused credit carried: what is owed.
    pub amount: Units,
}

#[derive(Clone, Copy, Debug, Encode, Decode)]
struct Queued {
    job: RebateJob,
    /// Credited, or moved to `unpaid`: no longer waiting in the queue.
    settled: bool,
}

/// Where a credit's rebate stands.
pub(super) enum Owed {
    /// Waiting in the queue at this position.
    Queued(usize),
    /// Refused once for overflow, still owed.
    Unpaid(UnpaidRebate),
    /// Credited already, or never owed.
    No,
}

#[derive(Clone, Debug, Default, Encode, Decode)]
pub(super) struct Rebates {
    /// Deposit order; settled rebates are popped from the front.
    queue: VecDeque<Queued>,
    /// Rebates in `queue` not settled yet.
    pending: usize,
    /// By deposit sequence.
    unpaid: BTreeMap<u64, UnpaidRebate>,
}

impl Rebates {
    pub fn push(&mut self, job: RebateJob) {
        self.queue.push_back(Queued {
            job,
            settled: false,
        });
        self.pending += 1;
    }

    /// Rebates waiting for a credit, in deposit order (unpaid ones excluded).
    pub fn pending(&self) -> impl Iterator<Item = RebateJob> + '_ {
        self.queue.iter().filter(|r| !r.settled).map(|r| r.job)
    }

    pub fn pending_len(&self) -> usize {
        self.pending
    }

    pub fn unpaid(&self) -> impl Iterator<Item = UnpaidRebate> + '_ {
        self.unpaid.values().copied()
    }

    /// Entries in the queue, settled ones not yet popped included.
    #[cfg(test)]
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    pub fn find(&self, deposit_seq: u64) -> Owed {
        // Credits come back in deposit order almost always (the side thread
        // is FIFO), so the owed rebate is usually the oldest: O(1) before
        // falling back to a binary search.
        let position = match self.queue.front() {
            Some(oldest) if oldest.job.deposit_seq == deposit_seq => Some(0),
            _ => self
                .queue
                .binary_search_by_key(&deposit_seq, |r| r.job.deposit_seq)
                .ok(),
        };
        match position {
            Some(position) if !self.queue[position].settled => Owed::Queued(position),
            Some(_) => Owed::No,
            None => match self.unpaid.get(&deposit_seq) {
                Some(&unpaid) => Owed::Unpaid(unpaid),
                None => Owed::No,
            },
        }
    }

    /// The account a credit for `deposit_seq` will go to, if its rebate is
    /// queued at `guess` (a hint for prefetching: credits come back in
    /// deposit order, so the credit `k` requests ahead of the one for the
    /// oldest rebate is usually for the rebate `k` places behind it).
    /// Never searches: `None` when the guess is wrong.
    pub fn account_at_guess(&self, deposit_seq: u64, guess: usize) -> Option<AccountId> {
        self.queue
            .get(guess)
            .filter(|r| r.job.deposit_seq == deposit_seq)
            .map(|r| r.job.account)
    }

    pub fn job(&self, position: usize) -> RebateJob {
        self.queue[position].job
    }

    /// The rebate at `position` was credited.
    pub fn settle(&mut self, position: usize) {
        self.queue[position].settled = true;
        self.pending -= 1;
        while self.queue.front().is_some_and(|r| r.settled) {
            self.queue.pop_front();
        }
    }

    /// The rebate at `position` could not be credited `amount`: it stays
    /// owed, out of the queue's way.
    pub fn set_unpaid(&mut self, position: usize, amount: Units) {
        let job = self.queue[position].job;
        self.unpaid
            .insert(job.deposit_seq, UnpaidRebate { job, amount });
        self.settle(position);
    }

    /// An unpaid rebate was credited after all.
    pub fn paid(&mut self, deposit_seq: u64) {
        self.unpaid.remove(&deposit_seq);
    }

    /// The queue's shape `find` and `settle` rely on: in strictly
    /// increasing deposit order (binary search), starting with an unsettled
    /// rebate (settled ones are popped from the front), the pending count
    /// right; each unpaid rebate filed under its own deposit.
    pub fn check_structure(&self) -> Result<(), String> {
        let ordered = self
            .queue
            .iter()
            .zip(self.queue.iter().skip(1))
            .all(|(a, b)| a.job.deposit_seq < b.job.deposit_seq);
        if !ordered || self.queue.front().is_some_and(|r| r.settled) {
            return Err("the rebate queue is out of order or starts settled".into());
        }
        if self.pending_counted() != self.pending {
            return Err(format!(
                "{} rebates pending but the count says {}",
                self.pending_counted(),
                self.pending
            ));
        }
        if let Some(seq) = self
            .unpaid
            .iter()
            .find(|(&seq, u)| seq != u.job.deposit_seq)
            .map(|(seq, _)| seq)
        {
            return Err(format!(
                "unpaid rebate filed under deposit {seq} is another's"
            ));
        }
        Ok(())
    }

    /// Not-settled entries counted the slow way, for the invariant check.
    pub fn pending_counted(&self) -> usize {
        self.queue.iter().filter(|r| !r.settled).count()
    }
}

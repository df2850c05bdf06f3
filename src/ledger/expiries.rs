//! When each open reservation with a time-to-live expires: a min-heap of
//! (expiry time, reservation), earliest first (ties by reservation id, the
//! order they expire in).
//!
//! Most reservations are confirmed or cancelled long before they expire, so
//! their entries are not removed then (a heap cannot remove from its
//! middle cheaply) but left to go stale: an entry counts only while the
//! open reservation it names still expires at its time, which the owner
//! checks when the entry comes due. Stale entries are dropped when they
//! come due or when they outnumber the live ones (plus a slack), so the
//! heap holds at most `2 × live + COMPACT_SLACK` entries (a compaction also
//! drops repeats of a live entry, which an id reused at the same expiry
//! time leaves). A `BTreeSet` did the same job with an insert and a
//! remove per reservation, which was a quarter of
//! `reserve_then_confirm_pair`'s instructions (callgrind, `cargo bench
//! --bench ledger`).
//!
//! The live entries follow from the open reservations, so snapshots encode
//! them as the `BTreeSet` did (see `codec`), and the digest does not see
//! the heap at all.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

use crate::request::ReservationId;

/// Stale entries tolerated beyond the live ones before a compaction.
const COMPACT_SLACK: usize = 64;

#[derive(Clone, Debug, Default)]
pub(super) struct Expiries {
    heap: BinaryHeap<Reverse<(u64, ReservationId)>>,
    /// Open reservations with a time-to-live: the live entries.
    live: usize,
}

impl Expiries {
    /// An index of the timed open reservations listed, as (expiry time,
    /// reservation).
    pub fn from_live(entries: BTreeSet<(u64, ReservationId)>) -> Expiries {
        Expiries {
            live: entries.len(),
            heap: entries.into_iter().map(Reverse).collect(),
        }
    }

    /// A reservation opened that expires at `at_ms`.
    pub fn insert(&mut self, at_ms: u64, reservation: ReservationId) {
        self.heap.push(Reverse((at_ms, reservation)));
        self.live += 1;
    }

    /// A timed reservation closed before it expired: its entry goes stale.
    /// `is_live(at_ms, reservation)` says whether an entry still names an
    /// open reservation expiring at its time (the closed one no longer
    /// does).
    pub fn closed(&mut self, is_live: impl Fn(u64, ReservationId) -> bool) {
        self.live -= 1;
        if self.heap.len() > 2 * self.live + COMPACT_SLACK {
            self.heap.retain(|&Reverse((at, id))| is_live(at, id));
            if self.heap.len() > self.live {
                // A reservation id used again (once its closing left the
                // window of closed ids) at the same expiry time has several
                // entries that all look live: one of them is kept.
                let mut entries = std::mem::take(&mut self.heap).into_vec();
                entries.sort_unstable();
                entries.dedup();
                self.heap = entries.into();
            }
        }
    }

    /// Takes the earliest entry if it is due at `now_ms`. The caller checks
    /// whether it is live and, if it is, expires the reservation and calls
    /// [`Expiries::expired`].
    pub fn pop_due(&mut self, now_ms: u64) -> Option<(u64, ReservationId)> {
        let &Reverse((at, id)) = self.heap.peek()?;
        if at > now_ms {
            return None;
        }
        self.heap.pop();
        Some((at, id))
    }

    /// A live entry taken by [`Expiries::pop_due`] expired its reservation
    /// (`is_live` as for [`Expiries::closed`]).
    pub fn expired(&mut self, is_live: impl Fn(u64, ReservationId) -> bool) {
        self.closed(is_live);
    }

    /// Timed open reservations, as counted.
    #[cfg(test)]
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Entries held, stale ones included.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// The live entries, in expiry order.
    pub fn live(
        &self,
        is_live: impl Fn(u64, ReservationId) -> bool,
    ) -> BTreeSet<(u64, ReservationId)> {
        self.heap
            .iter()
            .map(|&Reverse(entry)| entry)
            .filter(|&(at, id)| is_live(at, id))
            .collect()
    }

    /// The index's own consistency against the timed open reservations
    /// (`timed`, as (expiry time, reservation)): each of them has its
    /// entry, the live count is right, and stale entries are within bound.
    pub fn check_structure(
        &self,
        timed: &BTreeSet<(u64, ReservationId)>,
        is_live: impl Fn(u64, ReservationId) -> bool,
    ) -> Result<(), String> {
        let live = self.live(is_live);
        if &live != timed || self.live != timed.len() {
            return Err(format!(
                "expiry index has {} live entries (counted {}) for {} timed reservations",
                live.len(),
                self.live,
                timed.len()
            ));
        }
        if self.heap.len() > 2 * self.live + COMPACT_SLACK {
            return Err(format!(
                "expiry index holds {} entries for {} live ones",
                self.heap.len(),
                self.live
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Random opens, early closes and expiries against a `BTreeSet` (what
    /// the index replaced): the same reservations expire in the same
    /// order, and the heap stays within its bound.
    #[test]
    fn expires_as_a_sorted_set_would_and_stays_bounded() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rand = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut index = Expiries::default();
        let mut sorted = BTreeSet::new();
        let mut open: BTreeMap<ReservationId, u64> = BTreeMap::new();
        let mut now = 0;
        let mut expired_order = (Vec::new(), Vec::new());
        for step in 0..20_000u64 {
            match rand(10) {
                0..=4 => {
                    // Ids reused on purpose, with a small id space.
                    let id = rand(300);
                    if let std::collections::btree_map::Entry::Vacant(v) = open.entry(id) {
                        let at = now + 1 + rand(50);
                        v.insert(at);
                        index.insert(at, id);
                        sorted.insert((at, id));
                    }
                }
                5..=7 => {
                    if let Some((&id, &at)) = open.iter().nth(rand(open.len() as u64 + 1) as usize)
                    {
                        open.remove(&id);
                        sorted.remove(&(at, id));
                        index.closed(|at, id| open.get(&id) == Some(&at));
                    }
                }
                _ => now += rand(5),
            }
            while let Some((at, id)) = index.pop_due(now) {
                if open.get(&id) == Some(&at) {
                    open.remove(&id);
                    index.expired(|at, id| open.get(&id) == Some(&at));
                    expired_order.0.push((at, id));
                }
            }
            while let Some(&(at, id)) = sorted.first() {
                if at > now {
                    break;
                }
                sorted.pop_first();
                expired_order.1.push((at, id));
            }
            assert_eq!(expired_order.0, expired_order.1, "step {step}");
            index
                .check_structure(&sorted, |at, id| open.get(&id) == Some(&at))
                .unwrap();
        }
        assert!(expired_order.0.len() > 1_000, "the test expired things");
        let back = Expiries::from_live(index.live(|at, id| open.get(&id) == Some(&at)));
        assert_eq!(back.live_len(), sorted.len());
        assert!(
            back.len() == sorted.len(),
            "a rebuilt index holds no stale entry"
        );
    }

    /// Reservations closed long before they expire (the usual case): their
    /// stale entries never outnumber the live ones by more than the slack.
    #[test]
    fn reservations_closed_early_leave_a_bounded_number_of_stale_entries() {
        let mut index = Expiries::default();
        let mut open = BTreeMap::new();
        for id in 0..10_000u64 {
            index.insert(1_000_000 + id, id);
            open.insert(id, 1_000_000 + id);
            if id % 10 != 0 {
                open.remove(&id);
                index.closed(|at, id| open.get(&id) == Some(&at));
            }
            assert!(
                index.len() <= 2 * index.live_len() + COMPACT_SLACK,
                "id {id}"
            );
        }
        assert_eq!(index.live_len(), 1_000);
        let timed: BTreeSet<_> = open.iter().map(|(&id, &at)| (at, id)).collect();
        index
            .check_structure(&timed, |at, id| open.get(&id) == Some(&at))
            .unwrap();
    }

    /// A reservation id used again once its closing was forgotten, at the
    /// same expiry time (a frozen clock, the same ttl), leaves entries that
    /// all look live while it is open: a compaction keeps one of them, so
    /// the bound holds.
    #[test]
    fn an_id_reopened_at_the_same_expiry_time_keeps_the_bound() {
        let mut index = Expiries::default();
        let mut open = BTreeMap::new();
        // Enough others open that closing id 0 never compacts.
        for id in 1..=200 {
            index.insert(500, id);
            open.insert(id, 500);
        }
        for _ in 0..100 {
            index.insert(1_000, 0);
            open.insert(0, 1_000);
            open.remove(&0);
            index.closed(|at, id| open.get(&id) == Some(&at));
        }
        index.insert(1_000, 0);
        open.insert(0, 1_000);
        for id in 1..=200 {
            open.remove(&id);
            index.closed(|at, id| open.get(&id) == Some(&at));
            assert!(
                index.len() <= 2 * index.live_len() + COMPACT_SLACK,
                "{} entries for {} live after closing {id}",
                index.len(),
                index.live_len()
            );
        }
        let timed: BTreeSet<_> = open.iter().map(|(&id, &at)| (at, id)).collect();
        index
            .check_structure(&timed, |at, id| open.get(&id) == Some(&at))
            .unwrap();
    }

    #[test]
    fn a_missing_or_miscounted_entry_is_reported() {
        let mut index = Expiries::default();
        index.insert(5, 1);
        let timed: BTreeSet<_> = [(5, 1), (7, 2)].into();
        let live = |at, id| timed.contains(&(at, id));
        assert!(index.check_structure(&timed, live).is_err());
        index.insert(7, 2);
        assert!(index.check_structure(&timed, live).is_ok());
        index.live += 1;
        assert!(index.check_structure(&timed, live).is_err());
    }
}

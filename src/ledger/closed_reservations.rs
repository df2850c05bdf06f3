//! Reservations that are no longer open, remembered for a window of the
//! `closed_reservations_max` most recently closed (a count, so the window is
//! the same in replay as live): within it a reused id is refused
//! (`reservation_exists`) and a late confirm or cancel learns how the
//! reservation ended; beyond it the oldest is forgotten, first closed first
//! forgotten, after which its id answers `unknown_reservation` and may be
//! reserved again.

use std::collections::VecDeque;

use bincode::{Decode, Encode};
use rustc_hash::FxHashMap;

use crate::outcome::Closure;
use crate::request::ReservationId;

#[derive(Clone, Debug, Default, Encode, Decode)]
pub(super) struct ClosedReservations {
    by_id: FxHashMap<ReservationId, Closure>,
    /// Closing order, oldest first: the order they are forgotten in.
    order: VecDeque<ReservationId>,
}

impl ClosedReservations {
    pub fn get(&self, id: ReservationId) -> Option<Closure> {
        self.by_id.get(&id).copied()
    }

    pub fn contains(&self, id: ReservationId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Remembers `id` (not remembered now: an open reservation's id is never
    /// in the window), forgetting the oldest beyond `max`.
    pub fn insert(&mut self, id: ReservationId, how: Closure, max: u32) {
        debug_assert!(
            !self.by_id.contains_key(&id),
            "reservation {id} closed twice"
        );
        if max == 0 {
            return;
        }
        while self.order.len() >= max as usize {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
        self.by_id.insert(id, how);
        self.order.push_back(id);
    }

    /// The window's own consistency: each id once in closing order, the
    /// same ids in the map, at most `max` of them.
    pub fn check_structure(&self, max: u32) -> Result<(), String> {
        let ids: std::collections::BTreeSet<_> = self.order.iter().collect();
        let consistent = ids.len() == self.order.len()
            && self.by_id.len() == self.order.len()
            && ids.iter().all(|id| self.by_id.contains_key(id))
            && self.order.len() <= max as usize;
        if !consistent {
            return Err(format!(
                "closed reservations: {} in closing order ({} distinct), {} by id, at most {max}",
                self.order.len(),
                ids.len(),
                self.by_id.len()
            ));
        }
        Ok(())
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (ReservationId, Closure)> + '_ {
        self.order.iter().map(|id| (*id, self.by_id[id]))
    }
}

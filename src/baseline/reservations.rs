//! Reservations by id, in a map split into independently locked shards so
//! that unrelated reservations never wait for each other. A shard's lock is
//! a leaf: nothing else is ever locked while one is held.

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::money::Units;
use crate::outcome::{Closure, Reject};
use crate::request::{InstrumentId, ReservationId};

/// An open reservation: what to return or settle when it ends.
#[derive(Clone, Copy, Debug)]
pub(super) struct Held {
    pub slot: usize,
    pub instrument: InstrumentId,
    pub qty: u64,
    pub cost: Units,
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Claimed by a `reserve` still checking; not open yet, but the id is taken.
    Claimed,
    Open(Held),
    /// Kept so a reused id is refused and a late confirm learns what happened.
    Closed(Closure),
}

type Shard = Mutex<FxHashMap<ReservationId, State>>;

pub(super) struct Reservations {
    shards: Box<[CachePadded<Shard>]>,
    mask: usize,
}

impl Reservations {
    pub fn new(shards: usize) -> Reservations {
        let shards = shards.max(1).next_power_of_two();
        Reservations {
            shards: (0..shards)
                .map(|_| CachePadded::new(Mutex::new(FxHashMap::default())))
                .collect(),
            mask: shards - 1,
        }
    }

    fn shard(&self, id: ReservationId) -> &Shard {
        // Fibonacci hashing spreads sequential ids over all shards.
        let mixed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.shards[mixed as usize & self.mask]
    }

    /// Takes the id for a reservation about to be checked; an id ever used
    /// before, open or closed, is refused as the Ledger refuses it.
    pub fn claim(&self, id: ReservationId) -> Result<(), Reject> {
        let mut shard = self.shard(id).lock();
        if shard.contains_key(&id) {
            return Err(Reject::ReservationExists(id));
        }
        shard.insert(id, State::Claimed);
        Ok(())
    }

    /// Gives back a claimed id whose reservation was refused.
    pub fn release_claim(&self, id: ReservationId) {
        self.shard(id).lock().remove(&id);
    }

    /// Makes a claimed reservation open, so confirm and cancel can find it.
    pub fn open(&self, id: ReservationId, held: Held) {
        self.shard(id).lock().insert(id, State::Open(held));
    }

    /// Closes an open reservation as `how` and returns it; only one caller
    /// can ever take a given reservation.
    pub fn close(&self, id: ReservationId, how: Closure) -> Result<Held, Reject> {
        let mut shard = self.shard(id).lock();
        match shard.get(&id).copied() {
            Some(State::Open(held)) => {
                shard.insert(id, State::Closed(how));
                Ok(held)
            }
            Some(State::Closed(closed)) => Err(Reject::UnknownReservation {
                reservation: id,
                closed: Some(closed),
            }),
            Some(State::Claimed) | None => Err(Reject::UnknownReservation {
                reservation: id,
                closed: None,
            }),
        }
    }

    /// Calls `each` with every open reservation (for the invariant check).
    pub fn for_each_open(&self, mut each: impl FnMut(&Held)) {
        for shard in self.shards.iter() {
            for state in shard.lock().values() {
                if let State::Open(held) = state {
                    each(held);
                }
            }
        }
    }
}

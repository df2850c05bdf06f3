//! Answering clients: each client's response queue, the rule that each
//! client answered in a release is woken once, at its end, and the freeing
//! of a dropped client's queue.
//!
//! Owned by whichever stage releases outcomes (see `stages`): on the
//! business thread (no journal, or a journal it writes inline), the
//! flusher, or the replication thread.
//!
//! A dropped [`super::Client`] reports how many requests it sent. Its queue
//! (`response_capacity` slots, allocated once) is freed as soon as it is
//! dropped and every request it sent has been answered (answers to a dropped
//! client are discarded), and its id goes back to the engine for the next
//! new client. So memory follows the clients alive, not all clients ever
//! created.

use super::Shared;
use crate::outcome::Outcome;
use crate::ring::Producer;
use std::sync::atomic::Ordering;

/// `owed` of a client that is still alive.
const ALIVE: u64 = u64::MAX;

/// One client id's place on the answering side.
struct Slot {
    /// The response queue; None once the client is gone (or never adopted).
    queue: Option<Producer<Outcome>>,
    /// Adopted and not yet freed.
    held: bool,
    /// Outcomes for this client so far (delivered or discarded).
    answered: u64,
    /// Requests the dropped client sent: freed once `answered` reaches it.
    owed: u64,
    /// The release that last answered this client (see `wake_answered`).
    last_release: u64,
}

pub(super) struct Responses {
    slots: Vec<Slot>,
    /// Clients answered in the current release, woken once each at its end.
    woken: Vec<u32>,
    release_number: u64,
    /// Ids freed during this release, handed back at its end.
    freed: Vec<u32>,
    /// Slots adopted and not yet freed.
    held: usize,
}

impl Responses {
    pub fn new() -> Responses {
        Responses {
            slots: Vec::new(),
            woken: Vec::new(),
            // Adoption marks a client with 0, so numbering starts at 1: a
            // client answered in the very first release is still woken.
            release_number: 1,
            freed: Vec::new(),
            held: 0,
        }
    }

    /// Puts an outcome on its client's queue without waking the client yet
    /// (see `wake_answered`). The client keeps no more in flight than its
    /// queue holds, so this never waits; an answer to a dropped client is
    /// discarded, and its queue freed.
    pub fn send(&mut self, client: u32, outcome: Outcome) {
        let index = client as usize;
        let slot = &mut self.slots[index];
        slot.answered += 1;
        if let Some(producer) = &slot.queue {
            if producer.push_deferring_wake(outcome).is_err() {
                slot.queue = None;
            } else if slot.last_release != self.release_number {
                slot.last_release = self.release_number;
                self.woken.push(client);
            }
        }
        if slot.answered == slot.owed {
            self.free(index);
        }
    }

    /// Wakes, once each, the clients answered since the last call, then
    /// frees the queues of clients dropped meanwhile that are owed nothing.
    pub fn wake_answered(&mut self, shared: &Shared) {
        self.release_number += 1;
        for client in self.woken.drain(..) {
            if let Some(producer) = &self.slots[client as usize].queue {
                producer.wake();
            }
        }
        self.settle_departures(shared);
    }

    /// Takes over the response queues of clients created since the last
    /// call. Called once per batch before it is answered; locks only when a
    /// client was created.
    pub fn adopt_new_clients(&mut self, shared: &Shared) {
        if !shared.registered.load(Ordering::Acquire) {
            return;
        }
        let mut registrations = shared.registrations.lock();
        shared.registered.store(false, Ordering::Relaxed);
        for (id, producer) in registrations.drain(..) {
            let id = id as usize;
            if self.slots.len() <= id {
                self.slots.resize_with(id + 1, || Slot {
                    queue: None,
                    held: false,
                    answered: 0,
                    owed: ALIVE,
                    last_release: 0,
                });
            }
            debug_assert!(!self.slots[id].held, "client id {id} adopted twice");
            self.slots[id] = Slot {
                queue: Some(producer),
                held: true,
                answered: 0,
                owed: ALIVE,
                last_release: 0,
            };
            self.held += 1;
        }
        drop(registrations);
        self.publish_counts(shared);
    }

    /// Learns which clients were dropped and how much each is owed.
    fn settle_departures(&mut self, shared: &Shared) {
        if shared.departed.load(Ordering::Acquire) {
            let left = {
                let mut departures = shared.departures.lock();
                shared.departed.store(false, Ordering::Relaxed);
                std::mem::take(&mut departures.left)
            };
            // A client registers before it can leave: adopting now makes
            // every departed client's slot known, even one never answered.
            self.adopt_new_clients(shared);
            for (client, sent) in left {
                let index = client as usize;
                let slot = &mut self.slots[index];
                slot.owed = sent;
                if slot.answered == sent {
                    self.free(index);
                }
            }
        }
        if !self.freed.is_empty() {
            shared.departures.lock().free.append(&mut self.freed);
            self.publish_counts(shared);
        }
    }

    /// Drops the queue (its memory goes now) and keeps the id for reuse
    /// once this release has woken everyone.
    fn free(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.queue = None;
        slot.held = false;
        slot.owed = ALIVE;
        self.held -= 1;
        self.freed.push(index as u32);
    }

    fn publish_counts(&self, shared: &Shared) {
        shared
            .response_queues_held
            .store(self.held, Ordering::Relaxed);
        shared
            .response_slots
            .store(self.slots.len(), Ordering::Relaxed);
    }
}

//! Answering clients: each client's response queue, and the rule that each
//! client answered in a release is woken once, at its end.
//!
//! Owned by whichever thread releases outcomes: the business thread (no
//! journal, or a journal it writes inline) or the flusher.

use super::Shared;
use crate::outcome::Outcome;
use crate::ring::Producer;

/// `last_release` of a client id whose queue has not been adopted yet.
const NOT_ADOPTED: u64 = u64::MAX;

pub(super) struct Responses {
    /// Each client's response queue, by client id (None: dropped client).
    queues: Vec<Option<Producer<Outcome>>>,
    /// Clients answered in the current release, woken once each at its end.
    woken: Vec<u32>,
    release_number: u64,
    last_release: Vec<u64>,
}

impl Responses {
    pub fn new() -> Responses {
        Responses {
            queues: Vec::new(),
            woken: Vec::new(),
            // Adoption marks a client with 0, so numbering starts at 1: a
            // client answered in the very first release is still woken.
            release_number: 1,
            last_release: Vec::new(),
        }
    }

    /// Puts an outcome on its client's queue without waking the client yet
    /// (see `wake_answered`). The client keeps no more in flight than its
    /// queue holds, so this never waits; a dropped client's queue is closed
    /// and forgotten.
    pub fn send(&mut self, client: u32, outcome: Outcome) {
        let index = client as usize;
        let Some(producer) = &self.queues[index] else {
            return;
        };
        if producer.push_deferring_wake(outcome).is_err() {
            self.queues[index] = None;
        } else if self.last_release[index] != self.release_number {
            self.last_release[index] = self.release_number;
            self.woken.push(client);
        }
    }

    /// Wakes, once each, the clients answered since the last call.
    pub fn wake_answered(&mut self) {
        self.release_number += 1;
        for client in self.woken.drain(..) {
            if let Some(producer) = &self.queues[client as usize] {
                producer.wake();
            }
        }
    }

    /// Takes over the response queues of clients created since the last
    /// call, if `newest` (the highest client id about to be answered) is
    /// one of them. Locks only then.
    pub fn adopt_new_clients(&mut self, shared: &Shared, newest: u32) {
        if (newest as usize) < self.queues.len() {
            return;
        }
        for (id, producer) in shared.registrations.lock().drain(..) {
            let id = id as usize;
            if self.queues.len() <= id {
                self.queues.resize_with(id + 1, || None);
                self.last_release.resize(id + 1, NOT_ADOPTED);
            }
            self.queues[id] = Some(producer);
            self.last_release[id] = 0;
        }
    }
}

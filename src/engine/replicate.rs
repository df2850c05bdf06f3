//! The replication stage (cargo feature `nats`): after the journal, each
//! group's frame goes to the replication thread (see
//! [`crate::replication::Publisher`]), and the group's outcomes are
//! answered there, once JetStream acknowledged the frame, never before.
//! Refused frames answer `unavailable` (no quorum: the frame is published
//! when the stream is back) or `not_leader` (fenced: the engine stops).
//! Rebate credits count as settled when their frame is stored, whether its
//! outcomes were answered then or refused before.
//!
//! The frames waiting for the stream (the replication backlog) are bounded:
//! once more than `backlog_max` records wait, [`Replicate::shedding`] tells
//! the business thread to answer gateway requests `unavailable` without
//! applying or journaling them, until the backlog falls to half the bound.
//! Those answers take the same road as the others
//! ([`Publisher::pass`]), so each client hears them after the answers to
//! its earlier requests.

use std::sync::Arc;

use super::outbox::Responses;
use super::stages::AfterJournal;
use super::{EngineError, Shared};
use crate::journal::Meta;
use crate::outcome::{Outcome, Reject};
use crate::replication::{Publisher, Release, ReplicationConfig, ReplicationError, Takeover};

/// How a replication failure at start reaches the engine's caller.
pub(super) fn engine_error(e: ReplicationError) -> EngineError {
    match e {
        ReplicationError::NotLeader(why) => EngineError::NotLeader(why),
        ReplicationError::Unavailable(_) => EngineError::Unavailable(e.to_string()),
        ReplicationError::Journal(e) => EngineError::Journal(e),
        e => EngineError::Config(e.to_string()),
    }
}

/// A group's outcomes and the rebate credits applied through it.
type Group = (Vec<(u32, Outcome)>, u64);

/// The answering stage, run on the replication thread.
struct Answering {
    shared: Arc<Shared>,
    responses: Responses,
}

impl Release for Answering {
    type Item = Group;
    /// The running count of credits applied through the frame.
    type Settles = u64;

    fn settles(&(_, credits): &Group) -> u64 {
        credits
    }

    fn settle(&mut self, credits: u64) {
        self.shared.publish_credits(credits);
    }

    fn stored(&mut self, (outcomes, _): Group) {
        self.responses.adopt_new_clients(&self.shared);
        for (client, outcome) in outcomes {
            self.responses.send(client, outcome);
        }
    }

    fn refused(&mut self, (outcomes, _): Group, why: &ReplicationError) {
        let reject = match why {
            ReplicationError::NotLeader(why) => {
                self.shared.fail_fenced(why.clone());
                Reject::NotLeader
            }
            _ => Reject::Unavailable,
        };
        self.responses.adopt_new_clients(&self.shared);
        for (client, _) in outcomes {
            self.responses.send(client, Err(reject));
        }
    }

    fn flush(&mut self) {
        self.responses.wake_answered(&self.shared);
    }
}

pub(super) struct Replicate {
    publisher: Option<Publisher<Answering>>,
    /// The last journal seq handed to the publisher.
    handed_seq: u64,
    /// Most records the backlog may hold before requests are shed.
    backlog_max: u64,
    shedding: bool,
}

impl Replicate {
    /// Starts the replication thread: connects, and first publishes what the
    /// journal in `dir` holds beyond the stream (through `last_seq`).
    pub fn start(
        config: &ReplicationConfig,
        meta: Meta,
        dir: &std::path::Path,
        last_seq: u64,
        takeover: Option<Takeover>,
        backlog_max: u64,
        shared: Arc<Shared>,
    ) -> Result<Replicate, EngineError> {
        // A lost lease stops the engine even while nothing is in flight.
        if let Some(lease) = takeover.as_ref().and_then(Takeover::lease) {
            let shared = Arc::clone(&shared);
            lease.on_lost(move |why| shared.fail_fenced(why));
        }
        let answering = Answering {
            shared: Arc::clone(&shared),
            responses: Responses::new(),
        };
        let publisher = Publisher::start(config, meta, Some(dir), last_seq, takeover, answering)
            .map_err(|e| match e {
                ReplicationError::NotLeader(why) => EngineError::NotLeader(why),
                ReplicationError::Unavailable(_) => EngineError::Unavailable(e.to_string()),
                e => EngineError::Config(e.to_string()),
            })?;
        let _ = shared.replication_backlog.set(publisher.backlog());
        Ok(Replicate {
            publisher: Some(publisher),
            handed_seq: last_seq,
            backlog_max,
            shedding: false,
        })
    }
}

impl AfterJournal for Replicate {
    fn journaled(
        &mut self,
        _: &Shared,
        frame: &[u8],
        last_seq: u64,
        held: &mut Vec<(u32, Outcome)>,
        credits_applied: u64,
    ) {
        if let Some(publisher) = &self.publisher {
            publisher.publish(frame, last_seq, (std::mem::take(held), credits_applied));
            self.handed_seq = last_seq;
        }
    }

    fn passed(&mut self, _: &Shared, held: &mut Vec<(u32, Outcome)>, credits_applied: u64) {
        if let Some(publisher) = &self.publisher {
            publisher.pass((std::mem::take(held), credits_applied));
        }
    }

    /// One atomic load: the records the stream stored so far.
    fn shedding(&mut self) -> bool {
        let Some(publisher) = &self.publisher else {
            return false;
        };
        let backlog = self.handed_seq.saturating_sub(publisher.stored_seq());
        self.shedding = if self.shedding {
            backlog > self.backlog_max / 2
        } else {
            backlog > self.backlog_max
        };
        self.shedding
    }

    fn finish(&mut self) {
        if let Some(publisher) = self.publisher.take() {
            publisher.finish();
        }
    }
}

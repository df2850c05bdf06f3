//! Order events from the business thread to the clients without a copy or
//! an allocation per request: after each batch, the Ledger's event buffer
//! (every fill and self-trade cancellation of the batch's places and
//! amends) moves into a pooled, shared buffer, and each place or amend
//! outcome of the batch gets a share of it beside its range (see
//! [`OrderEvents`]). Clients read their events from it on their own
//! threads; a buffer is reused once every outcome holding it is dropped.
//! The pool grows only while more batches' outcomes are unread than it has
//! buffers (at most the requests in flight), so once warmed up, answering
//! orders allocates nothing, however many fills an order makes.
//!
//! [`OrderEvents`]: crate::outcome::OrderEvents

use std::sync::Arc;

use crate::ledger::Ledger;
use crate::outcome::{OrderEvent, Outcome, Reply};

#[derive(Default)]
pub(super) struct EventBuffers {
    pool: Vec<Arc<Vec<OrderEvent>>>,
    /// Where the search for a free buffer starts: the oldest handed out is
    /// the likeliest to be free again.
    next: usize,
}

impl EventBuffers {
    /// After a batch: moves the Ledger's events into a free buffer and
    /// hands it to the batch's `outcomes` that name events.
    pub fn hand_over(&mut self, ledger: &mut Ledger, outcomes: &mut [(u32, Outcome)]) {
        if !ledger.has_events() {
            return;
        }
        let i = self.free();
        let buffer = Arc::get_mut(&mut self.pool[i]).expect("a free buffer is not shared");
        buffer.clear();
        ledger.take_events(buffer);
        let batch = &self.pool[i];
        for (_, outcome) in outcomes {
            if let Ok(Reply::Placed { events, .. }) = outcome {
                if !events.is_empty() {
                    events.attach(batch);
                }
            }
        }
    }

    /// A buffer no outcome holds any more (only this pool does: clients
    /// only ever drop their shares, so the count cannot rise again), or a
    /// new one.
    fn free(&mut self) -> usize {
        let n = self.pool.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if Arc::strong_count(&self.pool[i]) == 1 {
                self.next = (i + 1) % n;
                return i;
            }
        }
        self.pool.push(Arc::new(Vec::new()));
        self.next = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{Side, Stp, Tif};
    use crate::request::{InstrumentId, Request, Stamp, Stamped, Symbol};

    fn stamped(seq: u64, request: Request) -> Stamped {
        Stamped::new(
            Stamp {
                seq,
                time_ms: 0,
                session: 0,
                req: 0,
            },
            request,
        )
    }

    fn place(order: u64, account: u64, side: Side, qty: u64) -> Request {
        Request::Place {
            order,
            account,
            instrument: InstrumentId(0),
            side,
            market: false,
            tif: Tif::Gtc,
            post_only: false,
            stp: Stp::CancelResting,
            qty,
            price: 10,
        }
    }

    /// A ledger where account 2 owns 1,000 shares and both have cash.
    fn market() -> (Ledger, u64) {
        let mut ledger = Ledger::default();
        let setup = [
            Request::ListInstrument {
                symbol: Symbol::new("ACME").unwrap(),
                supply: 1_000,
                price: 1,
            },
            Request::OpenAccount { account: 1 },
            Request::OpenAccount { account: 2 },
            Request::Deposit {
                account: 1,
                amount: 1_000_000,
            },
            Request::Deposit {
                account: 2,
                amount: 1_000_000,
            },
            Request::Reserve {
                reservation: 1,
                account: 2,
                instrument: InstrumentId(0),
                qty: 1_000,
                ttl_ms: 0,
                partial: false,
            },
            Request::Confirm { reservation: 1 },
        ];
        for (i, request) in setup.iter().enumerate() {
            assert!(ledger
                .apply(&stamped(i as u64 + 1, *request))
                .outcome
                .is_ok());
        }
        (ledger, setup.len() as u64)
    }

    #[test]
    fn each_outcome_reads_its_own_events_and_buffers_are_reused_once_dropped() {
        let (mut ledger, mut seq) = market();
        let mut buffers = EventBuffers::default();
        let mut batch = |ledger: &mut Ledger, buffers: &mut EventBuffers, requests: &[Request]| {
            let stamped: Vec<Stamped> = requests
                .iter()
                .map(|&r| {
                    seq += 1;
                    stamped(seq, r)
                })
                .collect();
            let mut outcomes = Vec::new();
            ledger.apply_batch(&stamped, |_, applied| outcomes.push((0, applied.outcome)));
            buffers.hand_over(ledger, &mut outcomes);
            outcomes
        };
        // Three makers, then a taker of all three, in one batch; a second
        // taker with nothing to take.
        let first = batch(
            &mut ledger,
            &mut buffers,
            &[
                place(1, 2, Side::Sell, 1),
                place(2, 2, Side::Sell, 2),
                place(3, 2, Side::Sell, 3),
                place(4, 1, Side::Buy, 6),
                place(5, 1, Side::Buy, 1),
            ],
        );
        let events = |outcome: &Outcome| match outcome {
            Ok(Reply::Placed { events, .. }) => events
                .get()
                .expect("handed its buffer")
                .iter()
                .map(|e| match *e {
                    OrderEvent::Trade { maker, qty, .. } => (maker, qty),
                    OrderEvent::StpCancelled(id) => (id, 0),
                })
                .collect::<Vec<_>>(),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(events(&first[3].1), vec![(1, 1), (2, 2), (3, 3)]);
        assert!(events(&first[4].1).is_empty());
        assert_eq!(buffers.pool.len(), 1);
        // The first batch's outcomes are still held: the next batch with
        // events gets a new buffer, and the first keeps its events.
        let second = batch(
            &mut ledger,
            &mut buffers,
            &[place(6, 2, Side::Sell, 2), place(7, 2, Side::Sell, 1)],
        );
        assert_eq!(events(&second[0].1), vec![(5, 1)]);
        assert!(events(&second[1].1).is_empty());
        assert_eq!(buffers.pool.len(), 2);
        assert_eq!(events(&first[3].1), vec![(1, 1), (2, 2), (3, 3)]);
        // Once every outcome of both is dropped, their buffers come back.
        drop((first, second));
        batch(&mut ledger, &mut buffers, &[place(8, 1, Side::Buy, 2)]);
        batch(&mut ledger, &mut buffers, &[place(9, 1, Side::Buy, 1)]);
        assert_eq!(buffers.pool.len(), 2, "no new buffer once warmed up");
    }
}

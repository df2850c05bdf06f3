//! The gateway threads' loops: closed loop (as fast as answers come back,
//! pipelined for the engine) or open loop (each request has a scheduled send
//! time and its latency counts from that time, so a stall is charged to
//! every request it delayed — coordinated omission is not hidden).
//!
//! Each gateway records into its own histogram; they are merged after the
//! run, so measuring adds no shared write per operation.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::workload::{Flow, Op};
use crate::baseline::{Bank, Exchange, NewOrder};
use crate::book::Stp;
use crate::engine::{Client, EngineError};
use crate::outcome::{Outcome, Reject};
use crate::request::InstrumentId;

/// Largest latency the histograms hold (longer ones are clamped to it).
pub(super) const LATENCY_NS_MAX: u64 = 60_000_000_000;
/// Operations a gateway completes between updates of the shared progress
/// counter: one atomic add per this many operations.
const PROGRESS_EVERY: u64 = 4_096;
/// The timer slack of an open-loop client thread: Linux lets a sleep
/// overshoot by 50 µs by default, which would count as latency.
const TIMER_SLACK_NS: libc::c_ulong = 1_000;

/// Narrows the calling thread's timer slack to `TIMER_SLACK_NS` (Linux
/// only; where it fails, sleeps merely overshoot and the lateness counts).
pub(super) fn narrow_timer_slack() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and changes only
    // the calling thread's timer slack.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS);
    }
}

/// When requests go out.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Each gateway sends as soon as its window has room.
    Closed,
    /// Gateway requests are due every `interval_ns`, from the run's start.
    Open { interval_ns: f64 },
}

/// What one gateway saw.
pub struct Tally {
    pub histogram: Histogram<u64>,
    pub accepted: u64,
    pub rejected: u64,
    /// Shares of the confirmations answered with success.
    pub sold: u64,
    /// Deposits answered with success: each one owes a rebate.
    pub deposits: u64,
}

impl Default for Tally {
    fn default() -> Tally {
        Tally {
            histogram: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
                .expect("the bounds are valid"),
            accepted: 0,
            rejected: 0,
            sold: 0,
            deposits: 0,
        }
    }
}

impl Tally {
    fn count(&mut self, op: &Op, accepted: bool, latency_ns: u64) {
        self.histogram.saturating_record(latency_ns.max(1));
        if accepted {
            self.accepted += 1;
            match op {
                Op::Confirm { qty, .. } => self.sold += qty,
                Op::Deposit { .. } => self.deposits += 1,
                _ => {}
            }
        } else {
            self.rejected += 1;
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        self.histogram
            .add(&other.histogram)
            .expect("histograms share their bounds");
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.sold += other.sold;
        self.deposits += other.deposits;
    }
}

/// What a gateway needs besides its engine handle and its [`Flow`].
pub struct Gateway<'a> {
    pub index: usize,
    pub count: u64,
    pub pace: Pace,
    /// Time zero of the run: every timestamp is nanoseconds since it.
    pub base: Instant,
    pub progress: &'a AtomicU64,
    /// The share-sale instrument.
    pub instrument: InstrumentId,
    /// Whether this open-loop client has a core to itself (the clients and
    /// the engine's business thread fit on the machine's cores): it then
    /// sleeps only until shortly before each send time and spins the rest,
    /// and spins while answers are due, so a send leaves on time and an
    /// answer is counted when it arrives rather than when a parked thread is
    /// woken (tens of microseconds on a virtual machine, which would be the
    /// harness's latency, not the engine's). Without a core of its own it
    /// parks: spinning threads that outnumber the cores stall each other for
    /// whole scheduler time slices.
    pub spin: bool,
}

/// How long before a send time a spinning open-loop client stops sleeping:
/// more than a timer wake-up's usual lateness on a virtual machine.
const SEND_SPIN_NS: u64 = 50_000;

impl Gateway<'_> {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// When request `i` is due (open loop); `None` in a closed loop.
    fn due_ns(&self, i: u64) -> Option<u64> {
        match self.pace {
            Pace::Closed => None,
            Pace::Open { interval_ns } => Some((i as f64 * interval_ns) as u64),
        }
    }

    /// Waits until `due_ns`: asleep, or (`spin`) asleep until shortly
    /// before it and spinning the rest.
    fn wait_until(&self, due_ns: u64) {
        let margin = if self.spin { SEND_SPIN_NS } else { 0 };
        loop {
            let now = self.now_ns();
            if now >= due_ns {
                return;
            }
            if due_ns - now > margin {
                std::thread::sleep(Duration::from_nanos(due_ns - now - margin));
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// An open-loop client sleeps until each send time, so its sleeps must
    /// end on time: narrows this thread's timer slack (Linux only; where
    /// it fails, sleeps merely overshoot and the lateness is counted).
    fn sleep_precisely(&self) {
        if matches!(self.pace, Pace::Open { .. }) {
            narrow_timer_slack();
        }
    }

    fn progressed(&self, done: u64) {
        if done.is_multiple_of(PROGRESS_EVERY) {
            self.progress.fetch_add(PROGRESS_EVERY, Ordering::Relaxed);
        }
    }

    fn finished(&self) {
        self.progress
            .fetch_add(self.count % PROGRESS_EVERY, Ordering::Relaxed);
    }

    /// Drives the lmax engine through `client`, keeping up to `window`
    /// requests in flight and receiving the oldest answer when it is full.
    pub fn run_lmax(
        &self,
        client: &mut Client,
        window: usize,
        flow: &mut Flow,
    ) -> Result<Tally, EngineError> {
        self.sleep_precisely();
        let mut tally = Tally::default();
        // (op, the time its latency counts from), oldest first.
        let mut in_flight: VecDeque<(Op, u64)> = VecDeque::with_capacity(window);
        let mut done = 0u64;
        // Counts an answer; returns the time it was counted at.
        let mut receive = |tally: &mut Tally,
                           in_flight: &mut VecDeque<(Op, u64)>,
                           flow: &mut Flow,
                           outcome: Outcome| {
            let (op, from_ns) = in_flight.pop_front().expect("an answer follows a request");
            let now_ns = self.now_ns();
            tally.count(&op, outcome.is_ok(), now_ns.saturating_sub(from_ns));
            flow.answered(&op, op.rests_after(&outcome));
            done += 1;
            self.progressed(done);
            now_ns
        };
        let mut sent = 0u64;
        while sent < self.count {
            let op = flow.next(sent);
            let from_ns = match self.due_ns(sent) {
                // The next request goes out as soon as the oldest answer is
                // counted: one clock read serves both.
                None if in_flight.len() >= window => {
                    let outcome = client.recv()?;
                    receive(&mut tally, &mut in_flight, flow, outcome)
                }
                None => self.now_ns(),
                Some(due_ns) => {
                    // Collect answers while waiting for the send time, parked
                    // (or spinning, with a core to itself: see `spin`); a
                    // full window makes the request late, and the lateness
                    // counts.
                    loop {
                        while let Some(outcome) = client.try_recv()? {
                            receive(&mut tally, &mut in_flight, flow, outcome);
                        }
                        let now_ns = self.now_ns();
                        if in_flight.len() >= window {
                            let outcome = client.recv()?;
                            receive(&mut tally, &mut in_flight, flow, outcome);
                        } else if now_ns >= due_ns {
                            break;
                        } else if in_flight.is_empty() {
                            self.wait_until(due_ns);
                        } else if self.spin {
                            std::hint::spin_loop();
                        } else if let Some(outcome) =
                            client.recv_timeout(Duration::from_nanos(due_ns - now_ns))?
                        {
                            receive(&mut tally, &mut in_flight, flow, outcome);
                        }
                    }
                    due_ns
                }
            };
            client.send(op.request(self.instrument))?;
            in_flight.push_back((op, from_ns));
            sent += 1;
        }
        while !in_flight.is_empty() {
            let outcome = client.recv()?;
            receive(&mut tally, &mut in_flight, flow, outcome);
        }
        self.finished();
        Ok(tally)
    }

    /// Drives a baseline: one synchronous call per operation (a window of
    /// one by nature), timed from the call (closed) or its due time (open).
    pub fn run_bank(&self, bank: &dyn Bank, flow: &mut Flow) -> Tally {
        self.sleep_precisely();
        let mut tally = Tally::default();
        for i in 0..self.count {
            let op = flow.next(i);
            let from_ns = match self.due_ns(i) {
                None => self.now_ns(),
                Some(due_ns) => {
                    self.wait_until(due_ns);
                    due_ns
                }
            };
            let answer = call_bank(bank, self.instrument, op);
            tally.count(&op, answer.is_ok(), self.now_ns().saturating_sub(from_ns));
            flow.answered(&op, bank_rests(&op, &answer));
            self.progressed(i + 1);
        }
        self.finished();
        tally
    }
}

/// [`Op::rests_after`] for a baseline's answer (the qty left resting, for
/// a place or a move).
fn bank_rests(op: &Op, answer: &Result<u64, Reject>) -> bool {
    match answer {
        Ok(resting) => *resting > 0,
        Err(Reject::UnknownOrder(_)) => false,
        Err(_) => matches!(op, Op::Move { .. }),
    }
}

fn exchange(bank: &dyn Bank) -> &dyn Exchange {
    bank.as_exchange()
        .expect("an order-book scenario runs only on a bank with books (the run checks)")
}

/// Calls `bank` for `op`; a place or a move answers the qty left resting
/// (0 for anything else).
pub(super) fn call_bank(bank: &dyn Bank, instrument: InstrumentId, op: Op) -> Result<u64, Reject> {
    match op {
        Op::Deposit { account, amount } => bank.deposit(account, amount).map(|_| 0),
        Op::Withdraw { account, amount } => bank.withdraw(account, amount).map(|_| 0),
        Op::Transfer { from, to, amount } => bank.transfer(from, to, amount).map(|_| 0),
        Op::Balance { account } => bank.balance(account).map(|_| 0),
        Op::Reserve {
            reservation,
            account,
            qty,
        } => bank
            .reserve(reservation, account, instrument, qty, false)
            .map(|_| 0),
        Op::Confirm { reservation, .. } => bank.confirm(reservation).map(|_| 0),
        Op::Cancel { reservation } => bank.cancel(reservation).map(|_| 0),
        Op::Place {
            order,
            account,
            book,
            side,
            tif,
            qty,
            price,
        } => exchange(bank)
            .place(NewOrder {
                order,
                account,
                instrument: InstrumentId(book),
                side,
                market: false,
                tif,
                post_only: false,
                stp: Stp::CancelResting,
                qty,
                price,
            })
            .map(|placed| placed.resting),
        Op::Move { order, price } => exchange(bank)
            .amend(order, None, Some(price))
            .map(|placed| placed.resting),
        Op::CancelOrder { order } => exchange(bank).cancel_order(order).map(|_| 0),
    }
}

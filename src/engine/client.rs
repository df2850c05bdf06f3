//! A gateway's handle: its own session (for request numbering) and its own
//! response queue, so answers never contend with other gateways'.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{EngineError, Envelope, Shared};
use crate::money::Scale;
use crate::outcome::Outcome;
use crate::request::{InstrumentId, Request, SessionId, Symbol};
use crate::ring::{self, Consumer, Producer};

/// One gateway's connection to the engine. Not shared between threads:
/// give each gateway thread its own (they are cheap).
///
/// Requests are pipelined: [`Client::send`] returns at once and
/// [`Client::recv`] hands back outcomes in the order the requests were sent.
/// [`Client::call`] does both for one request.
pub struct Client {
    shared: Arc<Shared>,
    id: u32,
    session: SessionId,
    last_req: u64,
    requests: Producer<Envelope>,
    responses: Consumer<Outcome>,
    /// Sent but not yet handed to the caller.
    in_flight: usize,
    /// Answers already taken off the response queue (to make room) but not
    /// yet handed to the caller.
    received: VecDeque<Outcome>,
}

impl Client {
    pub(super) fn new(shared: &Arc<Shared>) -> Result<Client, EngineError> {
        let requests = shared
            .requests
            .lock()
            .as_ref()
            .cloned()
            .ok_or_else(|| shared.error())?;
        let session = shared.next_session.fetch_add(1, Ordering::Relaxed);
        let (producer, responses) = ring::channel(shared.response_capacity, shared.wait);
        // The id is taken under the same lock that publishes the queue, so
        // by the time any request carries this id, its queue is registered.
        let id = {
            let mut registrations = shared.registrations.lock();
            let id = shared.next_client.fetch_add(1, Ordering::Relaxed);
            registrations.push((id, producer));
            id
        };
        Ok(Client {
            shared: Arc::clone(shared),
            id,
            session,
            last_req: 0,
            requests,
            responses,
            in_flight: 0,
            received: VecDeque::new(),
        })
    }

    /// This client's session: the scope of its request numbers.
    pub fn session(&self) -> SessionId {
        self.session
    }

    pub fn scale(&self) -> Scale {
        self.shared.scale
    }

    /// Requests sent whose outcomes have not been received yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The id an instrument was listed under, if it is listed.
    pub fn instrument_id(&self, symbol: &Symbol) -> Option<InstrumentId> {
        self.shared.directory.read().get(symbol).copied()
    }

    /// Sends a request without waiting for its outcome. Requests that can
    /// change state are numbered 1, 2, 3… for idempotency.
    pub fn send(&mut self, request: Request) -> Result<(), EngineError> {
        let req = if request.is_numbered() {
            self.last_req + 1
        } else {
            0
        };
        self.send_numbered(request, req)
    }

    /// Sends a request under a number the caller chose (for example one a
    /// remote client supplied, so that its retry is recognised as a
    /// duplicate). Later automatic numbers continue above the highest used.
    pub fn send_numbered(&mut self, request: Request, req: u64) -> Result<(), EngineError> {
        if matches!(request, Request::CreditRebate { .. })
            && self.session != self.shared.rebate_session.load(Ordering::Acquire)
        {
            return Err(EngineError::Refused(
                "credit_rebate comes only from the engine's rebate thread",
            ));
        }
        while self.in_flight - self.received.len() >= self.shared.response_capacity {
            self.collect(true)?;
        }
        let envelope = Envelope {
            client: self.id,
            session: self.session,
            req,
            request,
        };
        self.requests
            .push(envelope)
            .map_err(|_| self.shared.error())?;
        self.last_req = self.last_req.max(req);
        self.in_flight += 1;
        Ok(())
    }

    /// The outcome of the oldest request in flight, waiting for it if needed.
    pub fn recv(&mut self) -> Result<Outcome, EngineError> {
        if self.in_flight == 0 {
            return Err(EngineError::NothingInFlight);
        }
        if self.received.is_empty() {
            self.collect(true)?;
        }
        let outcome = self.received.pop_front().expect("collect received one");
        self.in_flight -= 1;
        Ok(outcome)
    }

    /// The outcome of the oldest request in flight if it has arrived.
    pub fn try_recv(&mut self) -> Result<Option<Outcome>, EngineError> {
        if self.received.is_empty() && self.in_flight > 0 {
            self.collect(false)?;
        }
        match self.received.pop_front() {
            Some(outcome) => {
                self.in_flight -= 1;
                Ok(Some(outcome))
            }
            None => Ok(None),
        }
    }

    /// Sends one request and waits for its outcome. Outcomes of requests
    /// sent earlier are kept for `recv`.
    pub fn call(&mut self, request: Request) -> Result<Outcome, EngineError> {
        self.send(request)?;
        self.drain_all_but_last()
    }

    /// Like [`Client::call`] with a caller-chosen request number.
    pub fn call_numbered(&mut self, request: Request, req: u64) -> Result<Outcome, EngineError> {
        self.send_numbered(request, req)?;
        self.drain_all_but_last()
    }

    /// Waits until every rebate owed for deposits answered so far (to anyone)
    /// has been credited. Outcomes still in flight are collected first and
    /// kept for `recv`.
    pub fn barrier(&mut self) -> Result<(), EngineError> {
        while self.received.len() < self.in_flight {
            self.collect(true)?;
        }
        wait_for_rebates(&self.shared, Duration::MAX)
    }

    /// The outcome of the request just sent; earlier ones stay queued, in
    /// order, for `recv`.
    fn drain_all_but_last(&mut self) -> Result<Outcome, EngineError> {
        while self.received.len() < self.in_flight {
            self.collect(true)?;
        }
        let outcome = self.received.pop_back().expect("the request just sent");
        self.in_flight -= 1;
        Ok(outcome)
    }

    /// Moves answers from the response queue into `received`; without
    /// `wait`, still reports an engine that is gone.
    fn collect(&mut self, wait: bool) -> Result<(), EngineError> {
        let received = &mut self.received;
        let result = if wait {
            self.responses
                .wait_drain(usize::MAX, |outcome| received.push_back(outcome))
        } else {
            self.responses
                .wait_drain_timeout(usize::MAX, Duration::ZERO, |outcome| {
                    received.push_back(outcome)
                })
        };
        result.map(|_| ()).map_err(|_| self.shared.error())
    }
}

/// Waits until the rebate credits applied catch up with the rebate jobs
/// dispatched at the time of the call.
pub(super) fn wait_for_rebates(shared: &Shared, limit: Duration) -> Result<(), EngineError> {
    let target = shared.rebates_dispatched.load(Ordering::Acquire);
    let start = Instant::now();
    let mut pause = Duration::from_micros(20);
    while shared.rebates_answered.load(Ordering::Acquire) < target {
        if shared.failed.load(Ordering::Acquire) || shared.requests.lock().is_none() {
            return Err(shared.error());
        }
        if start.elapsed() >= limit {
            return Err(EngineError::Stopped);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(2));
    }
    Ok(())
}

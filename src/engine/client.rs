//! A gateway's handle: its own response queue, so answers never contend with
//! other gateways', and optionally a named session (for request numbering).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{EngineError, Envelope, Shared};
use crate::money::Scale;
use crate::outcome::{Outcome, Reply};
use crate::request::{InstrumentId, Request, SessionId, SessionName, Symbol};
use crate::ring::{self, Consumer, Producer};

/// One gateway's connection to the engine. Not shared between threads:
/// give each gateway thread its own (they are cheap).
///
/// Requests are pipelined: [`Client::send`] returns at once and
/// [`Client::recv`] hands back outcomes in the order the requests were sent.
/// [`Client::call`] does both for one request.
///
/// Requests are unnumbered unless the caller numbers them
/// ([`Client::send_numbered`]) within a named session ([`Engine::session`]
/// or [`Client::open_session`]): an unnumbered request never uses a number
/// up, and a numbered one is applied at most once, across restarts too.
///
/// [`Engine::session`]: super::Engine::session
pub struct Client {
    shared: Arc<Shared>,
    id: u32,
    /// The open session's id; 0 while there is none.
    session: SessionId,
    /// The highest request number the session has answered or this client
    /// has sent in it.
    last_req: u64,
    requests: Producer<Envelope>,
    responses: Consumer<Outcome>,
    /// Sent but not yet handed to the caller.
    in_flight: usize,
    /// Sent in all: what the answering side owes this client when it drops.
    sent: u64,
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
        let (producer, responses) = ring::channel(shared.response_capacity, shared.wait);
        // The id is taken under the same lock that publishes the queue, so
        // by the time any request carries this id, its queue is registered.
        // Ids of dropped clients the answering side has freed come first.
        let id = {
            let mut registrations = shared.registrations.lock();
            let id = match shared.departures.lock().free.pop() {
                Some(id) => id,
                None => shared.next_client.fetch_add(1, Ordering::Relaxed),
            };
            registrations.push((id, producer));
            shared.registered.store(true, Ordering::Release);
            id
        };
        Ok(Client {
            shared: Arc::clone(shared),
            id,
            session: 0,
            last_req: 0,
            requests,
            responses,
            in_flight: 0,
            sent: 0,
            received: VecDeque::new(),
        })
    }

    /// The id of this client's open session (the scope of its request
    /// numbers), if it has one. Ids change across restarts; names do not.
    pub fn session(&self) -> Option<SessionId> {
        (self.session != 0).then_some(self.session)
    }

    /// The highest request number the session had answered when it was
    /// opened, or that this client has sent in it since: where a client that
    /// resumed its session after a restart continues numbering (0 with no
    /// session).
    pub fn last_req(&self) -> u64 {
        self.last_req
    }

    /// Opens the session called `name`, or resumes it (same numbering) if it
    /// is live, for example after a restart. Its numbered requests are then
    /// applied at most once. Fails with [`EngineError::Session`] if the name
    /// is invalid or belongs to a retired session (see the `ledger::sessions`
    /// rules: a retired name never opens again). Outcomes of requests sent
    /// earlier are kept for `recv`.
    pub fn open_session(&mut self, name: &str) -> Result<SessionId, EngineError> {
        let name = SessionName::new(name).map_err(EngineError::Session)?;
        match self.call(Request::OpenSession { name })? {
            Ok(Reply::Session { session, last_req }) => {
                self.session = session;
                self.last_req = last_req;
                Ok(session)
            }
            Ok(other) => Err(EngineError::Session(format!(
                "opening session {:?} was answered {other:?}, not with a session",
                name.as_str()
            ))),
            Err(reject) => Err(EngineError::Session(format!(
                "session {:?} cannot be opened: {reject}",
                name.as_str()
            ))),
        }
    }

    /// Retires this client's session for good: its numbers are answered
    /// `session_expired` from now on, and its name cannot be opened again.
    /// (Dropping a client does not close its session: a new client, or the
    /// same program after a restart, resumes it by name.)
    pub fn close_session(&mut self) -> Result<Outcome, EngineError> {
        let outcome = self.call(Request::CloseSession)?;
        self.session = 0;
        self.last_req = 0;
        Ok(outcome)
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

    /// Sends a request without waiting for its outcome, unnumbered: it is
    /// applied every time it is sent.
    pub fn send(&mut self, request: Request) -> Result<(), EngineError> {
        self.send_numbered(request, 0)
    }

    /// Sends a request under a number the caller chose in this client's
    /// session (`req` ≥ 1; increasing, gaps allowed), for example one a
    /// remote client supplied: a repeat of the number is answered
    /// `duplicate` with the first answer and changes nothing. `req` 0 sends
    /// it unnumbered. A number on a query is ignored.
    pub fn send_numbered(&mut self, request: Request, req: u64) -> Result<(), EngineError> {
        if matches!(request, Request::CreditRebate { .. }) {
            return Err(EngineError::Refused(
                "credit_rebate comes only from the engine's rebate thread",
            ));
        }
        if matches!(request, Request::OpenSession { .. } | Request::CloseSession) && req != 0 {
            return Err(EngineError::Refused(
                "opening or closing a session is not numbered",
            ));
        }
        if req != 0 && self.session == 0 {
            return Err(EngineError::Refused(
                "a numbered request needs a named session: Engine::session or Client::open_session",
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
        self.sent += 1;
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

    /// The outcome of the oldest request in flight, waiting (per the wait
    /// strategy: parked under `Block`) at most `timeout` for it to arrive.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Outcome>, EngineError> {
        if self.received.is_empty() && self.in_flight > 0 {
            let received = &mut self.received;
            self.responses
                .wait_drain_timeout(usize::MAX, timeout, |outcome| received.push_back(outcome))
                .map_err(|_| self.shared.error())?;
        }
        self.try_recv()
    }

    /// Sends one request and waits for its outcome. Outcomes of requests
    /// sent earlier are kept for `recv`.
    pub fn call(&mut self, request: Request) -> Result<Outcome, EngineError> {
        self.send(request)?;
        self.drain_all_but_last()
    }

    /// Like [`Client::call`] with a caller-chosen request number (see
    /// [`Client::send_numbered`]).
    pub fn call_numbered(&mut self, request: Request, req: u64) -> Result<Outcome, EngineError> {
        self.send_numbered(request, req)?;
        self.drain_all_but_last()
    }

    /// Waits until every rebate owed for deposits answered so far (to anyone)
    /// has been credited, and the credits are as durable as an acknowledged
    /// request in the engine's durability mode (journaled; in `sync` mode
    /// fdatasynced), so a crash after it returns cannot take a credit back.
    /// Outcomes still in flight are collected first and kept for `recv`.
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

impl Drop for Client {
    /// Tells the answering side how many answers this client was owed, so it
    /// frees the response queue once they are all out (answers still in
    /// flight are discarded) and hands the id to a later client.
    fn drop(&mut self) {
        self.shared
            .departures
            .lock()
            .left
            .push((self.id, self.sent));
        self.shared.departed.store(true, Ordering::Release);
    }
}

/// Waits, parked, until the rebate credits applied catch up with the rebate
/// jobs dispatched at the time of the call: the business thread wakes it
/// after applying credits (see `Shared::wake_rebate_waiters`), and so do a
/// failure and shutdown.
pub(super) fn wait_for_rebates(shared: &Shared, limit: Duration) -> Result<(), EngineError> {
    let target = shared.rebates_dispatched.load(Ordering::Acquire);
    let caught_up = || shared.rebates_answered.load(Ordering::Acquire) >= target;
    if caught_up() {
        return Ok(());
    }
    shared.hurry_rebates();
    // A limit too large to represent is no limit.
    let deadline = Instant::now().checked_add(limit);
    let _registered = Registered::new(&shared.rebate_waiters);
    let mut lock = shared.rebate_wait.lock();
    while !caught_up() {
        if shared.failed.load(Ordering::Acquire) || shared.requests.lock().is_none() {
            return Err(shared.error());
        }
        match deadline {
            None => shared.rebates_credited.wait(&mut lock),
            Some(deadline) => {
                if shared
                    .rebates_credited
                    .wait_until(&mut lock, deadline)
                    .timed_out()
                    && !caught_up()
                {
                    return Err(EngineError::Stopped);
                }
            }
        }
    }
    Ok(())
}

/// Counts a parked waiter for as long as it lives. The fence after
/// registering pairs with the waker's (see `Shared::wake_rebate_waiters`).
struct Registered<'a>(&'a AtomicUsize);

impl<'a> Registered<'a> {
    fn new(waiters: &'a AtomicUsize) -> Registered<'a> {
        waiters.fetch_add(1, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        Registered(waiters)
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

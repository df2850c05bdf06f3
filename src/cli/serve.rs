//! `ringledger serve`: the `run` JSON contract over NATS request-reply
//! (cargo feature `nats`).
//!
//! Each request is one NATS message on [`subject`]`(stream)`, holding one
//! JSON object exactly as a `run` line (pretty-printed is fine), sent with a
//! reply subject (a NATS request); its answer is the one object `run` would
//! print, published to that reply subject. A request may carry
//! `"session": NAME` beside `"req"`: numbers live in that durable session,
//! so a request retried under the same number (after a timeout, or after
//! its leader died) is applied at most once and answered `duplicate` with
//! its first answer. A numbered request needs a session.
//!
//! ```text
//!             NATS (queue group)        intake thread          gateway threads         engine
//! clients ──▶ ringledger.S.requests ──▶ route by session ──▶ parse, send (run's ──▶ ring ──▶ business
//!    ▲                                  (tokio, own thread)   code), per session        thread
//!    └──────────── reply subject ◀────────────────────────── answer in order ◀── outcomes ──┘
//! ```
//!
//! Only a process that leads subscribes: `serve` subscribes once its engine
//! started, which with `--takeover` is once it caught up with the stream and
//! fenced the old leader; a leader that is fenced (`not_leader`) or whose
//! engine stops unsubscribes and exits. So clients never need to know who
//! leads. The subscription is in a queue group, so while a deposed leader
//! has not noticed yet, each request still reaches one process only.
//!
//! Gateway threads do the gateway work (parsing, answering) and feed the
//! ring; the business thread never touches the network. Requests of one
//! session (or, without a session, of one client connection: one inbox) go
//! to one gateway thread and one engine client, so they are applied in the
//! order they were sent; many are in flight at once.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use async_nats::{Message, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot, Notify};

use super::run::{engine_failure_json, refusal_json, Session};
use crate::engine::{Client, Engine, EngineError};
use crate::metrics::Metrics;
use crate::outcome::ErrorCode;
use crate::replication::ReplicationConfig;
use crate::request::SessionName;

/// Bytes a request message may hold: far more than any request needs
/// (a request is a few hundred bytes), far less than NATS's 1 MiB default.
pub const REQUEST_BYTES_MAX: usize = 64 * 1024;

/// Gateway threads unless `--gateways` says otherwise.
pub const GATEWAYS_DEFAULT: usize = 2;

/// Requests queued for one gateway thread at most; beyond that the intake
/// waits (and NATS buffers), so memory stays bounded under overload.
const GATEWAY_QUEUE_MAX: usize = 8192;

/// Engine clients (one per session seen) a gateway keeps open at most;
/// beyond that, clients with nothing in flight are dropped (their sessions
/// stay open in the Ledger and are resumed by name when used again).
const CLIENTS_PER_GATEWAY_MAX: usize = 64;

/// How often `serve` checks whether its engine failed or was fenced.
const FAILURE_POLL: Duration = Duration::from_millis(20);

/// The subject a stream's engine takes requests on.
pub fn subject(stream: &str) -> String {
    format!("ringledger.{stream}.requests")
}

/// The subject where requests sent without a reply subject are reported
/// (they cannot be answered, and are not applied).
pub fn errors_subject(stream: &str) -> String {
    format!("ringledger.{stream}.errors")
}

/// The queue group every `serve` of a stream subscribes in.
fn queue_group(stream: &str) -> String {
    format!("ringledger.{stream}")
}

/// How `serve` was stopped.
#[derive(Debug)]
pub enum Stopped {
    /// Asked to (a signal): every request taken in was answered.
    Asked,
    /// The engine failed or was fenced; requests in flight were answered
    /// with the failure.
    Engine(EngineError),
}

/// Serves `engine` on the NATS subject derived from `config.stream` with
/// `gateways` gateway threads until `stop` is set (then every request taken
/// in is answered first) or the engine fails or is fenced. Says on stderr
/// when it is subscribed. `Err` if NATS cannot be reached.
pub fn serve(
    engine: &Engine,
    config: &ReplicationConfig,
    gateways: usize,
    metrics: Option<&Metrics>,
    stop: &AtomicBool,
) -> Result<Stopped, String> {
    let gateways = gateways.max(1);
    let servers = config.check().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a tokio runtime: {e}"))?;
    let subject = subject(&config.stream);
    let (nats, subscription) = runtime
        .block_on(async {
            let nats = async_nats::ConnectOptions::new()
                .connection_timeout(crate::replication::REQUEST_TIMEOUT)
                .name(format!("ringledger serve {}", config.stream))
                .connect(servers)
                .await?;
            let subscription = nats
                .queue_subscribe(subject.clone(), queue_group(&config.stream))
                .await?;
            // The server has the subscription once it answered a ping.
            nats.flush().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((nats, subscription))
        })
        .map_err(|e| format!("cannot subscribe to {subject} at {}: {e}", config.url))?;
    eprintln!("ringledger serve: leading; requests on {subject} ({gateways} gateway threads)");

    let shared = Shared {
        fatal: Mutex::new(None),
        stopping: Notify::new(),
        nats: nats.clone(),
        handle: runtime.handle().clone(),
        errors_subject: errors_subject(&config.stream),
        metrics,
    };
    let (queues, receivers): (Vec<_>, Vec<_>) = (0..gateways)
        .map(|_| mpsc::channel::<(Message, Routed)>(GATEWAY_QUEUE_MAX))
        .unzip();
    let (drained, gateways_done) = oneshot::channel::<()>();
    thread::scope(|scope| {
        let shared = &shared;
        let intake = thread::Builder::new()
            .name("ringledger-intake".into())
            .spawn_scoped(scope, move || {
                runtime.block_on(intake(subscription, queues, shared, gateways_done));
            })
            .map_err(|e| format!("cannot start the intake thread: {e}"))?;
        let mut workers = Vec::new();
        for (i, requests) in receivers.into_iter().enumerate() {
            let worker = thread::Builder::new()
                .name(format!("ringledger-gateway-{i}"))
                .spawn_scoped(scope, move || Gateway::new(engine, shared).run(requests))
                .map_err(|e| format!("cannot start a gateway thread: {e}"))?;
            workers.push(worker);
        }
        // A fenced engine answers what it holds `not_leader`; it notices at
        // its next publish, and this within a poll of that.
        while !stop.load(Ordering::Relaxed) && shared.fatal.lock().is_none() {
            if let Some(e) = engine.failure() {
                shared.stop_with(e);
            }
            thread::sleep(FAILURE_POLL);
        }
        shared.stopping.notify_one();
        for worker in workers {
            let _ = worker.join();
        }
        let _ = drained.send(());
        let _ = intake.join();
        Ok::<(), String>(())
    })?;
    Ok(match shared.fatal.into_inner() {
        Some(e) => Stopped::Engine(e),
        None => Stopped::Asked,
    })
}

/// What the intake and the gateway threads share.
struct Shared<'a> {
    /// The engine failure that stops serving, once there is one.
    fatal: Mutex<Option<EngineError>>,
    /// Wakes the intake to unsubscribe.
    stopping: Notify,
    nats: async_nats::Client,
    handle: tokio::runtime::Handle,
    errors_subject: String,
    metrics: Option<&'a Metrics>,
}

impl Shared<'_> {
    /// Publishes an answer. Publishing only queues the message for the
    /// connection's task (on the intake thread), so this waits only when
    /// that queue is full.
    fn publish(&self, subject: Subject, answer: Bytes) {
        if let Err(e) = self.handle.block_on(self.nats.publish(subject, answer)) {
            eprintln!("ringledger serve: cannot publish an answer: {e}");
        }
    }

    fn stop_with(&self, e: EngineError) {
        let mut fatal = self.fatal.lock();
        if fatal.is_none() {
            eprintln!("ringledger serve: stopping: {e}");
            *fatal = Some(e);
        }
        self.stopping.notify_one();
    }
}

/// The intake: takes each request off the subscription and queues it for
/// the gateway thread its session (or inbox) belongs to. On stop it
/// unsubscribes first, so no further request reaches this process, lets
/// the gateways drain, and flushes their answers out.
async fn intake(
    mut subscription: async_nats::Subscriber,
    queues: Vec<mpsc::Sender<(Message, Routed)>>,
    shared: &Shared<'_>,
    gateways_done: oneshot::Receiver<()>,
) {
    loop {
        let message = tokio::select! {
            message = subscription.next() => message,
            _ = shared.stopping.notified() => None,
        };
        let Some(message) = message else { break };
        let routed = routed(&message);
        let lane_hash = match &routed {
            Ok(lane) => hash(lane),
            Err(_) => hash(&inbox_lane(&message)),
        };
        let gateway = (lane_hash % queues.len() as u64) as usize;
        if queues[gateway].send((message, routed)).await.is_err() {
            break;
        }
    }
    let _ = subscription.unsubscribe().await;
    drop(queues);
    let _ = gateways_done.await;
    let _ = shared.nats.flush().await;
}

fn hash(key: &Lane) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

/// The request fields `serve` reads before `run`'s code reads the rest:
/// unknown fields are left alone, as `run` leaves them.
#[derive(Deserialize)]
struct Route {
    #[serde(default)]
    session: Option<Value>,
    #[serde(default)]
    req: Option<Value>,
}

/// Which engine client a request goes through: its session, or with none,
/// its connection's inbox (requests without a session that one client sent
/// are still applied in the order it sent them).
#[derive(Clone, Hash, PartialEq, Eq)]
enum Lane {
    Session(String),
    Inbox(String),
}

/// The fields [`Route`] reads, if the message is a JSON object (serde
/// would also read a JSON array into it).
fn route(payload: &[u8]) -> Option<Route> {
    let first = payload.iter().find(|b| !b.is_ascii_whitespace())?;
    match first {
        b'{' => serde_json::from_slice(payload).ok(),
        _ => None,
    }
}

/// A request's lane, or why it is refused before `run`'s code sees it (an
/// oversized message, a bad `session`, a `req` without one). Read once, by
/// the intake; anything else unusual (not JSON, no session) goes to the
/// inbox lane, whose gateway answers it as `run` would.
type Routed = Result<Lane, (ErrorCode, String)>;

fn routed(message: &Message) -> Routed {
    if message.payload.len() > REQUEST_BYTES_MAX {
        return Err((
            ErrorCode::Malformed,
            format!(
                "the request is {} bytes; at most {REQUEST_BYTES_MAX} are accepted",
                message.payload.len()
            ),
        ));
    }
    match route(&message.payload) {
        Some(Route {
            session: Some(Value::String(name)),
            ..
        }) => match SessionName::new(&name) {
            Ok(_) => Ok(Lane::Session(name)),
            Err(why) => Err((ErrorCode::Malformed, why)),
        },
        Some(Route {
            session: Some(_), ..
        }) => Err((
            ErrorCode::Malformed,
            "field `session` must be a string".into(),
        )),
        Some(Route { req: Some(_), .. }) => Err((
            ErrorCode::Malformed,
            "a numbered request (`req`) needs `session` beside it: request numbers live in a \
             named session"
                .into(),
        )),
        _ => Ok(inbox_lane(message)),
    }
}

/// The lane of a request without a session: its connection's inbox.
fn inbox_lane(message: &Message) -> Lane {
    let inbox = message
        .reply
        .as_ref()
        .map(|reply| match reply.rfind('.') {
            Some(dot) => reply[..dot].to_string(),
            None => reply.to_string(),
        })
        .unwrap_or_default();
    Lane::Inbox(inbox)
}

/// One engine client and the reply subjects of its requests in flight,
/// oldest first (answers come back in the order requests were taken in).
struct Stream<'a> {
    session: Session<'a, Client>,
    replies: VecDeque<Subject>,
}

/// A gateway thread: its engine clients by lane.
struct Gateway<'a> {
    engine: &'a Engine,
    shared: &'a Shared<'a>,
    streams: HashMap<Lane, Stream<'a>>,
    /// Answers written by `run`'s code, one line each, not yet published.
    written: Vec<u8>,
}

impl<'a> Gateway<'a> {
    fn new(engine: &'a Engine, shared: &'a Shared<'a>) -> Gateway<'a> {
        Gateway {
            engine,
            shared,
            streams: HashMap::new(),
            written: Vec::new(),
        }
    }

    /// Takes requests in as they come; whenever none is waiting, answers
    /// everything in flight (the engine worked on them meanwhile). Returns
    /// once the intake closed this gateway's queue and everything taken in
    /// is answered, or the engine failed.
    fn run(mut self, mut requests: mpsc::Receiver<(Message, Routed)>) {
        loop {
            let in_flight = self.streams.values().any(|s| !s.replies.is_empty());
            let message = if in_flight {
                match requests.try_recv() {
                    Ok(message) => Some(message),
                    Err(mpsc::error::TryRecvError::Empty) => None,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                }
            } else {
                match requests.blocking_recv() {
                    Some(message) => Some(message),
                    None => return,
                }
            };
            let served = match message {
                Some((message, routed)) => self.take(message, routed),
                None => self.answer_all(),
            };
            if let Err(e) = served {
                self.fail_all(&e);
                self.shared.stop_with(e);
                return;
            }
        }
    }

    /// Takes one request in, or answers it at once if it is not one.
    fn take(&mut self, message: Message, routed: Routed) -> Result<(), EngineError> {
        let Some(reply) = message.reply.clone() else {
            let subject = Subject::from(self.shared.errors_subject.as_str());
            let refusal = refusal_json(
                ErrorCode::Malformed,
                format!(
                    "a request on {} came without a reply subject, so it cannot be answered: \
                     it was not applied (send requests with NATS request-reply)",
                    message.subject
                ),
            );
            self.refuse(subject, &refusal);
            return Ok(());
        };
        let lane = match routed {
            Ok(lane) => lane,
            Err((code, why)) => return self.refuse_ok(reply, code, why),
        };
        if !self.streams.contains_key(&lane) {
            let client = match &lane {
                Lane::Session(name) => self.engine.session(name),
                Lane::Inbox(_) => self.engine.client(),
            };
            let client = match client {
                Ok(client) => client,
                // Opening a session on an engine that stopped fails too.
                Err(EngineError::Session(_)) if self.engine.failure().is_some() => {
                    let e = self.engine.failure().expect("checked above");
                    self.refuse(reply, &engine_failure_json(&e));
                    return Err(e);
                }
                Err(EngineError::Session(why)) => {
                    return self.refuse_ok(reply, ErrorCode::SessionExpired, why)
                }
                Err(e) => {
                    self.refuse(reply, &engine_failure_json(&e));
                    return Err(e);
                }
            };
            self.make_room();
            let session = Session::new(client, None, self.shared.metrics);
            let stream = Stream {
                session,
                replies: VecDeque::new(),
            };
            self.streams.insert(lane.clone(), stream);
        }
        let stream = self.streams.get_mut(&lane).expect("inserted above");
        stream.replies.push_back(reply);
        let taken = stream
            .session
            .take_line(&message.payload, &mut self.written);
        self.publish_written(&lane);
        settled(taken, self.streams.get_mut(&lane).expect("still there"))
    }

    /// Answers every request in flight, waiting for the engine.
    fn answer_all(&mut self) -> Result<(), EngineError> {
        let lanes: Vec<Lane> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.replies.is_empty())
            .map(|(lane, _)| lane.clone())
            .collect();
        for lane in lanes {
            let stream = self.streams.get_mut(&lane).expect("listed above");
            let answered = stream.session.answer_all(&mut self.written);
            self.publish_written(&lane);
            settled(answered, self.streams.get_mut(&lane).expect("still there"))?;
        }
        Ok(())
    }

    /// Publishes each answer line written for `lane` to the reply subject
    /// of the oldest request still unanswered there.
    fn publish_written(&mut self, lane: &Lane) {
        let stream = self.streams.get_mut(lane).expect("a lane in use");
        let written = Bytes::from(std::mem::take(&mut self.written));
        let mut start = 0;
        while let Some(end) = written[start..].iter().position(|&b| b == b'\n') {
            let line = written.slice(start..start + end);
            start += end + 1;
            match stream.replies.pop_front() {
                Some(reply) => self.shared.publish(reply, line),
                None => unreachable!("run's code answers each line taken in exactly once"),
            }
        }
    }

    /// Answers every request still in flight here with the failure that
    /// stops serving (they were not answered, so none was acknowledged).
    fn fail_all(&mut self, e: &EngineError) {
        let answer = Bytes::from(engine_failure_json(e).to_string());
        for stream in self.streams.values_mut() {
            for reply in stream.replies.drain(..) {
                self.shared.publish(reply, answer.clone());
            }
        }
    }

    fn refuse_ok(
        &mut self,
        reply: Subject,
        code: ErrorCode,
        message: String,
    ) -> Result<(), EngineError> {
        self.refuse(reply, &refusal_json(code, message));
        Ok(())
    }

    /// Answers a message refused before `run`'s code saw it.
    fn refuse(&mut self, subject: Subject, answer: &Value) {
        if let Some(metrics) = self.shared.metrics {
            metrics.invalid_request();
            metrics.answer(
                answer
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or("malformed"),
            );
        }
        self.shared
            .publish(subject, Bytes::from(answer.to_string()));
    }

    /// Drops engine clients with nothing in flight once there are too many.
    fn make_room(&mut self) {
        if self.streams.len() >= CLIENTS_PER_GATEWAY_MAX {
            self.streams.retain(|_, s| !s.replies.is_empty());
        }
    }
}

/// What a step of `run`'s code means for serving: an `io::Error` from it
/// carries the engine failure that stops serving (writing to a `Vec` cannot
/// fail); an engine that became unavailable stops serving too, so another
/// process can lead.
fn settled(step: io::Result<()>, stream: &mut Stream) -> Result<(), EngineError> {
    if let Err(e) = step {
        let e = match e.into_inner().map(|e| e.downcast::<EngineError>()) {
            Some(Ok(e)) => *e,
            Some(Err(other)) => EngineError::Failed(format!("answering a request: {other}")),
            None => EngineError::Stopped,
        };
        return Err(e);
    }
    match stream.session.take_unavailable() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

//! Live metrics in the Prometheus text format (`run --metrics ADDR`).
//!
//! The hot path pays only relaxed atomic adds: every counter and histogram
//! a request touches is resolved once, at start, into a handle that the
//! gateway or business thread owns (a `prometheus` counter or histogram
//! handle is an atomic, not a registry lookup). Gauges that describe the
//! engine (ring occupancy, rebate backlog) are read by the exporter thread
//! at scrape time, so nobody pays for them per request.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::engine::EngineGauges;
use crate::outcome::ErrorCode;

/// Every op of `run`'s JSON contract, the `op` label of
/// `ringledger_requests_total`. A line whose op is missing or unknown is
/// counted as [`OP_INVALID`].
pub const OPS: [&str; 20] = [
    "open_account",
    "deposit",
    "withdraw",
    "transfer",
    "balance",
    "history",
    "list_instrument",
    "instrument",
    "reserve",
    "confirm",
    "cancel",
    "holdings",
    "place",
    "amend",
    "cancel_order",
    "order",
    "book",
    "tick",
    "barrier",
    "digest",
];

/// The `op` label of a line that names no known op (not JSON, no `op`, a
/// bad `req` beside it).
pub const OP_INVALID: &str = "invalid";

/// The `outcome` label of an engine failure (`engine_failed` on the wire).
const ENGINE_FAILED: &str = "engine_failed";

/// Batch sizes are bounded by the engine's `batch_max` (4096 by default):
/// powers of two cover them with one bucket per doubling.
const BATCH_SIZE_BUCKETS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Which part this process plays in replication.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
        }
    }
}

/// What the engine's threads record: the business thread its batch sizes,
/// the journal writer (on whichever thread writes it) bytes and fdatasyncs.
#[derive(Clone)]
pub struct EngineMetrics {
    pub(crate) batch_size: Histogram,
    pub(crate) journal: JournalMetrics,
}

/// The journal writer's handles (see [`crate::journal::JournalWriter::set_metrics`]).
#[derive(Clone, Debug)]
pub struct JournalMetrics {
    pub(crate) bytes_written: IntCounter,
    pub(crate) fsync_seconds: Histogram,
}

/// The registry and every handle resolved up front.
pub struct Metrics {
    registry: Registry,
    /// Indexed like [`OPS`], then [`OP_INVALID`].
    requests: Vec<IntCounter>,
    /// Indexed like [`ErrorCode::ALL`], then `ok`, then [`ENGINE_FAILED`].
    answers: Vec<IntCounter>,
    batch_size: Histogram,
    journal: JournalMetrics,
    replication_lag: IntGauge,
    role: IntGaugeVec,
    ring_occupancy: IntGauge,
    rebate_backlog: IntGauge,
}

impl Metrics {
    pub fn new(role: Role) -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "ringledger_requests_total",
                "Input lines taken in, by op (invalid: no known op).",
            ),
            &["op"],
        )
        .expect("valid metric");
        let answers = IntCounterVec::new(
            Opts::new(
                "ringledger_answers_total",
                "Answers written, by outcome code (ok or the error code).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let batch_size = Histogram::with_opts(
            HistogramOpts::new(
                "ringledger_batch_size",
                "Requests the business thread drained per batch.",
            )
            .buckets(BATCH_SIZE_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        let journal = JournalMetrics {
            bytes_written: IntCounter::new(
                "ringledger_journal_bytes_written_total",
                "Bytes of frames written to the journal.",
            )
            .expect("valid metric"),
            fsync_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "ringledger_journal_fsync_seconds",
                    "Latency of the journal's fdatasyncs: each group in sync mode, async mode's background ones (every 100 ms, and of a finished segment), before a snapshot, at close.",
                )
                .buckets(prometheus::exponential_buckets(25e-6, 2.0, 14).expect("valid buckets")),
            )
            .expect("valid metric"),
        };
        let replication_lag = IntGauge::new(
            "ringledger_replication_lag_frames",
            "Journal frames the stream holds that this process has not applied (0 without replication).",
        )
        .expect("valid metric");
        let role_gauge = IntGaugeVec::new(
            Opts::new(
                "ringledger_role",
                "1 for the role this process plays (leader or follower).",
            ),
            &["role"],
        )
        .expect("valid metric");
        let ring_occupancy = IntGauge::new(
            "ringledger_ring_occupancy_slots",
            "Requests in the ring not yet drained by the business thread.",
        )
        .expect("valid metric");
        let rebate_backlog = IntGauge::new(
            "ringledger_rebate_backlog",
            "Rebate jobs handed to the side thread whose credits are not applied yet.",
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(answers.clone()),
            Box::new(batch_size.clone()),
            Box::new(journal.bytes_written.clone()),
            Box::new(journal.fsync_seconds.clone()),
            Box::new(replication_lag.clone()),
            Box::new(role_gauge.clone()),
            Box::new(ring_occupancy.clone()),
            Box::new(rebate_backlog.clone()),
        ] {
            registry.register(collector).expect("unique metric names");
        }
        for r in [Role::Leader, Role::Follower] {
            role_gauge
                .with_label_values(&[r.as_str()])
                .set(i64::from(r == role));
        }
        Metrics {
            requests: OPS
                .iter()
                .chain([&OP_INVALID])
                .map(|op| requests.with_label_values(&[*op]))
                .collect(),
            answers: ErrorCode::ALL
                .iter()
                .map(|code| code.as_str())
                .chain(["ok", ENGINE_FAILED])
                .map(|outcome| answers.with_label_values(&[outcome]))
                .collect(),
            registry,
            batch_size,
            journal,
            replication_lag,
            role: role_gauge,
            ring_occupancy,
            rebate_backlog,
        }
    }

    /// Counts a line with this op (any text: unknown ones count as invalid).
    pub fn request(&self, op: &str) {
        let i = OPS.iter().position(|o| *o == op).unwrap_or(OPS.len());
        self.requests[i].inc();
    }

    /// Counts a line that has no op at all (not JSON, not an object).
    pub fn invalid_request(&self) {
        self.requests[OPS.len()].inc();
    }

    /// Counts an answer by its wire code (`"ok"` for a success).
    pub fn answer(&self, outcome: &str) {
        let i = match outcome {
            "ok" => ErrorCode::ALL.len(),
            ENGINE_FAILED => ErrorCode::ALL.len() + 1,
            code => match ErrorCode::ALL.iter().position(|c| c.as_str() == code) {
                Some(i) => i,
                None => return,
            },
        };
        self.answers[i].inc();
    }

    /// The handles the engine records into (see [`crate::EngineBuilder::metrics`]).
    pub fn engine(&self) -> EngineMetrics {
        EngineMetrics {
            batch_size: self.batch_size.clone(),
            journal: self.journal.clone(),
        }
    }

    /// The journal writer's handles alone, for a journal written outside an
    /// engine (a follower's).
    pub fn journal(&self) -> JournalMetrics {
        self.journal.clone()
    }

    /// Sets the replication lag, in frames.
    pub fn set_replication_lag(&self, frames: u64) {
        self.replication_lag
            .set(i64::try_from(frames).unwrap_or(i64::MAX));
    }

    /// Switches the role gauge (a follower that takes over leads).
    pub fn set_role(&self, role: Role) {
        for r in [Role::Leader, Role::Follower] {
            self.role
                .with_label_values(&[r.as_str()])
                .set(i64::from(r == role));
        }
    }

    /// The text format of every metric, with the engine's gauges read now.
    pub fn render(&self, engine: Option<&EngineGauges>) -> Vec<u8> {
        if let Some(engine) = engine {
            let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.ring_occupancy.set(clamp(engine.ring_occupancy()));
            self.rebate_backlog.set(clamp(engine.rebate_backlog()));
        }
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .expect("the text encoder writes to a Vec");
        text
    }
}

/// Serves `GET /metrics` on `addr` from a thread of its own, one connection
/// at a time (a scraper every few seconds needs no more). Returns the bound
/// address (`addr` may ask for port 0) and the thread, which serves until
/// the process exits.
pub fn serve(
    addr: &str,
    metrics: std::sync::Arc<Metrics>,
    engine: Option<EngineGauges>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let thread = thread::Builder::new()
        .name("ringledger-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &metrics, engine.as_ref()) {
                    // Not eprintln: with stderr gone it panics, and the
                    // exporter would stop over a log line.
                    let _ = writeln!(io::stderr(), "ringledger: a metrics request failed: {e}");
                }
            }
        })?;
    Ok((bound, thread))
}

/// The most a request head (request line and headers) may take: a
/// scraper's is a few hundred bytes. The exporter stops reading past it.
const HEAD_BYTES_MAX: usize = 16 * 1024;

/// The longest a client may take to send its request head: the exporter
/// serves one connection at a time, so a slow one delays the next scrape.
const HEAD_TIME_MAX: Duration = Duration::from_secs(5);

/// Reads a request head up to its blank line (or the client's end of
/// sending), refusing one past [`HEAD_BYTES_MAX`] or [`HEAD_TIME_MAX`]: a
/// head is read to its end so the client is not reset mid-send, but a
/// client that never ends it must not hold memory or the exporter.
fn read_head(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let deadline = Instant::now() + HEAD_TIME_MAX;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head_ends(&head) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("request head not sent within {HEAD_TIME_MAX:?}"),
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > HEAD_BYTES_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("request head longer than {HEAD_BYTES_MAX} bytes"),
            ));
        }
    }
    Ok(head)
}

/// Whether `bytes` hold a whole request head: a blank line ends it.
fn head_ends(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n") || bytes.windows(2).any(|w| w == b"\n\n")
}

/// Answers one HTTP/1.x request and closes the connection.
fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    engine: Option<&EngineGauges>,
) -> io::Result<()> {
    let head = read_head(&mut stream)?;
    let request_line =
        String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or_default());
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next(), parts.next());
    match (method, path) {
        (Some("GET"), Some("/metrics")) => {
            let body = metrics.render(engine);
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                prometheus::TEXT_FORMAT,
                body.len()
            )?;
            stream.write_all(&body)?;
        }
        _ => {
            let body = b"only GET /metrics is served here\n";
            write!(
                stream,
                "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            stream.write_all(body)?;
        }
    }
    stream.flush()
}

//! Journal replication over NATS JetStream (cargo feature `nats`): the
//! leader publishes every journaled frame, byte for byte, to a stream of its
//! own; followers consume the stream in order and apply it through the same
//! Ledger, so at every sequence their digest equals the leader's.
//!
//! ```text
//! leader:   business ─▶ journal (local disk) ─▶ replication thread ─▶ JetStream stream
//!                                                (own tokio runtime,    (R replicas, acks
//!                                                 many frames in flight) once a quorum stored)
//! follower: stream ─▶ verify checksum ─▶ apply to its Ledger ─▶ its own journal + snapshots
//!                     and chain (parent)                      (the leader's frames, as they are)
//!   new follower, empty disk: newest snapshot from the object store ─▶ stream after it
//! ```
//!
//! One writer extends the stream: every publish carries JetStream's
//! `Nats-Expected-Last-Sequence` header, the stream sequence of the frame
//! before it, so a second writer's publish is refused by the server itself.
//! A leader whose publish is refused that way, and whose place in the stream
//! holds a message some other process wrote, was deposed: it is fenced
//! ([`Status::Fenced`]) and never publishes again. No consensus is made
//! here; the stream's own (Raft) replication is the only agreement.
//!
//! Takeover ([`take_over`]): a new leader applies the stream up to its end,
//! then publishes a marker (a message with no frame) expecting the stream's
//! last sequence; once the marker is stored, the old leader's next publish
//! is refused and it is fenced. Had the old leader published meanwhile, the
//! marker is refused instead, and the new leader catches up again.
//!
//! Each message carries two headers besides the frame: the writer's random
//! id (to tell its own messages, landed after a timeout, from a rival's) and
//! the last journal seq the frame holds (so a follower finds where to resume
//! without decoding frames).
//!
//! The stream's description records the journal's [`Meta`] (money scale and
//! Ledger limits), so a follower rebuilds the same state with no flags.

mod follower;
pub mod lease;
mod publisher;
pub mod snapshot_store;

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, stream::Stream, Context};
use async_nats::ServerAddr;

pub use self::follower::{stand_by, take_over, FollowProgress, Follower, Takeover};
pub use self::lease::{Lease, LeaseConfig};
pub use self::publisher::{Backlog, Publisher, Release, Status};
use crate::journal::{JournalError, Meta};

/// Replicas of a stream unless `--replicas` says otherwise: one, for the
/// single server a machine runs. Three is what survives losing a machine.
pub const REPLICAS_DEFAULT: usize = 1;

/// How long a JetStream request (a publish's ack, a stream lookup) may take
/// before the stream counts as unavailable: longer than a Raft leader
/// election in a healthy cluster (about 2 s), short enough that clients hear
/// `unavailable` soon after a quorum is lost.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Header naming the process that published a message (a random id per
/// leader run).
const HEADER_LEADER: &str = "Ringledger-Leader";
/// Header with the last journal seq a message's frame holds.
const HEADER_LAST_SEQ: &str = "Ringledger-Last-Seq";
/// First line of the stream description; the journal's meta follows.
const DESCRIPTION_PREFIX: &str = "ringledger journal\n";

/// Where the replicated journal lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// NATS server URLs, comma-separated (`nats://127.0.0.1:4222`).
    pub url: String,
    /// The JetStream stream, one per engine: letters, digits, `-` and `_`.
    pub stream: String,
    /// Copies the stream keeps (3 for the guarantee: a quorum stores each
    /// frame before it is acknowledged).
    pub replicas: usize,
}

impl ReplicationConfig {
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> ReplicationConfig {
        ReplicationConfig {
            url: url.into(),
            stream: stream.into(),
            replicas: REPLICAS_DEFAULT,
        }
    }

    pub fn replicas(mut self, replicas: usize) -> ReplicationConfig {
        self.replicas = replicas;
        self
    }

    /// The subject frames are published on, derived from the stream name.
    pub fn subject(&self) -> String {
        format!("ringledger.{}.frames", self.stream)
    }

    pub(crate) fn check(&self) -> Result<Vec<ServerAddr>, ReplicationError> {
        let name_ok = !self.stream.is_empty()
            && self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(ReplicationError::Config(format!(
                "stream name {:?} is not usable: use letters, digits, '-' and '_'",
                self.stream
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(ReplicationError::Config(format!(
                "--replicas {} is out of range: JetStream keeps 1 to 5 replicas",
                self.replicas
            )));
        }
        self.url
            .split(',')
            .map(|url| {
                url.trim().parse::<ServerAddr>().map_err(|e| {
                    ReplicationError::Config(format!("NATS URL {url:?} is not usable: {e}"))
                })
            })
            .collect()
    }
}

/// Why replication could not go on.
#[derive(Debug)]
pub enum ReplicationError {
    /// Another process leads the stream: this one was fenced (or would
    /// extend a stream it has not caught up with).
    NotLeader(String),
    /// The stream cannot store frames right now (no server, no quorum);
    /// retrying later may succeed.
    Unavailable(String),
    /// A setting that cannot work (a bad stream name or URL, a stream made
    /// for another journal).
    Config(String),
    /// The local journal, or a frame from the stream, is damaged or
    /// unusable.
    Journal(JournalError),
}

impl fmt::Display for ReplicationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicationError::NotLeader(why) => write!(f, "not the leader: {why}"),
            ReplicationError::Unavailable(why) => {
                write!(f, "replication unavailable: {why}; retry later")
            }
            ReplicationError::Config(why) => write!(f, "replication misconfigured: {why}"),
            ReplicationError::Journal(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReplicationError {}

impl From<JournalError> for ReplicationError {
    fn from(e: JournalError) -> Self {
        ReplicationError::Journal(e)
    }
}

fn unavailable(what: &str, e: impl fmt::Display) -> ReplicationError {
    ReplicationError::Unavailable(format!("{what}: {e}"))
}

/// A runtime for one replication thread: current-thread, so the thread that
/// owns it is the only one its network work runs on.
fn runtime() -> Result<tokio::runtime::Runtime, ReplicationError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ReplicationError::Config(format!("cannot start a tokio runtime: {e}")))
}

async fn connect(config: &ReplicationConfig) -> Result<Context, ReplicationError> {
    let addrs = config.check()?;
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .name(format!("ringledger {}", config.stream))
        .connect(addrs)
        .await
        .map_err(|e| unavailable(&format!("cannot connect to NATS at {}", config.url), e))?;
    Ok(jetstream::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client))
}

fn description(meta: Meta) -> String {
    format!("{DESCRIPTION_PREFIX}{}", meta.to_text())
}

/// The journal meta a stream was created with.
fn stream_meta(config: &ReplicationConfig, stream: &Stream) -> Result<Meta, ReplicationError> {
    let info = stream.cached_info();
    let text = info
        .config
        .description
        .as_deref()
        .and_then(|d| d.strip_prefix(DESCRIPTION_PREFIX))
        .ok_or_else(|| {
            ReplicationError::Config(format!(
                "stream {} was not made by ringledger (its description names no journal)",
                config.stream
            ))
        })?;
    Ok(Meta::parse(
        Path::new(&format!("stream {} description", config.stream)),
        text,
    )?)
}

/// The stream, created (with `meta` in its description) if it does not
/// exist yet. An existing one must have been made for the same journal
/// settings and subject.
async fn leader_stream(
    js: &Context,
    config: &ReplicationConfig,
    meta: Meta,
) -> Result<Stream, ReplicationError> {
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: config.stream.clone(),
            subjects: vec![config.subject()],
            description: Some(description(meta)),
            num_replicas: config.replicas,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&format!("cannot open stream {}", config.stream), e))?;
    let found = stream_meta(config, &stream)?;
    if found != meta {
        return Err(ReplicationError::Config(format!(
            "stream {} holds a journal written with {found:?}, this engine runs with {meta:?}",
            config.stream
        )));
    }
    let info = stream.cached_info();
    if info.config.subjects != [config.subject()] {
        return Err(ReplicationError::Config(format!(
            "stream {} takes subjects {:?}, expected only {}",
            config.stream,
            info.config.subjects,
            config.subject()
        )));
    }
    Ok(stream)
}

/// The stream's last message: its stream sequence and what it says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Tail {
    stream_seq: u64,
    /// The last journal seq the stream holds (0: none).
    record_seq: u64,
    /// Who wrote the last message, and whether it is a takeover marker.
    leader: String,
    marker: bool,
}

/// What a stored message's headers say: who wrote it, up to which seq.
struct Stamp {
    leader: String,
    last_seq: u64,
}

async fn message_stamp(
    config: &ReplicationConfig,
    stream: &Stream,
    stream_seq: u64,
) -> Result<(Stamp, async_nats::jetstream::message::StreamMessage), ReplicationError> {
    let message = stream.get_raw_message(stream_seq).await.map_err(|e| {
        unavailable(
            &format!("cannot read stream {} seq {stream_seq}", config.stream),
            e,
        )
    })?;
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_string());
    let leader = header(HEADER_LEADER);
    let last_seq = header(HEADER_LAST_SEQ).and_then(|v| v.parse::<u64>().ok());
    match (leader, last_seq) {
        (Some(leader), Some(last_seq)) => Ok((Stamp { leader, last_seq }, message)),
        _ => Err(ReplicationError::Config(format!(
            "stream {} seq {stream_seq} lacks the {HEADER_LEADER} and {HEADER_LAST_SEQ} headers: \
             something other than ringledger publishes on {}",
            config.stream,
            config.subject()
        ))),
    }
}

/// How long a process about to lead keeps reading the end of its stream
/// while the stream answers "unavailable", and how often it tries.
const START_READ_WAIT: Duration = Duration::from_secs(30);
const START_READ_RETRY: Duration = Duration::from_millis(250);

/// [`tail`] for a process about to lead (a starting leader, a standby
/// taking over): right after a quorum comes back, or while the stream
/// elects a leader, reads answer "temporarily unavailable" for a moment, so
/// they are retried for up to [`START_READ_WAIT`] instead of stopping the
/// process. A running leader reads with [`tail`] alone: its own loop backs
/// off and keeps refusing arrivals meanwhile.
async fn tail_at_start(
    config: &ReplicationConfig,
    stream: &Stream,
) -> Result<Tail, ReplicationError> {
    let deadline = tokio::time::Instant::now() + START_READ_WAIT;
    loop {
        match tail(config, stream).await {
            Err(ReplicationError::Unavailable(why)) if tokio::time::Instant::now() < deadline => {
                eprintln!(
                    "ringledger: reading the end of stream {}: {why}; retrying",
                    config.stream
                );
                tokio::time::sleep(START_READ_RETRY).await;
            }
            read => return read,
        }
    }
}

async fn tail(config: &ReplicationConfig, stream: &Stream) -> Result<Tail, ReplicationError> {
    let info = stream
        .get_info()
        .await
        .map_err(|e| unavailable(&format!("cannot read stream {}", config.stream), e))?;
    let stream_seq = info.state.last_sequence;
    if info.state.messages == 0 {
        return Ok(Tail {
            stream_seq,
            ..Tail::default()
        });
    }
    let (stamp, message) = message_stamp(config, stream, stream_seq).await?;
    Ok(Tail {
        stream_seq,
        record_seq: stamp.last_seq,
        leader: stamp.leader,
        marker: message.payload.is_empty(),
    })
}

/// A random id for one leader run, for the [`HEADER_LEADER`] header.
fn leader_id() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{}-{nanos}-{:p}", std::process::id(), &nanos);
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(seed.as_bytes()))
}

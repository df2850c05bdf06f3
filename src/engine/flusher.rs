//! The journal flusher: a thread that writes (and in `sync` mode
//! fdatasyncs) the batches the business thread hands it, so the business
//! thread goes on applying the next requests while the disk works.
//!
//! The business thread sends each group of applied inputs over a channel
//! and holds their outcomes. The flusher takes everything queued, writes
//! one frame per group, syncs once for all of them (group commit), publishes
//! the last seq it made durable, and pushes a wake-up envelope into the
//! request ring, the one queue the business thread waits on. Outcomes are
//! released when the published seq covers them.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crossbeam::channel::{self, Receiver, Sender};

use super::{Envelope, Shared};
use crate::journal::{Durability, JournalWriter};
use crate::request::{Request, Stamped};
use crate::ring::Producer;

/// `Envelope::client` of the flusher's wake-up: not a client, never applied.
pub(super) const FLUSHER_WAKE: u32 = u32::MAX;

/// Which thread writes the journal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JournalThread {
    /// The business thread writes (and syncs) each group itself, then
    /// releases its outcomes. In `sync` mode it waits out each fdatasync.
    Business,
    /// A flusher thread writes and syncs while the business thread applies
    /// the next requests; outcomes are released when it reports back.
    #[default]
    Flusher,
}

impl std::fmt::Display for JournalThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JournalThread::Business => "business",
            JournalThread::Flusher => "flusher",
        })
    }
}

impl std::str::FromStr for JournalThread {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "business" | "inline" => Ok(JournalThread::Business),
            "flusher" => Ok(JournalThread::Flusher),
            other => Err(format!(
                "unknown journal thread {other:?}: expected business or flusher"
            )),
        }
    }
}

/// What the flusher tells the business thread.
struct Progress {
    /// Highest seq written (async) or written and synced (sync).
    durable: AtomicU64,
    /// The flusher stopped on an I/O error (already reported via `Shared::fail`).
    failed: AtomicBool,
}

/// The business thread's handle on the flusher.
pub(super) struct Flusher {
    groups: Option<Sender<Vec<Stamped>>>,
    recycled: Receiver<Vec<Stamped>>,
    progress: Arc<Progress>,
    handle: Option<JoinHandle<JournalWriter>>,
    /// Highest seq handed over so far.
    sent: u64,
}

impl Flusher {
    /// Starts the flusher thread, which owns `writer` until [`Flusher::finish`].
    /// `durable` is the last seq already in the journal; `wake` is a handle on
    /// the request ring.
    pub fn spawn(
        writer: JournalWriter,
        durable: u64,
        wake: Producer<Envelope>,
        shared: Arc<Shared>,
    ) -> io::Result<Flusher> {
        let (groups_tx, groups_rx) = channel::unbounded::<Vec<Stamped>>();
        let (recycled_tx, recycled_rx) = channel::unbounded();
        let progress = Arc::new(Progress {
            durable: AtomicU64::new(durable),
            failed: AtomicBool::new(false),
        });
        let thread_progress = Arc::clone(&progress);
        let handle = thread::Builder::new()
            .name("ringledger-flusher".into())
            .spawn(move || {
                run(
                    writer,
                    &groups_rx,
                    &recycled_tx,
                    &thread_progress,
                    &wake,
                    &shared,
                )
            })?;
        Ok(Flusher {
            groups: Some(groups_tx),
            recycled: recycled_rx,
            progress,
            handle: Some(handle),
            sent: durable,
        })
    }

    /// Hands `inputs` (consecutive seqs) to the flusher and leaves an empty
    /// vector, reused from an earlier group when one has come back, in its
    /// place.
    pub fn send(&mut self, inputs: &mut Vec<Stamped>) {
        let Some(last) = inputs.last().map(|s| s.stamp.seq) else {
            return;
        };
        let empty = self
            .recycled
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(inputs.capacity()));
        let group = std::mem::replace(inputs, empty);
        self.sent = last;
        if let Some(groups) = &self.groups {
            // A send fails only if the flusher stopped on an error, which
            // `failed` reports.
            let _ = groups.send(group);
        }
    }

    /// Highest seq the journal holds per the durability mode.
    pub fn durable(&self) -> u64 {
        self.progress.durable.load(Ordering::Acquire)
    }

    pub fn failed(&self) -> bool {
        self.progress.failed.load(Ordering::Acquire)
    }

    /// Waits until everything sent is durable. False if the flusher failed.
    /// For rare pauses only (snapshots): it polls instead of parking.
    pub fn wait_durable(&self) -> bool {
        let mut round = 0u32;
        while self.durable() < self.sent {
            let stopped = match &self.handle {
                Some(handle) => handle.is_finished(),
                None => true,
            };
            if self.failed() || stopped {
                return false;
            }
            if round < 64 {
                thread::yield_now();
            } else {
                thread::sleep(std::time::Duration::from_micros(20));
            }
            round = round.saturating_add(1);
        }
        true
    }

    /// Lets the flusher write what it was sent, stops it and takes the
    /// writer back. `drain_ring` keeps the request ring moving meanwhile, in
    /// case the flusher is waiting for room to push its wake-up. None if the
    /// flusher thread panicked.
    pub fn finish(&mut self, mut drain_ring: impl FnMut()) -> Option<JournalWriter> {
        drop(self.groups.take());
        let handle = self.handle.take()?;
        while !handle.is_finished() {
            drain_ring();
            thread::yield_now();
        }
        handle.join().ok()
    }
}

fn run(
    mut writer: JournalWriter,
    groups: &Receiver<Vec<Stamped>>,
    recycled: &Sender<Vec<Stamped>>,
    progress: &Progress,
    wake: &Producer<Envelope>,
    shared: &Shared,
) -> JournalWriter {
    let syncs = writer.durability() == Durability::Sync;
    let mut taken: Vec<Vec<Stamped>> = Vec::new();
    while let Ok(first) = groups.recv() {
        taken.push(first);
        taken.extend(groups.try_iter());
        let mut written = taken.iter().try_for_each(|group| writer.append(group));
        if written.is_ok() && syncs {
            written = writer.sync();
        }
        if let Err(e) = written {
            shared.fail(format!(
                "journal write failed, nothing more is accepted: {e}"
            ));
            progress.failed.store(true, Ordering::Release);
            let _ = wake.push(wake_envelope());
            return writer;
        }
        if let Some(last) = taken.iter().rev().find_map(|g| g.last()) {
            progress.durable.store(last.stamp.seq, Ordering::Release);
        }
        // Pushed after the store: a business thread that read the old value
        // and went to sleep on the ring is woken by this.
        let _ = wake.push(wake_envelope());
        for mut group in taken.drain(..) {
            group.clear();
            let _ = recycled.send(group);
        }
    }
    writer
}

fn wake_envelope() -> Envelope {
    Envelope {
        client: FLUSHER_WAKE,
        session: 0,
        req: 0,
        request: Request::Balance { account: 0 },
    }
}

//! Deterministic simulation of the journal under storage faults (the VOPR
//! idea, TigerBeetle's simulator): one seed drives everything, so a failure
//! is a seed, and running that seed again replays it exactly.
//!
//! Per seed: a [`SimStorage`] whose fault rates the seed draws (swarm
//! testing: some seeds are calm, some storms), a durability mode and a
//! segment size, and a random workload from every domain (wallets, the share
//! sale, the order book, sessions with numbered requests and retries,
//! rebate credits). The business thread's loop is played by hand, single
//! threaded, in simulated time: stamp a batch, [`JournalWriter::commit`] it,
//! apply it to the [`Ledger`], release its outcomes. Now and then the
//! journal is synced (`async` mode's periodic fdatasync), a snapshot is taken
//! and retention applied, the engine shuts down cleanly, the process
//! crashes, the power fails, or a durable byte rots. Every failed journal
//! write or sync fails closed, as the engine does (`unavailable`, then the
//! process restarts): the writer is dropped, never retried.
//!
//! After every restart, recovery runs through the real code
//! ([`recover_locked`], [`JournalWriter::open_locked`]) and the checks are:
//! - every acknowledged request is there (after a process crash in either
//!   mode; after a power loss, every one in `sync` mode and every one up to
//!   the last completed fdatasync in `async` mode);
//! - a power loss of unsynced data is never reported as corruption;
//! - a rotted byte at or before the durable point is reported as corruption
//!   naming its file (then the byte is restored, as an operator would from a
//!   replica, and recovery must succeed), or, in a snapshot, the snapshot is
//!   passed over with a warning;
//! - the recovered Ledger's digest equals that of a fresh Ledger fed exactly
//!   the records recovery kept, which are a prefix of those written, and its
//!   invariants hold.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::book::{Side, Stp, Tif};
use crate::journal::{
    lock_dir_in, recover_locked, retain_in, write_snapshot_in, Durability, JournalConfig,
    JournalError, JournalWriter, ASYNC_SYNC_INTERVAL,
};
use crate::ledger::{Ledger, LedgerConfig};
use crate::outcome::Reply;
use crate::request::{Request, SessionId, SessionName, Stamp, Stamped, Symbol};
use crate::storage::sim::{FaultCounts, Faults, SimStorage};
use crate::storage::Storage;

/// How long one seed runs.
#[derive(Clone, Copy, Debug)]
pub struct SimOptions {
    /// Batches offered to the journal (the workload's length).
    pub batches: usize,
    /// Print every event to stderr (to study a failing seed).
    pub verbose: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            batches: 400,
            verbose: false,
        }
    }
}

/// What one seed did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeedReport {
    pub seed: u64,
    pub durability: String,
    pub segment_bytes: u64,
    pub faults_drawn: String,
    /// Batches whose outcomes were released.
    pub batches_acked: u64,
    pub records_acked: u64,
    pub process_crashes: u64,
    pub power_losses: u64,
    pub clean_shutdowns: u64,
    /// Journal writes or syncs that failed, each stopping the writer.
    pub fail_closed: u64,
    pub snapshots: u64,
    pub recoveries: u64,
    /// Rotted bytes recovery reported as corruption (or a skipped snapshot).
    pub rot_detected: u64,
    /// Torn tails recovery truncated (after crashes and power losses).
    pub torn_tails: u64,
    pub storage: FaultCounts,
    /// Fingerprint of every storage operation, fault decision and check.
    pub trace_hash: u64,
}

/// A seed whose run broke a promise (or panicked).
#[derive(Clone, Debug)]
pub struct SimFailure {
    pub seed: u64,
    pub message: String,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation seed {} failed: {}\n  rerun: cargo run --release --example simulate -- --seed {}",
            self.seed, self.message, self.seed
        )
    }
}

/// Runs one seed, turning a panic anywhere (journal, Ledger, simulator)
/// into a failure that names the seed.
pub fn run_seed(seed: u64, options: SimOptions) -> Result<SeedReport, SimFailure> {
    match std::panic::catch_unwind(|| Sim::new(seed, options.verbose).run(options)) {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(message)) => Err(SimFailure { seed, message }),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            Err(SimFailure {
                seed,
                message: format!("panicked: {message}"),
            })
        }
    }
}

const ACCOUNTS: u64 = 8;
const INSTRUMENTS: u32 = 3;
const ORDER_IDS: u64 = 24;
const RESERVATION_IDS: u64 = 12;
const SESSION_NAMES: [&str; 2] = ["alice", "bob"];

/// What the process would lose by dying now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Death {
    Crash,
    PowerLoss,
}

struct Live {
    writer: JournalWriter<SimStorage>,
    ledger: Ledger,
    /// Live sessions by name index: (id, next req number).
    sessions: [Option<(SessionId, u64)>; 2],
}

struct Sim {
    rng: ChaCha8Rng,
    storage: SimStorage,
    dir: PathBuf,
    journal: JournalConfig,
    ledger_config: LedgerConfig,
    /// Every record the journal may hold: `log[i]` has seq `i + 1`.
    log: Vec<Stamped>,
    /// Highest seq whose outcome was released.
    acked: u64,
    /// Highest seq known fdatasynced (a power loss must keep it).
    synced: u64,
    time_ms: u64,
    /// When `async` mode's periodic fdatasync last ran.
    synced_at_ms: u64,
    live: Option<Live>,
    report: SeedReport,
    /// Odds per batch of each event.
    crash_odds: f64,
    power_odds: f64,
    shutdown_odds: f64,
    snapshot_odds: f64,
    rot_odds: f64,
    verbose: bool,
}

impl Sim {
    fn new(seed: u64, verbose: bool) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let faults = Faults::swarm(&mut rng);
        let storage = SimStorage::new(rng.random(), faults);
        let durability = if rng.random_bool(0.5) {
            Durability::Sync
        } else {
            Durability::Async
        };
        let segment_bytes = rng.random_range(1..=16u64) * 1024;
        let ledger_config = LedgerConfig {
            history_per_account_max: rng.random_range(1..=16),
            sessions_max: 4,
            session_idle_ms_max: rng.random_range(2_000..=60_000),
            closed_reservations_max: rng.random_range(1..=8),
        };
        let report = SeedReport {
            seed,
            durability: durability.to_string(),
            segment_bytes,
            faults_drawn: format!("{faults:?}"),
            ..SeedReport::default()
        };
        let mut odds = || rng.random::<f64>() * 0.04;
        let (crash_odds, power_odds, shutdown_odds, snapshot_odds, rot_odds) =
            (odds(), odds(), odds() / 2.0, odds(), odds() / 2.0);
        Sim {
            rng,
            storage,
            dir: PathBuf::from("/data/journal"),
            journal: JournalConfig {
                segment_bytes,
                durability,
            },
            ledger_config,
            log: Vec::new(),
            acked: 0,
            synced: 0,
            time_ms: 1,
            synced_at_ms: 0,
            live: None,
            report,
            crash_odds,
            power_odds,
            shutdown_odds,
            snapshot_odds,
            rot_odds,
            verbose,
        }
    }

    /// An event, into the trace hash and, when verbose, onto stderr.
    fn event(&self, what: &str, a: u64, b: u64) {
        self.storage.note(what, a, b);
        if self.verbose {
            eprintln!("[t={}us] {what} {a} {b}", self.storage.now_us());
        }
    }

    fn run(mut self, options: SimOptions) -> Result<SeedReport, String> {
        self.restart(Death::Crash)?;
        for _ in 0..options.batches {
            let roll: f64 = self.rng.random();
            let mut threshold = self.crash_odds;
            if roll < threshold {
                self.die(Death::Crash)?;
                continue;
            }
            threshold += self.power_odds;
            if roll < threshold {
                self.die(Death::PowerLoss)?;
                continue;
            }
            threshold += self.shutdown_odds;
            if roll < threshold {
                self.shutdown()?;
                continue;
            }
            threshold += self.snapshot_odds;
            if roll < threshold {
                self.snapshot()?;
                continue;
            }
            threshold += self.rot_odds;
            if roll < threshold {
                self.rot()?;
                continue;
            }
            self.batch()?;
        }
        self.die(Death::PowerLoss)?;
        self.report.storage = self.storage.counts();
        self.report.trace_hash = self.storage.trace_hash();
        Ok(self.report)
    }

    fn fail(&self, what: String) -> Result<(), String> {
        Err(format!(
            "{what} (durability {}, segment {} bytes, acked seq {}, synced seq {}, log {} records)",
            self.journal.durability,
            self.journal.segment_bytes,
            self.acked,
            self.synced,
            self.log.len()
        ))
    }

    /// Stamps, journals, applies and acknowledges one batch; a journal
    /// failure stops the writer (fail closed) and the process restarts.
    fn batch(&mut self) -> Result<(), String> {
        let Some(live) = &self.live else {
            return self.restart(Death::Crash);
        };
        self.time_ms += self.rng.random_range(0..25);
        self.time_ms = self.time_ms.max(self.storage.now_us() / 1000);
        let first = live.ledger.last_seq() + 1;
        let len = self.rng.random_range(1..=12);
        let mut batch = Vec::with_capacity(len);
        for i in 0..len {
            let (stamp_session, req, request) = self.request();
            batch.push(Stamped::new(
                Stamp {
                    seq: first + i as u64,
                    time_ms: self.time_ms,
                    session: stamp_session,
                    req,
                },
                request,
            ));
        }
        let live = self.live.as_mut().expect("checked above");
        // What the journal may hold from here on, acknowledged or not.
        self.log.truncate(first as usize - 1);
        self.log.extend_from_slice(&batch);
        if let Err(e) = live.writer.commit(&batch) {
            self.report.fail_closed += 1;
            self.event(&format!("commit failed closed: {e}"), first, len as u64);
            return self.die(Death::Crash);
        }
        self.event("commit", first, len as u64);
        let live = self.live.as_mut().expect("committed, so live");
        let mut opened = Vec::new();
        live.ledger.apply_batch(&batch, |i, applied| {
            if let (Request::OpenSession { name }, Ok(Reply::Session { session, last_req })) =
                (batch[i].request, applied.outcome)
            {
                opened.push((name, session, last_req));
            }
        });
        for (name, session, last_req) in opened {
            if let Some(slot) = SESSION_NAMES
                .iter()
                .position(|n| SessionName::new(n).ok() == Some(name))
            {
                live.sessions[slot] = Some((session, last_req + 1));
            }
        }
        self.acked = live.ledger.last_seq();
        if self.journal.durability == Durability::Sync {
            self.synced = self.acked;
        }
        self.report.batches_acked += 1;
        self.report.records_acked += batch.len() as u64;
        // `async` mode's helper fdatasyncs every ASYNC_SYNC_INTERVAL of
        // (simulated) time.
        let interval_ms = ASYNC_SYNC_INTERVAL.as_millis() as u64;
        if self.journal.durability == Durability::Async
            && self.time_ms >= self.synced_at_ms + interval_ms
        {
            self.synced_at_ms = self.time_ms;
            return self.sync_live().map(|_| ());
        }
        Ok(())
    }

    /// One random request: (session id in the stamp, req number, request).
    fn request(&mut self) -> (SessionId, u64, Request) {
        let rng = &mut self.rng;
        let account = rng.random_range(1..=ACCOUNTS);
        let other = rng.random_range(1..=ACCOUNTS);
        let instrument = crate::request::InstrumentId(rng.random_range(0..INSTRUMENTS));
        let amount = rng.random_range(1..=5_000);
        let price = rng.random_range(1..=300);
        let qty = rng.random_range(1..=20);
        let order = rng.random_range(1..=ORDER_IDS);
        let reservation = rng.random_range(1..=RESERVATION_IDS);
        let request = match rng.random_range(0..100) {
            0..=5 => Request::OpenAccount { account },
            6..=20 => Request::Deposit { account, amount },
            21..=25 => Request::Withdraw { account, amount },
            26..=31 => Request::Transfer {
                from: account,
                to: other,
                amount,
            },
            32..=33 => Request::ListInstrument {
                symbol: Symbol::new(&format!("S{}", rng.random_range(0..INSTRUMENTS)))
                    .expect("a short symbol"),
                supply: rng.random_range(10..=500),
                price,
            },
            34..=39 => Request::Reserve {
                reservation,
                account,
                instrument,
                qty,
                ttl_ms: if rng.random_bool(0.5) {
                    0
                } else {
                    rng.random_range(10..=2_000)
                },
                partial: rng.random_bool(0.3),
            },
            40..=44 => Request::Confirm { reservation },
            45..=46 => Request::Cancel { reservation },
            47..=64 => {
                let market = rng.random_bool(0.15);
                let tif = match rng.random_range(0..6) {
                    0 => Tif::Ioc,
                    1 => Tif::Fok,
                    _ if market => Tif::Ioc,
                    _ => Tif::Gtc,
                };
                Request::Place {
                    order,
                    account,
                    instrument,
                    side: if rng.random_bool(0.5) {
                        Side::Buy
                    } else {
                        Side::Sell
                    },
                    market,
                    tif,
                    post_only: rng.random_bool(0.1),
                    stp: if rng.random_bool(0.5) {
                        Stp::CancelResting
                    } else {
                        Stp::CancelIncoming
                    },
                    qty,
                    price: if market { 0 } else { price },
                }
            }
            65..=72 => Request::Amend {
                order,
                qty: rng.random_bool(0.6).then_some(qty),
                price: rng.random_bool(0.6).then_some(price),
            },
            73..=78 => Request::CancelOrder { order },
            79..=82 => Request::CreditRebate {
                deposit_seq: rng.random_range(1..=self.log.len() as u64 + 1),
                amount: rng.random_range(0..=50),
            },
            83..=84 => Request::Tick,
            85..=86 => Request::Balance { account },
            87 => Request::Book {
                instrument,
                depth: 5,
            },
            88..=91 => Request::OpenSession {
                name: SessionName::new(SESSION_NAMES[rng.random_range(0..2)])
                    .expect("a short name"),
            },
            _ => Request::Deposit { account, amount },
        };
        // Some mutating requests travel numbered on a live session, some
        // of those as retries of a number already used.
        let slot = rng.random_range(0..SESSION_NAMES.len());
        let live = self.live.as_mut().expect("a batch needs a live engine");
        match live.sessions[slot].as_mut() {
            Some((session, next)) if request.is_numbered() && rng.random_bool(0.4) => {
                let req = if *next > 1 && rng.random_bool(0.15) {
                    rng.random_range(1..*next)
                } else {
                    *next += 1;
                    *next - 1
                };
                (*session, req, request)
            }
            _ => (0, 0, request),
        }
    }

    fn sync_live(&mut self) -> Result<bool, String> {
        let Some(live) = self.live.as_mut() else {
            return Ok(false);
        };
        if let Err(e) = live.writer.sync() {
            self.report.fail_closed += 1;
            self.event(&format!("sync failed closed: {e}"), 0, 0);
            self.die(Death::Crash)?;
            return Ok(false);
        }
        self.synced = live.writer.durable_seq();
        self.event("synced", self.synced, 0);
        Ok(true)
    }

    /// A snapshot as the engine takes one: after a sync; a failure only
    /// costs recovery time.
    fn snapshot(&mut self) -> Result<(), String> {
        if !self.sync_live()? {
            return Ok(());
        }
        let live = self.live.as_ref().expect("synced, so live");
        let seq = live.ledger.last_seq();
        match write_snapshot_in(
            &self.storage,
            &self.dir,
            &live.ledger,
            live.writer.chain_head(),
        ) {
            Ok(_) => {
                self.report.snapshots += 1;
                let retained = retain_in(&self.storage, &self.dir, 2);
                self.event(&format!("snapshot; retain: {retained:?}"), seq, 0);
            }
            Err(e) => self.event(&format!("snapshot failed: {e}"), seq, 0),
        }
        Ok(())
    }

    fn shutdown(&mut self) -> Result<(), String> {
        let Some(live) = self.live.take() else {
            return self.restart(Death::Crash);
        };
        match live.writer.close() {
            Ok(()) => {
                self.report.clean_shutdowns += 1;
                self.synced = self.acked;
                self.event("clean shutdown", self.acked, 0);
            }
            Err(e) => {
                self.report.fail_closed += 1;
                self.event(&format!("close failed: {e}"), self.acked, 0);
            }
        }
        self.storage.crash();
        self.restart(Death::Crash)
    }

    fn die(&mut self, death: Death) -> Result<(), String> {
        self.live = None;
        self.event(&format!("{death:?}"), self.acked, self.synced);
        if self.verbose {
            let mut names = self.storage.list(&self.dir).unwrap_or_default();
            names.sort();
            eprintln!("  files before: {names:?}");
        }
        match death {
            Death::Crash => {
                self.report.process_crashes += 1;
                self.storage.crash();
            }
            Death::PowerLoss => {
                self.report.power_losses += 1;
                self.storage.power_loss();
            }
        }
        self.restart(death)
    }

    /// Flips a bit of a byte that is durable and at or before the durable
    /// point: in a segment before the last (a roll syncs the segment it
    /// leaves) or in the newest snapshot. Recovery must notice.
    fn rot(&mut self) -> Result<(), String> {
        self.live = None;
        self.report.process_crashes += 1;
        self.storage.crash();
        let names = self.storage.list(&self.dir).unwrap_or_default();
        let mut segments: Vec<&String> = names.iter().filter(|n| n.ends_with(".seg")).collect();
        let mut snapshots: Vec<&String> = names.iter().filter(|n| n.ends_with(".snap")).collect();
        segments.sort();
        snapshots.sort();
        let newest_snapshot: u64 = snapshots
            .last()
            .and_then(|n| n.trim_end_matches(".snap").parse().ok())
            .unwrap_or(0);
        // Segments recovery reads: not the last, not covered by the newest
        // snapshot (the next segment starts after it).
        let readable: Vec<&String> = segments
            .windows(2)
            .filter(|pair| {
                let next_first: u64 = pair[1].trim_end_matches(".seg").parse().unwrap_or(0);
                next_first > newest_snapshot + 1
            })
            .map(|pair| pair[0])
            .collect();
        let target = match (readable.is_empty(), snapshots.last()) {
            (false, _) if self.rng.random_bool(0.7) || snapshots.is_empty() => {
                readable[self.rng.random_range(0..readable.len())].clone()
            }
            (_, Some(snapshot)) => (*snapshot).clone(),
            _ => return self.restart(Death::Crash),
        };
        let path = self.dir.join(&target);
        let bytes = self.storage.contents(&path).unwrap_or_default();
        // The data area: up to the last non-zero byte (past it lie the
        // preallocated zeros, which are not a frame either way).
        let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        if end == 0 || !self.storage.is_durable(&path, 0, end) {
            return self.restart(Death::Crash);
        }
        let offset = self.rng.random_range(0..end);
        let bit = self.rng.random_range(0..8u8);
        self.storage
            .rot(&path, offset, bit)
            .map_err(|e| format!("rot {}: {e}", path.display()))?;
        self.event(
            &format!("rot {}", path.display()),
            offset as u64,
            bit.into(),
        );
        let detected = self.recover_expecting_rot(&path, target.ends_with(".snap"))?;
        if detected {
            self.report.rot_detected += 1;
        }
        self.storage
            .heal(&path, offset, bit)
            .map_err(|e| format!("heal {}: {e}", path.display()))?;
        self.restart(Death::Crash)
    }

    /// Recovery after a durable byte of `path` rotted, with faults off:
    /// corruption naming it, or (a snapshot) a warning passing over it.
    /// Anything else is a failure.
    fn recover_expecting_rot(&mut self, path: &Path, snapshot: bool) -> Result<bool, String> {
        self.storage.set_armed(false);
        let result = lock_dir_in(&self.storage, &self.dir)
            .and_then(|lock| recover_locked(&lock, self.ledger_config));
        self.storage.set_armed(true);
        self.storage.crash();
        let named = |text: &str| text.contains(&path.display().to_string());
        match result {
            Err(JournalError::Corrupt { file, .. }) if file == path => Ok(true),
            // Rot in a header's magic or version reads as a foreign file,
            // still named.
            Err(
                JournalError::BadMagic { file, .. } | JournalError::UnsupportedVersion { file, .. },
            ) if file == path => Ok(true),
            // A damaged snapshot makes recovery fall back to an older one or
            // to the journal, which retention may have pruned: the gap is
            // reported in a segment, naming the skipped snapshot.
            Err(JournalError::Corrupt { reason, .. }) if snapshot && named(&reason) => Ok(true),
            Err(e) => self
                .fail(format!("rot in {} gave another error: {e}", path.display()))
                .map(|_| false),
            Ok(recovered) => {
                if snapshot && recovered.warnings.iter().any(|w| named(w)) {
                    return Ok(true);
                }
                self.fail(format!(
                    "a flipped durable byte in {} went unnoticed (warnings: {:?})",
                    path.display(),
                    recovered.warnings
                ))
                .map(|_| false)
            }
        }
    }

    /// Recovers after `death` and checks what recovery kept; then opens a
    /// writer to go on. Injected faults may make recovery or opening fail:
    /// that is a restart like any other, tried again.
    fn restart(&mut self, death: Death) -> Result<(), String> {
        // A power loss in `async` mode may take what was never synced;
        // anything else must keep every acknowledged request.
        let must_keep = match (death, self.journal.durability) {
            (Death::PowerLoss, Durability::Async) => self.synced,
            _ => self.acked,
        };
        for attempt in 0..64 {
            let lock = match lock_dir_in(&self.storage, &self.dir) {
                Ok(lock) => lock,
                Err(e) => return self.fail(format!("lock after a restart: {e}")),
            };
            let recovered = match recover_locked(&lock, self.ledger_config) {
                Ok(recovered) => recovered,
                Err(e @ JournalError::Io { .. }) => {
                    self.event(&format!("recovery failed: {e}"), attempt, 0);
                    drop(lock);
                    self.storage.crash();
                    continue;
                }
                Err(e) => {
                    return self.fail(format!(
                        "recovery after a {death:?} (attempt {attempt}) reported: {e}"
                    ))
                }
            };
            let chain_head = recovered.chain_head;
            self.report.recoveries += 1;
            self.report.torn_tails += recovered
                .warnings
                .iter()
                .filter(|w| w.contains("torn tail"))
                .count() as u64;
            let ledger = recovered.ledger;
            let kept = ledger.last_seq();
            self.event(
                &format!("recovered (warnings {:?})", recovered.warnings),
                kept,
                ledger.digest(),
            );
            if kept < must_keep {
                return self.fail(format!(
                    "after a {death:?}, recovery kept records up to seq {kept}, but seq {must_keep} had to survive"
                ));
            }
            if kept > self.log.len() as u64 {
                return self.fail(format!(
                    "recovery returned seq {kept}, beyond the {} records ever written",
                    self.log.len()
                ));
            }
            let mut reference = Ledger::new(self.ledger_config);
            reference.apply_batch(&self.log[..kept as usize], |_, _| {});
            if reference.digest() != ledger.digest() {
                return self.fail(format!(
                    "after a {death:?}, the recovered state at seq {kept} differs from a fresh Ledger fed the first {kept} records"
                ));
            }
            if let Err(e) = ledger.check_invariants() {
                return self.fail(format!("the recovered Ledger breaks an invariant: {e}"));
            }
            self.log.truncate(kept as usize);
            self.acked = kept;
            let mut writer = match JournalWriter::open_locked(lock, self.journal) {
                Ok(writer) => writer,
                Err(e) => {
                    self.event(&format!("open failed: {e}"), kept, 0);
                    self.storage.crash();
                    self.report.fail_closed += 1;
                    // What recovery kept is no longer acknowledged by
                    // anyone new, but it was before: keep the bar.
                    continue;
                }
            };
            if let Err(e) = writer.resume(chain_head) {
                return self.fail(format!(
                    "the writer cannot continue the recovered chain: {e}"
                ));
            }
            self.synced = self.synced.min(kept).max(writer.durable_seq());
            self.live = Some(Live {
                writer,
                ledger,
                sessions: [None, None],
            });
            return Ok(());
        }
        self.fail("recovery kept failing on injected faults 64 times in a row".into())
    }
}

//! `ringledger bench`: the engine and the lock-based baselines under the
//! same workloads, measured the same way.
//!
//! A run sets up (opens and funds the wallets, lists the share-sale
//! instrument; not measured), releases `gateways` threads at once, each
//! running its share of the operations (see [`workload`]) closed loop or
//! open loop (see [`load`]), and stops the clock at the last answer. Then it
//! checks the final state's invariants and reports throughput, latency
//! percentiles from every single request, and a digest of the state.
//!
//! ```
//! use ringledger::bench::{self, Config, EngineKind, Scenario};
//!
//! for engine in [EngineKind::Lmax, EngineKind::Mutex, EngineKind::Optimistic] {
//!     let config = Config { scenario: Scenario::ShareSale, engine, ops: 2_000, ..Config::default() };
//!     let run = bench::run(&config, false).unwrap();
//!     assert!(run.report.invariants_ok);
//!     assert_eq!(run.report.ops, 2_000);
//! }
//! ```

pub mod load;
pub mod report;
pub mod workload;

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use xxhash_rust::xxh3::Xxh3;

pub use self::load::{Pace, Tally};
pub use self::report::{write_hgrm, Latency, Report};
pub use self::workload::{Op, Scenario, Workload};
use crate::baseline::{self, Bank, BankConfig, BaselineJournal, MutexBank, OptimisticBank};
use crate::engine::{Client, Engine, EngineError, JournalThread};
use crate::journal::Durability;
use crate::outcome::{InstrumentView, Reply};
use crate::request::{InstrumentId, Request, Symbol};
use crate::ring::WaitStrategy;

/// Which implementation serves the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// The engine: gateways → ring → one business thread.
    Lmax,
    /// Pessimistic baseline: a mutex per wallet and per instrument.
    Mutex,
    /// Optimistic baseline: compare-and-swap with retry.
    Optimistic,
}

impl EngineKind {
    pub const ALL: [EngineKind; 3] = [EngineKind::Lmax, EngineKind::Mutex, EngineKind::Optimistic];

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Lmax => "lmax",
            EngineKind::Mutex => "mutex",
            EngineKind::Optimistic => "optimistic",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngineKind {
    type Err = String;

    fn from_str(text: &str) -> Result<EngineKind, String> {
        EngineKind::ALL
            .into_iter()
            .find(|e| e.as_str() == text)
            .ok_or_else(|| format!("unknown engine {text:?}: expected lmax, mutex or optimistic"))
    }
}

/// Everything a run needs; the defaults finish in a few seconds on a
/// 2-core machine.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// deposit, mixed, hot-wallet or share-sale.
    #[arg(long, default_value = "deposit")]
    pub scenario: Scenario,
    /// lmax (the engine), mutex (a lock per wallet) or optimistic (CAS with retry).
    #[arg(long, default_value = "lmax")]
    pub engine: EngineKind,
    /// Threads submitting requests.
    #[arg(long, default_value_t = 2)]
    pub gateways: usize,
    /// Operations measured, over all gateways (set-up excluded).
    #[arg(long, default_value_t = 2_000_000)]
    pub ops: u64,
    /// Wallets opened and funded before the run (the hot wallet uses one).
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// none (no journal, the default: each design's core speed), async (page
    /// cache) or sync (fdatasync); every engine journals each accepted
    /// operation alike.
    #[arg(long, default_value = "none")]
    pub durability: Durability,
    /// Parent of the throw-away journal directory (made fresh, removed after
    /// the run; default `journal`, as in the command-line contract).
    #[arg(long)]
    pub journal_dir: Option<PathBuf>,
    /// How the engine's idle threads wait: spin, yield or block (lmax only).
    #[arg(long, default_value = "block")]
    pub wait: WaitStrategy,
    /// Which thread writes the engine's journal: business (inline) or
    /// flusher (lmax only).
    #[arg(long, default_value = "business")]
    pub journal_thread: JournalThread,
    /// Pin the engine's business thread to the last core (lmax only; the
    /// baselines have no business thread).
    #[arg(long)]
    pub pin: bool,
    /// Open loop: this many ops/s over all gateways, latency counted from
    /// each request's scheduled send time (closed loop without it).
    #[arg(long)]
    pub rate: Option<u64>,
    /// Requests one gateway keeps in flight (lmax only; the baselines call
    /// synchronously, a window of one).
    #[arg(long, default_value_t = 256)]
    pub window: usize,
}

/// Most requests one lmax gateway may keep in flight: the engine's
/// response queue per client holds 4096 answers.
pub const WINDOW_MAX: usize = 4_096;
/// Most wallets a run sets up: a baseline preallocates a 128-byte slot per
/// wallet, so this bound keeps set-up around a gigabyte at most.
pub const ACCOUNTS_MAX: u64 = 10_000_000;
/// Most gateway threads a run may start.
pub const GATEWAYS_MAX: usize = 1_024;

impl Default for Config {
    fn default() -> Self {
        Config {
            scenario: Scenario::Deposit,
            engine: EngineKind::Lmax,
            gateways: 2,
            ops: 2_000_000,
            accounts: 10_000,
            durability: Durability::None,
            journal_dir: None,
            wait: WaitStrategy::Block,
            journal_thread: JournalThread::default(),
            pin: false,
            rate: None,
            window: 256,
        }
    }
}

impl Config {
    /// Refuses settings that cannot run, saying which flag to change.
    pub fn validate(&self) -> Result<(), BenchError> {
        let fail = |why: String| Err(BenchError(why));
        if self.gateways == 0 || self.gateways > GATEWAYS_MAX {
            return fail(format!(
                "--gateways must be 1 to {GATEWAYS_MAX}, got {}",
                self.gateways
            ));
        }
        if self.ops == 0 {
            return fail("--ops must be at least 1".into());
        }
        if self.accounts == 0 {
            return fail("--accounts must be at least 1".into());
        }
        if self.scenario == Scenario::Mixed && self.accounts < 2 {
            return fail(
                "--scenario mixed transfers between accounts: --accounts must be at least 2".into(),
            );
        }
        if self.accounts > ACCOUNTS_MAX {
            return fail(format!(
                "--accounts {} is more than this benchmark sets up ({ACCOUNTS_MAX} at most)",
                self.accounts
            ));
        }
        if self.window == 0 || self.window > WINDOW_MAX {
            return fail(format!(
                "--window must be 1 to {WINDOW_MAX}, got {}",
                self.window
            ));
        }
        if self.rate == Some(0) {
            return fail("--rate must be at least 1 op/s (leave it out for a closed loop)".into());
        }
        Ok(())
    }

    fn pace(&self) -> Pace {
        match self.rate {
            None => Pace::Closed,
            Some(rate) => Pace::Open {
                interval_ns: self.gateways as f64 * 1e9 / rate as f64,
            },
        }
    }
}

/// Why a run could not be carried out (a broken invariant is not an error:
/// it is reported in the [`Report`]).
#[derive(Debug)]
pub struct BenchError(pub String);

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

impl From<EngineError> for BenchError {
    fn from(e: EngineError) -> Self {
        BenchError(e.to_string())
    }
}

/// A finished run: the report and the merged latency histogram (for `--hgrm`).
pub struct Run {
    pub report: Report,
    pub histogram: Histogram<u64>,
}

/// Sets up, runs and checks one benchmark. With `progress`, a line on
/// stderr shows how far a run longer than two seconds has got.
pub fn run(config: &Config, progress: bool) -> Result<Run, BenchError> {
    config.validate()?;
    let workload = Workload::new(config.scenario, config.accounts, config.ops);
    let journal = match config.durability {
        Durability::None => None,
        _ => Some(JournalDir::create(
            config
                .journal_dir
                .as_deref()
                .unwrap_or(Path::new("journal")),
            config.engine,
        )?),
    };
    let measured = match config.engine {
        EngineKind::Lmax => run_lmax(config, &workload, journal.as_ref(), progress)?,
        EngineKind::Mutex | EngineKind::Optimistic => {
            run_bank(config, &workload, journal.as_ref(), progress)?
        }
    };
    drop(journal);
    let Measured {
        tally,
        seconds,
        digest,
        digest_of,
        mut invariants,
        retries,
        sale,
    } = measured;
    let answered = tally.accepted + tally.rejected;
    if invariants.is_ok() && answered != config.ops {
        invariants = Err(format!("{answered} answers for {} operations", config.ops));
    }
    if let (Ok(()), Some(view)) = (&invariants, sale) {
        invariants = check_sale(&view, workload.supply, tally.sold);
    }
    let report = Report {
        scenario: config.scenario.to_string(),
        engine: config.engine.to_string(),
        gateways: config.gateways,
        accounts: workload.accounts,
        ops: answered,
        durability: config.durability.to_string(),
        load: if config.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .to_string(),
        window: match config.engine {
            EngineKind::Lmax => config.window,
            _ => 1,
        },
        rate: config.rate,
        wait: (config.engine == EngineKind::Lmax).then(|| config.wait.to_string()),
        journal_thread: (config.engine == EngineKind::Lmax
            && config.durability != Durability::None)
            .then(|| config.journal_thread.to_string()),
        pinned: config.pin && config.engine == EngineKind::Lmax,
        seconds,
        ops_per_sec: answered as f64 / seconds.max(1e-9),
        latency_ns: Latency::of(&tally.histogram),
        accepted: tally.accepted,
        rejected: tally.rejected,
        retries,
        digest: digest.map(|d| format!("{d:016x}")),
        digest_of: digest_of.to_string(),
        invariants_ok: invariants.is_ok(),
        invariants_error: invariants.err(),
        supply: sale.map(|v| v.supply),
        sold: sale.map(|v| v.sold),
    };
    Ok(Run {
        report,
        histogram: tally.histogram,
    })
}

/// The share sale's own promise, checked against what the buyers were told:
/// every share is somewhere, none is sold twice, and the shares sold are
/// exactly those of the confirmations answered with success.
fn check_sale(view: &InstrumentView, supply: u64, confirmed: u64) -> Result<(), String> {
    let total = u128::from(view.available) + u128::from(view.reserved) + u128::from(view.sold);
    if view.supply != supply || total != u128::from(supply) {
        return Err(format!(
            "share sale: available {} + reserved {} + sold {} != supply {supply}",
            view.available, view.reserved, view.sold
        ));
    }
    if view.sold > supply {
        return Err(format!("share sale: oversold, {} of {supply}", view.sold));
    }
    if view.sold != confirmed {
        return Err(format!(
            "share sale: {} shares sold but buyers were told {confirmed}",
            view.sold
        ));
    }
    Ok(())
}

/// What an engine-specific run hands back for the report.
struct Measured {
    tally: Tally,
    seconds: f64,
    digest: Option<u64>,
    digest_of: &'static str,
    invariants: Result<(), String>,
    retries: Option<u64>,
    /// The share-sale instrument at the end.
    sale: Option<InstrumentView>,
}

/// Set-up requests the lmax admin client keeps in flight.
const SETUP_WINDOW: usize = 1_024;

fn run_lmax(
    config: &Config,
    workload: &Workload,
    journal: Option<&JournalDir>,
    progress: bool,
) -> Result<Measured, BenchError> {
    let pin_core = config
        .pin
        .then(|| core_affinity::get_core_ids().map_or(0, |cores| cores.len().saturating_sub(1)));
    let mut builder = Engine::builder()
        .wait(config.wait)
        .pin_core(pin_core)
        .accounts_hint(workload.accounts as usize);
    if let Some(journal) = journal {
        builder = builder
            .journal(&journal.path, config.durability)
            .journal_thread(config.journal_thread);
    }
    let engine = builder
        .start()
        .map_err(|e| BenchError(format!("starting the engine: {e}")))?;
    let mut admin = engine.client()?;
    let setup = |admin: &mut Client, request: Request| -> Result<Option<Reply>, BenchError> {
        admin.send(request)?;
        if admin.in_flight() < SETUP_WINDOW {
            return Ok(None);
        }
        let outcome = admin.recv()?;
        outcome
            .map(Some)
            .map_err(|e| BenchError(format!("set-up was refused: {e}")))
    };
    for account in 0..workload.accounts {
        setup(&mut admin, Request::OpenAccount { account })?;
        setup(
            &mut admin,
            Request::Deposit {
                account,
                amount: workload::OPENING_BALANCE,
            },
        )?;
    }
    while admin.in_flight() > 0 {
        admin
            .recv()?
            .map_err(|e| BenchError(format!("set-up was refused: {e}")))?;
    }
    let instrument = if workload.scenario == Scenario::ShareSale {
        match admin.call(Request::ListInstrument {
            symbol: sale_symbol(),
            supply: workload.supply,
            price: workload::SALE_PRICE,
        })? {
            Ok(Reply::Listed { instrument }) => instrument,
            other => return Err(BenchError(format!("listing the instrument: {other:?}"))),
        }
    } else {
        InstrumentId(0)
    };
    // The opening deposits' rebates are set-up too.
    admin.barrier()?;
    let clients = (0..config.gateways)
        .map(|_| engine.client())
        .collect::<Result<Vec<_>, _>>()?;
    let (tally, seconds) = drive(
        config,
        workload,
        instrument,
        clients,
        progress,
        |gateway, client| Ok(gateway.run_lmax(client, config.window)?),
    )?;
    // Let the rebates of the measured deposits land before checking.
    admin.barrier()?;
    drop(admin);
    let ledger = engine
        .shutdown()
        .map_err(|e| BenchError(format!("stopping the engine: {e}")))?;
    Ok(Measured {
        tally,
        seconds,
        digest: Some(ledger.digest()),
        digest_of: "ledger",
        invariants: ledger.check_invariants(),
        retries: None,
        sale: (workload.scenario == Scenario::ShareSale)
            .then(|| ledger.instruments().find(|v| v.id == instrument))
            .flatten(),
    })
}

fn run_bank(
    config: &Config,
    workload: &Workload,
    journal: Option<&JournalDir>,
    progress: bool,
) -> Result<Measured, BenchError> {
    let journal =
        match journal {
            None => None,
            Some(dir) => {
                let path = dir.path.join("baseline.journal");
                let durability = match config.durability {
                    Durability::Sync => baseline::Durability::Sync,
                    _ => baseline::Durability::Async,
                };
                Some(BaselineJournal::create(&path, durability).map_err(|e| {
                    BenchError(format!("creating the journal {}: {e}", path.display()))
                })?)
            }
        };
    let bank_config = BankConfig::with_accounts(workload.accounts as usize);
    let bank: Box<dyn Bank> = match config.engine {
        EngineKind::Optimistic => Box::new(OptimisticBank::new(bank_config, journal)),
        _ => Box::new(MutexBank::new(bank_config, journal)),
    };
    bank.open_funded(0..workload.accounts, workload::OPENING_BALANCE)
        .map_err(|e| BenchError(format!("set-up was refused: {e}")))?;
    let instrument = if workload.scenario == Scenario::ShareSale {
        bank.list_instrument(sale_symbol(), workload.supply, workload::SALE_PRICE)
            .map_err(|e| BenchError(format!("listing the instrument: {e}")))?
    } else {
        InstrumentId(0)
    };
    let retries_before = bank.retries();
    let states = vec![(); config.gateways];
    let (tally, seconds) = drive(
        config,
        workload,
        instrument,
        states,
        progress,
        |gateway, ()| Ok(gateway.run_bank(&*bank)),
    )?;
    let sale = (workload.scenario == Scenario::ShareSale)
        .then(|| bank.instrument(instrument).ok())
        .flatten();
    Ok(Measured {
        tally,
        seconds,
        digest: Some(bank_digest(&*bank, workload.accounts, sale.as_ref())),
        digest_of: "balances",
        invariants: bank.check_invariants(),
        retries: (config.engine == EngineKind::Optimistic).then(|| bank.retries() - retries_before),
        sale,
    })
}

fn sale_symbol() -> Symbol {
    Symbol::new(workload::SALE_SYMBOL).expect("the sale symbol is valid")
}

/// An xxh3 of every wallet's (id, balance, held) in id order and the sale
/// instrument's counts: equal final states give equal digests.
fn bank_digest(bank: &dyn Bank, accounts: u64, sale: Option<&InstrumentView>) -> u64 {
    let mut h = Xxh3::new();
    for account in 0..accounts {
        let (balance, held) = bank.balance(account).unwrap_or((-1, -1));
        for v in [account as i64, balance, held] {
            h.update(&v.to_le_bytes());
        }
    }
    if let Some(v) = sale {
        for n in [v.supply, v.available, v.reserved, v.sold] {
            h.update(&n.to_le_bytes());
        }
    }
    h.digest()
}

/// How often the progress line is refreshed, and after how long it appears.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);
const PROGRESS_AFTER: Duration = Duration::from_secs(2);

/// Starts one thread per gateway state, releases them together, and returns
/// their merged tally and the seconds from release to the last answer.
fn drive<S: Send>(
    config: &Config,
    workload: &Workload,
    instrument: InstrumentId,
    states: Vec<S>,
    progress: bool,
    each: impl Fn(&load::Gateway<'_>, &mut S) -> Result<Tally, BenchError> + Sync,
) -> Result<(Tally, f64), BenchError> {
    let done = AtomicU64::new(0);
    let start = OnceLock::new();
    let barrier = Barrier::new(states.len() + 1);
    let gateways = states.len();
    let results = std::thread::scope(|scope| {
        let (done, start, barrier, each) = (&done, &start, &barrier, &each);
        let handles: Vec<_> = states
            .into_iter()
            .enumerate()
            .map(|(index, mut state)| {
                scope.spawn(move || {
                    barrier.wait();
                    let gateway = load::Gateway {
                        workload: *workload,
                        index,
                        count: workload::share(config.ops, gateways, index),
                        pace: config.pace(),
                        base: *start.get().expect("set before the release"),
                        progress: done,
                        instrument,
                    };
                    let tally = each(&gateway, &mut state);
                    (tally, gateway.base.elapsed())
                })
            })
            .collect();
        let released = Instant::now();
        start.set(released).expect("set once");
        barrier.wait();
        let mut shown = false;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(PROGRESS_EVERY);
            if progress && released.elapsed() >= PROGRESS_AFTER {
                let done = done.load(Ordering::Relaxed);
                eprint!(
                    "\r  bench: {done}/{} ops ({:.0}%)   ",
                    config.ops,
                    done as f64 * 100.0 / config.ops as f64
                );
                let _ = std::io::stderr().flush();
                shown = true;
            }
        }
        if shown {
            eprint!("\r{:60}\r", "");
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("a gateway thread panicked"))
            .collect::<Vec<_>>()
    });
    let mut tally = Tally::default();
    let mut elapsed = Duration::ZERO;
    for (result, finished) in results {
        tally.merge(&result?);
        elapsed = elapsed.max(finished);
    }
    Ok((tally, elapsed.as_secs_f64()))
}

/// A fresh journal directory for one run, removed when the run is over: a
/// benchmark's journal is throw-away, and recovering an old one would
/// change what is measured.
struct JournalDir {
    path: PathBuf,
}

impl JournalDir {
    fn create(parent: &Path, engine: EngineKind) -> Result<JournalDir, BenchError> {
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = parent.join(format!("bench-{engine}-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| {
            BenchError(format!(
                "creating the journal directory {}: {e} (choose another with --journal-dir)",
                path.display()
            ))
        })?;
        Ok(JournalDir { path })
    }
}

impl Drop for JournalDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(scenario: Scenario, engine: EngineKind) -> Config {
        Config {
            scenario,
            engine,
            ops: 3_001,
            accounts: 50,
            gateways: 3,
            window: 16,
            ..Config::default()
        }
    }

    #[test]
    fn every_scenario_on_every_engine_keeps_its_invariants() {
        for scenario in Scenario::ALL {
            for engine in EngineKind::ALL {
                let run = run(&tiny(scenario, engine), false).unwrap();
                let r = &run.report;
                assert!(r.invariants_ok, "{scenario} on {engine}: {r:?}");
                assert_eq!(r.ops, 3_001);
                assert_eq!(run.histogram.len(), 3_001);
                assert_eq!(r.retries.is_some(), engine == EngineKind::Optimistic);
            }
        }
    }

    #[test]
    fn the_share_sale_never_sells_more_than_its_supply() {
        for engine in EngineKind::ALL {
            let r = run(&tiny(Scenario::ShareSale, engine), false)
                .unwrap()
                .report;
            let (supply, sold) = (r.supply.unwrap(), r.sold.unwrap());
            assert!(sold <= supply && sold > 0, "{engine}: {sold} of {supply}");
        }
    }

    #[test]
    fn journaled_runs_leave_no_journal_behind() {
        let dir = tempfile::tempdir().unwrap();
        for engine in EngineKind::ALL {
            let config = Config {
                durability: Durability::Async,
                journal_dir: Some(dir.path().to_path_buf()),
                ..tiny(Scenario::Mixed, engine)
            };
            assert!(run(&config, false).unwrap().report.invariants_ok);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn open_loop_runs_every_request() {
        let config = Config {
            rate: Some(20_000),
            ops: 1_000,
            ..tiny(Scenario::Deposit, EngineKind::Lmax)
        };
        let r = run(&config, false).unwrap().report;
        assert_eq!((r.ops, r.load.as_str()), (1_000, "open"));
        assert!(r.invariants_ok);
    }

    #[test]
    fn impossible_settings_are_refused_with_the_flag_to_change() {
        let bad = [
            Config {
                gateways: 0,
                ..Config::default()
            },
            Config {
                ops: 0,
                ..Config::default()
            },
            Config {
                window: 0,
                ..Config::default()
            },
            Config {
                rate: Some(0),
                ..Config::default()
            },
            Config {
                scenario: Scenario::Mixed,
                accounts: 1,
                ..Config::default()
            },
        ];
        for config in bad {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.starts_with("--"), "{err}");
        }
    }
}

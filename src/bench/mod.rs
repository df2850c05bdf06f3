//! `ringledger bench`: the engine and the lock-based baselines under the
//! same workloads and the same rules, measured the same way.
//!
//! Equal rules, whatever the engine:
//! - **The same requests in flight** (`--inflight N`, over all client
//!   threads). The engine runs `G` gateways (`--gateways`, default 2, or 1
//!   when N is 1), each keeping `N / G` pipelined requests in flight; N must
//!   be a multiple of G. A baseline runs N client threads, each making one
//!   synchronous call at a time: a lock-based service holds one thread (or
//!   connection) per request in flight, and that is the design under test.
//! - **The same journal** for `async` and `sync`: the baselines write the
//!   engine's records with the engine's writer, through a group commit
//!   (see [`crate::baseline`]).
//! - **The same work**: every deposit earns a 1% rebate, credited by a side
//!   thread (the engine's rebate thread; a baseline's job-queue worker).
//!
//! A run sets up (opens and funds the wallets, lists the share-sale
//! instrument or the order books, sells the traders their shares and fills
//! the books, waits for the set-up deposits' rebates; not measured),
//! releases the client threads at once, each running its share of the
//! operations (see [`workload`]) closed loop or open loop (see [`load`]).
//! The clock reads twice: **acknowledged** at the last answer, **settled**
//! once every operation and everything it caused (its rebate) has been
//! applied. Settled throughput is the headline. A hiccup meter (see
//! [`hiccup`]) runs alongside. Then the run checks the final state's
//! invariants, including that every rebate was credited, and reports
//! throughput, latency percentiles from every single request, the machine's
//! hiccups and a digest of the state.
//!
//! [`suite`] runs several engines (`--compare`) and several in-flight
//! counts (`--sweep-inflight`) with otherwise equal settings.
//!
//! ```
//! use ringledger::bench::{self, Config, EngineKind, Scenario};
//!
//! for engine in [EngineKind::Lmax, EngineKind::Mutex, EngineKind::Optimistic] {
//!     let config = Config { scenario: Scenario::ShareSale, engine, ops: 2_000, ..Config::default() };
//!     let run = bench::run(&config, false).unwrap();
//!     assert!(run.report.invariants_ok);
//!     assert_eq!(run.report.ops, 2_000);
//!     assert_eq!(run.report.inflight, bench::INFLIGHT_DEFAULT);
//! }
//! ```

#[cfg(feature = "external-engines")]
mod external;
pub mod hiccup;
pub mod load;
pub mod plot;
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

use self::hiccup::HiccupMeter;
pub use self::load::{Pace, Tally};
pub use self::report::{write_hgrm, Latency, Report};
pub use self::workload::{BookFlow, Flow, Op, Scenario, Workload};
use crate::baseline::{Bank, BankConfig, BaselineJournal, MutexBank, OptimisticBank};
use crate::engine::{Client, Engine, EngineError, JournalThread};
use crate::journal::Durability;
use crate::outcome::{InstrumentView, Reply};
use crate::rebate::RateRebate;
use crate::request::{InstrumentId, Request, Symbol};
use crate::ring::WaitStrategy;

/// Which implementation serves the workload.
///
/// Adding an engine is: a variant here (and its name and description), a
/// line in [`EngineKind::KNOWN`] (which `--help` and the parser read) and
/// in [`EngineKind::ALL`] when this build can run it (which `--compare`
/// runs), its [`EngineKind::shape`] of threads, and an arm in `measure`,
/// which sets it up and drives it. The external engines (the seeds'
/// designs on real servers, cargo feature `external-engines`, see
/// [`crate::external`]) are always known but only run in a build with the
/// feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    /// The engine: gateways → ring → one business thread.
    Lmax,
    /// Pessimistic baseline: a mutex per wallet and per instrument.
    Mutex,
    /// Optimistic baseline: compare-and-swap with retry.
    Optimistic,
    /// Seed 1 on PostgreSQL: `SELECT … FOR UPDATE`, a transactions table
    /// and a job-row queue with a worker (feature `external-engines`).
    Postgres,
    /// Seed 1 on PostgreSQL with a version column and retry.
    PostgresOptimistic,
    /// Seed 2 on Redis: Lua scripts, and a list as the rebate queue.
    Redis,
}

impl EngineKind {
    /// Every engine this build can run, in the order `--compare` runs them
    /// (lmax first: the others' ratios are to it).
    #[cfg(not(feature = "external-engines"))]
    pub const ALL: &'static [EngineKind] =
        &[EngineKind::Lmax, EngineKind::Mutex, EngineKind::Optimistic];
    /// Every engine this build can run, in the order `--compare` runs them
    /// (lmax first: the others' ratios are to it).
    #[cfg(feature = "external-engines")]
    pub const ALL: &'static [EngineKind] = EngineKind::KNOWN;

    /// Every engine, whether this build can run it or not (the external
    /// ones need the `external-engines` feature): what `--help` lists.
    pub const KNOWN: &'static [EngineKind] = &[
        EngineKind::Lmax,
        EngineKind::Mutex,
        EngineKind::Optimistic,
        EngineKind::Postgres,
        EngineKind::PostgresOptimistic,
        EngineKind::Redis,
    ];

    /// Whether the engine implements the order books, so it can run the
    /// order-book scenarios (the engine and the mutex baseline do).
    pub fn trades(self) -> bool {
        matches!(self, EngineKind::Lmax | EngineKind::Mutex)
    }

    /// Whether the engine runs on an external server (see
    /// [`crate::external`]; needs the `external-engines` feature).
    pub fn is_external(self) -> bool {
        matches!(
            self,
            EngineKind::Postgres | EngineKind::PostgresOptimistic | EngineKind::Redis
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Lmax => "lmax",
            EngineKind::Mutex => "mutex",
            EngineKind::Optimistic => "optimistic",
            EngineKind::Postgres => "postgres",
            EngineKind::PostgresOptimistic => "postgres-optimistic",
            EngineKind::Redis => "redis",
        }
    }

    /// One line for `--help`: what the engine is.
    pub fn describe(self) -> &'static str {
        match self {
            EngineKind::Lmax => "the engine: gateways, a ring, one business thread",
            EngineKind::Mutex => "a mutex per wallet and instrument (SELECT … FOR UPDATE)",
            EngineKind::Optimistic => "compare-and-swap with retry (a version column)",
            EngineKind::Postgres => {
                "seed 1 on PostgreSQL: SELECT … FOR UPDATE, a transactions table, a job-row \
                 queue and its worker [feature external-engines; a server at \
                 RINGLEDGER_POSTGRES_URL, default postgresql://postgres@127.0.0.1:5432/test]"
            }
            EngineKind::PostgresOptimistic => {
                "seed 1 on PostgreSQL with a version column and retry [feature \
                 external-engines; a server, as for postgres]"
            }
            EngineKind::Redis => {
                "seed 2 on Redis: Lua scripts check and update atomically, a list is the \
                 rebate queue [feature external-engines; a server at RINGLEDGER_REDIS_URL, \
                 default redis://127.0.0.1:6379/]"
            }
        }
    }

    /// Client threads and requests in flight per thread for `inflight`
    /// requests in flight in all; `gateways` is `--gateways` (lmax only).
    pub fn shape(self, inflight: usize, gateways: Option<usize>) -> Result<Shape, BenchError> {
        match self {
            EngineKind::Lmax => {
                let threads = gateways.unwrap_or(GATEWAYS_DEFAULT.min(inflight));
                if inflight < threads || !inflight.is_multiple_of(threads) {
                    return Err(BenchError(format!(
                        "--inflight {inflight} cannot be split evenly over {threads} lmax gateways \
                         (each keeps inflight / gateways requests in flight): choose a multiple of \
                         {threads} or change --gateways"
                    )));
                }
                Ok(Shape {
                    threads,
                    window: inflight / threads,
                })
            }
            // One connection per request in flight, like the baselines' threads.
            EngineKind::Mutex
            | EngineKind::Optimistic
            | EngineKind::Postgres
            | EngineKind::PostgresOptimistic
            | EngineKind::Redis => Ok(Shape {
                threads: inflight,
                window: 1,
            }),
        }
    }
}

/// How an engine holds its requests in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Client threads (lmax gateways, or a baseline's callers).
    pub threads: usize,
    /// Requests one thread keeps in flight (1 for a synchronous caller).
    pub window: usize,
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EngineKind {
    type Err = String;

    fn from_str(text: &str) -> Result<EngineKind, String> {
        let engine = EngineKind::KNOWN
            .iter()
            .copied()
            .find(|e| e.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown engine {text:?}: expected one of {}",
                    engine_names()
                )
            })?;
        if !EngineKind::ALL.contains(&engine) {
            return Err(format!(
                "engine {text} runs on an external server and needs a build with the \
                 external-engines feature: cargo run --release --features external-engines -- \
                 bench --engine {text}"
            ));
        }
        Ok(engine)
    }
}

/// `lmax, mutex, optimistic, postgres, postgres-optimistic, redis`.
fn engine_names() -> String {
    EngineKind::KNOWN
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `--help` says under `--engine`: every engine, one per line.
pub fn engines_help() -> String {
    let mut help = String::from("Which engine serves the workload:");
    for engine in EngineKind::KNOWN {
        help.push_str(&format!(
            "\n  {:<20} {}",
            engine.as_str(),
            engine.describe()
        ));
    }
    if cfg!(not(feature = "external-engines")) {
        help.push_str(
            "\npostgres, postgres-optimistic and redis need a build with `--features \
             external-engines` and a running server.",
        );
    }
    help
}

/// The in-flight counts of `--sweep-inflight`, e.g. `1,8,64,512`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InflightList(pub Vec<usize>);

impl FromStr for InflightList {
    type Err = String;

    fn from_str(text: &str) -> Result<InflightList, String> {
        if text.trim().is_empty() {
            return Err("an empty list: give in-flight counts like 1,8,64,512".into());
        }
        let mut counts = Vec::new();
        for item in text.split(',') {
            let count: usize = item.trim().parse().map_err(|_| {
                format!("{item:?} is not a whole number of requests in flight (like 1,8,64,512)")
            })?;
            if count == 0 || count > INFLIGHT_MAX {
                return Err(format!(
                    "each in-flight count must be 1 to {INFLIGHT_MAX}, got {count}"
                ));
            }
            if counts.contains(&count) {
                return Err(format!("{count} is listed twice"));
            }
            counts.push(count);
        }
        Ok(InflightList(counts))
    }
}

/// Everything a run needs; the defaults finish in a few seconds on a
/// 2-core machine.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// deposit, mixed, hot-wallet, share-sale, orderbook (one book,
    /// exchange-core's mix) or orderbook-multi (1,000 books, Pareto-weighted
    /// activity); the order-book ones run on lmax and mutex only.
    #[arg(long, default_value = "deposit")]
    pub scenario: Scenario,
    #[arg(
        long,
        default_value = "lmax",
        help = format!("Which engine serves the workload: {}", engine_names()),
        long_help = engines_help(),
        conflicts_with = "compare"
    )]
    pub engine: EngineKind,
    /// Run the scenario on every engine with the same settings, one after
    /// the other, and print each one's ratio to lmax.
    #[arg(long)]
    pub compare: bool,
    /// Requests in flight over all client threads, the same for every
    /// engine [default: 64]. lmax: --gateways threads × inflight/gateways
    /// pipelined requests each; a baseline: this many threads, one
    /// synchronous call each.
    #[arg(long, conflicts_with = "sweep_inflight")]
    pub inflight: Option<usize>,
    /// Run once per in-flight count in this comma-separated list (e.g.
    /// 1,8,64,512) and print the curve; per engine with --compare.
    #[arg(long, value_name = "LIST")]
    pub sweep_inflight: Option<InflightList>,
    /// lmax gateway threads, sharing the requests in flight evenly [default:
    /// 2, or 1 when --inflight is 1]. The baselines run one thread per
    /// request in flight instead.
    #[arg(long)]
    pub gateways: Option<usize>,
    /// Operations measured, over all client threads (set-up excluded).
    #[arg(long, default_value_t = 2_000_000)]
    pub ops: u64,
    /// Wallets opened and funded before the run (the hot wallet uses one;
    /// in the order-book scenarios each also buys shares of one book to
    /// sell on, and orderbook-multi needs one per book at least).
    #[arg(long, default_value_t = 10_000)]
    pub accounts: u64,
    /// none (no journal, the default: each design's core speed), async (page
    /// cache) or sync (fdatasync); every engine journals each accepted
    /// operation alike, with the same writer and group commit.
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
    /// Open loop: this many ops/s over all client threads, latency counted
    /// from each request's scheduled send time (closed loop without it).
    #[arg(long)]
    pub rate: Option<u64>,
}

/// Requests in flight when neither `--inflight` nor `--sweep-inflight` says.
pub const INFLIGHT_DEFAULT: usize = 64;
/// Most requests in flight: a baseline starts one thread for each.
pub const INFLIGHT_MAX: usize = 1_024;
/// lmax gateways when `--gateways` is not given (fewer if fewer requests
/// are in flight).
pub const GATEWAYS_DEFAULT: usize = 2;
/// Most requests one lmax gateway may keep in flight: the engine's
/// response queue per client holds 4096 answers. A gateway's window is at
/// most `--inflight`, so capping that caps this.
pub const WINDOW_MAX: usize = 4_096;
const _: () = assert!(INFLIGHT_MAX <= WINDOW_MAX);
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
            compare: false,
            inflight: None,
            sweep_inflight: None,
            gateways: None,
            ops: 2_000_000,
            accounts: 10_000,
            durability: Durability::None,
            journal_dir: None,
            wait: WaitStrategy::Block,
            journal_thread: JournalThread::default(),
            pin: false,
            rate: None,
        }
    }
}

impl Config {
    /// Refuses settings that cannot run, saying which flag to change.
    pub fn validate(&self) -> Result<(), BenchError> {
        let fail = |why: String| Err(BenchError(why));
        if let Some(gateways) = self.gateways {
            if gateways == 0 || gateways > GATEWAYS_MAX {
                return fail(format!(
                    "--gateways must be 1 to {GATEWAYS_MAX}, got {gateways}"
                ));
            }
        }
        if self.sweep_inflight.is_some() && self.inflight.is_some() {
            return fail(
                "--sweep-inflight and --inflight cannot be combined: the sweep sets each run's \
                 requests in flight"
                    .into(),
            );
        }
        if self.sweep_inflight.as_ref().is_some_and(|l| l.0.is_empty()) {
            return fail("--sweep-inflight needs at least one in-flight count".into());
        }
        for inflight in self.inflight_points() {
            if inflight == 0 || inflight > INFLIGHT_MAX {
                return fail(format!(
                    "--inflight must be 1 to {INFLIGHT_MAX}, got {inflight}"
                ));
            }
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
        if self.scenario == Scenario::OrderbookMulti
            && self.accounts < u64::from(workload::MULTI_BOOKS)
        {
            return fail(format!(
                "--scenario orderbook-multi needs a seller on each of its {} books: --accounts \
                 must be at least {}",
                workload::MULTI_BOOKS,
                workload::MULTI_BOOKS
            ));
        }
        if self.scenario.is_book() && !self.compare && !self.engine.trades() {
            return fail(format!(
                "--engine {} does not implement the order book: --scenario {} runs on lmax and \
                 mutex (--compare leaves the others out)",
                self.engine, self.scenario
            ));
        }
        if self.accounts > ACCOUNTS_MAX {
            return fail(format!(
                "--accounts {} is more than this benchmark sets up ({ACCOUNTS_MAX} at most)",
                self.accounts
            ));
        }
        if self.rate == Some(0) {
            return fail("--rate must be at least 1 op/s (leave it out for a closed loop)".into());
        }
        for inflight in self.inflight_points() {
            for engine in self.engines() {
                engine.shape(inflight, self.gateways)?;
            }
        }
        Ok(())
    }

    /// The engines this configuration runs: all of them with `--compare`.
    pub fn engines(&self) -> Vec<EngineKind> {
        if self.compare {
            EngineKind::ALL.to_vec()
        } else {
            vec![self.engine]
        }
    }

    /// The in-flight counts this configuration runs, in order.
    pub fn inflight_points(&self) -> Vec<usize> {
        match &self.sweep_inflight {
            Some(InflightList(list)) => list.clone(),
            None => vec![self.inflight.unwrap_or(INFLIGHT_DEFAULT)],
        }
    }

    /// Whether this configuration is more than one run.
    pub fn is_suite(&self) -> bool {
        self.compare || self.sweep_inflight.is_some()
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

/// A finished run: the report, the merged latency histogram (for `--hgrm`
/// and `--plot`) and the hiccup meter's.
pub struct Run {
    pub report: Report,
    pub histogram: Histogram<u64>,
    pub hiccups: Histogram<u64>,
}

/// Runs every engine of `config.engines()` at every in-flight count of
/// `config.inflight_points()` (in-flight counts outer, engines inner), each
/// with otherwise the same settings, and sets each report's `vs_lmax`.
pub fn suite(config: &Config, progress: bool) -> Result<Vec<Run>, BenchError> {
    config.validate()?;
    let mut runs = Vec::new();
    for inflight in config.inflight_points() {
        let first = runs.len();
        for engine in config.engines() {
            if config.scenario.is_book() && !engine.trades() {
                eprintln!(
                    "bench: {engine} left out: it does not implement the order book that \
                     --scenario {} trades on",
                    config.scenario
                );
                continue;
            }
            #[cfg(feature = "external-engines")]
            if let Some(why) = external::beyond_server(engine, inflight) {
                eprintln!("bench: {engine} left out at {inflight} in flight: {why}");
                continue;
            }
            runs.push(run_one(config, engine, inflight, progress)?);
        }
        let point = &mut runs[first..];
        let lmax = point
            .iter()
            .find(|run| run.report.engine == EngineKind::Lmax.as_str())
            .map(|run| run.report.ops_per_sec);
        if let (Some(lmax), true) = (lmax, config.compare) {
            for run in point {
                run.report.vs_lmax = Some(run.report.ops_per_sec / lmax.max(1e-9));
            }
        }
    }
    Ok(runs)
}

/// Draws `runs` with [`plot::write_svg`]: one line per run (named by its
/// engine, and its in-flight count when they differ) and one for the
/// hiccup meter over all of them.
pub fn plot_runs(path: &Path, runs: &[Run]) -> Result<(), String> {
    let first = &runs.first().ok_or("no runs to plot")?.report;
    let one_point = runs.iter().all(|r| r.report.inflight == first.inflight);
    let mut hiccups = Histogram::<u64>::new_with_bounds(1, load::LATENCY_NS_MAX, 3)
        .expect("the bounds are valid");
    let mut series = Vec::new();
    for run in runs {
        let r = &run.report;
        hiccups
            .add(&run.hiccups)
            .map_err(|e| format!("merging hiccups: {e}"))?;
        series.push(plot::Series {
            label: if one_point {
                r.engine.clone()
            } else {
                format!("{} @{} in flight", r.engine, r.inflight)
            },
            histogram: &run.histogram,
            is_hiccup: false,
        });
    }
    series.push(plot::Series {
        label: "hiccup meter (the machine)".into(),
        histogram: &hiccups,
        is_hiccup: true,
    });
    let inflight = if one_point {
        format!(", {} in flight", first.inflight)
    } else {
        String::new()
    };
    let load = match first.rate {
        Some(rate) => format!("open loop {rate} ops/s"),
        None => "closed loop".into(),
    };
    let title = format!(
        "ringledger bench: {}, {} ops{inflight}, durability {}, {load}",
        first.scenario, first.ops, first.durability
    );
    plot::write_svg(path, &title, &series)
}

/// Sets up, runs and checks one benchmark: `config.engine` at
/// `config.inflight` (refuses `--compare` and `--sweep-inflight`: see
/// [`suite`]). With `progress`, a line on stderr shows how far a run longer
/// than two seconds has got.
pub fn run(config: &Config, progress: bool) -> Result<Run, BenchError> {
    config.validate()?;
    if config.is_suite() {
        return Err(BenchError(
            "--compare and --sweep-inflight make several runs: use bench::suite".into(),
        ));
    }
    run_one(
        config,
        config.engine,
        config.inflight.unwrap_or(INFLIGHT_DEFAULT),
        progress,
    )
}

/// One engine at one in-flight count (`config` already validated).
fn run_one(
    config: &Config,
    engine: EngineKind,
    inflight: usize,
    progress: bool,
) -> Result<Run, BenchError> {
    let shape = engine.shape(inflight, config.gateways)?;
    let workload = Workload::new(config.scenario, config.accounts, config.ops);
    let journal = match config.durability {
        // A server keeps its own log (see `crate::external`).
        _ if engine.is_external() => None,
        Durability::None => None,
        _ => Some(JournalDir::create(
            config
                .journal_dir
                .as_deref()
                .unwrap_or(Path::new("journal")),
            engine,
        )?),
    };
    let plan = Plan {
        config,
        engine,
        shape,
        workload,
        progress,
    };
    let measured = measure(&plan, journal.as_ref())?;
    drop(journal);
    let Measured {
        driven,
        digest,
        digest_of,
        mut invariants,
        retries,
        sale,
        rebates_credited,
        rebates_owed,
    } = measured;
    let Driven {
        tally,
        acknowledged_seconds,
        settled_seconds,
        hiccups,
    } = driven;
    let answered = tally.accepted + tally.rejected;
    if invariants.is_ok() && answered != config.ops {
        invariants = Err(format!("{answered} answers for {} operations", config.ops));
    }
    if invariants.is_ok() && rebates_owed != 0 {
        invariants = Err(format!(
            "{rebates_owed} rebates still owed once the run settled"
        ));
    }
    if invariants.is_ok() && rebates_credited != tally.deposits {
        invariants = Err(format!(
            "{rebates_credited} rebates credited for {} accepted deposits",
            tally.deposits
        ));
    }
    if let (Ok(()), Some(view)) = (&invariants, sale) {
        invariants = check_sale(&view, workload.supply, tally.sold);
    }
    let lmax = engine == EngineKind::Lmax;
    let report = Report {
        scenario: config.scenario.to_string(),
        engine: engine.to_string(),
        inflight,
        gateways: shape.threads,
        window: shape.window,
        accounts: workload.accounts,
        ops: answered,
        durability: config.durability.to_string(),
        load: if config.rate.is_some() {
            "open"
        } else {
            "closed"
        }
        .to_string(),
        rate: config.rate,
        wait: lmax.then(|| config.wait.to_string()),
        journal_thread: (lmax && config.durability != Durability::None)
            .then(|| config.journal_thread.to_string()),
        pinned: config.pin && lmax,
        seconds: settled_seconds,
        ops_per_sec: answered as f64 / settled_seconds.max(1e-9),
        acknowledged_seconds,
        acknowledged_ops_per_sec: answered as f64 / acknowledged_seconds.max(1e-9),
        vs_lmax: None,
        latency_ns: Latency::of(&tally.histogram),
        hiccup_ns: Latency::of(&hiccups),
        accepted: tally.accepted,
        rejected: tally.rejected,
        rebates_credited,
        rebates_owed,
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
        hiccups,
    })
}

/// Sets up `plan.engine`, drives it with [`drive`] and reads its final
/// state: the one place that knows how each engine runs. An engine added
/// in a child module (say `bench::external`, behind a cargo feature) gets
/// an arm here; [`Plan`], [`drive`] and [`Measured`] are visible to it.
fn measure(plan: &Plan<'_>, journal: Option<&JournalDir>) -> Result<Measured, BenchError> {
    match plan.engine {
        EngineKind::Lmax => run_lmax(plan, journal),
        EngineKind::Mutex | EngineKind::Optimistic => run_bank(plan, journal),
        #[cfg(feature = "external-engines")]
        EngineKind::Postgres | EngineKind::PostgresOptimistic | EngineKind::Redis => {
            external::run(plan)
        }
        // The parser refuses them in such a build; a library caller gets this.
        #[cfg(not(feature = "external-engines"))]
        EngineKind::Postgres | EngineKind::PostgresOptimistic | EngineKind::Redis => {
            Err(BenchError(format!(
                "engine {} needs a build with --features external-engines",
                plan.engine
            )))
        }
    }
}

/// What one run does: which engine, how its threads hold the requests in
/// flight, and the workload.
struct Plan<'a> {
    config: &'a Config,
    engine: EngineKind,
    shape: Shape,
    workload: Workload,
    progress: bool,
}

impl Plan<'_> {
    fn pace(&self) -> Pace {
        match self.config.rate {
            None => Pace::Closed,
            Some(rate) => Pace::Open {
                interval_ns: self.shape.threads as f64 * 1e9 / rate as f64,
            },
        }
    }
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
    driven: Driven,
    digest: Option<u64>,
    digest_of: &'static str,
    invariants: Result<(), String>,
    retries: Option<u64>,
    /// The share-sale instrument at the end.
    sale: Option<InstrumentView>,
    /// Rebates of the measured run's deposits credited by the end.
    rebates_credited: u64,
    /// Rebates still owed at the end (any at all breaks the run).
    rebates_owed: u64,
}

/// Set-up requests the lmax admin client keeps in flight.
const SETUP_WINDOW: usize = 1_024;

fn run_lmax(plan: &Plan<'_>, journal: Option<&JournalDir>) -> Result<Measured, BenchError> {
    let (config, workload) = (plan.config, &plan.workload);
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
    for request in workload.book_setup() {
        setup(&mut admin, request)?;
    }
    while admin.in_flight() > 0 {
        admin
            .recv()?
            .map_err(|e| BenchError(format!("set-up was refused: {e}")))?;
    }
    let mut flows = flows(plan);
    prefill_lmax(&mut admin, &mut flows)?;
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
    let clients = (0..plan.shape.threads)
        .map(|_| engine.client())
        .collect::<Result<Vec<_>, _>>()?;
    let window = plan.shape.window;
    let driven = drive(
        plan,
        instrument,
        clients.into_iter().zip(flows).collect(),
        |gateway, (client, flow)| Ok(gateway.run_lmax(client, window, flow)?),
        // Every deposit answered has dispatched its rebate: wait for them all.
        || Ok(admin.barrier()?),
    )?;
    drop(admin);
    let ledger = engine
        .shutdown()
        .map_err(|e| BenchError(format!("stopping the engine: {e}")))?;
    let rebates_owed = ledger.pending_rebates_len() as u64;
    Ok(Measured {
        // Each accepted deposit owes exactly one rebate; what is not owed
        // any more was credited.
        rebates_credited: driven.tally.deposits.saturating_sub(rebates_owed),
        rebates_owed,
        driven,
        digest: Some(ledger.digest()),
        digest_of: "ledger",
        invariants: ledger.check_invariants(),
        retries: None,
        sale: (workload.scenario == Scenario::ShareSale)
            .then(|| ledger.instruments().find(|v| v.id == instrument))
            .flatten(),
    })
}

fn run_bank(plan: &Plan<'_>, journal: Option<&JournalDir>) -> Result<Measured, BenchError> {
    let (config, workload) = (plan.config, &plan.workload);
    let journal = match journal {
        None => None,
        Some(dir) => Some(
            BaselineJournal::create(&dir.path, config.durability)
                .map_err(|e| BenchError(format!("creating the baseline journal: {e}")))?,
        ),
    };
    let bank_config = BankConfig {
        rebates: Some(RateRebate::default()),
        ..BankConfig::with_accounts(workload.accounts as usize)
    };
    let bank: Box<dyn Bank> = match plan.engine {
        EngineKind::Optimistic => Box::new(OptimisticBank::new(bank_config, journal)),
        _ => Box::new(MutexBank::new(bank_config, journal)),
    };
    bank.open_funded(0..workload.accounts, workload::OPENING_BALANCE)
        .map_err(|e| BenchError(format!("set-up was refused: {e}")))?;
    for request in workload.book_setup() {
        setup_bank(&*bank, request)?;
    }
    let mut flows = flows(plan);
    for flow in &mut flows {
        for op in flow.prefill() {
            let resting = load::call_bank(&*bank, InstrumentId(0), op)
                .map_err(|e| BenchError(format!("set-up was refused: {e}")))?;
            flow.answered(&op, resting > 0);
        }
    }
    let instrument = if workload.scenario == Scenario::ShareSale {
        bank.list_instrument(sale_symbol(), workload.supply, workload::SALE_PRICE)
            .map_err(|e| BenchError(format!("listing the instrument: {e}")))?
    } else {
        InstrumentId(0)
    };
    // The opening deposits' rebates are set-up too.
    bank.settle_rebates();
    let retries_before = bank.retries();
    let credited_before = bank.rebates().credited;
    let driven = drive(
        plan,
        instrument,
        flows,
        |gateway, flow| Ok(gateway.run_bank(&*bank, flow)),
        || {
            bank.settle_rebates();
            Ok(())
        },
    )?;
    let sale = (workload.scenario == Scenario::ShareSale)
        .then(|| bank.instrument(instrument).ok())
        .flatten();
    let rebates = bank.rebates();
    Ok(Measured {
        driven,
        digest: Some(bank_digest(&*bank, workload.accounts, sale.as_ref())),
        digest_of: "balances",
        invariants: bank.check_invariants(),
        retries: (plan.engine == EngineKind::Optimistic).then(|| bank.retries() - retries_before),
        sale,
        rebates_credited: rebates.credited - credited_before,
        rebates_owed: rebates.owed(),
    })
}

/// Each client thread's flow of operations (an order-book flow still to be
/// pre-filled).
fn flows(plan: &Plan<'_>) -> Vec<Flow> {
    let threads = plan.shape.threads;
    (0..threads)
        .map(|gateway| Flow::new(&plan.workload, gateway, threads))
        .collect()
}

/// Brings the books to their resting targets through the admin client
/// (set-up, not measured), telling each flow what became of its orders.
fn prefill_lmax(admin: &mut Client, flows: &mut [Flow]) -> Result<(), BenchError> {
    let mut in_flight: std::collections::VecDeque<(usize, Op)> = Default::default();
    let receive = |admin: &mut Client,
                   flows: &mut [Flow],
                   in_flight: &mut std::collections::VecDeque<(usize, Op)>|
     -> Result<(), BenchError> {
        let (gateway, op) = in_flight.pop_front().expect("an answer follows a request");
        let outcome = admin.recv()?;
        if let Err(e) = &outcome {
            return Err(BenchError(format!("set-up was refused: {e}")));
        }
        flows[gateway].answered(&op, op.rests_after(&outcome));
        Ok(())
    };
    for gateway in 0..flows.len() {
        for op in flows[gateway].prefill() {
            admin.send(op.request(InstrumentId(0)))?;
            in_flight.push_back((gateway, op));
            if in_flight.len() >= SETUP_WINDOW {
                receive(admin, flows, &mut in_flight)?;
            }
        }
    }
    while !in_flight.is_empty() {
        receive(admin, flows, &mut in_flight)?;
    }
    Ok(())
}

/// One order-book set-up request (see [`Workload::book_setup`]) on a bank.
fn setup_bank(bank: &dyn Bank, request: Request) -> Result<(), BenchError> {
    let done = match request {
        Request::ListInstrument {
            symbol,
            supply,
            price,
        } => bank.list_instrument(symbol, supply, price).map(drop),
        Request::Reserve {
            reservation,
            account,
            instrument,
            qty,
            partial,
            ..
        } => bank
            .reserve(reservation, account, instrument, qty, partial)
            .map(drop),
        Request::Confirm { reservation } => bank.confirm(reservation),
        other => {
            return Err(BenchError(format!(
                "not an order-book set-up step: {other:?}"
            )))
        }
    };
    done.map_err(|e| BenchError(format!("set-up was refused: {e}")))
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

/// What [`drive`] measured.
struct Driven {
    tally: Tally,
    /// From the release to the last answer.
    acknowledged_seconds: f64,
    /// From the release to the end of `settle` (everything applied).
    settled_seconds: f64,
    hiccups: Histogram<u64>,
}

/// Starts one thread per client state, releases them together, waits for
/// every answer, then runs `settle` (which returns once everything the
/// operations caused has been applied), with the hiccup meter running
/// throughout.
fn drive<S: Send>(
    plan: &Plan<'_>,
    instrument: InstrumentId,
    states: Vec<S>,
    each: impl Fn(&load::Gateway<'_>, &mut S) -> Result<Tally, BenchError> + Sync,
    settle: impl FnOnce() -> Result<(), BenchError>,
) -> Result<Driven, BenchError> {
    let config = plan.config;
    let done = AtomicU64::new(0);
    let start = OnceLock::new();
    let barrier = Barrier::new(states.len() + 1);
    let threads = states.len();
    let pace = plan.pace();
    // An open-loop client spins near its send times only with a core to
    // itself: the clients and the business thread fit on the cores.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spin = matches!(pace, load::Pace::Open { .. }) && threads < cores;
    // Each client says when it is done, so the main thread settles at once.
    let (finished_tx, finished) = std::sync::mpsc::channel::<()>();
    let meter = HiccupMeter::start();
    let results = std::thread::scope(|scope| {
        let (done, start, barrier, each) = (&done, &start, &barrier, &each);
        let handles: Vec<_> = states
            .into_iter()
            .enumerate()
            .map(|(index, mut state)| {
                let finished_tx = finished_tx.clone();
                std::thread::Builder::new()
                    .name(format!("bench-client-{index}"))
                    // A baseline may start a thousand of these: small stacks.
                    .stack_size(CLIENT_STACK_BYTES)
                    .spawn_scoped(scope, move || {
                        barrier.wait();
                        let gateway = load::Gateway {
                            index,
                            count: workload::share(config.ops, threads, index),
                            pace,
                            base: *start.get().expect("set before the release"),
                            progress: done,
                            instrument,
                            spin,
                        };
                        let tally = each(&gateway, &mut state);
                        let elapsed = gateway.base.elapsed();
                        let _ = finished_tx.send(());
                        (tally, elapsed)
                    })
                    .expect("starting a bench client thread")
            })
            .collect();
        drop(finished_tx);
        let released = Instant::now();
        start.set(released).expect("set once");
        barrier.wait();
        let mut shown = false;
        let mut running = handles.len();
        while running > 0 {
            match finished.recv_timeout(PROGRESS_EVERY) {
                Ok(()) => running -= 1,
                // A client that panicked never says so; its join reports it.
                Err(_) if handles.iter().all(|h| h.is_finished()) => break,
                Err(_) => {}
            }
            if plan.progress && released.elapsed() >= PROGRESS_AFTER {
                let done = done.load(Ordering::Relaxed);
                eprint!(
                    "\r  bench {}: {done}/{} ops ({:.0}%)   ",
                    plan.engine,
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
            .map(|h| h.join().expect("a bench client thread panicked"))
            .collect::<Vec<_>>()
    });
    let released = *start.get().expect("set at the release");
    let settled = settle();
    let settled_seconds = released.elapsed().as_secs_f64();
    let hiccups = meter.stop();
    settled?;
    let mut tally = Tally::default();
    let mut acknowledged = Duration::ZERO;
    for (result, finished) in results {
        tally.merge(&result?);
        acknowledged = acknowledged.max(finished);
    }
    Ok(Driven {
        tally,
        acknowledged_seconds: acknowledged.as_secs_f64(),
        settled_seconds,
        hiccups,
    })
}

/// Stack of one client thread: its loop keeps a histogram on the heap and
/// little on the stack.
const CLIENT_STACK_BYTES: usize = 256 << 10;

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

    /// The engines that need no server (the external ones have their own
    /// tests, in tests/external_engines.rs).
    const IN_PROCESS: &[EngineKind] =
        &[EngineKind::Lmax, EngineKind::Mutex, EngineKind::Optimistic];

    /// 6 in flight: lmax as 3 gateways × 2, a baseline as 6 threads.
    fn tiny(scenario: Scenario, engine: EngineKind) -> Config {
        Config {
            scenario,
            engine,
            ops: 3_001,
            accounts: 50,
            gateways: Some(3),
            inflight: Some(6),
            ..Config::default()
        }
    }

    #[test]
    fn every_scenario_on_every_engine_keeps_its_invariants() {
        for scenario in Scenario::ALL {
            for &engine in IN_PROCESS {
                if scenario.is_book() && !engine.trades() {
                    continue;
                }
                let config = Config {
                    // A seller per book, and (for debug builds' per-request
                    // checks) more accounts than a full check is made for.
                    accounts: if scenario == Scenario::OrderbookMulti {
                        5_000
                    } else {
                        50
                    },
                    ..tiny(scenario, engine)
                };
                let run = run(&config, false).unwrap();
                let r = &run.report;
                assert!(r.invariants_ok, "{scenario} on {engine}: {r:?}");
                assert_eq!(r.ops, 3_001);
                assert_eq!(run.histogram.len(), 3_001);
                assert_eq!(r.retries.is_some(), engine == EngineKind::Optimistic);
                assert_eq!(r.rebates_owed, 0, "{scenario} on {engine}");
            }
        }
    }

    #[test]
    fn every_engine_keeps_the_same_requests_in_flight() {
        for &engine in IN_PROCESS {
            let r = run(&tiny(Scenario::Deposit, engine), false).unwrap().report;
            assert_eq!(r.inflight, 6, "{engine}");
            assert_eq!(r.gateways * r.window, 6, "{engine}");
            let expected = match engine {
                EngineKind::Lmax => (3, 2),
                _ => (6, 1),
            };
            assert_eq!((r.gateways, r.window), expected, "{engine}");
        }
    }

    #[test]
    fn one_request_in_flight_needs_one_lmax_gateway_by_default() {
        let shape = EngineKind::Lmax.shape(1, None).unwrap();
        assert_eq!((shape.threads, shape.window), (1, 1));
        let shape = EngineKind::Lmax.shape(64, None).unwrap();
        assert_eq!((shape.threads, shape.window), (GATEWAYS_DEFAULT, 32));
        let shape = EngineKind::Mutex.shape(64, Some(4)).unwrap();
        assert_eq!((shape.threads, shape.window), (64, 1));
    }

    #[test]
    fn in_flight_counts_that_do_not_split_over_the_gateways_are_refused() {
        for (inflight, gateways) in [(7, 2), (2, 4)] {
            let err = EngineKind::Lmax
                .shape(inflight, Some(gateways))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(&format!("--inflight {inflight}")), "{err}");
            assert!(err.contains("--gateways"), "{err}");
        }
    }

    #[test]
    fn the_clock_stops_once_every_rebate_is_credited() {
        for &engine in IN_PROCESS {
            let r = run(&tiny(Scenario::Deposit, engine), false).unwrap().report;
            assert!(r.invariants_ok, "{engine}: {r:?}");
            // Every deposit is accepted and earns one rebate.
            assert_eq!(r.accepted, 3_001, "{engine}");
            assert_eq!(r.rebates_credited, 3_001, "{engine}");
            assert_eq!(r.rebates_owed, 0, "{engine}");
            assert!(r.seconds >= r.acknowledged_seconds, "{engine}: {r:?}");
            assert!(
                r.ops_per_sec <= r.acknowledged_ops_per_sec,
                "{engine}: {r:?}"
            );
        }
    }

    #[test]
    fn the_settled_clock_reads_after_settling_and_the_acknowledged_one_before() {
        let config = tiny(Scenario::Deposit, EngineKind::Mutex);
        let plan = Plan {
            config: &config,
            engine: EngineKind::Mutex,
            shape: Shape {
                threads: 2,
                window: 1,
            },
            workload: Workload::new(config.scenario, config.accounts, config.ops),
            progress: false,
        };
        let base = OnceLock::new();
        let settled_at = OnceLock::new();
        let driven = drive(
            &plan,
            InstrumentId(0),
            vec![(); 2],
            |gateway, ()| {
                let _ = base.set(gateway.base);
                Ok(Tally::default())
            },
            || {
                std::thread::sleep(Duration::from_millis(2));
                let base: &Instant = base.get().expect("a client ran");
                settled_at.set(base.elapsed()).unwrap();
                Ok(())
            },
        )
        .unwrap();
        let settled_at = settled_at.get().unwrap().as_secs_f64();
        assert!(
            driven.settled_seconds >= settled_at,
            "{} < {settled_at}",
            driven.settled_seconds
        );
        assert!(driven.acknowledged_seconds < settled_at);
    }

    #[test]
    fn the_hiccup_meter_runs_through_every_run() {
        let run = run(&tiny(Scenario::Deposit, EngineKind::Mutex), false).unwrap();
        assert!(!run.hiccups.is_empty());
        assert_eq!(run.report.hiccup_ns.max, run.hiccups.max());
    }

    #[test]
    fn compare_runs_every_engine_and_sets_its_ratio_to_lmax() {
        let config = Config {
            compare: true,
            ..tiny(Scenario::HotWallet, EngineKind::Lmax)
        };
        let runs = suite(&config, false).unwrap();
        let engines: Vec<&str> = runs.iter().map(|r| r.report.engine.as_str()).collect();
        let all: Vec<&str> = EngineKind::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(engines, all);
        assert_eq!(engines[..3], ["lmax", "mutex", "optimistic"]);
        let lmax = runs[0].report.ops_per_sec;
        assert_eq!(runs[0].report.vs_lmax, Some(1.0));
        for run in &runs {
            let r = &run.report;
            assert!(r.invariants_ok, "{r:?}");
            assert_eq!(r.vs_lmax, Some(r.ops_per_sec / lmax));
        }
    }

    #[test]
    fn a_sweep_runs_each_in_flight_count_in_order() {
        let config = Config {
            inflight: None,
            gateways: None,
            sweep_inflight: Some("1,4,8".parse().unwrap()),
            ops: 1_000,
            ..tiny(Scenario::Mixed, EngineKind::Optimistic)
        };
        let runs = suite(&config, false).unwrap();
        let points: Vec<(usize, usize)> = runs
            .iter()
            .map(|r| (r.report.inflight, r.report.gateways))
            .collect();
        assert_eq!(points, [(1, 1), (4, 4), (8, 8)]);
        assert!(runs.iter().all(|r| r.report.vs_lmax.is_none()));
    }

    #[test]
    fn the_order_book_scenarios_need_an_engine_with_books() {
        for scenario in [Scenario::Orderbook, Scenario::OrderbookMulti] {
            let config = Config {
                accounts: 5_000,
                ..tiny(scenario, EngineKind::Optimistic)
            };
            let Err(err) = run(&config, false) else {
                panic!("{scenario} ran on optimistic")
            };
            assert!(err.0.contains("does not implement the order book"), "{err}");
        }
    }

    #[test]
    fn compare_leaves_out_the_engines_without_books() {
        let config = Config {
            compare: true,
            ops: 1_000,
            ..tiny(Scenario::Orderbook, EngineKind::Lmax)
        };
        let runs = suite(&config, false).unwrap();
        let engines: Vec<&str> = runs.iter().map(|r| r.report.engine.as_str()).collect();
        assert_eq!(engines, ["lmax", "mutex"]);
        assert!(runs.iter().all(|r| r.report.invariants_ok));
        assert!(runs[1].report.vs_lmax.is_some());
    }

    #[test]
    fn run_refuses_a_suite() {
        let config = Config {
            compare: true,
            ..tiny(Scenario::Deposit, EngineKind::Lmax)
        };
        assert!(run(&config, false).is_err());
    }

    #[test]
    fn in_flight_lists_parse_and_bad_ones_say_why() {
        assert_eq!(
            "1,8,64,512".parse::<InflightList>().unwrap(),
            InflightList(vec![1, 8, 64, 512])
        );
        for (text, why) in [
            ("", "empty list"),
            ("1,,8", "not a whole number"),
            ("0", "must be 1 to"),
            ("1,x", "not a whole number"),
            ("8,8", "listed twice"),
            ("5000", "must be 1 to"),
        ] {
            let err = text.parse::<InflightList>().unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn journaled_runs_leave_no_journal_behind() {
        let dir = tempfile::tempdir().unwrap();
        for durability in [Durability::Async, Durability::Sync] {
            for &engine in IN_PROCESS {
                let config = Config {
                    durability,
                    journal_dir: Some(dir.path().to_path_buf()),
                    ..tiny(Scenario::Mixed, engine)
                };
                let r = run(&config, false).unwrap().report;
                assert!(r.invariants_ok, "{engine} {durability}: {r:?}");
            }
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn open_loop_runs_every_request() {
        for &engine in IN_PROCESS {
            let config = Config {
                rate: Some(20_000),
                ops: 1_000,
                ..tiny(Scenario::Deposit, engine)
            };
            let r = run(&config, false).unwrap().report;
            assert_eq!((r.ops, r.load.as_str()), (1_000, "open"));
            assert!(r.invariants_ok);
        }
    }

    #[test]
    fn impossible_settings_are_refused_with_the_flag_to_change() {
        let bad = [
            Config {
                gateways: Some(0),
                ..Config::default()
            },
            Config {
                ops: 0,
                ..Config::default()
            },
            Config {
                inflight: Some(0),
                ..Config::default()
            },
            Config {
                inflight: Some(INFLIGHT_MAX + 1),
                ..Config::default()
            },
            Config {
                inflight: Some(5),
                gateways: Some(2),
                ..Config::default()
            },
            Config {
                inflight: Some(8),
                sweep_inflight: Some(InflightList(vec![1, 8])),
                ..Config::default()
            },
            Config {
                sweep_inflight: Some(InflightList(vec![])),
                ..Config::default()
            },
            Config {
                sweep_inflight: Some(InflightList(vec![0])),
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
            Config {
                scenario: Scenario::OrderbookMulti,
                accounts: 999,
                ..Config::default()
            },
            Config {
                scenario: Scenario::Orderbook,
                engine: EngineKind::Optimistic,
                ..Config::default()
            },
        ];
        for config in bad {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.starts_with("--"), "{err}");
        }
    }
}

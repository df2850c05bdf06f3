//! The `ringledger` command: argument parsing and printing only; the
//! behaviour lives in the library.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ringledger::bench;
use ringledger::engine::{Clock, ManualClock, WallClock};
use ringledger::journal::{self, Durability};
use ringledger::metrics::{Metrics, Role};
use ringledger::ring::WaitStrategy;
use ringledger::{Engine, EngineError, JournalThread, LedgerConfig, RateRebate, Scale};
use rust_decimal::Decimal;

/// Large allocations on transparent huge pages: the business thread's
/// random accesses to a million accounts miss the TLB far less.
#[global_allocator]
static ALLOCATOR: ringledger::HugePages = ringledger::HugePages;

#[derive(Parser)]
#[command(
    name = "ringledger",
    version,
    about = "An LMAX-style engine for wallets and share trading"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClockArg {
    Wall,
    Manual,
}

/// How the journal is cut into files, snapshotted and pruned.
#[derive(clap::Args)]
struct RetentionArgs {
    /// Take a snapshot after every N journaled requests (0: only at
    /// shutdown); each is followed by pruning.
    #[arg(long, default_value_t = 1_000_000)]
    snapshot_every: u64,
    /// Snapshots kept after each new one, the new one included; older
    /// snapshots and the segments the oldest kept one covers are deleted
    /// (0: keep everything).
    #[arg(long, default_value_t = ringledger::engine::SNAPSHOTS_KEPT_DEFAULT)]
    snapshots_kept: usize,
    /// Bytes preallocated per journal segment file.
    #[arg(long, default_value_t = journal::SEGMENT_BYTES_DEFAULT)]
    segment_bytes: u64,
}

/// `--durability`: a journal mode, or replicated (a journal plus the stream).
#[derive(Clone, Copy)]
enum DurabilityArg {
    Journal(Durability),
    Replicated,
}

impl FromStr for DurabilityArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "replicated" => Ok(DurabilityArg::Replicated),
            other => Durability::from_str(other)
                .map(DurabilityArg::Journal)
                .map_err(|e| format!("{e}, replicated")),
        }
    }
}

/// Where `--durability replicated` publishes the journal (and, for
/// `serve`, where requests come in).
#[cfg(feature = "nats")]
#[derive(clap::Args)]
struct ReplicationArgs {
    /// NATS server URLs, comma-separated (with --durability replicated).
    #[arg(long)]
    nats: Option<String>,
    /// The JetStream stream for this engine's journal (created if missing).
    #[arg(long)]
    stream: Option<String>,
    /// Copies the stream keeps when this engine creates it (3 for the
    /// guarantee; 1 against a single server).
    #[arg(long, default_value_t = ringledger::replication::REPLICAS_DEFAULT)]
    replicas: usize,
    /// Catch up to the end of the stream, then lead: the old leader is
    /// fenced and answers not_leader from its next write on.
    #[arg(long)]
    takeover: bool,
    /// Stand by, following the stream, and take over by itself once the
    /// leader lease (JetStream key-value store) expires; the first process
    /// to start leads at once. A leader that cannot renew its lease in time
    /// stops acknowledging and exits with not_leader.
    #[arg(long, conflicts_with = "takeover")]
    auto_takeover: bool,
    /// Time to live of the leader lease (with --auto-takeover), in ms: how
    /// long a dead leader holds up failover.
    #[arg(long, default_value_t = ringledger::replication::lease::LEASE_TTL_DEFAULT.as_millis() as u64)]
    lease_ttl_ms: u64,
}

#[derive(Subcommand)]
enum Command {
    /// Measure settled ops/s and latency percentiles of a scenario on the
    /// engine or a lock-based baseline, under equal rules (same requests in
    /// flight, same journal, same rebates); --compare runs every engine.
    Bench {
        #[command(flatten)]
        config: bench::Config,
        /// Print one JSON object instead of the table ({"runs": [...]} for
        /// --compare or --sweep-inflight).
        #[arg(long)]
        json: bool,
        /// Also write the latency percentile distribution (.hgrm text, µs) to
        /// this file (one run only: use --plot for several).
        #[arg(long, conflicts_with_all = ["compare", "sweep_inflight"])]
        hgrm: Option<PathBuf>,
        /// Also draw latency by percentile (log 1/(1-p) axis) as SVG: one
        /// line per run, plus the hiccup meter's.
        #[arg(long, value_name = "FILE.svg")]
        plot: Option<PathBuf>,
    },
    /// Serve JSON-lines requests from stdin, one answer per line on stdout.
    Run {
        /// Where inputs are journaled; an existing journal there is recovered first.
        #[arg(long, default_value = "journal")]
        journal_dir: PathBuf,
        /// none (no journal), async (survives a process crash), sync
        /// (survives power loss) or replicated (async, and each outcome waits
        /// for the NATS JetStream stream's ack: with --replicas 3 it survives
        /// losing the machine; needs the `nats` feature, --nats and --stream).
        #[arg(long, default_value = "async")]
        durability: DurabilityArg,
        /// Where time comes from: the wall clock, or `tick` lines.
        #[arg(long, value_enum, default_value = "wall")]
        clock: ClockArg,
        /// Decimal places of money.
        #[arg(long, default_value_t = 2)]
        scale: u32,
        /// History entries kept per account for `history` (older ones stay
        /// in the journal; a `history` answer cut by this says `truncated`).
        #[arg(long, default_value_t = LedgerConfig::default().history_per_account_max)]
        history: u32,
        /// Rebate credited on every deposit, as a fraction (0.01 = 1%).
        #[arg(long, default_value = "0.01")]
        rebate_rate: String,
        /// How idle threads wait: spin, yield or block.
        #[arg(long, default_value = "block")]
        wait: WaitStrategy,
        /// Which thread writes the journal: business (inline, the default)
        /// or flusher (its own thread, while the business thread goes on).
        #[arg(long, default_value = "business")]
        journal_thread: JournalThread,
        /// The session that numbers `req`: the same name across restarts
        /// resumes its numbering, so a retried `req` is never applied twice.
        #[arg(long, default_value = "default")]
        session: String,
        #[command(flatten)]
        retention: RetentionArgs,
        #[cfg(feature = "nats")]
        #[command(flatten)]
        replication: ReplicationArgs,
        /// Serve Prometheus metrics on GET /metrics at this address
        /// (host:port; port 0 picks a free one, printed on stderr).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// Answer the `run` JSON contract over NATS request-reply: one request
    /// object per message on ringledger.<stream>.requests, one answer per
    /// reply; a request may carry "session" beside "req". Only a leader
    /// subscribes; a fenced one unsubscribes and exits non-zero. Stops
    /// cleanly (answering what it took in) on SIGINT or SIGTERM.
    #[cfg(feature = "nats")]
    Serve {
        /// Where inputs are journaled; an existing journal there is recovered first.
        #[arg(long, default_value = "journal")]
        journal_dir: PathBuf,
        /// replicated (the default: each outcome waits for the stream's ack),
        /// or none, async or sync (NATS intake only: nothing is published).
        #[arg(long, default_value = "replicated")]
        durability: DurabilityArg,
        /// Decimal places of money.
        #[arg(long, default_value_t = 2)]
        scale: u32,
        /// History entries kept per account for `history`.
        #[arg(long, default_value_t = LedgerConfig::default().history_per_account_max)]
        history: u32,
        /// Rebate credited on every deposit, as a fraction (0.01 = 1%).
        #[arg(long, default_value = "0.01")]
        rebate_rate: String,
        /// How idle threads wait: spin, yield or block.
        #[arg(long, default_value = "block")]
        wait: WaitStrategy,
        /// Gateway threads parsing requests and answering them.
        #[arg(long, default_value_t = ringledger::cli::serve::GATEWAYS_DEFAULT)]
        gateways: usize,
        #[command(flatten)]
        retention: RetentionArgs,
        #[command(flatten)]
        replication: ReplicationArgs,
        /// Serve Prometheus metrics on GET /metrics at this address
        /// (host:port; port 0 picks a free one, printed on stderr).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
    /// Rebuild the state from a journal and report how fast and to what digest.
    Replay {
        #[arg(long)]
        journal_dir: PathBuf,
        /// Start from the newest valid snapshot instead of the whole journal.
        #[arg(long)]
        from_snapshot: bool,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Audit a journal without changing it: every frame and the hash chain
    /// across segments, each snapshot against a replay to its seq; prints
    /// the records, segments, snapshots and the chain's head hash. Exits
    /// non-zero naming the file, byte offset and reason of any problem.
    Verify {
        #[arg(long)]
        journal_dir: PathBuf,
        /// One JSON object instead of text (also for a problem, on stdout).
        #[arg(long)]
        json: bool,
    },
    /// Print journal records as JSON lines, each with the outcome it had.
    Inspect {
        #[arg(long)]
        journal_dir: PathBuf,
        /// First sequence number to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Most records to print.
        #[arg(long, default_value_t = u64::MAX)]
        limit: u64,
        /// Decimal places of money; read from the journal's meta file, so
        /// only needed if that file is lost (and then it must be right).
        #[arg(long)]
        scale: Option<u32>,
    },
    /// Apply a leader's replicated journal from a NATS JetStream stream to
    /// a Ledger of our own, with our own journal and snapshots; report the
    /// lag on stderr. Stops cleanly on SIGINT or SIGTERM.
    #[cfg(feature = "nats")]
    Follow {
        /// NATS server URLs, comma-separated.
        #[arg(long)]
        nats: String,
        /// The leader's stream.
        #[arg(long)]
        stream: String,
        /// This follower's own journal (an empty one starts from the newest
        /// snapshot in the stream's object store bucket, else from the
        /// stream's first frame).
        #[arg(long)]
        journal_dir: PathBuf,
        #[command(flatten)]
        retention: RetentionArgs,
        /// Also store each snapshot taken in the object store bucket named
        /// like the stream, for new followers to start from.
        #[arg(long)]
        store_snapshots: bool,
        /// Serve Prometheus metrics on GET /metrics at this address
        /// (host:port; port 0 picks a free one, printed on stderr).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Bench {
            config,
            json,
            hgrm,
            plot,
        } => run_bench(&config, json, hgrm.as_deref(), plot.as_deref()),
        Command::Run {
            journal_dir,
            durability,
            clock,
            scale,
            history,
            rebate_rate,
            wait,
            journal_thread,
            session,
            retention,
            #[cfg(feature = "nats")]
            replication,
            metrics,
        } => {
            let builder = match durability_builder(
                &journal_dir,
                durability,
                #[cfg(feature = "nats")]
                replication,
            ) {
                Ok(builder) => builder,
                Err(e) => return fail(e),
            };
            run(
                builder,
                clock,
                (scale, history),
                &rebate_rate,
                (wait, journal_thread, retention),
                &session,
                metrics.as_deref(),
            )
        }
        #[cfg(feature = "nats")]
        Command::Serve {
            journal_dir,
            durability,
            scale,
            history,
            rebate_rate,
            wait,
            gateways,
            retention,
            replication,
            metrics,
        } => serve(
            &journal_dir,
            durability,
            replication,
            (scale, history),
            &rebate_rate,
            (wait, retention),
            gateways,
            metrics.as_deref(),
        ),
        Command::Replay {
            journal_dir,
            from_snapshot,
            json,
        } => replay(&journal_dir, from_snapshot, json),
        #[cfg(feature = "nats")]
        Command::Follow {
            nats,
            stream,
            journal_dir,
            retention,
            store_snapshots,
            metrics,
        } => follow(
            &nats,
            &stream,
            &journal_dir,
            (&retention, store_snapshots),
            metrics.as_deref(),
        ),
        Command::Verify { journal_dir, json } => verify(&journal_dir, json),
        Command::Inspect {
            journal_dir,
            from,
            limit,
            scale,
        } => match inspect_meta(&journal_dir, scale) {
            Err(e) => fail(e),
            Ok((scale, config)) => {
                let out = io::stdout().lock();
                match ringledger::cli::inspect::inspect(
                    &journal_dir,
                    from,
                    limit,
                    scale,
                    config,
                    out,
                ) {
                    Ok(inspected) => {
                        eprintln!("ringledger inspect: {inspected}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                }
            }
        },
    }
}

/// The scale `inspect` prints amounts at and the Ledger limits it replays
/// under: the journal's own (its meta file), or `--scale` (with the default
/// limits, said on stderr) when that file is lost. A `--scale` that
/// disagrees with the meta file is refused rather than used to misprint
/// every amount.
fn inspect_meta(dir: &Path, asked: Option<u32>) -> Result<(Scale, LedgerConfig), String> {
    if !dir.is_dir() {
        return Err(format!(
            "{}: the journal directory does not exist",
            dir.display()
        ));
    }
    let (scale, config) = match (journal::read_meta(dir), asked) {
        (Ok(meta), Some(asked)) if meta.scale != asked => {
            return Err(format!(
                "{}: the journal was written at scale {}, not the --scale {asked} given",
                dir.join(journal::META_FILE).display(),
                meta.scale
            ))
        }
        (Ok(meta), _) => (meta.scale, meta.ledger),
        (Err(e), Some(asked)) => {
            eprintln!(
                "ringledger inspect: {e}; using --scale {asked} and the default Ledger limits"
            );
            (asked, LedgerConfig::default())
        }
        (Err(e), None) => return Err(format!("{e}; or give --scale N if you know it")),
    };
    Ok((Scale::new(scale)?, config))
}

fn run_bench(
    config: &bench::Config,
    json: bool,
    hgrm: Option<&Path>,
    plot: Option<&Path>,
) -> ExitCode {
    if hgrm.is_some() && config.is_suite() {
        return fail("--hgrm writes one run's distribution: not with --compare or --sweep-inflight (use --plot)");
    }
    if let Some(path) = plot {
        if path.extension().is_none_or(|e| e != "svg") {
            return fail(format!(
                "--plot writes SVG: name the file *.svg, got {}",
                path.display()
            ));
        }
    }
    let runs = match bench::suite(config, io::stderr().is_terminal()) {
        Ok(runs) => runs,
        Err(e) => return fail(e),
    };
    let reports: Vec<bench::Report> = runs.iter().map(|run| run.report.clone()).collect();
    match (json, config.is_suite()) {
        (true, false) => println!("{}", reports[0].to_json()),
        (true, true) => println!("{}", bench::report::suite_json(&reports)),
        (false, false) => print!("{}", reports[0].to_table()),
        (false, true) => print!("{}", bench::report::suite_table(&reports)),
    }
    if let Some(path) = hgrm {
        let written = File::create(path)
            .and_then(|file| bench::write_hgrm(&runs[0].histogram, BufWriter::new(file)));
        if let Err(e) = written {
            return fail(format!("writing --hgrm {}: {e}", path.display()));
        }
    }
    if let Some(path) = plot {
        if let Err(e) = bench::plot_runs(path, &runs) {
            return fail(format!("writing --plot {}: {e}", path.display()));
        }
    }
    let broken: Vec<String> = reports
        .iter()
        .filter_map(|r| {
            r.invariants_error
                .as_ref()
                .map(|why| format!("{} at {} in flight: {why}", r.engine, r.inflight))
        })
        .collect();
    if broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        fail(format!("invariants broken: {}", broken.join("; ")))
    }
}

fn replay(dir: &std::path::Path, from_snapshot: bool, json: bool) -> ExitCode {
    let bar = if io::stderr().is_terminal() {
        replay_bar(dir)
    } else {
        ProgressBar::hidden()
    };
    let started = Instant::now();
    let mut drawn = started;
    // The Ledger limits the journal was written with: the same records
    // under other limits rebuild another state.
    let config = if dir.is_dir() {
        match journal::read_meta(dir) {
            Ok(meta) => meta.ledger,
            Err(e) => return fail(e),
        }
    } else {
        LedgerConfig::default() // replay itself says the directory is missing
    };
    let replayed = journal::replay_with_progress(dir, config, from_snapshot, |progress| {
        // Called per chunk of a few thousand records; redraw 20 times a second.
        let now = Instant::now();
        if bar.is_hidden() || now.duration_since(drawn) < Duration::from_millis(50) {
            return;
        }
        drawn = now;
        let seconds = now.duration_since(started).as_secs_f64();
        bar.set_message(format!(
            "{:.1} M records at {:.1} M/s",
            progress.records as f64 / 1e6,
            progress.records as f64 / seconds / 1e6
        ));
        bar.set_length(progress.bytes_total);
        bar.set_position(progress.bytes_read);
    });
    bar.finish_and_clear();
    let replayed = match replayed {
        Ok(replayed) => replayed,
        Err(e) => return fail(e),
    };
    for warning in &replayed.recovered.warnings {
        eprintln!("ringledger: {warning}");
    }
    let ledger = &replayed.recovered.ledger;
    if json {
        let report = serde_json::json!({
            "records": replayed.recovered.records_replayed,
            "snapshot_seq": replayed.recovered.snapshot_seq,
            "journal_first_seq": replayed.journal_first_seq,
            "last_seq": ledger.last_seq(),
            "seconds": replayed.elapsed.as_secs_f64(),
            "records_per_sec": replayed.records_per_sec(),
            "journal_bytes": replayed.journal_bytes,
            "digest": format!("{:016x}", ledger.digest()),
        });
        println!("{report}");
    } else {
        if let Some(first) = replayed.journal_first_seq.filter(|&first| first > 1) {
            println!(
                "journal pruned   it starts at seq {first}, so replay started from the snapshot"
            );
        }
        println!("records applied  {}", replayed.recovered.records_replayed);
        println!("from snapshot at {}", replayed.recovered.snapshot_seq);
        println!("last seq         {}", ledger.last_seq());
        println!("seconds          {:.3}", replayed.elapsed.as_secs_f64());
        println!("records/s        {:.0}", replayed.records_per_sec());
        println!("digest           {:016x}", ledger.digest());
    }
    ExitCode::SUCCESS
}

fn verify(dir: &Path, json: bool) -> ExitCode {
    // The Ledger limits the journal was written with, as for replay.
    let verified = match dir.is_dir() {
        true => journal::read_meta(dir).and_then(|meta| journal::verify(dir, meta.ledger)),
        false => journal::verify(dir, LedgerConfig::default()),
    };
    match (verified, json) {
        (Ok(v), true) => {
            let report = serde_json::json!({
                "ok": true,
                "records": v.records,
                "segments": v.segments,
                "first_seq": v.first_seq,
                "last_seq": v.head.seq,
                "snapshots": v.snapshots_checked,
                "snapshots_before_journal": v.snapshots_before_journal,
                "head": v.head.to_string(),
                "digest": format!("{:016x}", v.digest),
            });
            println!("{report}");
            ExitCode::SUCCESS
        }
        (Ok(v), false) => {
            println!("records    {}", v.records);
            println!("segments   {}", v.segments);
            println!(
                "snapshots  {} checked against the replay (digest and chain head)",
                v.snapshots_checked
            );
            if v.snapshots_before_journal > 0 {
                println!(
                    "           {} older than the pruned journal, checked on their own",
                    v.snapshots_before_journal
                );
            }
            println!("last seq   {}", v.head.seq);
            println!("head       {}", v.head);
            println!("digest     {:016x}", v.digest);
            println!("ok");
            ExitCode::SUCCESS
        }
        (Err(e), true) => {
            let (file, offset) = match e.location() {
                Some((file, offset)) => (Some(file.display().to_string()), Some(offset)),
                None => (None, None),
            };
            let report = serde_json::json!({
                "ok": false,
                "file": file,
                "offset": offset,
                "reason": e.to_string(),
            });
            println!("{report}");
            ExitCode::FAILURE
        }
        (Err(e), false) => fail(e),
    }
}

/// Journal bytes read out of the total, records applied and their rate, on
/// one line as wide as the terminal.
fn replay_bar(dir: &Path) -> ProgressBar {
    eprintln!("ringledger: replaying {} ...", dir.display());
    let style = ProgressStyle::with_template(
        "{elapsed_precise} [{wide_bar}] {binary_bytes}/{binary_total_bytes}, {msg}",
    )
    .expect("a valid progress template")
    .progress_chars("=> ");
    ProgressBar::new(0).with_style(style)
}

/// Set by SIGINT or SIGTERM: `follow` stops at the next frame or tick,
/// `serve` once it answered what it took in.
#[cfg(feature = "nats")]
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[cfg(feature = "nats")]
extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(feature = "nats")]
fn follow(
    nats: &str,
    stream: &str,
    journal_dir: &Path,
    (retention, store_snapshots): (&RetentionArgs, bool),
    metrics_addr: Option<&str>,
) -> ExitCode {
    use ringledger::replication::{Follower, ReplicationConfig};
    use std::sync::atomic::Ordering;

    let metrics = match metrics_addr.map(|addr| start_metrics(addr, Role::Follower, None)) {
        None => None,
        Some(Ok(metrics)) => Some(metrics),
        Some(Err(e)) => return fail(e),
    };

    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; it is a plain `extern "C" fn` that lives for
        // the whole process.
        unsafe {
            libc::signal(signal, request_stop as *const () as libc::sighandler_t);
        }
    }
    let config = ReplicationConfig::new(nats, stream);
    let mut follower = match Follower::open(&config, journal_dir) {
        Ok(follower) => follower,
        Err(e) => return fail(e),
    };
    if retention.snapshot_every > 0 {
        follower = follower.snapshot_every(retention.snapshot_every, retention.snapshots_kept);
    }
    if store_snapshots {
        follower = match follower.store_snapshots() {
            Ok(follower) => follower,
            Err(e) => return fail(e),
        };
    }
    if let Some(metrics) = &metrics {
        follower.set_metrics(metrics.journal());
    }
    if let Some(head) = follower.bootstrapped_from() {
        eprintln!(
            "ringledger follow: started from the object store snapshot at seq {}, chain head {head}",
            head.seq
        );
    }
    eprintln!(
        "ringledger follow: stream {stream}, resuming after seq {}",
        follower.ledger().last_seq()
    );
    let mut reported = Instant::now();
    let run = follower.run(Duration::from_millis(200), |progress, _| {
        if let Some(metrics) = &metrics {
            metrics.set_replication_lag(progress.lag_frames);
        }
        if reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            eprintln!(
                "ringledger follow: applied seq {} (stream seq {}), lag {} frame(s)",
                progress.applied_seq, progress.stream_seq, progress.lag_frames
            );
        }
        !STOP.load(Ordering::Relaxed)
    });
    let progress = follower.progress();
    let closed = follower.close();
    if let Err(e) = run {
        return fail(e);
    }
    match closed {
        Ok(ledger) => {
            eprintln!(
                "ringledger follow: stopped at seq {} (stream seq {}), digest {:016x}",
                progress.applied_seq,
                progress.stream_seq,
                ledger.digest()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// Starts the metrics endpoint and says where it listens (port 0 picks one;
/// tests read the line).
fn serve_metrics(
    addr: &str,
    metrics: Arc<Metrics>,
    gauges: Option<ringledger::EngineGauges>,
) -> Result<(), String> {
    let (bound, _serving) = ringledger::metrics::serve(addr, metrics, gauges)
        .map_err(|e| format!("--metrics {addr}: cannot listen there: {e}"))?;
    eprintln!("ringledger: metrics on http://{bound}/metrics");
    Ok(())
}

#[cfg(feature = "nats")]
fn start_metrics(
    addr: &str,
    role: Role,
    gauges: Option<ringledger::EngineGauges>,
) -> Result<Arc<Metrics>, String> {
    let metrics = Arc::new(Metrics::new(role));
    serve_metrics(addr, Arc::clone(&metrics), gauges)?;
    Ok(metrics)
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ringledger: {message}");
    ExitCode::FAILURE
}

/// An engine builder with the journal (and replication) `--durability` asks for.
fn durability_builder(
    journal_dir: &Path,
    durability: DurabilityArg,
    #[cfg(feature = "nats")] replication: ReplicationArgs,
) -> Result<ringledger::EngineBuilder, String> {
    let builder = Engine::builder();
    #[cfg(feature = "nats")]
    match (durability, replication) {
        (
            DurabilityArg::Replicated,
            ReplicationArgs {
                nats: Some(url),
                stream: Some(stream),
                replicas,
                takeover,
                auto_takeover,
                lease_ttl_ms,
            },
        ) => {
            let config =
                ringledger::replication::ReplicationConfig::new(url, stream).replicas(replicas);
            let builder = builder
                .journal(journal_dir, Durability::Async)
                .replicated(config)
                .takeover(takeover);
            Ok(if auto_takeover {
                builder.auto_takeover(ringledger::replication::LeaseConfig::new(
                    std::time::Duration::from_millis(lease_ttl_ms),
                ))
            } else {
                builder
            })
        }
        (DurabilityArg::Replicated, _) => {
            Err("--durability replicated needs --nats URL and --stream NAME".into())
        }
        (
            DurabilityArg::Journal(durability),
            ReplicationArgs {
                nats,
                stream,
                takeover,
                auto_takeover,
                ..
            },
        ) => {
            if nats.is_some() || stream.is_some() || takeover || auto_takeover {
                return Err(
                    "--nats, --stream, --takeover and --auto-takeover go with --durability \
                     replicated"
                        .into(),
                );
            }
            Ok(builder.journal(journal_dir, durability))
        }
    }
    #[cfg(not(feature = "nats"))]
    match durability {
        DurabilityArg::Journal(durability) => Ok(builder.journal(journal_dir, durability)),
        DurabilityArg::Replicated => Err(
            "--durability replicated needs a build with the `nats` feature (cargo build --features nats)"
                .into(),
        ),
    }
}

/// The engine `run` and `serve` start: the journal (and replication) from
/// `builder`, the rest from their shared flags; with `metrics_addr`, the
/// metrics endpoint is listening too.
fn start_engine(
    mut builder: ringledger::EngineBuilder,
    engine_clock: Arc<dyn Clock>,
    (scale, history): (u32, u32),
    rebate_rate: &str,
    (wait, journal_thread, retention): (WaitStrategy, JournalThread, &RetentionArgs),
    metrics_addr: Option<&str>,
) -> Result<(Engine, Option<Arc<Metrics>>), String> {
    let scale = Scale::new(scale)?;
    let policy = Decimal::from_str(rebate_rate)
        .map_err(|e| format!("--rebate-rate {rebate_rate:?}: {e}"))
        .and_then(RateRebate::new)?;
    let metrics = metrics_addr.map(|_| Arc::new(Metrics::new(Role::Leader)));
    if let Some(metrics) = &metrics {
        builder = builder.metrics(metrics.engine());
    }
    if retention.snapshot_every > 0 {
        builder = builder.snapshot_every(retention.snapshot_every);
    }
    let engine = builder
        .snapshots_kept(retention.snapshots_kept)
        .segment_bytes(retention.segment_bytes)
        .scale(scale)
        .history_per_account_max(history)
        .rebate_policy(policy)
        .clock(engine_clock)
        .wait(wait)
        .journal_thread(journal_thread)
        .start()
        .map_err(|e| e.to_string())?;
    if let (Some(addr), Some(metrics)) = (metrics_addr, &metrics) {
        serve_metrics(addr, Arc::clone(metrics), Some(engine.gauges()))?;
    }
    Ok((engine, metrics))
}

fn run(
    builder: ringledger::EngineBuilder,
    clock: ClockArg,
    scale_history: (u32, u32),
    rebate_rate: &str,
    (wait, journal_thread, retention): (WaitStrategy, JournalThread, RetentionArgs),
    session: &str,
    metrics_addr: Option<&str>,
) -> ExitCode {
    let manual = Arc::new(ManualClock::new(0));
    let engine_clock: Arc<dyn Clock> = match clock {
        ClockArg::Wall => Arc::new(WallClock),
        ClockArg::Manual => Arc::clone(&manual) as Arc<dyn Clock>,
    };
    let (engine, metrics) = match start_engine(
        builder,
        engine_clock,
        scale_history,
        rebate_rate,
        (wait, journal_thread, &retention),
        metrics_addr,
    ) {
        Ok(started) => started,
        Err(e) => return fail(e),
    };
    let mut client = match engine.session(session) {
        Ok(client) => client,
        // Only a refused name is cured by another one; a full disk is not.
        Err(e @ EngineError::Session(_)) => {
            return fail(format!("{e} (pick another with --session NAME)"))
        }
        Err(e) => return fail(e),
    };
    let manual_clock = matches!(clock, ClockArg::Manual).then_some(&*manual);
    let served = ringledger::cli::run::serve(
        &mut client,
        manual_clock,
        metrics.as_deref(),
        io::stdin().lock(),
        // `serve` flushes whenever the input pauses; until then answers
        // leave in large writes.
        BufWriter::with_capacity(1 << 16, io::stdout().lock()),
    );
    drop(client);
    let stopped = engine.shutdown();
    match (served, stopped) {
        (Err(e), _) => fail(e),
        (Ok(()), Err(e)) => fail(e),
        (Ok(()), Ok(_)) => ExitCode::SUCCESS,
    }
}

/// `serve`: the engine `--durability` asks for, then NATS intake until a
/// signal or until the engine is fenced or fails.
#[cfg(feature = "nats")]
#[allow(clippy::too_many_arguments)]
fn serve(
    journal_dir: &Path,
    durability: DurabilityArg,
    replication: ReplicationArgs,
    scale_history: (u32, u32),
    rebate_rate: &str,
    (wait, retention): (WaitStrategy, RetentionArgs),
    gateways: usize,
    metrics_addr: Option<&str>,
) -> ExitCode {
    use ringledger::cli::serve::Stopped;
    use ringledger::replication::ReplicationConfig;

    let (Some(url), Some(stream)) = (replication.nats.clone(), replication.stream.clone()) else {
        return fail("serve needs --nats URL and --stream NAME");
    };
    let config = ReplicationConfig::new(url, stream).replicas(replication.replicas);
    let builder = match durability {
        DurabilityArg::Replicated => durability_builder(journal_dir, durability, replication),
        DurabilityArg::Journal(durability)
            if !replication.takeover && !replication.auto_takeover =>
        {
            Ok(Engine::builder().journal(journal_dir, durability))
        }
        DurabilityArg::Journal(_) => {
            Err("--takeover and --auto-takeover go with --durability replicated".into())
        }
    };
    let builder = match builder {
        Ok(builder) => builder,
        Err(e) => return fail(e),
    };
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; it is a plain `extern "C" fn` that lives for
        // the whole process.
        unsafe {
            libc::signal(signal, request_stop as *const () as libc::sighandler_t);
        }
    }
    let (engine, metrics) = match start_engine(
        builder,
        Arc::new(WallClock),
        scale_history,
        rebate_rate,
        (wait, JournalThread::Business, &retention),
        metrics_addr,
    ) {
        Ok(started) => started,
        Err(e) => return fail(e),
    };
    let served =
        ringledger::cli::serve::serve(&engine, &config, gateways, metrics.as_deref(), &STOP);
    let stopped = engine.shutdown();
    match (served, stopped) {
        (Err(e), _) => fail(e),
        (Ok(Stopped::Engine(e)), _) => fail(e),
        (Ok(Stopped::Asked), Err(e)) => fail(e),
        (Ok(Stopped::Asked), Ok(_)) => ExitCode::SUCCESS,
    }
}

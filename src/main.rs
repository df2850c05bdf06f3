//! The `ringledger` command: argument parsing and printing only; the
//! behaviour lives in the library.

use std::io;
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use ringledger::engine::{Clock, ManualClock, WallClock};
use ringledger::ring::WaitStrategy;
use ringledger::{Engine, RateRebate, Scale};
use rust_decimal::Decimal;

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

#[derive(Subcommand)]
enum Command {
    /// Serve JSON-lines requests from stdin, one answer per line on stdout.
    Run {
        /// Where time comes from: the wall clock, or `tick` lines.
        #[arg(long, value_enum, default_value = "wall")]
        clock: ClockArg,
        /// Decimal places of money.
        #[arg(long, default_value_t = 2)]
        scale: u32,
        /// Rebate credited on every deposit, as a fraction (0.01 = 1%).
        #[arg(long, default_value = "0.01")]
        rebate_rate: String,
        /// How idle threads wait: spin, yield or block.
        #[arg(long, default_value = "block")]
        wait: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            clock,
            scale,
            rebate_rate,
            wait,
        } => run(clock, scale, &rebate_rate, &wait),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ringledger: {message}");
    ExitCode::FAILURE
}

fn run(clock: ClockArg, scale: u32, rebate_rate: &str, wait: &str) -> ExitCode {
    let scale = match Scale::new(scale) {
        Ok(scale) => scale,
        Err(e) => return fail(e),
    };
    let policy = match Decimal::from_str(rebate_rate)
        .map_err(|e| format!("--rebate-rate {rebate_rate:?}: {e}"))
        .and_then(RateRebate::new)
    {
        Ok(policy) => policy,
        Err(e) => return fail(e),
    };
    let wait = match WaitStrategy::from_str(wait) {
        Ok(wait) => wait,
        Err(e) => return fail(e),
    };
    let manual = Arc::new(ManualClock::new(0));
    let engine_clock: Arc<dyn Clock> = match clock {
        ClockArg::Wall => Arc::new(WallClock),
        ClockArg::Manual => Arc::clone(&manual) as Arc<dyn Clock>,
    };
    let engine = match Engine::builder()
        .scale(scale)
        .rebate_policy(policy)
        .clock(engine_clock)
        .wait(wait)
        .start()
    {
        Ok(engine) => engine,
        Err(e) => return fail(e),
    };
    let mut client = match engine.client() {
        Ok(client) => client,
        Err(e) => return fail(e),
    };
    let manual_clock = matches!(clock, ClockArg::Manual).then_some(&*manual);
    let served = ringledger::cli::run::serve(
        &mut client,
        manual_clock,
        io::stdin().lock(),
        io::stdout().lock(),
    );
    drop(client);
    let stopped = engine.shutdown();
    match (served, stopped) {
        (Err(e), _) => fail(e),
        (Ok(()), Err(e)) => fail(e),
        (Ok(()), Ok(_)) => ExitCode::SUCCESS,
    }
}

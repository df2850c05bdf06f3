//! The external engines in the benchmark: the seeds' designs on their real
//! servers (see [`crate::external`]), driven like the in-process
//! baselines: one client thread per request in flight, each call
//! synchronous, each thread on its own connection. The settled clock stops
//! once the queue worker has credited every rebate the measured deposits
//! queued.

use super::Scenario;
use super::{bank_digest, drive, sale_symbol, workload, BenchError, EngineKind, Measured, Plan};
use crate::baseline::Bank;
use crate::external::{self, ExternalBank, Locking, PgBank, RedisBank, ServerError};
use crate::rebate::RateRebate;
use crate::request::InstrumentId;

impl From<ServerError> for BenchError {
    fn from(e: ServerError) -> Self {
        BenchError(e.0)
    }
}

/// Why `engine` cannot run at `inflight` on its server (PostgreSQL allows
/// only so many connections), for a suite to leave that point out. None
/// when it can, or when the server cannot be asked (the run then says why).
pub(super) fn beyond_server(engine: EngineKind, inflight: usize) -> Option<String> {
    if !matches!(
        engine,
        EngineKind::Postgres | EngineKind::PostgresOptimistic
    ) {
        return None;
    }
    match PgBank::inflight_max(&external::postgres_url()) {
        Ok((max, why)) if inflight > max => Some(why),
        _ => None,
    }
}

/// Connects `plan.engine` to its server, one connection per client thread.
fn connect(plan: &Plan<'_>) -> Result<Box<dyn ExternalBank>, BenchError> {
    let (policy, durability, clients) = (
        RateRebate::default(),
        plan.config.durability,
        plan.shape.threads,
    );
    let locking = match plan.engine {
        EngineKind::Postgres => Locking::Pessimistic,
        EngineKind::PostgresOptimistic => Locking::Optimistic,
        EngineKind::Redis => {
            let url = external::redis_url();
            return Ok(Box::new(RedisBank::connect(
                &url, durability, clients, policy,
            )?));
        }
        other => return Err(BenchError(format!("{other} is not an external engine"))),
    };
    let url = external::postgres_url();
    Ok(Box::new(PgBank::connect(
        &url, locking, durability, clients, policy,
    )?))
}

/// Sets up, drives and checks one external engine.
pub(super) fn run(plan: &Plan<'_>) -> Result<Measured, BenchError> {
    let workload = &plan.workload;
    let bank = connect(plan)?;
    let as_bank: &dyn Bank = &*bank;
    let refused = |what: &str, reject: crate::Reject| match bank.failure() {
        Some(failure) => BenchError::from(failure),
        None => BenchError(format!("{what} was refused: {reject}")),
    };
    as_bank
        .open_funded(0..workload.accounts, workload::OPENING_BALANCE)
        .map_err(|e| refused("set-up", e))?;
    let instrument = if workload.scenario == Scenario::ShareSale {
        as_bank
            .list_instrument(sale_symbol(), workload.supply, workload::SALE_PRICE)
            .map_err(|e| refused("listing the instrument", e))?
    } else {
        InstrumentId(0)
    };
    // The opening deposits' rebates are set-up too.
    as_bank.settle_rebates();
    if let Some(failure) = bank.failure() {
        return Err(failure.into());
    }
    let retries_before = as_bank.retries();
    let credited_before = as_bank.rebates().credited;
    let driven = drive(
        plan,
        instrument,
        super::flows(plan),
        |gateway, flow| Ok(gateway.run_bank(as_bank, flow)),
        || {
            as_bank.settle_rebates();
            Ok(())
        },
    )?;
    // A server that failed under the run: its error, not numbers.
    if let Some(failure) = bank.failure() {
        return Err(failure.into());
    }
    let sale = (workload.scenario == Scenario::ShareSale)
        .then(|| as_bank.instrument(instrument).ok())
        .flatten();
    let rebates = as_bank.rebates();
    Ok(Measured {
        driven,
        digest: Some(bank_digest(as_bank, workload.accounts, sale.as_ref())),
        digest_of: "balances",
        invariants: as_bank.check_invariants(),
        retries: (plan.engine != EngineKind::Redis).then(|| as_bank.retries() - retries_before),
        sale,
        rebates_credited: rebates.credited - credited_before,
        rebates_owed: rebates.owed(),
    })
}

//! Replicated throughput: an engine with `--durability replicated` and
//! gateway threads sending pipelined deposits, each outcome released only
//! after the JetStream stream acknowledged its frame. Prints requests per
//! second and how many frames were stored (see README, Replication).
//!
//! `cargo run --release --features nats --example replicated_throughput --
//!  --nats URL --stream NAME [--replicas R] [--gateways N] [--ops N] [--inflight N]
//!  [--delete-stream]` (the last removes the stream afterwards).

use std::time::Instant;

use ringledger::journal::Durability;
use ringledger::replication::ReplicationConfig;
use ringledger::{Engine, Request};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = arg(&args, "--nats", "nats://127.0.0.1:4222");
    let stream = arg(&args, "--stream", "ringledger-throughput");
    let replicas: usize = arg(&args, "--replicas", "1").parse()?;
    let gateways: u64 = arg(&args, "--gateways", "8").parse()?;
    let ops: u64 = arg(&args, "--ops", "2000000").parse()?;
    let inflight: u64 = arg(&args, "--inflight", "4096").parse()?;
    let dir = tempfile::tempdir()?;
    let engine = Engine::builder()
        .journal(dir.path(), Durability::Async)
        .replicated(ReplicationConfig::new(url.as_str(), stream.as_str()).replicas(replicas))
        .accounts_hint(gateways as usize)
        .start()?;
    let mut admin = engine.client()?;
    for account in 0..gateways {
        admin
            .call(Request::OpenAccount { account })?
            .map_err(|e| e.to_string())?;
    }
    let per_gateway = ops / gateways;
    let window = (inflight / gateways).max(1);
    let started = Instant::now();
    std::thread::scope(|scope| -> Result<(), ringledger::EngineError> {
        let engine = &engine;
        let workers: Vec<_> = (0..gateways)
            .map(|account| {
                scope.spawn(move || -> Result<(), ringledger::EngineError> {
                    let mut client = engine.client()?;
                    let (mut sent, mut answered) = (0, 0);
                    while answered < per_gateway {
                        while sent < per_gateway && sent - answered < window {
                            client.send(Request::Deposit {
                                account,
                                amount: 100,
                            })?;
                            sent += 1;
                        }
                        if let Err(e) = client.recv()? {
                            panic!("deposit refused: {e}");
                        }
                        answered += 1;
                    }
                    Ok(())
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("gateway panicked")?;
        }
        Ok(())
    })?;
    let elapsed = started.elapsed();
    let settled = per_gateway * gateways;
    admin.barrier()?;
    drop(admin);
    let ledger = engine.shutdown()?;
    println!(
        "replicated (R{replicas}), {gateways} gateways, {inflight} in flight: {settled} deposits in {:.2} s = {:.0} req/s (last seq {})",
        elapsed.as_secs_f64(),
        settled as f64 / elapsed.as_secs_f64(),
        ledger.last_seq()
    );
    if args.iter().any(|a| a == "--delete-stream") {
        delete_stream(&url, &stream)?;
    }
    Ok(())
}

/// Removes the measurement's stream from a shared server.
fn delete_stream(url: &str, stream: &str) -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = async_nats::connect(url.split(',').next().unwrap_or(url)).await?;
        async_nats::jetstream::new(client)
            .delete_stream(stream)
            .await?;
        Ok(())
    })
}

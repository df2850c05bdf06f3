//! Replicated throughput: an engine with `--durability replicated` and
//! gateway threads sending pipelined deposits, each outcome released only
//! after the JetStream stream acknowledged its frame. Prints requests per
//! second and how many frames were stored (see README, Replication).
//!
//! `cargo run --release --features nats --example replicated_throughput --
//!  --nats URL --stream NAME [--replicas R] [--gateways N] [--ops N] [--inflight N]
//!  [--delete-stream]` (the last removes the stream afterwards).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringledger::journal::Durability;
use ringledger::replication::{Follower, ReplicationConfig};
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
    let config = ReplicationConfig::new(url.as_str(), stream.as_str()).replicas(replicas);
    let engine = Engine::builder()
        .journal(dir.path(), Durability::Async)
        .replicated(config.clone())
        .accounts_hint(gateways as usize)
        .start()?;
    let mut lag = args
        .iter()
        .any(|a| a == "--follow")
        .then(|| Lag::follow(config.clone()))
        .transpose()?;
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
    if let Some(lag) = &mut lag {
        lag.load_over();
    }
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
    if let Some(lag) = lag {
        lag.report(ledger.last_seq(), ledger.digest())?;
    }
    if args.iter().any(|a| a == "--delete-stream") {
        delete_stream(&url, &stream)?;
    }
    Ok(())
}

/// A follower on a thread of its own, sampling its lag after every frame.
struct Lag {
    /// Set once the load stopped; the follower then runs to the last seq.
    load_done: Arc<AtomicBool>,
    done_at: Instant,
    /// The leader's last seq, once known (0 before).
    last_seq: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Result<LagSeen, String>>,
    _dir: tempfile::TempDir,
}

#[derive(Debug, Default)]
struct LagSeen {
    max_ms: u64,
    sum_ms: u64,
    samples: u64,
    max_frames: u64,
    caught_up_at: Option<Instant>,
    digest: Option<u64>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Lag {
    fn follow(config: ReplicationConfig) -> Result<Lag, Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut follower = Follower::open(&config, dir.path())?;
        let load_done = Arc::new(AtomicBool::new(false));
        let last_seq = Arc::new(AtomicU64::new(0));
        let (done, last) = (Arc::clone(&load_done), Arc::clone(&last_seq));
        let thread = std::thread::spawn(move || {
            let mut seen = LagSeen::default();
            follower
                .run(Duration::from_millis(10), |progress, ledger| {
                    if !done.load(Ordering::Acquire) {
                        if progress.applied_seq > 0 {
                            let behind = unix_ms().saturating_sub(ledger.now_ms());
                            seen.max_ms = seen.max_ms.max(behind);
                            seen.sum_ms += behind;
                            seen.samples += 1;
                        }
                        seen.max_frames = seen.max_frames.max(progress.lag_frames);
                        return true;
                    }
                    let last = last.load(Ordering::Acquire);
                    if last != 0 && progress.applied_seq >= last {
                        seen.caught_up_at = Some(Instant::now());
                        return false;
                    }
                    true
                })
                .map_err(|e| e.to_string())?;
            seen.digest = Some(follower.close().map_err(|e| e.to_string())?.digest());
            Ok(seen)
        });
        Ok(Lag {
            load_done,
            done_at: Instant::now(),
            last_seq,
            thread,
            _dir: dir,
        })
    }

    /// The load stopped: lag is no longer sampled, and catching up starts.
    fn load_over(&mut self) {
        self.done_at = Instant::now();
        self.load_done.store(true, Ordering::Release);
    }

    fn report(self, last_seq: u64, digest: u64) -> Result<(), Box<dyn std::error::Error>> {
        self.last_seq.store(last_seq, Ordering::Release);
        let seen = self
            .thread
            .join()
            .map_err(|_| "the follower thread panicked")??;
        let caught_up = seen.caught_up_at.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(self.done_at)
        });
        println!(
            "follower lag under the load: max {} ms, mean {:.1} ms behind the wall clock over {} frames; \
             at most {} frames pending on the server; caught up to seq {last_seq} {:.0} ms after the load stopped; \
             digest {}",
            seen.max_ms,
            seen.sum_ms as f64 / seen.samples.max(1) as f64,
            seen.samples,
            seen.max_frames,
            caught_up.as_secs_f64() * 1000.0,
            if seen.digest == Some(digest) { "equals the leader's" } else { "DIFFERS from the leader's" }
        );
        if seen.digest != Some(digest) {
            return Err("the follower's digest differs from the leader's".into());
        }
        Ok(())
    }
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

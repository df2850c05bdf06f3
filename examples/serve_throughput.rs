//! Requests per second through `ringledger serve`'s NATS intake: many
//! clients, each on its own connection and session, each keeping a window
//! of numbered deposits in flight (a new one sent as each answer comes).
//!
//! Start a server first, then this:
//!
//! ```text
//! ringledger serve --nats nats://127.0.0.1:4222 --stream bench --durability async --journal-dir /tmp/j &
//! cargo run --release --features nats --example serve_throughput -- \
//!     --nats nats://127.0.0.1:4222 --stream bench --clients 8 --inflight 256 --requests 1000000
//! ```
//!
//! Compare with `run` over stdin at the same durability, e.g. on a file of
//! the same deposits (README "Serve" shows the command).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::StreamExt;

struct Args {
    nats: String,
    stream: String,
    clients: u64,
    inflight: u64,
    requests: u64,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        nats: "nats://127.0.0.1:4222".into(),
        stream: "bench".into(),
        clients: 8,
        inflight: 256,
        requests: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--nats" => args.nats = value.clone(),
            "--stream" => args.stream = value.clone(),
            "--clients" => args.clients = number()?.max(1),
            "--inflight" => args.inflight = number()?.max(1),
            "--requests" => args.requests = number()?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// One client: opens its account, then keeps `inflight` deposits in flight
/// until `deposits` are answered. Returns the answers that were not ok.
async fn client(args: &Args, run: u128, i: u64, deposits: u64) -> Result<u64, String> {
    let nats = async_nats::connect(args.nats.as_str())
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let subject = format!("ringledger.{}.requests", args.stream);
    let session = format!("bench-{run}-{i}");
    let account = u64::try_from(run % 1_000_000_000).unwrap() * 1000 + i;
    let inbox = nats.new_inbox();
    let mut replies = nats
        .subscribe(format!("{inbox}.*"))
        .await
        .map_err(|e| format!("subscribe: {e}"))?;
    nats.flush().await.map_err(|e| e.to_string())?;
    let line = |req: u64| match req {
        1 => {
            format!(r#"{{"op":"open_account","account":{account},"session":"{session}","req":1}}"#)
        }
        _ => format!(
            r#"{{"op":"deposit","account":{account},"amount":"1.00","session":"{session}","req":{req}}}"#
        ),
    };
    let send = |req: u64| {
        let nats = nats.clone();
        let (subject, reply, payload) = (subject.clone(), format!("{inbox}.{req}"), line(req));
        async move {
            nats.publish_with_reply(subject, reply, payload.into())
                .await
        }
    };
    // The account first, alone: deposits need it.
    send(1).await.map_err(|e| e.to_string())?;
    nats.flush().await.map_err(|e| e.to_string())?;
    let opened = replies.next().await.ok_or("no answer")?;
    if !String::from_utf8_lossy(&opened.payload).contains("\"ok\":true") {
        return Err(format!("open_account: {:?}", opened.payload));
    }
    let last = deposits + 1;
    let mut next = 2;
    let mut outstanding = HashMap::new();
    let mut failed = 0;
    while next <= last && next < 2 + args.inflight {
        send(next).await.map_err(|e| e.to_string())?;
        outstanding.insert(next, ());
        next += 1;
    }
    while !outstanding.is_empty() {
        let reply = tokio::time::timeout(Duration::from_secs(30), replies.next())
            .await
            .map_err(|_| format!("client {i}: no answer for 30 s"))?
            .ok_or("subscription closed")?;
        let req: u64 = reply.subject.rsplit('.').next().unwrap().parse().unwrap();
        outstanding.remove(&req);
        if !reply.payload.starts_with(b"{\"balance\"") {
            failed += 1;
        }
        if next <= last {
            send(next).await.map_err(|e| e.to_string())?;
            outstanding.insert(next, ());
            next += 1;
        }
    }
    Ok(failed)
}

fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("serve_throughput: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let per_client = args.requests / args.clients;
    let started = Instant::now();
    let results: Vec<Result<u64, String>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..args.clients)
            .map(|i| {
                let args = &args;
                scope.spawn(move || {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap()
                        .block_on(client(args, run, i, per_client))
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let mut failed = 0;
    for result in results {
        match result {
            Ok(n) => failed += n,
            Err(e) => {
                eprintln!("serve_throughput: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let requests = per_client * args.clients;
    println!(
        "{requests} deposits through NATS intake, {} clients x {} in flight: {seconds:.3} s, {:.0} requests/s ({failed} not ok)",
        args.clients,
        args.inflight,
        requests as f64 / seconds
    );
    if failed > 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

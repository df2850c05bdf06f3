//! `ringledger serve` with real processes and a real NATS client (Debian has
//! no `nats` CLI, so a small async-nats client here): the `run` contract over
//! request-reply, hostile messages refused without effect, and a SIGKILLed
//! leader replaced by a `serve --takeover` standby while clients carry on
//! against the same subject, every acknowledged request applied once.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;
use support::nats::Cluster;

/// How long a `serve` may take to lead (a takeover catches up first).
const LEAD_WITHIN: Duration = Duration::from_secs(60);

/// A `ringledger serve` child.
struct Serve {
    child: Child,
}

impl Serve {
    /// Starts `serve` and waits until it says it subscribed.
    fn start(cluster: &Cluster, stream: &str, dir: &Path, replicas: &str, takeover: bool) -> Serve {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringledger"));
        command
            .args(["serve", "--replicas", replicas, "--nats", &cluster.url()])
            .args(["--stream", stream, "--journal-dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if takeover {
            command.arg("--takeover");
        }
        let mut child = command.spawn().unwrap();
        let pid = child.id();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (leading, led) = mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[serve {pid}] {line}");
                if line.contains("ringledger serve: leading") {
                    let _ = leading.send(());
                }
            }
        });
        led.recv_timeout(LEAD_WITHIN)
            .expect("serve says it leads and subscribed");
        Serve { child }
    }

    fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) of our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// SIGTERM, then whether it exited with success.
    fn stop(mut self) -> bool {
        self.signal(libc::SIGTERM);
        self.child.wait().unwrap().success()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn connect(cluster: &Cluster) -> async_nats::Client {
    let servers: Vec<async_nats::ServerAddr> = cluster
        .url()
        .split(',')
        .map(|url| url.parse().unwrap())
        .collect();
    async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(servers)
        .await
        .unwrap()
}

fn subject(stream: &str) -> String {
    format!("ringledger.{stream}.requests")
}

/// Sends `requests` in order on one connection without waiting for any
/// answer, each with its own reply subject, then collects the answers: in
/// the order of `requests`, `None` where none came within `wait` (or NATS
/// said no process subscribes).
async fn pipeline(
    nats: &async_nats::Client,
    stream: &str,
    requests: &[String],
    wait: Duration,
) -> Vec<Option<Value>> {
    let inbox = nats.new_inbox();
    let mut replies = nats.subscribe(format!("{inbox}.*")).await.unwrap();
    for (i, request) in requests.iter().enumerate() {
        nats.publish_with_reply(
            subject(stream),
            format!("{inbox}.{i}"),
            request.clone().into(),
        )
        .await
        .unwrap();
    }
    nats.flush().await.unwrap();
    let mut answers = vec![None; requests.len()];
    let mut heard = vec![false; requests.len()];
    let deadline = tokio::time::Instant::now() + wait;
    while heard.iter().any(|h| !h) {
        let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await else {
            break;
        };
        let i: usize = reply.subject.rsplit('.').next().unwrap().parse().unwrap();
        heard[i] = true;
        // A no-responders status has no payload.
        answers[i] = serde_json::from_slice(&reply.payload).ok();
    }
    let _ = replies.unsubscribe().await;
    answers
}

/// One request, its answer parsed (panics if there is none).
async fn call(nats: &async_nats::Client, stream: &str, request: &str) -> Value {
    let answer = nats
        .request(subject(stream), request.to_string().into())
        .await
        .unwrap_or_else(|e| panic!("{request}: {e}"));
    serde_json::from_slice(&answer.payload).unwrap()
}

#[test]
fn requests_are_answered_as_run_answers_them_pipelined_and_in_order() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&cluster, "plain", dir.path(), "1", false);
    runtime().block_on(async {
        let nats = connect(&cluster).await;
        let open = call(
            &nats,
            "plain",
            r#"{"op":"open_account","account":7,"session":"s","req":1}"#,
        )
        .await;
        assert_eq!(open["ok"], true, "{open}");
        // 200 deposits in flight at once, in one session: answered in order.
        let lines: Vec<String> = (2..202)
            .map(|req| {
                format!(
                    r#"{{"op":"deposit","account":7,"amount":"1.00","session":"s","req":{req}}}"#
                )
            })
            .collect();
        let answers = pipeline(&nats, "plain", &lines, Duration::from_secs(60)).await;
        let answers: Vec<Value> = answers.into_iter().map(Option::unwrap).collect();
        // Answered in the order sent: each balance is above the one before
        // by the deposit (and by any rebate credited in between).
        let mut last_cents = 0;
        for answer in &answers {
            assert_eq!(answer["ok"], true, "{answer}");
            let cents: u64 = answer["balance"]
                .as_str()
                .unwrap()
                .replace('.', "")
                .parse()
                .unwrap();
            assert!(
                cents >= last_cents + 100,
                "{answer} after {last_cents} cents"
            );
            last_cents = cents;
        }
        let retry = call(
            &nats,
            "plain",
            r#"{"op":"deposit","account":7,"amount":"1.00","session":"s","req":190}"#,
        )
        .await;
        assert_eq!(retry["error"], "duplicate", "{retry}");
        assert_eq!(retry["original"], "ok", "{retry}");
        let barrier = call(&nats, "plain", r#"{"op":"barrier"}"#).await;
        assert_eq!(barrier["ok"], true, "{barrier}");
        // Pretty-printed JSON is one request too. 200 deposits of 1.00 and
        // their rebates of 0.01, each once.
        let balance = call(
            &nats,
            "plain",
            "{\n  \"op\": \"balance\",\n  \"account\": 7\n}",
        )
        .await;
        assert_eq!(balance["balance"], "202.00", "{balance}");
        let unknown = call(
            &nats,
            "plain",
            r#"{"op":"withdraw","account":8,"amount":"1.00"}"#,
        )
        .await;
        assert_eq!(unknown["error"], "unknown_account", "{unknown}");
    });
    assert!(serve.stop(), "serve exits cleanly on SIGTERM");
}

#[test]
fn hostile_messages_get_a_clear_error_and_change_nothing() {
    let cluster = Cluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&cluster, "hostile", dir.path(), "1", false);
    runtime().block_on(async {
        let nats = connect(&cluster).await;
        let s = "hostile";
        let open = call(
            &nats,
            s,
            r#"{"op":"open_account","account":1,"session":"h","req":1}"#,
        )
        .await;
        assert_eq!(open["ok"], true, "{open}");
        // A numbered request refused at the edge uses its number up, as in
        // `run` (which changes the session's state).
        let bad_amount = r#"{"op":"deposit","account":1,"amount":"5.000","session":"h","req":3}"#;
        let refused = call(&nats, s, bad_amount).await;
        assert_eq!(refused["error"], "invalid_amount", "{refused}");

        let refused = [
            ("not json", "not valid JSON"),
            (
                r#"{"op":"deposit","account":1,"amount":"5.00""#,
                "not valid JSON",
            ),
            ("", "empty"),
            (r#"[1,2]"#, "JSON object"),
            (
                r#"{"op":"deposit","op":"withdraw","account":1,"amount":"5.00"}"#,
                "op",
            ),
            (
                r#"{"op":"deposit","account":1,"amount":"5.00","req":2}"#,
                "needs `session`",
            ),
            (
                r#"{"op":"deposit","account":1,"amount":"5.00","session":7,"req":2}"#,
                "`session` must be a string",
            ),
            (
                r#"{"op":"deposit","account":1,"amount":"5.00","session":"has space","req":2}"#,
                "session name",
            ),
        ];
        for (request, says) in refused {
            let answer = call(&nats, s, request).await;
            assert_eq!(answer["ok"], false, "{request}: {answer}");
            let message = answer["message"].as_str().unwrap();
            assert!(message.contains(says), "{request}: {answer}");
        }
        // A message far larger than any request.
        let huge = format!(
            r#"{{"op":"deposit","account":1,"amount":"5.00","pad":"{}"}}"#,
            "x".repeat(200_000)
        );
        let answer = nats.request(subject(s), huge.into()).await.unwrap();
        let answer: Value = serde_json::from_slice(&answer.payload).unwrap();
        assert_eq!(answer["error"], "malformed", "{answer}");
        assert!(
            answer["message"].as_str().unwrap().contains("bytes"),
            "{answer}"
        );

        // A request with no reply subject cannot be answered: it is reported
        // on the errors subject and not applied.
        let mut errors = nats
            .subscribe(format!("ringledger.{s}.errors"))
            .await
            .unwrap();
        nats.flush().await.unwrap();
        nats.publish(
            subject(s),
            r#"{"op":"deposit","account":1,"amount":"5.00"}"#.into(),
        )
        .await
        .unwrap();
        let report = tokio::time::timeout(Duration::from_secs(10), errors.next())
            .await
            .expect("a report on the errors subject")
            .unwrap();
        let report: Value = serde_json::from_slice(&report.payload).unwrap();
        assert_eq!(report["error"], "malformed", "{report}");
        assert!(
            report["message"]
                .as_str()
                .unwrap()
                .contains("reply subject"),
            "{report}"
        );

        let balance = call(&nats, s, r#"{"op":"balance","account":1}"#).await;
        assert_eq!(balance["balance"], "0.00", "{balance}");
        let history = call(&nats, s, r#"{"op":"history","account":1,"limit":10}"#).await;
        assert_eq!(history["entries"], serde_json::json!([]), "{history}");
        // The numbered refusal used its number up, as in `run`; nothing
        // else used one.
        let retry = call(&nats, s, bad_amount).await;
        assert_eq!(retry["original"], "invalid_amount", "{retry}");
        let next = r#"{"op":"deposit","account":1,"amount":"5.00","session":"h","req":4}"#;
        let next = call(&nats, s, next).await;
        assert_eq!(next["balance"], "5.00", "{next}");
    });
    assert!(serve.stop());
}

/// What one client learned about its requests.
#[derive(Default)]
struct Tally {
    /// Answered ok (or `duplicate` of an ok): applied exactly once.
    acknowledged: u64,
    /// Answered `duplicate` with no first answer: the number was passed
    /// over (a later one was applied first), so it was never applied.
    passed_over: u64,
}

/// Deposits 10.00 into `account` `deposits` times under `session`, 16 in
/// flight, retrying every request not answered (a timeout, no responder, a
/// fenced or unavailable leader) under the same number until it is.
async fn client(
    nats: async_nats::Client,
    stream: &str,
    session: String,
    account: u64,
    deposits: u64,
    acknowledged_total: Arc<AtomicU64>,
) -> Tally {
    const IN_FLIGHT: u64 = 16;
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut tally = Tally::default();
    let open = format!(r#""op":"open_account","account":{account}"#);
    let mut pending: Vec<(u64, String)> = vec![(1, open)];
    pending.extend((2..2 + deposits).map(|req| {
        (
            req,
            format!(r#""op":"deposit","account":{account},"amount":"10.00""#),
        )
    }));
    for batch in pending.chunks(IN_FLIGHT as usize) {
        let mut batch = batch.to_vec();
        while !batch.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{session}: requests still unanswered"
            );
            let lines: Vec<String> = batch
                .iter()
                .map(|(req, op)| format!(r#"{{{op},"session":"{session}","req":{req}}}"#))
                .collect();
            let answers = pipeline(&nats, stream, &lines, Duration::from_secs(3)).await;
            let mut retry = Vec::new();
            for (answer, sent) in answers.into_iter().zip(batch.iter()) {
                let req = sent.0;
                let Some(answer) = answer else {
                    retry.push(sent.clone());
                    continue;
                };
                let code = answer["error"].as_str();
                match code {
                    None => tally.acknowledged += 1,
                    Some("duplicate") if answer["original"] == "ok" => tally.acknowledged += 1,
                    Some("duplicate") if answer.get("original").is_none() => tally.passed_over += 1,
                    Some("not_leader" | "unavailable" | "engine_failed") => {
                        retry.push(sent.clone());
                        continue;
                    }
                    _ => panic!("{session} req {req}: {answer}"),
                }
                if req > 1 && (code.is_none() || answer["original"] == "ok") {
                    acknowledged_total.fetch_add(1, Ordering::Relaxed);
                }
            }
            if !retry.is_empty() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            batch = retry;
        }
    }
    tally
}

#[test]
fn after_the_leader_is_killed_a_standby_takes_over_and_clients_carry_on_applied_once() {
    const CLIENTS: u64 = 8;
    const DEPOSITS: u64 = 300;
    let cluster = Cluster::start(3);
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let stream = "failover";
    let a = Serve::start(&cluster, stream, a_dir.path(), "3", false);
    let acknowledged = Arc::new(AtomicU64::new(0));
    let clients = std::thread::scope(|scope| {
        let workers: Vec<_> = (1..=CLIENTS)
            .map(|account| {
                let acknowledged = Arc::clone(&acknowledged);
                let cluster = &cluster;
                scope.spawn(move || {
                    runtime().block_on(async {
                        let nats = connect(cluster).await;
                        let session = format!("client-{account}");
                        client(nats, stream, session, account, DEPOSITS, acknowledged).await
                    })
                })
            })
            .collect();
        // Mid-stream: about a third of the deposits acknowledged.
        while acknowledged.load(Ordering::Relaxed) < CLIENTS * DEPOSITS / 3 {
            std::thread::sleep(Duration::from_millis(5));
        }
        a.signal(libc::SIGKILL);
        let at_kill = acknowledged.load(Ordering::Relaxed);
        drop(a);
        eprintln!("killed the leader after {at_kill} acknowledged deposits");
        let b = Serve::start(&cluster, stream, b_dir.path(), "3", true);
        let tallies: Vec<Tally> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        (b, tallies)
    });
    let (b, tallies) = clients;
    runtime().block_on(async {
        let nats = connect(&cluster).await;
        let barrier = call(&nats, stream, r#"{"op":"barrier"}"#).await;
        assert_eq!(barrier["ok"], true, "{barrier}");
        for (i, tally) in tallies.iter().enumerate() {
            let account = i as u64 + 1;
            // The open_account is acknowledged too.
            let deposits = tally.acknowledged - 1;
            assert_eq!(deposits + tally.passed_over, DEPOSITS, "client {account}");
            let balance = call(
                &nats,
                stream,
                &format!(r#"{{"op":"balance","account":{account}}}"#),
            )
            .await;
            // Each acknowledged deposit of 10.00 once, and its rebate of 0.10 once.
            let expected = format!(
                "{}.{:02}",
                deposits * 10 + deposits / 10,
                (deposits % 10) * 10
            );
            assert_eq!(balance["balance"], expected, "client {account}: {balance}");
        }
    });
    let passed_over: u64 = tallies.iter().map(|t| t.passed_over).sum();
    eprintln!("passed over (never applied) after the failover: {passed_over}");
    assert!(b.stop());
}

// This found a split brain in the pipelined publisher: a frame behind
// another in flight expected only `confirmed + k` as the stream's last
// sequence, so when the new leader had stored exactly one message (its
// takeover marker), the old leader's second frame matched it and landed; the
// new leader was fenced too. Frames now also expect the previous frame's
// message id.
#[test]
fn a_paused_leader_resumed_after_a_takeover_is_fenced_unsubscribes_and_exits() {
    const DEPOSITS: u64 = 40;
    let cluster = Cluster::start(3);
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let stream = "fenced";
    let mut a = Serve::start(&cluster, stream, a_dir.path(), "3", false);
    let rt = runtime();
    let nats = rt.block_on(connect(&cluster));
    let open = r#"{"op":"open_account","account":1,"session":"f","req":1}"#;
    assert_eq!(rt.block_on(call(&nats, stream, open))["ok"], true);

    a.signal(libc::SIGSTOP);
    let b = Serve::start(&cluster, stream, b_dir.path(), "3", true);
    a.signal(libc::SIGCONT);
    // Both subscribe now, in one queue group: each request reaches one of
    // them. The old leader's first publish is refused; it answers
    // not_leader, unsubscribes and exits, and the client retries.
    let mut not_leader = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    for req in 2..2 + DEPOSITS {
        let line =
            format!(r#"{{"op":"deposit","account":1,"amount":"10.00","session":"f","req":{req}}}"#);
        loop {
            assert!(Instant::now() < deadline, "req {req} never answered ok");
            let answer = rt.block_on(pipeline(
                &nats,
                stream,
                std::slice::from_ref(&line),
                Duration::from_secs(3),
            ));
            match &answer[0] {
                Some(answer) if answer["ok"] == true => break,
                Some(answer) if answer["error"] == "not_leader" => not_leader += 1,
                Some(answer) => panic!("req {req}: {answer}"),
                None => {}
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let exited = loop {
        if let Some(status) = a.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the fenced leader is still running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!exited.success(), "a fenced leader exits non-zero");
    assert!(
        not_leader > 0,
        "the old leader answered some request not_leader"
    );
    rt.block_on(async {
        let barrier = call(&nats, stream, r#"{"op":"barrier"}"#).await;
        assert_eq!(barrier["ok"], true, "{barrier}");
        let balance = call(&nats, stream, r#"{"op":"balance","account":1}"#).await;
        // 40 deposits of 10.00 and their rebates, each once.
        assert_eq!(balance["balance"], "404.00", "{balance}");
    });
    assert!(b.stop());
}

#[test]
fn serve_refuses_auto_takeover_without_replicated_durability() {
    // No server is needed: the flags are refused before any is asked (an
    // engine that ignored --auto-takeover would lead without a lease).
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .args(["serve", "--nats", "nats://127.0.0.1:1", "--stream", "s"])
        .args(["--durability", "async", "--auto-takeover", "--journal-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--auto-takeover go with --durability replicated"),
        "{stderr}"
    );
}

//! Idempotency through `ringledger run`, with real child processes: request
//! numbers, the original answer a duplicate reports, and a retry after a
//! SIGKILL and restart that must not be applied twice.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};

use serde_json::Value;

fn ringledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringledger"))
}

/// Runs a whole script through `run` (no rebates, so balances are exact)
/// with `args` and returns one parsed answer per line.
fn run(args: &[&str], lines: &[&str]) -> Vec<Value> {
    let mut child = ringledger()
        .args(["run", "--rebate-rate", "0"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in lines {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), lines.len(), "{answers:?}");
    answers
}

fn run_memory(lines: &[&str]) -> Vec<Value> {
    run(&["--durability", "none"], lines)
}

#[test]
fn unnumbered_lines_never_use_up_a_request_number() {
    let answers = run_memory(&[
        r#"{"op":"open_account","account":1}"#,
        r#"{"op":"deposit","account":1,"amount":"1.00","req":1}"#,
        r#"{"op":"deposit","account":1,"amount":"1.00","req":5}"#,
        r#"{"op":"deposit","account":1,"amount":"1.00"}"#,
        r#"{"op":"deposit","account":1,"amount":"1.00","req":6}"#,
        r#"{"op":"balance","account":1}"#,
    ]);
    for (i, answer) in answers[..5].iter().enumerate() {
        assert_eq!(answer["ok"], true, "line {i}: {answer}");
    }
    assert_eq!(answers[5]["balance"], "4.00");
}

#[test]
fn a_retried_rejection_is_a_duplicate_that_names_the_original_code() {
    let answers = run_memory(&[
        r#"{"op":"open_account","account":1,"req":1}"#,
        r#"{"op":"deposit","account":1,"amount":"1.005","req":10}"#,
        r#"{"op":"deposit","account":1,"amount":"1.00","req":10}"#,
        r#"{"op":"withdraw","account":1,"amount":"5.00","req":11}"#,
        r#"{"op":"withdraw","account":1,"amount":"5.00","req":11}"#,
        r#"{"op":"deposit","account":1,"amount":"2.00","req":12}"#,
        r#"{"op":"deposit","account":1,"amount":"2.00","req":12}"#,
        r#"{"op":"balance","account":1}"#,
    ]);
    assert_eq!(answers[1]["error"], "invalid_amount", "{}", answers[1]);
    assert_eq!(answers[2]["error"], "duplicate", "{}", answers[2]);
    assert_eq!(answers[2]["original"], "invalid_amount", "{}", answers[2]);
    assert_eq!(answers[3]["error"], "insufficient_funds");
    assert_eq!(answers[4]["error"], "duplicate");
    assert_eq!(answers[4]["original"], "insufficient_funds");
    assert_eq!(answers[5]["balance"], "2.00");
    assert_eq!(answers[6]["error"], "duplicate");
    assert_eq!(answers[6]["original"], "ok", "{}", answers[6]);
    assert_eq!(answers[7]["balance"], "2.00");
}

#[test]
fn a_numbered_line_rejected_at_the_edge_uses_up_its_number() {
    let answers = run_memory(&[
        r#"{"op":"open_account","account":1,"req":1}"#,
        r#"{"op":"list_instrument","instrument":"has space","shares":5,"price":"1.00","req":2}"#,
        r#"{"op":"list_instrument","instrument":"ACME","shares":5,"price":"1.00","req":2}"#,
        r#"{"op":"transfer","from":1,"to":2,"amount":"-1","req":3}"#,
        r#"{"op":"transfer","from":1,"to":2,"amount":"1","req":3}"#,
    ]);
    assert_eq!(answers[1]["error"], "malformed");
    assert_eq!(answers[2]["error"], "duplicate");
    assert_eq!(answers[2]["original"], "malformed");
    assert_eq!(answers[3]["error"], "invalid_amount");
    assert_eq!(answers[4]["original"], "invalid_amount");
}

#[test]
fn a_duplicate_beyond_the_window_omits_the_original() {
    let mut lines = vec![r#"{"op":"open_account","account":1,"req":1}"#.to_string()];
    for req in 2..=100 {
        lines.push(format!(
            r#"{{"op":"deposit","account":1,"amount":"1.00","req":{req}}}"#
        ));
    }
    lines.push(r#"{"op":"deposit","account":1,"amount":"1.00","req":2}"#.to_string());
    lines.push(r#"{"op":"deposit","account":1,"amount":"1.00","req":100}"#.to_string());
    lines.push(r#"{"op":"balance","account":1}"#.to_string());
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let answers = run_memory(&refs);
    let n = answers.len();
    assert_eq!(answers[n - 3]["error"], "duplicate");
    assert!(
        answers[n - 3].get("original").is_none(),
        "{}",
        answers[n - 3]
    );
    assert_eq!(answers[n - 2]["error"], "duplicate");
    assert_eq!(answers[n - 2]["original"], "ok");
    assert_eq!(answers[n - 1]["balance"], "99.00");
}

/// A `run` child on a journal, driven line by line.
struct Live {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Live {
    fn start(dir: &Path, durability: &str, extra: &[&str]) -> Live {
        let mut child = ringledger()
            .args(["run", "--rebate-rate", "0", "--journal-dir"])
            .arg(dir)
            .args(["--durability", durability])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Live {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, line: &str) -> Value {
        writeln!(self.stdin, "{line}").unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer:?}: {e}"))
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn retry_after_sigkill_is_a_duplicate(durability: &str) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut first = Live::start(dir.path(), durability, &[]);
    assert_eq!(
        first.ask(r#"{"op":"open_account","account":1,"req":1}"#)["ok"],
        true
    );
    let deposit = r#"{"op":"deposit","account":1,"amount":"5.00","req":2}"#;
    assert_eq!(first.ask(deposit)["balance"], "5.00");
    first.sigkill();

    let mut second = Live::start(dir.path(), durability, &[]);
    let again = second.ask(deposit);
    assert_eq!(again["error"], "duplicate", "{again}");
    assert_eq!(again["original"], "ok", "{again}");
    assert_eq!(
        second.ask(r#"{"op":"balance","account":1}"#)["balance"],
        "5.00"
    );
    second.sigkill();

    // Another session numbers on its own; the default one still remembers.
    let answers = run(
        &["--journal-dir", dir.path().to_str().unwrap()],
        &[
            r#"{"op":"deposit","account":1,"amount":"5.00","req":2}"#,
            r#"{"op":"balance","account":1}"#,
        ],
    );
    assert_eq!(answers[0]["error"], "duplicate");
    let answers = run(
        &[
            "--journal-dir",
            dir.path().to_str().unwrap(),
            "--session",
            "other",
        ],
        &[
            r#"{"op":"deposit","account":1,"amount":"5.00","req":2}"#,
            r#"{"op":"balance","account":1}"#,
        ],
    );
    assert_eq!(answers[0]["balance"], "10.00", "{}", answers[0]);
}

#[test]
fn a_retry_after_sigkill_and_restart_is_a_duplicate_in_async_mode() {
    retry_after_sigkill_is_a_duplicate("async");
}

#[test]
fn a_retry_after_sigkill_and_restart_is_a_duplicate_in_sync_mode() {
    retry_after_sigkill_is_a_duplicate("sync");
}

/// The same through the library: a session resumed by name after the
/// engine stopped (dropped the first time, shut down after that; a crash
/// cannot be staged in-process, since the journal lock stays with the
/// leaked engine: the SIGKILL tests above cover it).
#[test]
fn a_library_session_resumed_by_name_after_a_restart_refuses_the_retry() {
    use ringledger::journal::Durability;
    use ringledger::{Answer, Engine, Reject, Reply, Request};

    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let start = || {
        Engine::builder()
            .rebate_policy(ringledger::RateRebate::new(0.into()).unwrap())
            .journal(dir.path(), Durability::Sync)
            .start()
            .unwrap()
    };
    let deposit = Request::Deposit {
        account: 1,
        amount: 500,
    };
    {
        let engine = start();
        let mut client = engine.session("wallet-gateway").unwrap();
        assert_eq!(client.last_req(), 0);
        client
            .call_numbered(Request::OpenAccount { account: 1 }, 1)
            .unwrap()
            .unwrap();
        assert_eq!(
            client.call_numbered(deposit, 2).unwrap(),
            Ok(Reply::Moved { balance: 500 })
        );
    }
    for _ in 0..2 {
        let engine = start();
        let mut client = engine.session("wallet-gateway").unwrap();
        assert_eq!(client.last_req(), 2, "numbering resumes where it was");
        assert_eq!(
            client.call_numbered(deposit, 2).unwrap(),
            Err(Reject::Duplicate {
                req: 2,
                last: 2,
                original: Some(Answer::Ok)
            })
        );
        let balance = client.call(Request::Balance { account: 1 }).unwrap();
        assert!(
            matches!(balance, Ok(Reply::Balance { balance: 500, .. })),
            "{balance:?}"
        );
        drop(client);
        engine.shutdown().unwrap();
    }
}

/// Idle retirement in sequencer time, through `run --clock manual`: the
/// session idles past 7 days, its numbers are refused, and a later `run`
/// cannot reopen the name; another name works. `inspect` shows the session
/// records, and a replay agrees with the live digest.
#[test]
fn an_idle_session_retires_and_its_name_is_refused_after_a_restart() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let journal = ["--journal-dir", dir.path().to_str().unwrap()];
    let week_ms = 7 * 24 * 3600 * 1000u64;
    let late = format!(r#"{{"op":"tick","now_ms":{}}}"#, week_ms + 2);
    let answers = run(
        &[&journal[..], &["--clock", "manual"]].concat(),
        &[
            r#"{"op":"open_account","account":1,"req":1}"#,
            r#"{"op":"deposit","account":1,"amount":"1.005","req":2}"#,
            r#"{"op":"tick","now_ms":1}"#,
            r#"{"op":"deposit","account":1,"amount":"1.00","req":3}"#,
            &late,
            r#"{"op":"deposit","account":1,"amount":"1.00","req":4}"#,
            r#"{"op":"deposit","account":1,"amount":"1.00"}"#,
        ],
    );
    assert_eq!(answers[3]["balance"], "1.00");
    assert_eq!(answers[5]["error"], "session_expired", "{}", answers[5]);
    assert_eq!(answers[6]["balance"], "2.00", "unnumbered lines still work");

    let refused = ringledger()
        .args(["run", "--clock", "manual"])
        .args(journal)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("\"default\"") && stderr.contains("--session"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("SessionName("),
        "the name as the user wrote it, not Rust's debug form: {stderr}"
    );

    let answers = run(
        &[&journal[..], &["--clock", "manual", "--session", "next"]].concat(),
        &[
            r#"{"op":"deposit","account":1,"amount":"1.00","req":4}"#,
            r#"{"op":"barrier"}"#,
            r#"{"op":"digest"}"#,
        ],
    );
    assert_eq!(answers[0]["balance"], "3.00");
    let live_digest = answers[2]["digest"].clone();

    let replay = ringledger()
        .args(["replay", "--json", "--journal-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let replay: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(replay["digest"], live_digest);

    let inspect = ringledger()
        .args(["inspect", "--journal-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(inspect.status.success());
    let records: Vec<Value> = String::from_utf8(inspect.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: Vec<&str> = records.iter().map(|r| r["op"].as_str().unwrap()).collect();
    assert_eq!(
        ops.iter().filter(|&&op| op == "open_session").count(),
        3,
        "{ops:?}"
    );
    let rejected = records.iter().find(|r| r["op"] == "rejected").unwrap();
    assert_eq!(rejected["code"], "invalid_amount");
    assert_eq!(rejected["req"], 2);
    assert_eq!(rejected["error"], "invalid_amount");
    let expired = records
        .iter()
        .find(|r| r["error"] == "session_expired")
        .unwrap();
    assert_eq!(expired["req"], 4);
}

//! Crash recovery with a real child process: `ringledger run` journals a
//! stream of deposits, the parent records every acknowledged one, SIGKILLs
//! the child mid-stream, and a new process recovers from the journal.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;

use serde_json::Value;

fn ringledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringledger"))
}

fn cents(text: &str) -> i64 {
    let (whole, frac) = text.split_once('.').unwrap_or((text, "0"));
    whole.parse::<i64>().unwrap() * 100 + format!("{frac:0<2}")[..2].parse::<i64>().unwrap()
}

fn run_lines(dir: &Path, durability: &str, lines: &[&str]) -> Vec<Value> {
    let mut child = ringledger()
        .args(["run", "--journal-dir"])
        .arg(dir)
        .args(["--durability", durability])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
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
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn crash_and_recover(durability: &str, journal_thread: &str) {
    const DEPOSITS: u64 = 50_000;
    const KILL_AFTER: usize = 3_000;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut child = ringledger()
        .args(["run", "--journal-dir"])
        .arg(dir.path())
        .args(["--durability", durability])
        .args(["--journal-thread", journal_thread])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let writer = thread::spawn(move || {
        let _ = writeln!(stdin, r#"{{"op":"open_account","account":1,"req":1}}"#);
        for i in 1..=DEPOSITS {
            let line = format!(
                r#"{{"op":"deposit","account":1,"amount":"{}.{:02}","req":{}}}"#,
                i / 100,
                i % 100,
                i + 1
            );
            if writeln!(stdin, "{line}").is_err() {
                return; // the child is gone
            }
        }
    });
    // Line k's answer acknowledges deposit k (line 0 opens the account).
    let mut acknowledged = Vec::new();
    for (k, line) in stdout.lines().enumerate() {
        let answer: Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_eq!(answer["ok"], Value::Bool(true), "{answer}");
        if k > 0 {
            acknowledged.push(k as i64);
        }
        if k == KILL_AFTER {
            child.kill().unwrap(); // SIGKILL: no chance to flush or snapshot
            break;
        }
    }
    child.wait().unwrap();
    writer.join().unwrap();

    // Recover in a new process; let owed rebates be credited.
    let answers = run_lines(
        dir.path(),
        durability,
        &[r#"{"op":"barrier"}"#, r#"{"op":"balance","account":1}"#],
    );
    let balance = cents(answers[1]["balance"].as_str().unwrap());

    // What the journal holds, with outcomes.
    let out = ringledger()
        .args(["inspect", "--journal-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut deposits: HashMap<u64, i64> = HashMap::new();
    let mut credits: HashMap<u64, Vec<i64>> = HashMap::new();
    for r in &records {
        match r["op"].as_str().unwrap() {
            "deposit" if r["ok"] == Value::Bool(true) => {
                deposits.insert(
                    r["seq"].as_u64().unwrap(),
                    cents(r["amount"].as_str().unwrap()),
                );
            }
            "credit_rebate" if r["credited"] == Value::Bool(true) => {
                credits
                    .entry(r["deposit_seq"].as_u64().unwrap())
                    .or_default()
                    .push(cents(r["amount"].as_str().unwrap()));
            }
            _ => {}
        }
    }
    // Nothing acknowledged was lost: every acknowledged deposit is journaled.
    let journaled: std::collections::HashSet<i64> = deposits.values().copied().collect();
    for amount in &acknowledged {
        assert!(
            journaled.contains(amount),
            "acknowledged deposit of {amount} cents lost"
        );
    }
    assert!(journaled.len() >= acknowledged.len());
    // Every journaled deposit got exactly one rebate of 1%, none invented.
    for (seq, amount) in &deposits {
        let got = credits.get(seq).cloned().unwrap_or_default();
        assert_eq!(got, vec![amount / 100], "deposit at seq {seq} of {amount}");
    }
    assert!(credits.keys().all(|seq| deposits.contains_key(seq)));
    let expected: i64 = deposits.values().map(|a| a + a / 100).sum();
    assert_eq!(balance, expected);

    // A full replay agrees with a snapshot-based one.
    let full = ringledger()
        .args(["replay", "--json", "--journal-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let snap = ringledger()
        .args(["replay", "--json", "--from-snapshot", "--journal-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let full: Value = serde_json::from_slice(&full.stdout).unwrap();
    let snap: Value = serde_json::from_slice(&snap.stdout).unwrap();
    assert_eq!(full["digest"], snap["digest"]);
}

#[test]
fn sigkill_in_async_mode_loses_nothing_acknowledged_and_rebates_once() {
    crash_and_recover("async", "business");
}

#[test]
fn sigkill_in_sync_mode_loses_nothing_acknowledged_and_rebates_once() {
    crash_and_recover("sync", "business");
}

#[test]
fn sigkill_with_the_flusher_in_async_mode_loses_nothing_acknowledged() {
    crash_and_recover("async", "flusher");
}

#[test]
fn sigkill_with_the_flusher_in_sync_mode_loses_nothing_acknowledged() {
    crash_and_recover("sync", "flusher");
}

#[test]
fn recovery_twice_in_a_row_changes_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let first = run_lines(
        dir.path(),
        "async",
        &[
            r#"{"op":"open_account","account":1}"#,
            r#"{"op":"deposit","account":1,"amount":"10.00"}"#,
            r#"{"op":"barrier"}"#,
            r#"{"op":"balance","account":1}"#,
        ],
    );
    assert_eq!(first[3]["balance"], "10.10");
    for _ in 0..2 {
        let again = run_lines(
            dir.path(),
            "async",
            &[r#"{"op":"barrier"}"#, r#"{"op":"balance","account":1}"#],
        );
        assert_eq!(again[1]["balance"], "10.10");
    }
}

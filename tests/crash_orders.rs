//! SIGKILL with resting orders: `ringledger run` (sync durability) takes a
//! stream of numbered places that rest and trade; the parent records every
//! acknowledged answer, kills the child mid-stream, and checks the journal
//! and a recovered process: every acknowledged order and trade is there
//! with the same outcome, and the holds equal what the books need.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;

use serde_json::{json, Value};

const ORDERS: u64 = 20_000;
const KILL_AFTER: usize = 1_500;
const SETUP: [&str; 6] = [
    r#"{"op":"list_instrument","instrument":"ACME","shares":1000000,"price":"0.01"}"#,
    r#"{"op":"open_account","account":1}"#,
    r#"{"op":"open_account","account":2}"#,
    r#"{"op":"deposit","account":1,"amount":"1000000.00"}"#,
    r#"{"op":"deposit","account":2,"amount":"1000.00"}"#,
    r#"{"op":"reserve","reservation":1,"account":2,"instrument":"ACME","qty":100000}"#,
];

fn ringledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringledger"))
}

fn cents(text: &str) -> i64 {
    let (whole, frac) = text.split_once('.').unwrap();
    whole.parse::<i64>().unwrap() * 100 + frac.parse::<i64>().unwrap()
}

fn run_lines(dir: &Path, lines: &[&str]) -> Vec<Value> {
    let mut child = ringledger()
        .args([
            "run",
            "--durability",
            "sync",
            "--rebate-rate",
            "0",
            "--journal-dir",
        ])
        .arg(dir)
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
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Order `i`: account 1 bids at 0.90..0.99, and every fourth order account
/// 2 sells at 0.90 into the bids (trading, and resting what is left).
fn order_line(i: u64) -> String {
    if i % 4 == 3 {
        format!(
            r#"{{"op":"place","order":{i},"account":2,"instrument":"ACME","side":"sell","qty":{},"price":"0.90","req":{i}}}"#,
            1 + i % 7
        )
    } else {
        format!(
            r#"{{"op":"place","order":{i},"account":1,"instrument":"ACME","side":"buy","qty":{},"price":"0.{}","req":{i}}}"#,
            1 + i % 5,
            90 + i % 10
        )
    }
}

#[test]
fn sigkill_with_resting_orders_loses_nothing_acknowledged_and_holds_stay_right() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let setup = run_lines(dir.path(), &SETUP);
    assert!(setup.iter().all(|a| a["ok"] == json!(true)), "{setup:?}");
    run_lines(dir.path(), &[r#"{"op":"confirm","reservation":1}"#]);

    let mut child = ringledger()
        .args([
            "run",
            "--durability",
            "sync",
            "--rebate-rate",
            "0",
            "--journal-dir",
        ])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let writer = thread::spawn(move || {
        for i in 1..=ORDERS {
            if writeln!(stdin, "{}", order_line(i)).is_err() {
                return; // the child is gone
            }
        }
    });
    // Answer k acknowledges order k + 1.
    let mut acknowledged: Vec<Value> = Vec::new();
    for line in stdout.lines() {
        let answer: Value = serde_json::from_str(&line.unwrap()).unwrap();
        assert_eq!(answer["ok"], json!(true), "{answer}");
        acknowledged.push(answer);
        if acknowledged.len() == KILL_AFTER {
            child.kill().unwrap(); // SIGKILL
            break;
        }
    }
    child.wait().unwrap();
    writer.join().unwrap();

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
    let journaled: HashMap<u64, Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["op"] == json!("place"))
        .map(|r| (r["req"].as_u64().unwrap(), r))
        .collect();
    assert!(journaled.len() >= acknowledged.len());
    let mut trades = 0;
    for (k, answer) in acknowledged.iter().enumerate() {
        let record = &journaled[&(k as u64 + 1)];
        for field in [
            "order",
            "status",
            "filled",
            "resting",
            "trades",
            "stp_cancelled",
        ] {
            assert_eq!(
                record[field],
                answer[field],
                "order {} field {field}",
                k + 1
            );
        }
        trades += answer["trades"].as_array().unwrap().len();
    }
    assert!(
        trades > 100,
        "the stream traded ({trades} acknowledged trades)"
    );

    // A recovered process: what the books rest is exactly what is held.
    let a = run_lines(
        dir.path(),
        &[
            r#"{"op":"book","instrument":"ACME","depth":1000}"#,
            r#"{"op":"balance","account":1}"#,
            r#"{"op":"holdings","account":2}"#,
        ],
    );
    let bids_value: i64 = a[0]["bids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| cents(l["price"].as_str().unwrap()) * l["qty"].as_i64().unwrap())
        .sum();
    let asks_qty: i64 = a[0]["asks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["qty"].as_i64().unwrap())
        .sum();
    assert!(bids_value > 0, "orders rest after recovery");
    assert_eq!(cents(a[1]["held"].as_str().unwrap()), bids_value);
    assert_eq!(a[2]["held"]["ACME"].as_i64().unwrap_or(0), asks_qty);
}

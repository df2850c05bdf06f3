//! `ringledger run` end to end, through a real child process and pipes.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

fn ringledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringledger"))
}

/// Runs a whole script (raw bytes: it need not be UTF-8) and returns one
/// parsed answer per output line.
fn run_bytes(args: &[&str], script: &[u8]) -> Vec<Value> {
    let mut child = ringledger()
        .arg("run")
        .args(["--durability", "none"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn run_script(args: &[&str], script: &str) -> Vec<Value> {
    run_bytes(args, script.as_bytes())
}

#[test]
fn blank_and_non_utf8_lines_are_answered_too() {
    let answers = run_bytes(
        &[],
        b"{\"op\":\"open_account\",\"account\":1}\n\n\xff\xfe\n   \n{\"op\":\"balance\",\"account\":1}\r\n",
    );
    assert_eq!(answers.len(), 5, "{answers:?}");
    for blank in &answers[1..4] {
        assert_eq!(blank["error"], "malformed");
    }
    assert_eq!(answers[4]["balance"], "0.00");
}

#[test]
fn script_gets_one_answer_per_line_in_order() {
    let script = r#"{"op":"open_account","account":1}
{"op":"open_account","account":2}
{"op":"open_account","account":1}
{"op":"deposit","account":1,"amount":"100.00"}
{"op":"withdraw","account":1,"amount":"30.25"}
{"op":"withdraw","account":1,"amount":"500"}
{"op":"transfer","from":1,"to":2,"amount":"9.75"}
{"op":"barrier"}
{"op":"balance","account":1}
{"op":"balance","account":2}
{"op":"deposit","account":1,"amount":"0"}
{"op":"deposit","account":1,"amount":"1.001"}
{"op":"deposit","account":1,"amount":"99999999999999999999999"}
{"op":"deposit","account":3,"amount":"1"}
{"op":"history","account":2,"limit":10}
"#;
    let answers = run_script(&["--clock", "manual", "--rebate-rate", "0"], script);
    let expected = vec![
        json!({"ok": true}),
        json!({"ok": true}),
        json!({"ok": false, "error": "account_exists"}),
        json!({"ok": true, "balance": "100.00"}),
        json!({"ok": true, "balance": "69.75"}),
        json!({"ok": false, "error": "insufficient_funds"}),
        json!({"ok": true}),
        json!({"ok": true}),
        json!({"ok": true, "balance": "60.00", "held": "0.00", "available": "60.00"}),
        json!({"ok": true, "balance": "9.75", "held": "0.00", "available": "9.75"}),
        json!({"ok": false, "error": "invalid_amount"}),
        json!({"ok": false, "error": "invalid_amount"}),
        json!({"ok": false, "error": "overflow"}),
        json!({"ok": false, "error": "unknown_account"}),
    ];
    assert_eq!(answers.len(), expected.len() + 1);
    for (i, (got, want)) in answers.iter().zip(&expected).enumerate() {
        for (key, value) in want.as_object().unwrap() {
            assert_eq!(got.get(key), Some(value), "line {}: {got}", i + 1);
        }
        if got["ok"] == json!(false) {
            assert!(
                got["message"].as_str().is_some_and(|m| !m.is_empty()),
                "line {}: {got}",
                i + 1
            );
        }
    }
    let entries = answers.last().unwrap()["entries"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0]["kind"], "transfer_in");
    assert_eq!(entries[0]["amount"], "9.75");
}

#[test]
fn malformed_lines_are_answered_and_skipped() {
    let script = "not json\n[1,2]\n{\"op\":\"fly\"}\n{\"account\":1}\n{\"op\":\"open_account\"}\n\
{\"op\":\"open_account\",\"account\":\"one\"}\n{\"op\":\"open_account\",\"account\":-1}\n\
{\"op\":\"deposit\",\"account\":1,\"amount\":10.5}\n{\"op\":\"tick\",\"now_ms\":5}\n\
{\"op\":\"open_account\",\"account\":1}\n";
    let answers = run_script(&[], script);
    assert_eq!(answers.len(), 10);
    for answer in &answers[..9] {
        assert_eq!(answer["ok"], json!(false), "{answer}");
        assert_eq!(answer["error"], "malformed", "{answer}");
    }
    assert_eq!(answers[9], json!({"ok": true}));
}

#[test]
fn share_sale_with_reservations_and_manual_expiry() {
    let script = r#"{"op":"open_account","account":1}
{"op":"deposit","account":1,"amount":"100.00"}
{"op":"list_instrument","instrument":"ACME","shares":10,"price":"2.50"}
{"op":"list_instrument","instrument":"ACME","shares":10,"price":"2.50"}
{"op":"reserve","reservation":1,"account":1,"instrument":"ACME","qty":4}
{"op":"reserve","reservation":2,"account":1,"instrument":"ACME","qty":4,"ttl_ms":1000}
{"op":"reserve","reservation":3,"account":1,"instrument":"ACME","qty":5}
{"op":"reserve","reservation":3,"account":1,"instrument":"ACME","qty":5,"partial":true}
{"op":"reserve","reservation":4,"account":1,"instrument":"NOPE","qty":1}
{"op":"reserve","reservation":1,"account":1,"instrument":"ACME","qty":1}
{"op":"confirm","reservation":1}
{"op":"tick","now_ms":5000}
{"op":"confirm","reservation":2}
{"op":"cancel","reservation":3}
{"op":"confirm","reservation":99}
{"op":"instrument","instrument":"ACME"}
{"op":"holdings","account":1}
{"op":"balance","account":1}
"#;
    let a = run_script(&["--clock", "manual", "--rebate-rate", "0"], script);
    let codes: Vec<Value> = a
        .iter()
        .map(|v| v.get("error").cloned().unwrap_or(json!("ok")))
        .collect();
    assert_eq!(
        codes,
        vec![
            json!("ok"),
            json!("ok"),
            json!("ok"),
            json!("instrument_exists"),
            json!("ok"),
            json!("ok"),
            json!("insufficient_shares"),
            json!("ok"),
            json!("unknown_instrument"),
            json!("reservation_exists"),
            json!("ok"),
            json!("ok"),
            json!("reservation_expired"),
            json!("ok"),
            json!("unknown_reservation"),
            json!("ok"),
            json!("ok"),
            json!("ok"),
        ]
    );
    assert_eq!(a[7]["qty"], 2);
    assert_eq!(
        a[15],
        json!({"ok": true, "supply": 10, "available": 6, "reserved": 0, "sold": 4, "price": "2.50"})
    );
    assert_eq!(
        a[16],
        json!({"ok": true, "shares": {"ACME": 4}, "held": {}})
    );
    assert_eq!(a[17]["balance"], "90.00");
}

#[test]
fn barrier_waits_for_every_rebate() {
    let script = r#"{"op":"open_account","account":1}
{"op":"deposit","account":1,"amount":"100.00"}
{"op":"deposit","account":1,"amount":"10.99"}
{"op":"deposit","account":1,"amount":"0.99"}
{"op":"barrier"}
{"op":"balance","account":1}
{"op":"history","account":1,"limit":10}
"#;
    let a = run_script(&[], script);
    // 1% of each deposit, rounded toward zero: 1.00 + 0.10 + 0.00.
    assert_eq!(a[5]["balance"], "113.08");
    let kinds: Vec<&str> = a[6]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "rebate").count(),
        2,
        "a zero rebate is not an entry: {kinds:?}"
    );
    assert_eq!(kinds.len(), 5);
    let a = run_script(&["--rebate-rate", "0.5", "--scale", "0"], "{\"op\":\"open_account\",\"account\":1}\n{\"op\":\"deposit\",\"account\":1,\"amount\":\"7\"}\n{\"op\":\"barrier\"}\n{\"op\":\"balance\",\"account\":1}\n");
    assert_eq!(a[3]["balance"], "10");
}

#[test]
fn request_numbers_make_retries_duplicates() {
    let script = r#"{"op":"open_account","account":1,"req":1}
{"op":"deposit","account":1,"amount":"5.00","req":2}
{"op":"deposit","account":1,"amount":"5.00","req":2}
{"op":"deposit","account":1,"amount":"5.00"}
{"op":"balance","account":1}
"#;
    let a = run_script(&["--rebate-rate", "0"], script);
    assert_eq!(a[2]["error"], "duplicate");
    assert_eq!(a[3]["balance"], "10.00");
    assert_eq!(a[4]["balance"], "10.00");
}

#[test]
fn answers_stream_line_by_line_through_pipes() {
    let mut child = ringledger()
        .args(["run", "--durability", "none"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    for (i, line) in [
        r#"{"op":"open_account","account":7}"#,
        r#"{"op":"deposit","account":7,"amount":"1.00"}"#,
        r#"{"op":"digest"}"#,
    ]
    .iter()
    .enumerate()
    {
        // The next line is written only after this one's answer arrived.
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        stdout.read_line(&mut answer).unwrap();
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["ok"], json!(true), "line {i}: {answer}");
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn bad_arguments_fail_with_a_clear_message() {
    let out = ringledger()
        .args(["run", "--scale", "40"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("scale 40"));
    let out = ringledger()
        .args(["run", "--rebate-rate", "2"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("between 0 and 1"));
}

#[test]
fn deposit_without_room_for_its_rebate_is_overflow_and_changes_nothing() {
    let script = r#"{"op":"open_account","account":1}
{"op":"deposit","account":1,"amount":"92233720368547758.07"}
{"op":"barrier"}
{"op":"balance","account":1}
{"op":"deposit","account":1,"amount":"46116860184273879.03"}
{"op":"barrier"}
{"op":"balance","account":1}
"#;
    let answers = run_script(&[], script);
    assert_eq!(answers[1]["error"], "overflow", "{}", answers[1]);
    assert_eq!(answers[3]["balance"], "0.00");
    // Half of i64::MAX units: the deposit and its 1% rebate both fit.
    assert_eq!(answers[4]["balance"], "46116860184273879.03");
    assert_eq!(answers[6]["balance"], "46578028786116617.82");
}

/// Answers `lines` one at a time: each line is written only after the
/// previous one's answer was read, as an interactive client does.
fn run_interactively(args: &[&str], lines: &[String]) -> Vec<Value> {
    let mut child = ringledger()
        .arg("run")
        .args(["--durability", "none"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let answers = lines
        .iter()
        .map(|line| {
            writeln!(stdin, "{line}").unwrap();
            stdin.flush().unwrap();
            let mut answer = String::new();
            stdout.read_line(&mut answer).unwrap();
            serde_json::from_str(&answer).unwrap()
        })
        .collect();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    answers
}

/// A script whose lines depend on earlier ones' effects: a reserve naming a
/// symbol listed the line before, a tick between a reservation and its
/// confirmation, numbered refusals and their retries, and more lines than
/// `run` keeps in flight.
fn mixed_script() -> Vec<String> {
    let mut lines: Vec<String> = [
        r#"{"op":"open_account","account":1,"req":1}"#,
        r#"{"op":"deposit","account":1,"amount":"100.00","req":2}"#,
        r#"{"op":"list_instrument","instrument":"ACME","shares":10,"price":"2.50","req":3}"#,
        r#"{"op":"reserve","reservation":1,"account":1,"instrument":"ACME","qty":4,"ttl_ms":1000,"req":4}"#,
        r#"{"op":"instrument","instrument":"ACME"}"#,
        r#"{"op":"tick","now_ms":5000}"#,
        r#"{"op":"confirm","reservation":1,"req":5}"#,
        r#"{"op":"deposit","account":1,"amount":"x","req":6}"#,
        r#"{"op":"deposit","account":1,"amount":"1.00","req":6}"#,
        r#"{"op":"list_instrument","instrument":"BOLT","shares":5,"price":"1.00"}"#,
        r#"{"op":"instrument","instrument":"BOLT"}"#,
        r#"{"op":"reserve","reservation":2,"account":1,"instrument":"BOLT","qty":5}"#,
        r#"{"op":"confirm","reservation":2}"#,
        "not json",
        r#"{"op":"balance","account":2}"#,
    ]
    .map(String::from)
    .to_vec();
    for i in 0..3000 {
        lines.push(format!(
            r#"{{"op":"deposit","account":1,"amount":"0.{:02}"}}"#,
            i % 99 + 1
        ));
        if i % 700 == 0 {
            lines.push(r#"{"op":"history","account":1,"limit":3}"#.into());
            lines.push(format!(r#"{{"op":"tick","now_ms":{}}}"#, 6000 + i));
        }
    }
    lines.push(r#"{"op":"barrier"}"#.into());
    lines.push(r#"{"op":"holdings","account":1}"#.into());
    lines.push(r#"{"op":"balance","account":1}"#.into());
    lines
}

#[test]
fn pipelined_answers_are_in_order_and_match_interactive_ones() {
    let args = ["--clock", "manual", "--rebate-rate", "0"];
    let lines = mixed_script();
    let pipelined = run_script(&args, &(lines.join("\n") + "\n"));
    assert_eq!(pipelined.len(), lines.len());
    let codes: Vec<Value> = pipelined[..15]
        .iter()
        .map(|v| v.get("error").cloned().unwrap_or(json!("ok")))
        .collect();
    assert_eq!(
        codes,
        vec![
            json!("ok"),
            json!("ok"),
            json!("ok"),
            json!("ok"),
            json!("ok"),
            json!("ok"),
            json!("reservation_expired"),
            json!("invalid_amount"),
            json!("duplicate"),
            json!("ok"),
            json!("ok"),
            json!("ok"),
            json!("ok"),
            json!("malformed"),
            json!("unknown_account"),
        ]
    );
    assert_eq!(pipelined[4]["reserved"], 4);
    assert_eq!(pipelined[8]["original"], "invalid_amount");
    assert_eq!(pipelined[10]["available"], 5);
    // Each deposit's answer carries the balance after it, in script order
    // (the BOLT sale took 5.00 of the first 100.00).
    let mut cents = 9_500u64;
    let deposits = lines.iter().zip(&pipelined).skip(15);
    for (line, answer) in deposits.filter(|(line, _)| line.contains("deposit")) {
        cents += line[line.len() - 4..line.len() - 2].parse::<u64>().unwrap();
        let expected = format!("{}.{:02}", cents / 100, cents % 100);
        assert_eq!(answer["balance"], json!(expected), "{line}");
    }
    assert_eq!(
        pipelined[pipelined.len() - 2],
        json!({"ok": true, "shares": {"BOLT": 5}, "held": {}})
    );
    let interactive = run_interactively(&args, &lines);
    assert_eq!(interactive.len(), lines.len());
    // Rebate credits (zero here) are sequenced whenever the rebate thread
    // sends them, so history `seq`s (and the digest) depend on timing;
    // nothing else does.
    let without_seqs = |mut answers: Vec<Value>| {
        for entry in answers
            .iter_mut()
            .filter_map(|a| a.get_mut("entries")?.as_array_mut())
            .flatten()
        {
            entry.as_object_mut().unwrap().remove("seq");
        }
        answers
    };
    let (pipelined, interactive) = (without_seqs(pipelined), without_seqs(interactive));
    for ((line, pipelined), interactive) in lines.iter().zip(&pipelined).zip(&interactive) {
        assert_eq!(pipelined, interactive, "{line}");
    }
}

//! `ringledger run` at its edges, through a real child process: the one
//! accepted form of an amount, repeated JSON keys, time that would go
//! backwards, and history cut by retention.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

/// Runs `lines` (each a JSON value, or raw text) through `ringledger run
/// ARGS` and returns one parsed answer per line.
fn run(args: &[&str], lines: &[String]) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut script = lines.join("\n");
    script.push('\n');
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), lines.len(), "{answers:?}");
    answers
}

fn no_journal(extra: &[&'static str]) -> Vec<&'static str> {
    let mut args = vec!["--durability", "none", "--rebate-rate", "0"];
    args.extend_from_slice(extra);
    args
}

fn line(value: Value) -> String {
    value.to_string()
}

/// Every amount issue 9 found accepted or rounded, plus their relatives.
const NOT_ONE_FORM: [&str; 22] = [
    "0.010000000000000000000000000000001",
    "1.00999999999999999999999999999",
    "0.01000000000000000000000000001",
    "1.004999999999999999999999999999",
    "1e5",
    "1E2",
    "1.5e1",
    "1e-2",
    "1_000",
    "1__0",
    "1.0_1",
    " 10",
    "10 ",
    "\t10",
    "10\n",
    "+10",
    ".5",
    "5.",
    "1.005",
    "1.500",
    "-1",
    "0.00",
];

#[test]
fn amounts_outside_the_one_form_are_invalid_and_change_nothing() {
    let mut lines = vec![
        line(json!({"op":"open_account","account":1})),
        line(json!({"op":"open_account","account":2})),
        line(json!({"op":"deposit","account":1,"amount":"10.00"})),
    ];
    for (i, bad) in NOT_ONE_FORM.iter().enumerate() {
        lines.push(line(json!({"op":"deposit","account":1,"amount":bad})));
        lines.push(line(json!({"op":"withdraw","account":1,"amount":bad})));
        lines.push(line(json!({"op":"transfer","from":1,"to":2,"amount":bad})));
        lines.push(line(
            json!({"op":"list_instrument","instrument":format!("X{i}"),"shares":10,"price":bad}),
        ));
    }
    let probes = lines.len();
    lines.push(line(json!({"op":"barrier"})));
    lines.push(line(json!({"op":"balance","account":1})));
    lines.push(line(json!({"op":"balance","account":2})));
    lines.push(line(json!({"op":"instrument","instrument":"X0"})));
    let answers = run(&no_journal(&[]), &lines);
    for (sent, answer) in lines[3..probes].iter().zip(&answers[3..probes]) {
        assert_eq!(answer["error"], "invalid_amount", "{sent} -> {answer}");
    }
    assert_eq!(answers[probes + 1]["balance"], "10.00");
    assert_eq!(answers[probes + 2]["balance"], "0.00");
    assert_eq!(answers[probes + 3]["error"], "unknown_instrument");
}

#[test]
fn amount_messages_quote_the_input_as_given() {
    let long = "1".repeat(300) + "x";
    let lines = [
        line(json!({"op":"open_account","account":1})),
        line(json!({"op":"deposit","account":1,"amount":"1.004999999999999999999999999999"})),
        line(json!({"op":"deposit","account":1,"amount":"\t10"})),
        line(json!({"op":"deposit","account":1,"amount":long})),
    ];
    let answers = run(&no_journal(&[]), &lines);
    let message = |i: usize| answers[i]["message"].as_str().unwrap().to_string();
    assert!(
        message(1).contains("\"1.004999999999999999999999999999\""),
        "{}",
        message(1)
    );
    assert!(message(2).contains(r#""\t10""#), "{}", message(2));
    assert!(message(3).len() < 250, "{}", message(3));
    assert!(
        message(3).contains(&format!("\"{}\"…", "1".repeat(40))),
        "{}",
        message(3)
    );
}

#[test]
fn a_well_formed_amount_too_large_is_overflow_however_long() {
    let lines = [
        line(json!({"op":"open_account","account":1})),
        line(json!({"op":"deposit","account":1,"amount":"9".repeat(19)})),
        line(json!({"op":"deposit","account":1,"amount":"9".repeat(32)})),
        line(json!({"op":"deposit","account":1,"amount":format!("{}.99", "9".repeat(60))})),
        line(json!({"op":"balance","account":1})),
    ];
    let answers = run(&no_journal(&[]), &lines);
    for answer in &answers[1..4] {
        assert_eq!(answer["error"], "overflow", "{answer}");
    }
    assert_eq!(answers[4]["balance"], "0.00");
}

#[test]
fn a_repeated_key_is_malformed_at_any_depth() {
    let lines: Vec<String> = [
        r#"{"op":"open_account","account":1}"#,
        r#"{"op":"deposit","account":1,"amount":"5.00"}"#,
        r#"{"op":"balance","op":"deposit","account":1,"amount":"5.00"}"#,
        r#"{"op":"deposit","account":1,"amount":"5.00","amount":"7.00"}"#,
        r#"{"op":"deposit","account":1,"account":1,"amount":"5.00"}"#,
        r#"{"op":"deposit","account":1,"amount":"5.00","note":{"a":1,"a":2}}"#,
        r#"{"op":"deposit","account":1,"amount":"5.00","note":[{"a":{"b":1,"b":1}}]}"#,
        r#"{"op":"deposit","account":1,"amount":"5.00","note":{"a":{"a":1}}}"#,
        r#"{"op":"balance","account":1}"#,
    ]
    .map(String::from)
    .to_vec();
    let answers = run(&no_journal(&[]), &lines);
    for (sent, answer) in lines[2..7].iter().zip(&answers[2..7]) {
        assert_eq!(answer["error"], "malformed", "{sent} -> {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains("repeated key"), "{message}");
    }
    assert!(answers[2]["message"]
        .as_str()
        .unwrap()
        .contains("repeated key \"op\""));
    assert_eq!(
        answers[7]["balance"], "10.00",
        "the same name at two depths is fine"
    );
    assert_eq!(answers[8]["balance"], "10.00");
}

/// `null` is not absent: a client whose `req` came out null would have its
/// deposit applied unnumbered, so a retry would apply it again. A null
/// optional field is as wrongly typed as any other value.
#[test]
fn a_null_optional_field_is_malformed_not_absent() {
    let lines: Vec<String> = [
        r#"{"op":"open_account","account":1}"#,
        r#"{"op":"deposit","account":1,"amount":"5.00","req":null}"#,
        r#"{"op":"list_instrument","instrument":"ACME","shares":10,"price":"1.00"}"#,
        r#"{"op":"reserve","reservation":1,"account":1,"instrument":"ACME","qty":1,"ttl_ms":null}"#,
        r#"{"op":"reserve","reservation":2,"account":1,"instrument":"ACME","qty":1,"partial":null}"#,
        r#"{"op":"balance","account":1}"#,
        r#"{"op":"place","order":1,"account":1,"instrument":"ACME","side":"buy","qty":1,"price":"1.00","tif":null}"#,
        r#"{"op":"place","order":2,"account":1,"instrument":"ACME","side":"buy","qty":1,"type":"market","price":null}"#,
        r#"{"op":"amend","order":1,"qty":1,"price":null}"#,
    ]
    .map(String::from)
    .to_vec();
    let answers = run(&no_journal(&[]), &lines);
    for (sent, answer) in [
        (1, "req"),
        (3, "ttl_ms"),
        (4, "partial"),
        (6, "tif"),
        (8, "price"),
    ] {
        assert_eq!(answers[sent]["error"], "malformed", "{}", answers[sent]);
        let message = answers[sent]["message"].as_str().unwrap();
        assert!(message.contains(answer), "{message}");
    }
    assert_eq!(answers[5]["balance"], "0.00", "nothing was applied");
    assert_eq!(
        answers[7]["error"], "invalid_order",
        "a market order with a price field, even null: {}",
        answers[7]
    );
}

fn tick(now_ms: u64) -> String {
    line(json!({"op":"tick","now_ms":now_ms}))
}

#[test]
fn time_going_backwards_is_malformed() {
    let lines = [tick(5_000), tick(3_000), tick(5_000), tick(6_000)];
    let answers = run(&no_journal(&["--clock", "manual"]), &lines);
    assert_eq!(answers[0], json!({"ok": true}));
    assert_eq!(answers[1]["error"], "malformed");
    let message = answers[1]["message"].as_str().unwrap();
    assert!(
        message.contains("5000") && message.contains("3000"),
        "{message}"
    );
    assert_eq!(answers[2], json!({"ok": true}), "the same time is fine");
    assert_eq!(answers[3], json!({"ok": true}));
}

#[test]
fn time_does_not_go_backwards_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let journal = |dir: &Path| {
        vec![
            "--journal-dir".to_string(),
            dir.display().to_string(),
            "--clock".into(),
            "manual".into(),
        ]
    };
    let args = journal(dir.path());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = run(&args, &[tick(5_000)]);
    assert_eq!(first[0], json!({"ok": true}));
    let again = run(&args, &[tick(3_000), tick(5_000), tick(7_000)]);
    assert_eq!(again[0]["error"], "malformed", "{again:?}");
    assert_eq!(again[1], json!({"ok": true}));
    assert_eq!(again[2], json!({"ok": true}));
}

fn history_script(deposits: usize, limits: &[u64]) -> Vec<String> {
    let mut lines = vec![line(json!({"op":"open_account","account":1}))];
    for _ in 0..deposits {
        lines.push(line(json!({"op":"deposit","account":1,"amount":"1.00"})));
    }
    for &limit in limits {
        lines.push(line(json!({"op":"history","account":1,"limit":limit})));
    }
    lines
}

/// (entries, truncated) of the last `n` answers.
fn histories(answers: &[Value], n: usize) -> Vec<(usize, bool)> {
    answers[answers.len() - n..]
        .iter()
        .map(|a| {
            (
                a["entries"].as_array().expect("entries").len(),
                a["truncated"].as_bool().expect("truncated"),
            )
        })
        .collect()
}

#[test]
fn history_says_when_retention_cut_it() {
    let limits = [1_000, 10, 32, 33];
    let answers = run(&no_journal(&[]), &history_script(82, &limits));
    assert_eq!(
        histories(&answers, 4),
        vec![(32, true), (10, false), (32, false), (32, true)]
    );
    let answers = run(
        &no_journal(&["--history", "100"]),
        &history_script(82, &limits),
    );
    assert_eq!(
        histories(&answers, 4),
        vec![(82, false), (10, false), (32, false), (33, false)]
    );
    let answers = run(
        &no_journal(&["--history", "5"]),
        &history_script(6, &[6, 5]),
    );
    assert_eq!(histories(&answers, 2), vec![(5, true), (5, false)]);
}

/// History retention is state: the journal records the one it was written
/// with, so a plain replay rebuilds the live state, and a restart asking
/// for another retention is refused instead of rebuilding another state.
#[test]
fn the_journal_keeps_its_history_retention_for_replay_and_refuses_another() {
    let dir = tempfile::tempdir().unwrap();
    let dir_arg = dir.path().display().to_string();
    let mut lines = history_script(40, &[]);
    lines.push(line(json!({"op":"barrier"})));
    lines.push(line(json!({"op":"digest"})));
    let answers = run(&["--journal-dir", &dir_arg, "--history", "100"], &lines);
    let live = answers.last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .args(["replay", "--json", "--journal-dir", &dir_arg])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["digest"].as_str().unwrap(), live);

    let out = Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .args(["run", "--journal-dir", &dir_arg, "--history", "32"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("history_per_account_max=100")
            && stderr.contains("history_per_account_max=32"),
        "{stderr}"
    );
}

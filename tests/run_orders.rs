//! The order-book ops of `ringledger run`, end to end through a child
//! process: field defaults, answers, error codes, and that a restart
//! (replay of the journal) brings the resting orders back.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

fn run(args: &[&str], script: &str) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .arg("run")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Two traders with cash and 10 ACME shares each.
const SETUP: &str = r#"{"op":"list_instrument","instrument":"ACME","shares":100,"price":"1.00"}
{"op":"open_account","account":1}
{"op":"open_account","account":2}
{"op":"deposit","account":1,"amount":"100.00"}
{"op":"deposit","account":2,"amount":"100.00"}
{"op":"reserve","reservation":1,"account":1,"instrument":"ACME","qty":10}
{"op":"reserve","reservation":2,"account":2,"instrument":"ACME","qty":10}
{"op":"confirm","reservation":1}
{"op":"confirm","reservation":2}
"#;
const SETUP_LINES: usize = 9;

#[test]
fn place_amend_cancel_and_the_queries_answer_per_design() {
    let script = format!(
        "{SETUP}{}",
        r#"{"op":"place","order":7,"account":1,"instrument":"ACME","side":"sell","qty":5,"price":"2.00"}
{"op":"place","order":8,"account":1,"instrument":"ACME","side":"sell","qty":2,"price":"2.10","post_only":true}
{"op":"book","instrument":"ACME"}
{"op":"place","order":9,"account":2,"instrument":"ACME","side":"buy","qty":6,"price":"2.10"}
{"op":"order","order":7}
{"op":"order","order":9}
{"op":"holdings","account":1}
{"op":"balance","account":2}
{"op":"amend","order":9,"qty":3}
{"op":"amend","order":9,"price":"2.20"}
{"op":"cancel_order","order":9}
{"op":"cancel_order","order":9}
{"op":"place","order":7,"account":1,"instrument":"ACME","side":"sell","qty":1,"type":"market"}
{"op":"place","order":10,"account":1,"instrument":"ACME","side":"sell","qty":1}
{"op":"place","order":10,"account":1,"instrument":"ACME","side":"sell","qty":1,"type":"market","price":"1.00"}
{"op":"place","order":10,"account":1,"instrument":"ACME","side":"sideways","qty":1,"price":"1.00"}
{"op":"place","order":10,"account":1,"instrument":"ACME","side":"buy","qty":1,"price":"1.00","tif":"ioc","post_only":true}
{"op":"place","order":10,"account":2,"instrument":"ACME","side":"sell","qty":1,"price":"1.00","post_only":true}
{"op":"book","instrument":"ACME","depth":0}
{"op":"book","instrument":"NOPE"}
{"op":"place","order":11,"account":1,"instrument":"ACME","side":"buy","qty":1000,"price":"1.00"}
{"op":"history","account":2,"limit":1}
"#
    );
    let a = run(&["--durability", "none", "--rebate-rate", "0"], &script);
    let a = &a[SETUP_LINES..];
    assert_eq!(
        a[0],
        json!({"ok": true, "order": 7, "status": "resting", "filled": 0, "resting": 5, "trades": [], "stp_cancelled": []})
    );
    assert_eq!(a[1]["status"], "resting");
    assert_eq!(
        a[2],
        json!({"ok": true, "bids": [], "asks": [
            {"price": "2.00", "qty": 5, "orders": 1},
            {"price": "2.10", "qty": 2, "orders": 1},
        ]})
    );
    assert_eq!(
        a[3],
        json!({"ok": true, "order": 9, "status": "filled", "filled": 6, "resting": 0,
            "trades": [
                {"trade": 1, "maker": 7, "price": "2.00", "qty": 5},
                {"trade": 2, "maker": 8, "price": "2.10", "qty": 1},
            ],
            "stp_cancelled": []})
    );
    assert_eq!(a[4]["error"], "unknown_order");
    assert_eq!(a[5]["error"], "unknown_order");
    assert_eq!(
        a[6],
        json!({"ok": true, "shares": {"ACME": 4}, "held": {"ACME": 1}})
    );
    assert_eq!(
        a[7],
        json!({"ok": true, "balance": "77.90", "held": "0.00", "available": "77.90"})
    );
    assert_eq!(a[8]["error"], "unknown_order");
    assert_eq!(a[9]["error"], "unknown_order");
    assert_eq!(a[10]["error"], "unknown_order");
    assert_eq!(a[11]["error"], "unknown_order");
    assert_eq!(a[12]["status"], "cancelled", "a market sell with no bids");
    assert_eq!(a[13]["error"], "invalid_order", "a limit without a price");
    assert_eq!(
        a[14]["error"], "invalid_order",
        "a market order with a price"
    );
    assert_eq!(a[15]["error"], "malformed");
    assert_eq!(a[16]["error"], "invalid_order", "post_only needs gtc");
    assert_eq!(a[17]["status"], "resting");
    assert_eq!(a[18]["error"], "malformed");
    assert_eq!(a[19]["error"], "unknown_instrument");
    assert_eq!(a[20]["error"], "insufficient_funds");
    assert_eq!(a[21]["entries"][0]["kind"], "buy");
    assert_eq!(a[21]["entries"][0]["amount"], "2.10");
    assert_eq!(
        a[21]["entries"][0]["trade"], a[3]["trades"][1]["trade"],
        "the history entry of a trade carries the number the place answer gave it"
    );
    for bad in a.iter().filter(|v| v["ok"] == json!(false)) {
        assert!(
            bad["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}"
        );
    }
}

#[test]
fn amend_answers_like_place_and_resting_orders_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().to_str().unwrap();
    let args = [
        "--journal-dir",
        journal,
        "--durability",
        "sync",
        "--rebate-rate",
        "0",
    ];
    let script = format!(
        "{SETUP}{}",
        r#"{"op":"place","order":1,"account":1,"instrument":"ACME","side":"sell","qty":4,"price":"3.00","req":1}
{"op":"place","order":2,"account":2,"instrument":"ACME","side":"buy","qty":3,"price":"2.00","req":2}
{"op":"amend","order":2,"price":"3.00","req":3}
{"op":"amend","order":2,"price":"3.00","req":3}
{"op":"barrier"}
{"op":"digest"}
"#
    );
    let a = run(&args, &script);
    let a = &a[SETUP_LINES..];
    assert_eq!(
        a[2],
        json!({"ok": true, "order": 2, "status": "filled", "filled": 3, "resting": 0,
            "trades": [{"trade": 1, "maker": 1, "price": "3.00", "qty": 3}], "stp_cancelled": []})
    );
    assert_eq!(a[3]["error"], "duplicate");
    assert_eq!(a[3]["original"], "ok");
    let replay = Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .args(["replay", "--journal-dir", journal, "--json"])
        .output()
        .unwrap();
    assert!(replay.status.success());
    let replayed: Value = serde_json::from_slice(&replay.stdout).unwrap();
    // After the barrier: the setup deposits' rebate credits are applied
    // (and journaled) before the digest, as they are in the replay.
    assert_eq!(replayed["digest"], a[5]["digest"], "replay == live");
    let after = run(
        &args,
        r#"{"op":"order","order":1}
{"op":"holdings","account":1}
{"op":"balance","account":1}
{"op":"history","account":1,"limit":1}
{"op":"history","account":2,"limit":2}
"#,
    );
    assert_eq!(
        after[0],
        json!({"ok": true, "account": 1, "instrument": "ACME", "side": "sell", "price": "3.00", "qty": 1, "filled": 3})
    );
    assert_eq!(
        after[1],
        json!({"ok": true, "shares": {"ACME": 7}, "held": {"ACME": 1}})
    );
    assert_eq!(after[2]["balance"], "99.00");
    let sold = &after[3]["entries"][0];
    assert_eq!(
        (&sold["kind"], &sold["amount"], &sold["trade"]),
        (&json!("sell"), &json!("9.00"), &a[2]["trades"][0]["trade"]),
        "{sold}"
    );
    let bought = &after[4]["entries"];
    assert_eq!(bought[0]["kind"], "buy");
    assert_eq!(bought[0]["trade"], json!(1));
    assert!(
        bought[1].get("trade").is_none(),
        "only trades carry a number: {bought}"
    );
}

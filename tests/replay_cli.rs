//! `ringledger replay` end to end: a journal written by `ringledger run`,
//! rebuilt by a second process.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn ringledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringledger"))
}

#[test]
fn replay_reaches_the_digest_run_reported_and_draws_no_progress_on_a_pipe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let mut script = String::new();
    for account in 0..20 {
        script += &format!("{{\"op\":\"open_account\",\"account\":{account}}}\n");
    }
    for i in 0..500 {
        script += &format!(
            "{{\"op\":\"deposit\",\"account\":{},\"amount\":\"{}.25\"}}\n",
            i % 20,
            1 + i % 7
        );
        script += &format!(
            "{{\"op\":\"transfer\",\"from\":{},\"to\":{},\"amount\":\"0.50\"}}\n",
            i % 20,
            (i * 7) % 20
        );
    }
    script += "{\"op\":\"barrier\"}\n{\"op\":\"digest\"}\n";
    let mut child = ringledger()
        .arg("run")
        .arg("--journal-dir")
        .arg(&dir)
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
    let stdout = String::from_utf8(output.stdout).unwrap();
    let last: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let digest = last["digest"].as_str().unwrap().to_string();

    let output = ringledger()
        .arg("replay")
        .arg("--journal-dir")
        .arg(&dir)
        .arg("--json")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(
        output.stderr.is_empty(),
        "no progress bar when stderr is not a terminal: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["digest"], digest.as_str());
    // Every line but the barrier and the digest query, plus one rebate
    // credit per deposit.
    assert!(report["records"].as_u64().unwrap() >= 1_520);
}

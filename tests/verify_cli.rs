//! `ringledger verify` end to end: a journal written by `ringledger run`
//! (with periodic snapshots), audited by a second process that must not
//! change a byte of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn ringledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringledger"))
}

/// `ringledger run` over a few hundred wallet requests with a snapshot
/// every 100, into small segments; returns the digest it reported.
fn run_journal(dir: &Path) -> String {
    let mut script = String::new();
    for account in 0..5 {
        script += &format!("{{\"op\":\"open_account\",\"account\":{account}}}\n");
    }
    for i in 0..150 {
        script += &format!(
            "{{\"op\":\"deposit\",\"account\":{},\"amount\":\"{}.25\"}}\n",
            i % 5,
            1 + i % 7
        );
    }
    script += "{\"op\":\"barrier\"}\n{\"op\":\"digest\"}\n";
    let mut child = ringledger()
        .args([
            "run",
            "--snapshot-every",
            "100",
            "--snapshots-kept",
            "0",
            "--segment-bytes",
            "4096",
            "--journal-dir",
        ])
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_owned();
    let answer: Value = serde_json::from_str(&last).unwrap();
    answer["digest"].as_str().unwrap().to_owned()
}

fn verify(dir: &Path, json: bool) -> Output {
    let mut command = ringledger();
    command.args(["verify", "--journal-dir"]).arg(dir);
    if json {
        command.arg("--json");
    }
    command.output().unwrap()
}

fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

fn numbered(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn is_head_hash(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[test]
fn a_clean_journal_verifies_with_its_head_hash_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let written = tmp.path().join("journal");
    let digest = run_journal(&written);
    // A copy without the LOCK file: verify must not create it.
    let dir = tmp.path().join("copy");
    std::fs::create_dir(&dir).unwrap();
    for (path, bytes) in files(&written) {
        if !path.ends_with("LOCK") {
            std::fs::write(dir.join(path.file_name().unwrap()), bytes).unwrap();
        }
    }
    assert!(numbered(&dir, "seg").len() > 2 && numbered(&dir, "snap").len() > 2);
    let before = files(&dir);

    let out = verify(&dir, false);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let head = text
        .lines()
        .find_map(|l| l.strip_prefix("head"))
        .map(str::trim)
        .unwrap_or_else(|| panic!("{text}"));
    assert!(is_head_hash(head), "{text}");
    assert!(text.contains(&format!("digest     {digest}")), "{text}");

    let out = verify(&dir, true);
    assert!(out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["head"], head, "{report}");
    assert_eq!(report["digest"], digest, "{report}");
    assert_eq!(report["segments"], numbered(&dir, "seg").len(), "{report}");
    assert_eq!(
        report["snapshots"],
        numbered(&dir, "snap").len(),
        "{report}"
    );
    // The session's opening, 5 accounts, 150 deposits, 150 rebate credits
    // and the digest request.
    assert_eq!(report["records"], 307, "{report}");
    assert_eq!(report["last_seq"], 307, "{report}");

    assert_eq!(files(&dir), before, "verify changed the directory");
}

#[test]
fn a_damaged_journal_fails_verify_with_file_and_offset_in_text_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    run_journal(&dir);
    let seg = numbered(&dir, "seg")[1].clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    // The first frame's first record byte (a 48-byte segment header, then
    // the frame's 64-byte header).
    let at = 48 + 64;
    bytes[at] ^= 0x01;
    std::fs::write(&seg, &bytes).unwrap();
    let before = files(&dir);

    let out = verify(&dir, false);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&seg.display().to_string()) && err.contains("offset 48"),
        "{err}"
    );

    let out = verify(&dir, true);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["file"], seg.display().to_string(), "{report}");
    assert_eq!(report["offset"], 48, "{report}");
    assert!(
        report["reason"].as_str().unwrap().contains("checksum"),
        "{report}"
    );
    assert_eq!(files(&dir), before, "verify changed the directory");

    let missing = tmp.path().join("missing");
    let out = verify(&missing, false);
    assert!(!out.status.success());
    assert!(!missing.exists());
}

//! One writer per journal directory: the lock on `DIR/LOCK` keeps a second
//! engine, process or recovery out, and the kernel drops it when its holder
//! dies.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use ringledger::journal::{
    self, lock_dir, recover, recover_locked, Durability, JournalConfig, JournalError,
    JournalWriter, LOCK_FILE,
};
use ringledger::request::{Stamp, Stamped};
use ringledger::{Engine, EngineError, LedgerConfig, Reply, Request};
use serde_json::Value;

fn ringledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringledger"))
}

fn start(dir: &Path) -> Result<Engine, EngineError> {
    Engine::builder().journal(dir, Durability::Async).start()
}

fn balance(engine: &Engine, account: u64) -> i64 {
    let mut client = engine.client().unwrap();
    client.barrier().unwrap();
    match client.call(Request::Balance { account }).unwrap() {
        Ok(Reply::Balance { balance, .. }) => balance,
        other => panic!("balance of {account}: {other:?}"),
    }
}

fn assert_locked(err: &JournalError, dir: &Path) {
    match err {
        JournalError::Locked { dir: d } => assert_eq!(d, dir),
        other => panic!("expected Locked, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains(&dir.display().to_string())
            && text.contains(&dir.join(LOCK_FILE).display().to_string())
            && text.contains("another process or engine")
            && !text.contains('\n'),
        "{text}"
    );
}

/// Every file in `dir`: name → (length, hash of the bytes).
fn dir_digest(dir: &Path) -> BTreeMap<String, (u64, u64)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let bytes = std::fs::read(e.path()).unwrap();
            (
                e.file_name().into_string().unwrap(),
                (bytes.len() as u64, xxhash_rust::xxh3::xxh3_64(&bytes)),
            )
        })
        .collect()
}

/// [`dir_digest`] once the directory stopped changing (the holder's helper
/// thread may still be preparing its spare segment).
fn settled_digest(dir: &Path) -> BTreeMap<String, (u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = dir_digest(dir);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = dir_digest(dir);
        if now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{} keeps changing",
            dir.display()
        );
        last = now;
    }
}

#[test]
fn a_second_engine_on_one_directory_fails_until_the_first_shuts_down() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("journal");
    let first = start(&dir).unwrap();
    let mut client = first.client().unwrap();
    client
        .call(Request::OpenAccount { account: 7 })
        .unwrap()
        .unwrap();
    client
        .call(Request::Deposit {
            account: 7,
            amount: 1_000,
        })
        .unwrap()
        .unwrap();
    assert_eq!(balance(&first, 7), 1_010);

    match start(&dir) {
        Err(EngineError::Journal(e)) => assert_locked(&e, &dir),
        Err(e) => panic!("expected a lock error, got {e}"),
        Ok(_) => panic!("a second engine started on a locked journal"),
    }
    // Recovery and a plain writer are kept out too.
    assert_locked(&recover(&dir, LedgerConfig::default()).unwrap_err(), &dir);
    let config = JournalConfig::default();
    assert_locked(&JournalWriter::open(&dir, config).unwrap_err(), &dir);
    // Readers take no lock and may read the live journal.
    let replayed = journal::replay(&dir, LedgerConfig::default(), false).unwrap();
    // Every acknowledged input is there: open, deposit, rebate credit, ...
    let seq = replayed.recovered.ledger.last_seq();
    assert!(seq >= 3, "{seq}");
    // The refused attempts did not disturb the running engine.
    client
        .call(Request::Deposit {
            account: 7,
            amount: 100,
        })
        .unwrap()
        .unwrap();
    drop(client);
    first.shutdown().unwrap();

    let second = start(&dir).unwrap();
    assert_eq!(balance(&second, 7), 1_111);
    // Dropping an engine without shutdown releases the lock too.
    drop(second);
    let third = start(&dir).unwrap();
    third.shutdown().unwrap();
}

fn stamped(seq: u64) -> Stamped {
    Stamped::new(
        Stamp {
            seq,
            time_ms: 0,
            session: 1,
            req: seq,
        },
        Request::OpenAccount { account: seq },
    )
}

#[test]
fn recover_on_a_locked_directory_errors_and_leaves_a_torn_tail_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let config = JournalConfig {
        segment_bytes: 1 << 16,
        durability: Durability::Async,
    };
    let mut writer = JournalWriter::open(&dir, config).unwrap();
    assert_eq!(writer.dir(), dir);
    assert!(writer.lock().is_some());
    writer.append(&[stamped(1), stamped(2)]).unwrap();
    writer
        .append(&[stamped(3), stamped(4), stamped(5)])
        .unwrap();
    let segment = writer.segment_path().unwrap().to_path_buf();
    drop(writer);

    // Tear the last frame: flip its last byte (padding after it is zeros).
    let mut bytes = std::fs::read(&segment).unwrap();
    let last = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[last] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();

    let lock = lock_dir(&dir).unwrap();
    let err = recover(&dir, LedgerConfig::default()).unwrap_err();
    assert_locked(&err, &dir);
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "recover wrote");
    assert_locked(&JournalWriter::open(&dir, config).unwrap_err(), &dir);
    drop(lock);

    // Unlocked, the same call does zero the tail: the check above can fail.
    let recovered = recover(&dir, LedgerConfig::default()).unwrap();
    assert_eq!(recovered.ledger.last_seq(), 2);
    assert!(
        recovered.warnings.iter().any(|w| w.contains("zeroed")),
        "{:?}",
        recovered.warnings
    );
    assert_ne!(std::fs::read(&segment).unwrap(), bytes);
}

#[test]
fn one_lock_covers_recovery_and_the_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let config = JournalConfig {
        segment_bytes: 1 << 16,
        durability: Durability::Sync,
    };
    let lock = lock_dir(&dir).unwrap();
    let recovered = recover_locked(&lock, LedgerConfig::default()).unwrap();
    assert_eq!(recovered.ledger.last_seq(), 0);
    let mut writer = JournalWriter::open_locked(lock, config).unwrap();
    writer.commit(&[stamped(1)]).unwrap();
    assert_locked(&lock_dir(&dir).unwrap_err(), &dir);
    drop(writer);
    let lock = lock_dir(&dir).unwrap();
    let recovered = recover_locked(&lock, LedgerConfig::default()).unwrap();
    assert_eq!(recovered.ledger.last_seq(), 1);

    // Without a journal nothing is locked or created.
    let none = JournalConfig {
        durability: Durability::None,
        ..config
    };
    let nowhere = tmp.path().join("nowhere");
    let writer = JournalWriter::open(&nowhere, none).unwrap();
    assert!(writer.lock().is_none());
    assert!(!nowhere.exists());
    // Neither does recovering a directory that does not exist create it.
    let recovered = recover(&nowhere, LedgerConfig::default()).unwrap();
    assert_eq!(recovered.ledger.last_seq(), 0);
    assert!(!nowhere.exists());
}

/// A `ringledger run` child on `dir`, with its stdin and stdout lines.
struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Holder {
    fn spawn(dir: &Path) -> Holder {
        let mut child = ringledger()
            .args(["run", "--journal-dir"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Holder {
            child,
            stdin,
            stdout,
        }
    }

    fn ask(&mut self, line: &str) -> Value {
        writeln!(self.stdin, "{line}").unwrap();
        let answer: Value = serde_json::from_str(&self.stdout.next().unwrap().unwrap()).unwrap();
        assert_eq!(answer["ok"], Value::Bool(true), "{line} → {answer}");
        answer
    }
}

#[test]
fn a_second_run_on_a_held_directory_fails_and_changes_nothing_and_sigkill_frees_it() {
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path().join("journal");
    let mut holder = Holder::spawn(&dir);
    holder.ask(r#"{"op":"open_account","account":1}"#);
    holder.ask(r#"{"op":"deposit","account":1,"amount":"10.00"}"#);
    holder.ask(r#"{"op":"barrier"}"#);
    let before = settled_digest(&dir);
    assert!(before.contains_key(LOCK_FILE), "{before:?}");
    assert!(
        before.keys().any(|name| name.ends_with(".seg")),
        "{before:?}"
    );

    let mut second = ringledger()
        .args(["run", "--journal-dir"])
        .arg(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must fail before reading this; the pipe may already be closed.
    let _ = second
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"op\":\"deposit\",\"account\":1,\"amount\":\"5.00\"}\n");
    let out = second.wait_with_output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success(), "second run succeeded: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("ringledger: ")
            && stderr.contains(&dir.display().to_string())
            && stderr.contains(&dir.join(LOCK_FILE).display().to_string())
            && stderr.contains("in use by another process"),
        "{stderr}"
    );
    assert_eq!(dir_digest(&dir), before, "the refused run changed files");

    // The holder is undisturbed.
    let answer = holder.ask(r#"{"op":"balance","account":1}"#);
    assert_eq!(answer["balance"], "10.10");

    // SIGKILL: no shutdown, no unlock call; the kernel releases the lock.
    holder.child.kill().unwrap();
    holder.child.wait().unwrap();
    let engine = start(&dir).unwrap();
    assert_eq!(balance(&engine, 1), 1_010);
    engine.shutdown().unwrap();
}

#[test]
fn journal_writer_stays_send() {
    fn assert_send<T: Send>() {}
    assert_send::<JournalWriter>();
    assert_send::<journal::DirLock>();
}

//! Takeover with real `ringledger run --durability replicated` processes on
//! a 3-node JetStream cluster the tests start: a paused old leader is fenced
//! and never publishes again; after a SIGKILL, retried requests are applied
//! exactly once, rebates too.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use ringledger::replication::ReplicationConfig;
use serde_json::Value;
use support::nats::Cluster;

/// A `ringledger run` child fed and read line by line.
struct Run {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Run {
    fn start(cluster: &Cluster, stream: &str, dir: &Path, takeover: bool) -> Run {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ringledger"));
        command
            .args(["run", "--durability", "replicated", "--replicas", "3"])
            .args([
                "--nats",
                &cluster.url(),
                "--stream",
                stream,
                "--journal-dir",
            ])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if takeover {
            command.arg("--takeover");
        }
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Run {
            child,
            stdin,
            stdout,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    fn answer(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap()),
        }
    }

    fn call(&mut self, line: &str) -> Value {
        self.send(line);
        self.answer().expect("an answer")
    }

    fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) of our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Closes stdin and waits: whether the process exited with success.
    fn finish(mut self) -> bool {
        drop(self.stdin.take());
        self.child.wait().unwrap().success()
    }
}

fn deposit(req: u64) -> String {
    format!(r#"{{"op":"deposit","account":1,"amount":"10.00","req":{req}}}"#)
}

/// A follower's digest once it applied the whole stream (as `run` prints it).
fn stream_digest(cluster: &Cluster, stream: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = ReplicationConfig::new(cluster.url(), stream);
    let mut follower = support::nats::open_follower(&config, dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    follower
        .run(Duration::from_millis(100), |progress, _| {
            (progress.stream_seq == 0 || progress.lag_frames > 0) && Instant::now() < deadline
        })
        .unwrap();
    format!("{:016x}", follower.close().unwrap().digest())
}

#[test]
fn a_paused_old_leader_is_fenced_and_never_publishes_again() {
    let cluster = Cluster::start(3);
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = Run::start(&cluster, "paused", a_dir.path(), false);
    assert_eq!(
        a.call(r#"{"op":"open_account","account":1,"req":1}"#)["ok"],
        true
    );
    assert_eq!(a.call(&deposit(2))["ok"], true);

    a.signal(libc::SIGSTOP);
    let mut b = Run::start(&cluster, "paused", b_dir.path(), true);
    assert_eq!(b.call(&deposit(3))["ok"], true);
    // B has A's history: the session's numbering carried over.
    assert_eq!(b.call(&deposit(2))["error"], "duplicate");

    a.signal(libc::SIGCONT);
    let fenced = a.call(&deposit(4));
    assert_eq!(fenced["error"], "not_leader", "{fenced}");
    assert!(!a.finish(), "a fenced leader exits non-zero");

    assert_eq!(b.call(&deposit(4))["ok"], true);
    assert_eq!(b.call(r#"{"op":"barrier"}"#)["ok"], true);
    let balance = b.call(r#"{"op":"balance","account":1}"#);
    // Three deposits (2, 3, 4) and their rebates, once each.
    assert_eq!(balance["balance"], "30.30", "{balance}");
    let digest = b.call(r#"{"op":"digest"}"#)["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(b.finish());
    // The stream holds B's history only: A's refused write never reached it.
    assert_eq!(stream_digest(&cluster, "paused"), digest);
}

#[test]
fn after_a_sigkill_every_acknowledged_request_is_applied_once_and_so_is_every_rebate() {
    const DEPOSITS: u64 = 200;
    let cluster = Cluster::start(3);
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = Run::start(&cluster, "killed", a_dir.path(), false);
    assert_eq!(
        a.call(r#"{"op":"open_account","account":1,"req":1}"#)["ok"],
        true
    );
    for req in 2..2 + DEPOSITS {
        a.send(&deposit(req));
    }
    let mut acknowledged = Vec::new();
    for req in 2..2 + DEPOSITS / 2 {
        let answer = a.answer().unwrap();
        assert_eq!(answer["ok"], true, "{answer}");
        acknowledged.push(req);
    }
    a.signal(libc::SIGKILL);
    let _ = a.child.wait();

    // The client retries everything not known answered, under the same
    // numbers, against the new leader.
    let mut b = Run::start(&cluster, "killed", b_dir.path(), true);
    for req in 2..2 + DEPOSITS {
        let answer = b.call(&deposit(req));
        if acknowledged.contains(&req) {
            // Its first answer may have left the session's window; if it
            // is still there, it was ok.
            assert_eq!(answer["error"], "duplicate", "req {req}: {answer}");
            assert!(
                answer.get("original").is_none() || answer["original"] == "ok",
                "req {req}: {answer}"
            );
        } else {
            assert!(
                answer["ok"] == true || answer["error"] == "duplicate",
                "req {req}: {answer}"
            );
        }
    }
    assert_eq!(b.call(r#"{"op":"barrier"}"#)["ok"], true);
    let balance = b.call(r#"{"op":"balance","account":1}"#);
    // 200 deposits of 10.00 and 200 rebates of 0.10, each exactly once.
    assert_eq!(balance["balance"], "2020.00", "{balance}");
    let digest = b.call(r#"{"op":"digest"}"#)["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(b.finish());
    assert_eq!(stream_digest(&cluster, "killed"), digest);
}

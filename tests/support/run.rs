//! `ringledger run --durability replicated` children for the replication
//! tests, fed and read line by line.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use ringledger::replication::ReplicationConfig;

use serde_json::Value;

use super::nats::Cluster;

/// A `ringledger run` child fed and read line by line.
pub struct Run {
    pub child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Run {
    /// Starts `run --durability replicated --replicas 3` on `stream`, with
    /// `extra` flags (`--takeover`, `--auto-takeover`, ...).
    pub fn start(cluster: &Cluster, stream: &str, dir: &Path, extra: &[&str]) -> Run {
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
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Run {
            child,
            stdin,
            stdout,
        }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn answer(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(&line).unwrap()),
        }
    }

    pub fn call(&mut self, line: &str) -> Value {
        self.send(line);
        self.answer().expect("an answer")
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) of our own child by its pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Closes stdin and waits: whether the process exited with success.
    pub fn finish(mut self) -> bool {
        drop(self.stdin.take());
        self.child.wait().unwrap().success()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        // A test that failed half-way leaves no process behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A client's retry after its leader was SIGKILLed at `killed`: every
/// deposit in `reqs` is sent again, under the same number, to `to` (the new
/// leader). One acknowledged before the kill is a `duplicate` whose first
/// answer, if still remembered, was ok; any other is applied now or was
/// applied before. Prints the time from the kill to the first answer as
/// `figure` (README, Replication: failover).
pub fn retry_deposits(
    to: &mut Run,
    reqs: std::ops::Range<u64>,
    acknowledged: &[u64],
    killed: Instant,
    figure: &str,
) {
    let first = reqs.start;
    for req in reqs {
        let answer = to.call(&deposit(req));
        if req == first {
            // A figure, not a check.
            eprintln!("{figure}: {} ms", killed.elapsed().as_millis());
        }
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
}

/// Waits for every rebate on `leader`, checks account 1's `balance`, stops
/// it cleanly, and checks that the stream holds exactly its history (a
/// follower of `stream` reaches its digest).
pub fn finish_with_balance(mut leader: Run, balance: &str, cluster: &Cluster, stream: &str) {
    assert_eq!(leader.call(r#"{"op":"barrier"}"#)["ok"], true);
    let answer = leader.call(r#"{"op":"balance","account":1}"#);
    assert_eq!(answer["balance"], balance, "{answer}");
    let digest = leader.call(r#"{"op":"digest"}"#)["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(leader.finish());
    assert_eq!(stream_digest(cluster, stream), digest);
}

pub fn deposit(req: u64) -> String {
    format!(r#"{{"op":"deposit","account":1,"amount":"10.00","req":{req}}}"#)
}

/// A follower's digest once it applied the whole stream (as `run` prints it).
pub fn stream_digest(cluster: &Cluster, stream: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = ReplicationConfig::new(cluster.url(), stream);
    let mut follower = super::nats::open_follower(&config, dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    follower
        .run(Duration::from_millis(100), |progress, _| {
            (progress.stream_seq == 0 || progress.lag_frames > 0) && Instant::now() < deadline
        })
        .unwrap();
    format!("{:016x}", follower.close().unwrap().digest())
}

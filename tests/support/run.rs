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

//! `run --metrics ADDR`: a real HTTP GET against the running process, its
//! Prometheus text parsed strictly, the counters checked against the lines
//! sent.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

use support::prometheus::{get, histogram_count, metrics_addr, parse, sample};

struct Run {
    child: Child,
    stdout: BufReader<ChildStdout>,
    addr: String,
}

fn start(args: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .arg("run")
        .args(args)
        .args(["--metrics", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ringledger starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = metrics_addr(&line);
    let stdout = BufReader::new(child.stdout.take().unwrap());
    Run {
        child,
        stdout,
        addr,
    }
}

impl Run {
    /// Sends the lines and reads their answers (so the engine has handled them).
    fn send(&mut self, lines: &[&str]) -> Vec<String> {
        let stdin = self.child.stdin.as_mut().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
        stdin.flush().unwrap();
        lines
            .iter()
            .map(|_| {
                let mut answer = String::new();
                self.stdout.read_line(&mut answer).unwrap();
                answer
            })
            .collect()
    }

    fn stop(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

#[test]
fn metrics_count_requests_by_op_and_answers_by_code() {
    let mut run = start(&["--durability", "none"]);
    let answers = run.send(&[
        r#"{"op":"open_account","account":1}"#,
        r#"{"op":"deposit","account":1,"amount":"10.00"}"#,
        r#"{"op":"deposit","account":1,"amount":"5.00"}"#,
        r#"{"op":"deposit","account":1,"amount":"1.50"}"#,
        r#"{"op":"deposit","account":2,"amount":"1.00"}"#,
        r#"{"op":"withdraw","account":1,"amount":"1000.00"}"#,
        r#"{"op":"frobnicate"}"#,
        r#"not json"#,
        r#"{"op":"barrier"}"#,
    ]);
    assert!(answers[1].contains(r#""ok":true"#), "{answers:?}");
    assert!(answers[4].contains("unknown_account"), "{answers:?}");
    assert!(answers[7].contains("malformed"), "{answers:?}");

    let (status, content_type, body) = get(&run.addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let m = parse(&body);
    let requests = |op| sample(&m, "ringledger_requests_total", &[("op", op)]);
    let answers = |code| sample(&m, "ringledger_answers_total", &[("outcome", code)]);
    assert_eq!(requests("open_account"), 1.0);
    assert_eq!(requests("deposit"), 4.0);
    assert_eq!(requests("withdraw"), 1.0);
    assert_eq!(requests("barrier"), 1.0);
    assert_eq!(requests("invalid"), 2.0);
    assert_eq!(requests("transfer"), 0.0);
    assert_eq!(answers("ok"), 5.0);
    assert_eq!(answers("unknown_account"), 1.0);
    assert_eq!(answers("insufficient_funds"), 1.0);
    assert_eq!(answers("malformed"), 2.0);
    assert_eq!(answers("duplicate"), 0.0);
    // The deposits' rebates were credited before the barrier answered.
    assert_eq!(sample(&m, "ringledger_rebate_backlog", &[]), 0.0);
    assert_eq!(sample(&m, "ringledger_ring_occupancy_slots", &[]), 0.0);
    assert_eq!(sample(&m, "ringledger_replication_lag_frames", &[]), 0.0);
    assert_eq!(
        sample(&m, "ringledger_journal_bytes_written_total", &[]),
        0.0
    );
    assert_eq!(
        sample(&m, "ringledger_journal_fsync_seconds_count", &[]),
        0.0
    );
    assert_eq!(sample(&m, "ringledger_role", &[("role", "leader")]), 1.0);
    assert_eq!(sample(&m, "ringledger_role", &[("role", "follower")]), 0.0);
    // Seven requests reached the engine (the malformed and unknown-op lines
    // did not, nor did the barrier), plus three rebate credits: ten drained,
    // in at least one batch.
    assert_eq!(sample(&m, "ringledger_batch_size_sum", &[]), 10.0);
    let batches = sample(&m, "ringledger_batch_size_count", &[]);
    assert!(batches >= 1.0);
    assert_eq!(
        sample(&m, "ringledger_batch_size_bucket", &[("le", "+Inf")]),
        batches
    );

    // Counters move with more traffic.
    run.send(&[r#"{"op":"deposit","account":1,"amount":"2.00"}"#]);
    let m = parse(&get(&run.addr, "/metrics").2);
    assert_eq!(
        sample(&m, "ringledger_requests_total", &[("op", "deposit")]),
        5.0
    );

    let (status, _, _) = get(&run.addr, "/");
    assert_eq!(status, 404);
    run.stop();
}

#[test]
fn metrics_count_journal_bytes_and_fsyncs_in_sync_mode() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().to_str().unwrap();
    let mut run = start(&["--durability", "sync", "--journal-dir", journal_dir]);
    run.send(&[
        r#"{"op":"open_account","account":1}"#,
        r#"{"op":"deposit","account":1,"amount":"10.00"}"#,
        r#"{"op":"barrier"}"#,
    ]);
    let m = parse(&get(&run.addr, "/metrics").2);
    let fsyncs = histogram_count(&m, "ringledger_journal_fsync_seconds");
    // Each answered group waited for an fdatasync of its own.
    assert!(fsyncs >= 1.0, "{fsyncs}");
    let bytes = sample(&m, "ringledger_journal_bytes_written_total", &[]);
    assert!(bytes > 0.0, "{bytes}");
    run.send(&[r#"{"op":"deposit","account":1,"amount":"1.00"}"#]);
    let m = parse(&get(&run.addr, "/metrics").2);
    let more = sample(&m, "ringledger_journal_bytes_written_total", &[]);
    assert!(more > bytes, "{more} after {bytes}");
    assert!(sample(&m, "ringledger_journal_fsync_seconds_count", &[]) > fsyncs);
    run.stop();
}

#[test]
fn metrics_time_async_mode_background_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let journal_dir = dir.path().to_str().unwrap();
    let mut run = start(&["--durability", "async", "--journal-dir", journal_dir]);
    run.send(&[
        r#"{"op":"open_account","account":1}"#,
        r#"{"op":"deposit","account":1,"amount":"10.00"}"#,
    ]);
    // Nothing here asks for an fdatasync: async mode's helper thread syncs
    // what was written within its interval (100 ms). Waited for, not timed:
    // the test fails only if that sync is never counted.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let m = parse(&get(&run.addr, "/metrics").2);
        let fsyncs = histogram_count(&m, "ringledger_journal_fsync_seconds");
        if fsyncs >= 1.0 {
            assert!(sample(&m, "ringledger_journal_fsync_seconds_sum", &[]) > 0.0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the background fdatasync was never counted:\n{}",
            get(&run.addr, "/metrics").2
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    run.stop();
}

#[test]
fn a_request_head_without_end_is_cut_off_and_scrapes_go_on() {
    let run = start(&["--durability", "none"]);
    // A header line that never ends: the exporter must stop reading it
    // (it used to buffer all of it, growing the process by what was sent).
    let mut hostile = std::net::TcpStream::connect(&run.addr).unwrap();
    hostile
        .write_all(b"GET /metrics HTTP/1.1\r\nX-Endless: ")
        .unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let sent_mib = (0..256)
        .take_while(|_| hostile.write_all(&chunk).is_ok())
        .count();
    assert!(
        sent_mib < 256,
        "the exporter took 256 MiB of one request head without closing it"
    );
    let (status, _, body) = get(&run.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("ringledger_requests_total"), "{body}");
    run.stop();
}

//! `run --metrics ADDR`: a real HTTP GET against the running process, its
//! Prometheus text parsed strictly, the counters checked against the lines
//! sent.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};

/// One sample: metric name and its labels, sorted.
type Series = (String, Vec<(String, String)>);

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
    let addr = line
        .trim()
        .strip_prefix("ringledger: metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address on stderr: {line:?}"))
        .to_string();
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

/// A plain HTTP/1.1 GET; returns the status code and the body.
fn get(addr: &str, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("headers end");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let content_type = head
        .lines()
        .find_map(|h| h.strip_prefix("Content-Type: "))
        .unwrap_or_default()
        .to_string();
    (status, content_type, body.to_string())
}

/// Parses the text exposition format strictly: every line is a `# HELP`, a
/// `# TYPE` or a sample `name{label="value",...} number`; anything else fails.
fn parse(text: &str) -> HashMap<Series, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value: {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, Vec::new()),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let mut labels: Vec<(String, String)> = inner
                    .split(',')
                    .map(|pair| {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label: {line:?}"));
                        let v = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or_else(|| panic!("unquoted label: {line:?}"));
                        (k.to_string(), v.to_string())
                    })
                    .collect();
                labels.sort();
                (name, labels)
            }
        };
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line:?}"
        );
        let fresh = samples.insert((name.to_string(), labels), value).is_none();
        assert!(fresh, "a series appears twice: {line:?}");
    }
    samples
}

fn sample(samples: &HashMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    *samples
        .get(&(name.to_string(), labels.clone()))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
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
    let fsyncs = sample(&m, "ringledger_journal_fsync_seconds_count", &[]);
    // Each answered group waited for an fdatasync of its own.
    assert!(fsyncs >= 1.0, "{fsyncs}");
    assert_eq!(
        sample(
            &m,
            "ringledger_journal_fsync_seconds_bucket",
            &[("le", "+Inf")]
        ),
        fsyncs
    );
    let bytes = sample(&m, "ringledger_journal_bytes_written_total", &[]);
    assert!(bytes > 0.0, "{bytes}");
    run.send(&[r#"{"op":"deposit","account":1,"amount":"1.00"}"#]);
    let m = parse(&get(&run.addr, "/metrics").2);
    let more = sample(&m, "ringledger_journal_bytes_written_total", &[]);
    assert!(more > bytes, "{more} after {bytes}");
    assert!(sample(&m, "ringledger_journal_fsync_seconds_count", &[]) > fsyncs);
    run.stop();
}

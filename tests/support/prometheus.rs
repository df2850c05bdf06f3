//! A real HTTP scrape of a `--metrics` endpoint and a strict parser of the
//! Prometheus text it answers.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;

/// One sample: metric name and its labels, sorted.
pub type Series = (String, Vec<(String, String)>);

/// A plain HTTP/1.1 GET; returns the status code and the body.
pub fn get(addr: &str, path: &str) -> (u16, String, String) {
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
pub fn parse(text: &str) -> HashMap<Series, f64> {
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

pub fn sample(samples: &HashMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    *samples
        .get(&(name.to_string(), labels.clone()))
        .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
}

/// The address a `--metrics 127.0.0.1:0` process bound, from the line it
/// prints first on stderr (`ringledger: metrics on http://ADDR/metrics`).
pub fn metrics_addr(stderr_line: &str) -> String {
    stderr_line
        .trim()
        .strip_prefix("ringledger: metrics on http://")
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no metrics address on stderr: {stderr_line:?}"))
        .to_string()
}

/// A histogram's `_count`, checked against its `+Inf` bucket (every
/// observation falls in it, so the two must agree).
pub fn histogram_count(samples: &HashMap<Series, f64>, name: &str) -> f64 {
    let count = sample(samples, &format!("{name}_count"), &[]);
    assert_eq!(
        sample(samples, &format!("{name}_bucket"), &[("le", "+Inf")]),
        count,
        "{name}: the +Inf bucket and the count disagree"
    );
    count
}

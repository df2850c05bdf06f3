//! Automatic promotion (`run --auto-takeover`) with real processes on a
//! 3-node JetStream cluster the tests start: the leader holds a lease in
//! JetStream's key-value store; a standby follows the stream and takes over
//! by itself once the lease expires. After a SIGKILL, clients retry with the
//! same req and everything is applied exactly once; a leader paused past its
//! lease is fenced when it resumes and never publishes again.

mod support;

use std::time::{Duration, Instant};

use support::nats::Cluster;
use support::run::{deposit, finish_with_balance, retry_deposits, Run};

/// The lease's time to live in these tests: short, so failover is quick,
/// yet several renewals long on a busy machine.
const LEASE_MS: u64 = 5000;

fn auto(cluster: &Cluster, stream: &str, dir: &std::path::Path) -> Run {
    let ttl = LEASE_MS.to_string();
    Run::start(
        cluster,
        stream,
        dir,
        &["--auto-takeover", "--lease-ttl-ms", &ttl],
    )
}

#[test]
fn after_a_sigkill_the_standby_promotes_itself_and_retries_apply_exactly_once() {
    const DEPOSITS: u64 = 200;
    let cluster = Cluster::start(3);
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    // The first process finds the lease free and leads.
    let mut a = auto(&cluster, "auto-killed", a_dir.path());
    assert_eq!(
        a.call(r#"{"op":"open_account","account":1,"req":1}"#)["ok"],
        true
    );
    // The second stands by: it follows, and does not promote itself while
    // the leader renews its lease.
    let mut b = auto(&cluster, "auto-killed", b_dir.path());
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    for req in 2..2 + DEPOSITS {
        a.send(&deposit(req));
    }
    let mut acknowledged = Vec::new();
    for req in 2..2 + DEPOSITS / 2 {
        let answer = a.answer().unwrap();
        assert_eq!(answer["ok"], true, "the leader still leads: {answer}");
        acknowledged.push(req);
    }
    a.signal(libc::SIGKILL);
    let killed = Instant::now();
    let _ = a.child.wait();

    // The client retries everything not known answered, under the same
    // numbers, against the standby: it answers once it promoted itself.
    let figure = format!(
        "failover (--auto-takeover, lease {LEASE_MS} ms): SIGKILL to the standby's first answer"
    );
    retry_deposits(&mut b, 2..2 + DEPOSITS, &acknowledged, killed, &figure);
    // 200 deposits of 10.00 and 200 rebates of 0.10, each exactly once.
    finish_with_balance(b, "2020.00", &cluster, "auto-killed");
}

#[test]
fn a_leader_paused_past_its_lease_is_fenced_by_the_promoted_standby_and_never_publishes_again() {
    let cluster = Cluster::start(3);
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = auto(&cluster, "auto-paused", a_dir.path());
    assert_eq!(
        a.call(r#"{"op":"open_account","account":1,"req":1}"#)["ok"],
        true
    );
    let mut b = auto(&cluster, "auto-paused", b_dir.path());
    assert_eq!(a.call(&deposit(2))["ok"], true);

    a.signal(libc::SIGSTOP);
    // B answers only once A's lease expired and B took over.
    assert_eq!(b.call(&deposit(3))["ok"], true);
    // B has A's history: the session's numbering carried over.
    assert_eq!(b.call(&deposit(2))["error"], "duplicate");

    a.signal(libc::SIGCONT);
    let fenced = a.call(&deposit(4));
    assert_eq!(fenced["error"], "not_leader", "{fenced}");
    assert!(!a.finish(), "a fenced leader exits non-zero");

    assert_eq!(b.call(&deposit(4))["ok"], true);
    // Three deposits (2, 3, 4) and their rebates, once each; the stream
    // holds B's history after A's: A's write after it resumed never
    // reached it.
    finish_with_balance(b, "30.30", &cluster, "auto-paused");
}

#[test]
fn a_leader_that_cannot_renew_its_lease_in_time_stops_for_good_even_once_the_quorum_is_back() {
    let mut cluster = Cluster::start(3);
    let a_dir = tempfile::tempdir().unwrap();
    let c_dir = tempfile::tempdir().unwrap();
    let mut a = auto(&cluster, "auto-quorum", a_dir.path());
    assert_eq!(
        a.call(r#"{"op":"open_account","account":1,"req":1}"#)["ok"],
        true
    );
    assert_eq!(a.call(&deposit(2))["ok"], true);

    // No quorum for longer than the lease: no renewal can get through.
    cluster.kill(1);
    cluster.kill(2);
    std::thread::sleep(Duration::from_millis(2 * LEASE_MS));
    cluster.restart(1);
    cluster.restart(2);
    cluster.wait_ready();

    // Without the lease A stepped down (a standby may have led meanwhile):
    // it acknowledges nothing any more, although the stream works again.
    let stepped_down = a.call(&deposit(3));
    assert_eq!(stepped_down["error"], "not_leader", "{stepped_down}");
    assert!(!a.finish(), "a leader that lost its lease exits non-zero");

    // A new process finds the lease expired and leads, with A's history.
    let mut c = auto(&cluster, "auto-quorum", c_dir.path());
    assert_eq!(c.call(&deposit(3))["ok"], true);
    assert_eq!(c.call(&deposit(2))["error"], "duplicate");
    assert_eq!(c.call(r#"{"op":"barrier"}"#)["ok"], true);
    let balance = c.call(r#"{"op":"balance","account":1}"#);
    assert_eq!(balance["balance"], "20.20", "{balance}");
    assert!(c.finish());
}

//! Takeover with real `ringledger run --durability replicated` processes on
//! a 3-node JetStream cluster the tests start: a paused old leader is fenced
//! and never publishes again; after a SIGKILL, retried requests are applied
//! exactly once, rebates too.

mod support;

use std::time::Instant;

use support::nats::Cluster;
use support::run::{deposit, finish_with_balance, retry_deposits, Run};

#[test]
fn a_paused_old_leader_is_fenced_and_never_publishes_again() {
    let cluster = Cluster::start(3);
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = Run::start(&cluster, "paused", a_dir.path(), &[]);
    assert_eq!(
        a.call(r#"{"op":"open_account","account":1,"req":1}"#)["ok"],
        true
    );
    assert_eq!(a.call(&deposit(2))["ok"], true);

    a.signal(libc::SIGSTOP);
    let mut b = Run::start(&cluster, "paused", b_dir.path(), &["--takeover"]);
    assert_eq!(b.call(&deposit(3))["ok"], true);
    // B has A's history: the session's numbering carried over.
    assert_eq!(b.call(&deposit(2))["error"], "duplicate");

    a.signal(libc::SIGCONT);
    let fenced = a.call(&deposit(4));
    assert_eq!(fenced["error"], "not_leader", "{fenced}");
    assert!(!a.finish(), "a fenced leader exits non-zero");

    assert_eq!(b.call(&deposit(4))["ok"], true);
    // Three deposits (2, 3, 4) and their rebates, once each; the stream
    // holds B's history only: A's refused write never reached it.
    finish_with_balance(b, "30.30", &cluster, "paused");
}

#[test]
fn after_a_sigkill_every_acknowledged_request_is_applied_once_and_so_is_every_rebate() {
    const DEPOSITS: u64 = 200;
    let cluster = Cluster::start(3);
    let a_dir = tempfile::tempdir().unwrap();
    let b_dir = tempfile::tempdir().unwrap();
    let mut a = Run::start(&cluster, "killed", a_dir.path(), &[]);
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
    let killed = Instant::now();
    let _ = a.child.wait();

    // The client retries everything not known answered, under the same
    // numbers, against the new leader (started by hand at once here: an
    // operator or orchestrator would take longer to notice).
    let mut b = Run::start(&cluster, "killed", b_dir.path(), &["--takeover"]);
    retry_deposits(
        &mut b,
        2..2 + DEPOSITS,
        &acknowledged,
        killed,
        "failover (manual --takeover): SIGKILL to the new leader's first answer",
    );
    // 200 deposits of 10.00 and 200 rebates of 0.10, each exactly once.
    finish_with_balance(b, "2020.00", &cluster, "killed");
}

//! Property tests: long random request sequences against the pure Ledger,
//! with every invariant checked after every step.

use proptest::prelude::*;
use ringledger::{
    InstrumentId, Ledger, LedgerConfig, Reply, Request, SessionName, Stamp, Stamped, Symbol,
};

const ACCOUNTS: u64 = 5;
const INSTRUMENTS: u32 = 2;

/// One step of a generated workload. Indices are resolved against the
/// ledger's state when the step runs (e.g. which pending rebate to credit).
#[derive(Clone, Debug)]
enum Step {
    Send {
        request: Request,
        session: u64,
        renumber: bool,
    },
    Advance(u64),
    CreditPending {
        pick: usize,
        amount: i64,
    },
    /// Gives session slot `slot` a session under a new name, closing its
    /// current one first or not (then the table bound evicts the longest
    /// idle, which may be another slot's).
    Reopen {
        slot: u64,
        close_first: bool,
    },
}

/// Sessions live at once in the generated workloads, and their idle limit:
/// small, so that eviction and idle retirement happen.
const SESSIONS_MAX: u32 = 3;
const SESSION_IDLE_MS_MAX: u64 = 5_000;

fn config() -> LedgerConfig {
    LedgerConfig {
        history_per_account_max: 8,
        sessions_max: SESSIONS_MAX,
        session_idle_ms_max: SESSION_IDLE_MS_MAX,
        // Small, so random runs forget closed reservations and reuse ids.
        closed_reservations_max: 4,
    }
}

fn account() -> impl Strategy<Value = u64> {
    0..ACCOUNTS + 1 // one id that is never opened
}

fn amount() -> impl Strategy<Value = i64> {
    prop_oneof![8 => 1..5_000i64, 1 => -5..=0i64, 1 => Just(i64::MAX)]
}

fn request() -> impl Strategy<Value = Request> {
    let instrument = (0..INSTRUMENTS + 1).prop_map(InstrumentId);
    prop_oneof![
        1 => account().prop_map(|account| Request::OpenAccount { account }),
        6 => (account(), amount()).prop_map(|(account, amount)| Request::Deposit { account, amount }),
        4 => (account(), amount()).prop_map(|(account, amount)| Request::Withdraw { account, amount }),
        4 => (account(), account(), amount()).prop_map(|(from, to, amount)| Request::Transfer { from, to, amount }),
        1 => account().prop_map(|account| Request::Balance { account }),
        1 => (account(), 0..40u32).prop_map(|(account, limit)| Request::History { account, limit }),
        1 => (0..INSTRUMENTS + 1, 0..60u64, 0..300i64).prop_map(|(i, supply, price)| Request::ListInstrument {
            symbol: Symbol::new(&format!("S{i}")).unwrap(), supply, price,
        }),
        1 => instrument.clone().prop_map(|instrument| Request::Instrument { instrument }),
        6 => (0..40u64, account(), instrument, 0..25u64, prop_oneof![Just(0u64), 1..400u64], any::<bool>()).prop_map(
            |(reservation, account, instrument, qty, ttl_ms, partial)| Request::Reserve {
                reservation, account, instrument, qty, ttl_ms, partial,
            }),
        3 => (0..40u64).prop_map(|reservation| Request::Confirm { reservation }),
        2 => (0..40u64).prop_map(|reservation| Request::Cancel { reservation }),
        1 => account().prop_map(|account| Request::Holdings { account }),
        1 => Just(Request::Digest),
        1 => (0..400u64, 0..100i64).prop_map(|(deposit_seq, amount)| Request::CreditRebate { deposit_seq, amount }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        12 => (request(), 1..4u64, prop::bool::weighted(0.05)).prop_map(|(request, session, renumber)| Step::Send { request, session, renumber }),
        2 => (1..300u64).prop_map(Step::Advance),
        3 => (any::<usize>(), 0..60i64).prop_map(|(pick, amount)| Step::CreditPending { pick, amount }),
        1 => (1..4u64, any::<bool>()).prop_map(|(slot, close_first)| Step::Reopen { slot, close_first }),
    ]
}

/// Runs the steps, checking invariants after each; returns the ledger and
/// every stamped request it applied, in order.
fn run(steps: &[Step]) -> (Ledger, Vec<Stamped>) {
    let mut ledger = Ledger::new(config());
    let mut log = Vec::new();
    let mut seq = 0;
    let mut now_ms = 0;
    let mut next_req = [0u64; 4];
    // Slot → session id; slots 1, 2 and 3 start with the first three opened.
    let mut slots = [0u64; 4];
    let mut names = 0u64;
    let mut open = |ledger: &mut Ledger, seq: u64, now_ms: u64, log: &mut Vec<Stamped>| {
        names += 1;
        let name = SessionName::new(&format!("n{names}")).unwrap();
        let stamped = Stamped::new(
            Stamp {
                seq,
                time_ms: now_ms,
                ..Stamp::default()
            },
            Request::OpenSession { name },
        );
        log.push(stamped);
        match ledger.apply(&stamped).outcome {
            Ok(Reply::Session { session, last_req }) => {
                assert_eq!(last_req, 0, "a new name starts numbering afresh");
                assert!(ledger.sessions_len() <= SESSIONS_MAX as usize);
                session
            }
            other => panic!("opening a new name answered {other:?}"),
        }
    };
    for (slot, id) in slots.iter_mut().enumerate().skip(1) {
        seq += 1;
        *id = open(&mut ledger, seq, now_ms, &mut log);
        assert_eq!(*id, slot as u64);
    }
    for step in steps {
        let (request, session, req) = match *step {
            Step::Advance(ms) => {
                now_ms += ms;
                (Request::Tick, 0, 0)
            }
            Step::CreditPending { pick, amount } => {
                let pending: Vec<_> = ledger.pending_rebates().collect();
                if pending.is_empty() {
                    continue;
                }
                let job = pending[pick % pending.len()];
                (
                    Request::CreditRebate {
                        deposit_seq: job.deposit_seq,
                        amount: amount.min(job.amount),
                    },
                    0,
                    0,
                )
            }
            Step::Send {
                request,
                session,
                renumber,
            } => {
                let s = session as usize;
                if !renumber {
                    next_req[s] += 1;
                }
                (request, slots[s], next_req[s].max(1))
            }
            Step::Reopen { slot, close_first } => {
                let s = slot as usize;
                if close_first {
                    seq += 1;
                    let close = Stamped::new(
                        Stamp {
                            seq,
                            time_ms: now_ms,
                            session: slots[s],
                            req: 0,
                        },
                        Request::CloseSession,
                    );
                    log.push(close);
                    ledger.apply(&close);
                }
                seq += 1;
                slots[s] = open(&mut ledger, seq, now_ms, &mut log);
                next_req[s] = 0;
                continue;
            }
        };
        seq += 1;
        let stamped = Stamped::new(
            Stamp {
                seq,
                time_ms: now_ms,
                session,
                req,
            },
            request,
        );

        // A probe without a request number shows what the request alone does.
        let before = ledger.digest();
        let mut probe = ledger.clone();
        let probed = probe.apply(&Stamped::new(
            Stamp {
                req: 0,
                ..stamped.stamp
            },
            request,
        ));

        let applied = ledger.apply(&stamped);
        log.push(stamped);
        if let Err(broken) = ledger.check_invariants() {
            panic!("after {stamped:?} -> {:?}: {broken}", applied.outcome);
        }
        if probed.outcome.is_err() {
            assert_eq!(probe.digest(), before, "rejected {request:?} changed state");
        }
        if let (Ok(Reply::Reserved { qty }), Request::Reserve { qty: asked, .. }) =
            (&applied.outcome, request)
        {
            assert!(*qty > 0 && *qty <= asked, "reserved {qty} of {asked}");
        }
        if let (
            Ok(Reply::Balance {
                balance,
                held,
                available,
            }),
            _,
        ) = (&applied.outcome, request)
        {
            assert!(*balance >= 0 && *held >= 0 && *available >= 0 && balance - held == *available);
        }
        assert_eq!(
            applied.rebate.is_some(),
            matches!(request, Request::Deposit { .. }) && applied.outcome.is_ok()
        );
    }
    (ledger, log)
}

fn replay(log: &[Stamped]) -> Ledger {
    let mut ledger = Ledger::new(config());
    for stamped in log {
        ledger.apply(stamped);
    }
    ledger
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_request(
        prefix in prop::collection::vec((account(), 1..10_000i64), 1..6),
        steps in prop::collection::vec(step(), 1_000..3_000),
    ) {
        // Open and fund a few accounts, list the instruments, then go random.
        let mut all: Vec<Step> = Vec::new();
        for (account, cash) in prefix {
            all.push(Step::Send { request: Request::OpenAccount { account }, session: 1, renumber: false });
            all.push(Step::Send { request: Request::Deposit { account, amount: cash }, session: 1, renumber: false });
        }
        for i in 0..INSTRUMENTS {
            all.push(Step::Send {
                request: Request::ListInstrument { symbol: Symbol::new(&format!("S{i}")).unwrap(), supply: 50, price: 7 },
                session: 1,
                renumber: false,
            });
        }
        all.extend(steps);
        let (live, log) = run(&all);
        let replayed = replay(&log);
        prop_assert_eq!(replayed.digest(), live.digest());
        prop_assert_eq!(replayed.last_seq(), live.last_seq());
    }

    #[test]
    fn replaying_any_prefix_reaches_the_same_digest(
        steps in prop::collection::vec(step(), 200..800),
        cut in any::<prop::sample::Index>(),
    ) {
        let (_, log) = run(&steps);
        let cut = cut.index(log.len() + 1);
        let (prefix_live, _) = run(&steps[..cut.min(steps.len())]);
        let replayed = replay(&log[..prefix_live.last_seq() as usize]);
        prop_assert_eq!(replayed.digest(), prefix_live.digest());
    }
}

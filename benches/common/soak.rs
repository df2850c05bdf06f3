//! The soak workload, shared by `tests/soak.rs` (modest N) and
//! `examples/soak.rs` (as long as you like): mixed operations (deposits,
//! withdrawals, transfers, reservations confirmed, cancelled or left to
//! expire) on a fixed set of accounts, pipelined, with a new client every
//! `churn_ops` operations. A checkpoint reads the process's RSS and, when
//! asked, shuts the engine down, measures the Ledger's snapshot encoding
//! and starts a new engine from that Ledger (rarely: a restart frees what
//! the engine held, which would hide a leak there from the RSS figures).

use std::collections::VecDeque;

use ringledger::{
    Client, Engine, ErrorCode, InstrumentId, Ledger, LedgerConfig, Reply, Request, Symbol,
};

pub struct Config {
    pub accounts: u64,
    pub ledger: LedgerConfig,
    /// Operations between two new clients.
    pub churn_ops: u64,
    /// Requests in flight per client.
    pub inflight: usize,
}

/// What a checkpoint measured.
#[derive(Clone, Copy, Debug)]
pub struct Checkpoint {
    pub ops: u64,
    pub clients: u64,
    pub rss_bytes: u64,
    pub snapshot_bytes: Option<u64>,
}

#[derive(Clone, Copy)]
enum Sent {
    Deposit,
    Withdraw,
    Transfer,
    Reserve { id: u64, ttl: bool },
    Close,
}

pub struct Soak {
    config: Config,
    engine: Option<Engine>,
    client: Option<Client>,
    instrument: InstrumentId,
    in_flight: VecDeque<Sent>,
    /// Reserved (answered) and neither closed nor timed.
    open: VecDeque<u64>,
    next_reservation: u64,
    rng: u64,
    pub ops: u64,
    pub clients: u64,
}

/// Resident set size of this process, from /proc/self/statm.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("statm's second field is the resident page count");
    pages * 4096
}

fn start(ledger: Ledger) -> Engine {
    Engine::builder()
        .ledger(ledger)
        .start()
        .expect("engine starts")
}

impl Soak {
    pub fn new(config: Config) -> Soak {
        let engine = start(Ledger::with_capacity(
            config.ledger,
            config.accounts as usize,
        ));
        let mut client = engine.client().unwrap();
        for account in 0..config.accounts {
            client
                .call(Request::OpenAccount { account })
                .unwrap()
                .unwrap();
            client
                .call(Request::Deposit {
                    account,
                    amount: 1_000_000,
                })
                .unwrap()
                .unwrap();
        }
        let listed = client
            .call(Request::ListInstrument {
                symbol: Symbol::new("SOAK").unwrap(),
                supply: u64::MAX / 4,
                price: 100,
            })
            .unwrap();
        let instrument = match listed {
            Ok(Reply::Listed { instrument }) => instrument,
            other => panic!("listing: {other:?}"),
        };
        Soak {
            config,
            engine: Some(engine),
            client: Some(client),
            instrument,
            in_flight: VecDeque::new(),
            open: VecDeque::new(),
            next_reservation: 1,
            rng: 0x5eed_50a6,
            ops: 0,
            clients: 1,
        }
    }

    fn next(&mut self, below: u64) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }

    /// Runs `ops` more operations.
    pub fn run(&mut self, ops: u64) {
        for _ in 0..ops {
            if self.ops.is_multiple_of(self.config.churn_ops) && self.ops > 0 {
                self.drain();
                let engine = self.engine.as_ref().unwrap();
                self.client = Some(engine.client().unwrap());
                self.clients += 1;
            }
            if self.in_flight.len() == self.config.inflight {
                self.receive();
            }
            let (request, sent) = self.pick();
            self.client.as_mut().unwrap().send(request).unwrap();
            self.in_flight.push_back(sent);
            self.ops += 1;
        }
    }

    fn pick(&mut self) -> (Request, Sent) {
        let accounts = self.config.accounts;
        let account = self.next(accounts);
        match self.next(100) {
            0..=29 => {
                let amount = 1 + self.next(10_000) as i64;
                (Request::Deposit { account, amount }, Sent::Deposit)
            }
            30..=49 => {
                let amount = 1 + self.next(10_000) as i64;
                (Request::Withdraw { account, amount }, Sent::Withdraw)
            }
            50..=69 => {
                let to = self.next(accounts);
                let amount = 1 + self.next(5_000) as i64;
                let transfer = Request::Transfer {
                    from: account,
                    to,
                    amount,
                };
                (transfer, Sent::Transfer)
            }
            70..=84 => {
                let id = self.next_reservation;
                self.next_reservation += 1;
                // One in ten expires on its own.
                let ttl = self.next(10) == 0;
                let reserve = Request::Reserve {
                    reservation: id,
                    account,
                    instrument: self.instrument,
                    qty: 1 + self.next(3),
                    ttl_ms: u64::from(ttl),
                    partial: false,
                };
                (reserve, Sent::Reserve { id, ttl })
            }
            roll => match self.open.pop_front() {
                Some(reservation) if roll % 3 == 0 => {
                    (Request::Confirm { reservation }, Sent::Close)
                }
                Some(reservation) => (Request::Cancel { reservation }, Sent::Close),
                None => (Request::Deposit { account, amount: 1 }, Sent::Deposit),
            },
        }
    }

    fn receive(&mut self) {
        let outcome = self.client.as_mut().unwrap().recv().unwrap();
        let sent = self.in_flight.pop_front().expect("a request in flight");
        let refused = outcome.as_ref().err().map(|reject| reject.code());
        match (sent, refused) {
            (Sent::Reserve { id, ttl: false }, None) => self.open.push_back(id),
            (_, None) => {}
            (
                Sent::Withdraw | Sent::Transfer | Sent::Reserve { .. },
                Some(ErrorCode::InsufficientFunds),
            ) => {}
            (_, Some(code)) => panic!("unexpected {code:?}: {outcome:?}"),
        }
    }

    fn drain(&mut self) {
        while !self.in_flight.is_empty() {
            self.receive();
        }
    }

    /// Measures RSS with the engine running and, if `snapshot`, the
    /// snapshot size across a restart.
    pub fn checkpoint(&mut self, snapshot: bool) -> Checkpoint {
        self.drain();
        let rss_bytes = rss_bytes();
        if !snapshot {
            return Checkpoint {
                ops: self.ops,
                clients: self.clients,
                rss_bytes,
                snapshot_bytes: None,
            };
        }
        drop(self.client.take());
        let ledger = self.engine.take().unwrap().shutdown().unwrap();
        ledger.check_invariants().unwrap();
        let config = bincode::config::standard().with_fixed_int_encoding();
        let snapshot_bytes = bincode::encode_to_vec(&ledger, config).unwrap().len() as u64;
        let engine = start(ledger);
        self.client = Some(engine.client().unwrap());
        self.clients += 1;
        self.engine = Some(engine);
        Checkpoint {
            ops: self.ops,
            clients: self.clients,
            rss_bytes,
            snapshot_bytes: Some(snapshot_bytes),
        }
    }
}

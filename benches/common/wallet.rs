//! The wallet journal workload shared by `benches/journal.rs` and
//! `examples/wallet_journal.rs`, so the bench and `ringledger replay` time
//! the same records: `ACCOUNTS` accounts opened first, then deposits,
//! withdrawals and transfers over them from a xorshift stream.

use ringledger::{Request, Stamp, Stamped};

pub const ACCOUNTS: u64 = 10_000;

/// The request at position `i` (0-based); `x` is the generator's state.
pub fn request(i: u64, x: &mut u64) -> Request {
    if i < ACCOUNTS {
        return Request::OpenAccount { account: i };
    }
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    let account = *x % ACCOUNTS;
    let amount = 1 + (*x >> 40) as i64 % 10_000;
    match (*x >> 20) % 4 {
        0 | 1 => Request::Deposit { account, amount },
        2 => Request::Withdraw { account, amount },
        _ => Request::Transfer {
            from: account,
            to: (*x >> 24) % ACCOUNTS,
            amount,
        },
    }
}

/// Record `seq` (1-based), stamped one second per thousand records.
pub fn stamped(seq: u64, x: &mut u64) -> Stamped {
    Stamped::new(
        Stamp {
            seq,
            time_ms: seq / 1000,
            session: 0,
            req: 0,
        },
        request(seq - 1, x),
    )
}

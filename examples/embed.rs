//! A service embedding the engine: several request-handling threads, each
//! with its own `Client`, share one engine in-process.
//!
//! Run with `cargo run --release --example embed`.

use std::thread;

use ringledger::{Engine, Reply, Request, Scale, Symbol};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder().scale(Scale::default()).start()?;
    let scale = engine.scale();

    // Set-up from one thread: wallets and a share sale.
    let mut admin = engine.client()?;
    for account in 0..4 {
        admin
            .call(Request::OpenAccount { account })?
            .map_err(|e| e.to_string())?;
        let amount = scale.parse("500.00")?;
        admin
            .call(Request::Deposit { account, amount })?
            .map_err(|e| e.to_string())?;
    }
    let price = scale.parse("12.50")?;
    let listed = admin.call(Request::ListInstrument {
        symbol: Symbol::new("ACME")?,
        supply: 10,
        price,
    })?;
    let Ok(Reply::Listed { instrument }) = listed else {
        return Err(format!("listing failed: {listed:?}").into());
    };

    // Four handler threads race for the ten shares, 4 at a time.
    let handlers: Vec<_> = (0..4u64)
        .map(|account| {
            let mut client = engine.client().expect("engine is running");
            thread::spawn(move || {
                let reserve = Request::Reserve {
                    reservation: account,
                    account,
                    instrument,
                    qty: 4,
                    ttl_ms: 30_000,
                    partial: false,
                };
                match client.call(reserve).expect("engine is running") {
                    Ok(Reply::Reserved { qty }) => {
                        client
                            .call(Request::Confirm {
                                reservation: account,
                            })
                            .expect("engine is running")
                            .expect("reservation is open");
                        println!("account {account}: bought {qty} shares");
                    }
                    Err(reject) => println!("account {account}: {} ({reject})", reject.code()),
                    Ok(other) => println!("account {account}: unexpected {other:?}"),
                }
            })
        })
        .collect();
    for handler in handlers {
        handler.join().expect("handler thread");
    }

    admin.barrier()?; // every deposit's rebate is credited
    for account in 0..4 {
        if let Ok(Reply::Balance { balance, .. }) = admin.call(Request::Balance { account })? {
            println!("account {account}: balance {}", scale.format(balance));
        }
    }
    let ledger = engine.shutdown()?;
    ledger.check_invariants()?;
    println!("digest {:016x}", ledger.digest());
    Ok(())
}

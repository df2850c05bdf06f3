//! Trading on the secondary market: two accounts buy shares in the sale,
//! then trade them on ACME's order book; a third sweeps the book with a
//! market order. Prints each answer, the book, and the holdings.
//!
//! Run with `cargo run --release --example trading`.

use ringledger::book::{Side, Stp, Tif};
use ringledger::{Engine, OrderEvent, Reply, Request, Symbol};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder().start()?;
    let scale = engine.scale();
    let mut client = engine.client()?;
    let Ok(Reply::Listed { instrument }) = client.call(Request::ListInstrument {
        symbol: Symbol::new("ACME")?,
        supply: 1_000,
        price: scale.parse("10.00")?,
    })?
    else {
        return Err("listing failed".into());
    };
    for account in 1..=3 {
        client
            .call(Request::OpenAccount { account })?
            .map_err(|e| e.to_string())?;
        client
            .call(Request::Deposit {
                account,
                amount: scale.parse("1000.00")?,
            })?
            .map_err(|e| e.to_string())?;
    }
    // Accounts 1 and 2 buy 20 shares each in the sale.
    for account in 1..=2 {
        client
            .call(Request::Reserve {
                reservation: account,
                account,
                instrument,
                qty: 20,
                ttl_ms: 0,
                partial: false,
            })?
            .map_err(|e| e.to_string())?;
        client
            .call(Request::Confirm {
                reservation: account,
            })?
            .map_err(|e| e.to_string())?;
    }
    let limit =
        |order, account, side, qty, price: &str| -> Result<Request, Box<dyn std::error::Error>> {
            Ok(Request::Place {
                order,
                account,
                instrument,
                side,
                market: false,
                tif: Tif::Gtc,
                post_only: false,
                stp: Stp::CancelResting,
                qty,
                price: scale.parse(price)?,
            })
        };
    let orders = [
        limit(101, 1, Side::Sell, 5, "11.00")?,
        limit(102, 2, Side::Sell, 5, "11.50")?,
        limit(103, 1, Side::Sell, 5, "12.00")?,
        limit(104, 3, Side::Buy, 4, "10.50")?,
        // Crosses: buys 5 at 11.00 and 2 at 11.50, and pays no more than that.
        limit(105, 3, Side::Buy, 7, "11.75")?,
        // A market buy sweeps what is left, until its cash or the book ends.
        Request::Place {
            order: 106,
            account: 3,
            instrument,
            side: Side::Buy,
            market: true,
            tif: Tif::Ioc,
            post_only: false,
            stp: Stp::CancelResting,
            qty: 100,
            price: 0,
        },
    ];
    for order in orders {
        match client.call(order)? {
            Ok(Reply::Placed {
                status,
                filled,
                resting,
                events,
            }) => {
                println!("{order:?}\n  -> {status:?}: filled {filled}, resting {resting}");
                for event in events.get().expect("a client's outcome carries its events") {
                    match *event {
                        OrderEvent::Trade {
                            trade,
                            maker,
                            price,
                            qty,
                        } => println!(
                            "     trade #{trade}: {qty} @ {} against order {maker}",
                            scale.format(price)
                        ),
                        OrderEvent::StpCancelled(order) => {
                            println!("     self-trade prevention cancelled order {order}")
                        }
                    }
                }
            }
            other => println!("{order:?}\n  -> {other:?}"),
        }
    }
    if let Ok(Reply::Book(depth)) = client.call(Request::Book {
        instrument,
        depth: 10,
    })? {
        let (bids, asks) = (depth.bids, depth.asks);
        for level in bids {
            println!(
                "bid {} x {} ({} orders)",
                scale.format(level.price),
                level.qty,
                level.orders
            );
        }
        for level in asks {
            println!(
                "ask {} x {} ({} orders)",
                scale.format(level.price),
                level.qty,
                level.orders
            );
        }
    }
    for account in 1..=3 {
        let balance = client.call(Request::Balance { account })?;
        let holdings = client.call(Request::Holdings { account })?;
        if let (Ok(Reply::Balance { balance, held, .. }), Ok(Reply::Holdings(shares))) =
            (balance, holdings)
        {
            println!(
                "account {account}: cash {} (held {}), shares {shares:?}",
                scale.format(balance),
                scale.format(held)
            );
        }
    }
    drop(client);
    let ledger = engine.shutdown()?;
    ledger.check_invariants()?;
    Ok(())
}

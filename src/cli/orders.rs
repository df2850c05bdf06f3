//! How order answers read on the wire, shared by `run` and `inspect`.

use serde_json::{json, Map, Value};

use crate::book::{LevelView, Side, Status, Stp, Tif};
use crate::money::Scale;
use crate::outcome::OrderEvent;

/// `buy` / `sell`.
pub fn side_str(side: Side) -> &'static str {
    match side {
        Side::Buy => "buy",
        Side::Sell => "sell",
    }
}

/// `gtc` / `ioc` / `fok`.
pub fn tif_str(tif: Tif) -> &'static str {
    match tif {
        Tif::Gtc => "gtc",
        Tif::Ioc => "ioc",
        Tif::Fok => "fok",
    }
}

/// `cancel_resting` / `cancel_incoming`.
pub fn stp_str(stp: Stp) -> &'static str {
    match stp {
        Stp::CancelResting => "cancel_resting",
        Stp::CancelIncoming => "cancel_incoming",
    }
}

/// `filled` / `resting` / `cancelled`.
pub fn status_str(status: Status) -> &'static str {
    match status {
        Status::Filled => "filled",
        Status::Resting => "resting",
        Status::Cancelled => "cancelled",
    }
}

/// The fields of a `place` or `amend` answer (without `order`):
/// `status`, `filled`, `resting`, `trades` in order, `stp_cancelled`.
pub fn placed_fields(
    status: Status,
    filled: u64,
    resting: u64,
    events: &[OrderEvent],
    scale: Scale,
) -> Map<String, Value> {
    let mut trades = Vec::new();
    let mut stp_cancelled = Vec::new();
    for event in events {
        match *event {
            OrderEvent::Trade {
                trade,
                maker,
                price,
                qty,
            } => trades.push(json!({
                "trade": trade, "maker": maker, "price": scale.format(price), "qty": qty,
            })),
            OrderEvent::StpCancelled(order) => stp_cancelled.push(json!(order)),
        }
    }
    let Value::Object(fields) = json!({
        "status": status_str(status),
        "filled": filled,
        "resting": resting,
        "trades": trades,
        "stp_cancelled": stp_cancelled,
    }) else {
        unreachable!("an object literal")
    };
    fields
}

/// One side of a `book` answer: best first, `{"price","qty","orders"}`.
pub fn levels_json(levels: &[LevelView], scale: Scale) -> Value {
    levels
        .iter()
        .map(|l| json!({"price": scale.format(l.price), "qty": l.qty, "orders": l.orders}))
        .collect()
}

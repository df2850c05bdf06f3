//! `ringledger inspect`: the journal as JSON lines, each input with the
//! outcome it had. The journal holds inputs only; outcomes come from
//! replaying it from the start, which is exactly how they were made.
//!
//! After the records, one line per rebate still owed whose credit was
//! refused for overflow (`{"unpaid_rebate": true, ...}`; these are not
//! dispatched again on their own), as of the end of the journal: the whole
//! journal is replayed even when `limit` stops the printing early.

use std::io::{self, Write};
use std::path::Path;

use serde_json::{json, Value};

use crate::journal::{read_records, JournalError};
use crate::ledger::{Ledger, LedgerConfig, UnpaidRebate};
use crate::money::Scale;
use crate::outcome::{Reject, Reply};
use crate::request::Request;

use super::orders::{placed_fields, side_str, stp_str, tif_str};

/// What `inspect` printed, and the rebates owed at the journal's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inspected {
    pub printed: u64,
    /// The last record's seq (0 for an empty journal).
    pub last_seq: u64,
    /// Rebates waiting for a credit (dispatched again at the next start).
    pub pending_rebates: usize,
    /// Rebates owed whose credit was refused for overflow.
    pub unpaid_rebates: Vec<UnpaidRebate>,
}

impl std::fmt::Display for Inspected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} records printed; at seq {}: {} rebates pending, {} unpaid (refused for overflow, not dispatched again)",
            self.printed,
            self.last_seq,
            self.pending_rebates,
            self.unpaid_rebates.len()
        )
    }
}

/// Prints up to `limit` records with seq >= `from_seq`, then the unpaid
/// rebates at the end of the journal.
pub fn inspect(
    dir: &Path,
    from_seq: u64,
    limit: u64,
    scale: Scale,
    config: LedgerConfig,
    mut out: impl Write,
) -> Result<Inspected, InspectError> {
    let mut ledger = Ledger::new(config);
    let mut printed = 0u64;
    let records = read_records(dir, 1).map_err(InspectError::Journal)?;
    for (i, record) in records.enumerate() {
        let stamped = record.map_err(InspectError::Journal)?;
        if i == 0 && stamped.stamp.seq != 1 {
            return Err(InspectError::Pruned(stamped.stamp.seq));
        }
        let applied = ledger.apply(&stamped);
        if stamped.stamp.seq < from_seq || printed == limit {
            continue;
        }
        let mut line = request_json(&stamped.request, scale);
        let fields = line.as_object_mut().expect("request_json makes objects");
        fields.insert("seq".into(), json!(stamped.stamp.seq));
        fields.insert("time_ms".into(), json!(stamped.stamp.time_ms));
        fields.insert("session".into(), json!(stamped.stamp.session));
        if stamped.stamp.req != 0 {
            fields.insert("req".into(), json!(stamped.stamp.req));
        }
        match &applied.outcome {
            Ok(reply) => {
                fields.insert("ok".into(), json!(true));
                match reply {
                    Reply::Moved { balance } => {
                        fields.insert("balance".into(), json!(scale.format(*balance)));
                    }
                    Reply::Reserved { qty } => {
                        fields.insert("reserved".into(), json!(qty));
                    }
                    Reply::RebateCredited { credited } => {
                        fields.insert("credited".into(), json!(credited));
                    }
                    Reply::Placed {
                        status,
                        filled,
                        resting,
                        events,
                    } => {
                        fields.extend(placed_fields(
                            *status,
                            *filled,
                            *resting,
                            ledger.events(events),
                            scale,
                        ));
                    }
                    Reply::OrderCancelled { cancelled } => {
                        fields.insert("cancelled".into(), json!(cancelled));
                    }
                    Reply::Session { session, last_req } => {
                        fields.insert("opened".into(), json!(session));
                        fields.insert("last_req".into(), json!(last_req));
                    }
                    _ => {}
                }
            }
            Err(reject) => {
                fields.insert("ok".into(), json!(false));
                fields.insert("error".into(), json!(reject.code().as_str()));
                if let Reject::Duplicate {
                    original: Some(original),
                    ..
                } = reject
                {
                    fields.insert("original".into(), json!(original.as_str()));
                }
            }
        }
        serde_json::to_writer(&mut out, &line).map_err(|e| InspectError::Output(e.into()))?;
        out.write_all(b"\n").map_err(InspectError::Output)?;
        printed += 1;
    }
    let unpaid_rebates: Vec<_> = ledger.unpaid_rebates().collect();
    for unpaid in &unpaid_rebates {
        let line = json!({
            "unpaid_rebate": true,
            "deposit_seq": unpaid.job.deposit_seq,
            "account": unpaid.job.account,
            "deposit": scale.format(unpaid.job.amount),
            "amount": scale.format(unpaid.amount),
        });
        serde_json::to_writer(&mut out, &line).map_err(|e| InspectError::Output(e.into()))?;
        out.write_all(b"\n").map_err(InspectError::Output)?;
    }
    Ok(Inspected {
        printed,
        last_seq: ledger.last_seq(),
        pending_rebates: ledger.pending_rebates_len(),
        unpaid_rebates,
    })
}

fn request_json(request: &Request, scale: Scale) -> Value {
    let money = |units: i64| json!(scale.format(units));
    match *request {
        Request::OpenAccount { account } => json!({"op": "open_account", "account": account}),
        Request::Deposit { account, amount } => {
            json!({"op": "deposit", "account": account, "amount": money(amount)})
        }
        Request::Withdraw { account, amount } => {
            json!({"op": "withdraw", "account": account, "amount": money(amount)})
        }
        Request::Transfer { from, to, amount } => {
            json!({"op": "transfer", "from": from, "to": to, "amount": money(amount)})
        }
        Request::Balance { account } => json!({"op": "balance", "account": account}),
        Request::History { account, limit } => {
            json!({"op": "history", "account": account, "limit": limit})
        }
        Request::ListInstrument {
            symbol,
            supply,
            price,
        } => {
            json!({"op": "list_instrument", "instrument": symbol.as_str(), "shares": supply, "price": money(price)})
        }
        Request::Instrument { instrument } => {
            json!({"op": "instrument", "instrument_id": instrument.0})
        }
        Request::Reserve {
            reservation,
            account,
            instrument,
            qty,
            ttl_ms,
            partial,
        } => json!({
            "op": "reserve", "reservation": reservation, "account": account,
            "instrument_id": instrument.0, "qty": qty, "ttl_ms": ttl_ms, "partial": partial,
        }),
        Request::Confirm { reservation } => json!({"op": "confirm", "reservation": reservation}),
        Request::Cancel { reservation } => json!({"op": "cancel", "reservation": reservation}),
        Request::Holdings { account } => json!({"op": "holdings", "account": account}),
        Request::Tick => json!({"op": "tick"}),
        Request::Digest => json!({"op": "digest"}),
        Request::CreditRebate {
            deposit_seq,
            amount,
        } => {
            json!({"op": "credit_rebate", "deposit_seq": deposit_seq, "amount": money(amount)})
        }
        Request::Place {
            order,
            account,
            instrument,
            side,
            market,
            tif,
            post_only,
            stp,
            qty,
            price,
        } => {
            let mut line = json!({
                "op": "place", "order": order, "account": account,
                "instrument_id": instrument.0, "side": side_str(side),
                "type": if market { "market" } else { "limit" }, "tif": tif_str(tif),
                "post_only": post_only, "stp": stp_str(stp), "qty": qty,
            });
            if !market {
                line["price"] = money(price);
            }
            line
        }
        Request::Amend { order, qty, price } => {
            let mut line = json!({"op": "amend", "order": order});
            if let Some(qty) = qty {
                line["qty"] = json!(qty);
            }
            if let Some(price) = price {
                line["price"] = money(price);
            }
            line
        }
        Request::CancelOrder { order } => json!({"op": "cancel_order", "order": order}),
        Request::Order { order } => json!({"op": "order", "order": order}),
        Request::Book { instrument, depth } => {
            json!({"op": "book", "instrument_id": instrument.0, "depth": depth})
        }
        Request::OpenSession { name } => json!({"op": "open_session", "name": name.as_str()}),
        Request::CloseSession => json!({"op": "close_session"}),
        // A numbered line the edge refused: its number's answer is `code`.
        Request::Rejected { code } => json!({"op": "rejected", "code": code.as_str()}),
    }
}

/// Why inspect stopped.
#[derive(Debug)]
pub enum InspectError {
    Journal(JournalError),
    /// The journal no longer starts at seq 1 (segments were pruned after a snapshot).
    Pruned(u64),
    Output(io::Error),
}

impl std::fmt::Display for InspectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InspectError::Journal(e) => write!(f, "{e}"),
            InspectError::Pruned(first) => write!(
                f,
                "the journal starts at seq {first}: earlier segments were pruned, so outcomes cannot be replayed from the start"
            ),
            InspectError::Output(e) => write!(f, "writing output: {e}"),
        }
    }
}

impl std::error::Error for InspectError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Durability, JournalConfig, JournalWriter};
    use crate::request::{Stamp, Stamped};

    #[test]
    fn a_rebate_refused_for_overflow_is_shown_as_unpaid() {
        let tmp = tempfile::tempdir().unwrap();
        let config = JournalConfig {
            segment_bytes: 1 << 16,
            durability: Durability::Async,
        };
        let half = i64::MAX / 2;
        let requests = [
            Request::OpenAccount { account: 1 },
            Request::Deposit {
                account: 1,
                amount: 10_000,
            },
            Request::OpenAccount { account: 2 },
            Request::Deposit {
                account: 2,
                amount: half,
            },
            Request::Transfer {
                from: 2,
                to: 1,
                amount: half,
            },
            Request::Deposit {
                account: 2,
                amount: half - 10_000,
            },
            Request::Transfer {
                from: 2,
                to: 1,
                amount: half - 10_000,
            },
            // Account 1 now holds i64::MAX - 1: its 100.00 rebate no longer fits.
            Request::CreditRebate {
                deposit_seq: 2,
                amount: 10_000,
            },
        ];
        let batch: Vec<_> = (1..)
            .zip(requests)
            .map(|(seq, request)| Stamped {
                stamp: Stamp {
                    seq,
                    time_ms: 0,
                    session: 1,
                    req: 0,
                },
                request,
            })
            .collect();
        let mut writer = JournalWriter::open(tmp.path(), config).unwrap();
        writer.commit(&batch).unwrap();
        drop(writer);
        let mut out = Vec::new();
        let inspected = inspect(
            tmp.path(),
            1,
            3,
            Scale::default(),
            LedgerConfig::default(),
            &mut out,
        )
        .unwrap();
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "three records, then the unpaid rebate");
        assert_eq!(
            lines[3],
            json!({"unpaid_rebate": true, "deposit_seq": 2, "account": 1,
                   "deposit": "100.00", "amount": "100.00"})
        );
        assert_eq!(inspected.last_seq, 8);
        assert_eq!(inspected.pending_rebates, 2);
        assert_eq!(inspected.unpaid_rebates.len(), 1);
    }
}

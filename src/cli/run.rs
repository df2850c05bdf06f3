//! `ringledger run`: the JSON-lines contract. One object per input line in,
//! exactly one object per line out, in the same order; a malformed line is
//! answered and skipped. Amounts travel as strings and are converted at this
//! edge; instrument symbols are resolved to ids here.
//!
//! Request numbers (`"req"`) are numbers in the client's session (`run`
//! opens one by name at start). A line without `req` is unnumbered and never
//! uses a number up. A numbered line on a mutating op that this edge refuses
//! (a bad amount, a bad symbol, a missing field) still uses its number up:
//! the refusal goes through the engine as [`Request::Rejected`], sequenced
//! and journaled, so its retry is a `duplicate` that names the original code.

use std::io::{self, BufRead, Write};

use serde_json::error::Category;
use serde_json::{json, Map, Value};

use super::{orders, strict_json};
use crate::book::{Side, Stp, Tif};
use crate::engine::{Client, EngineError, ManualClock};
use crate::ledger::BOOK_DEPTH_MAX;
use crate::money::{AmountError, Scale};
use crate::outcome::{Answer, Closure, ErrorCode, Outcome, Reject, Reply};
use crate::request::{InstrumentId, Request, Symbol};

/// The id sent for a symbol that is not listed: the Ledger answers
/// `unknown_instrument` and the request still uses up its number.
const UNLISTED: InstrumentId = InstrumentId(u32::MAX);

/// The ops whose requests are numbered ([`Request::is_numbered`]): on these a
/// `req` is a request number, even when the line is refused at this edge.
const NUMBERED_OPS: [&str; 11] = [
    "open_account",
    "deposit",
    "withdraw",
    "transfer",
    "list_instrument",
    "reserve",
    "confirm",
    "cancel",
    "place",
    "amend",
    "cancel_order",
];

/// Answers every line of `input` on `output`, flushing after each so the
/// command can be driven interactively through pipes. Every line gets exactly
/// one answer, even a blank one or one that is not UTF-8; if the engine itself
/// fails, the line is answered with the failure and serving stops with it.
/// If the engine stopped because its journal cannot be written (a full
/// disk), that line and every later one is answered `unavailable`, and the
/// failure is returned at the end of the input.
pub fn serve(
    client: &mut Client,
    manual_clock: Option<&ManualClock>,
    mut input: impl BufRead,
    mut output: impl Write,
) -> io::Result<()> {
    let mut session = Session {
        client,
        manual_clock,
    };
    let mut bytes = Vec::new();
    let mut unavailable = None;
    loop {
        bytes.clear();
        if input.read_until(b'\n', &mut bytes)? == 0 {
            return match unavailable {
                Some(e) => Err(io::Error::other(e)),
                None => Ok(()),
            };
        }
        let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let (answer, fatal) = match std::str::from_utf8(line) {
            Err(_) => (
                failure_json(&malformed("the line is not valid UTF-8")),
                None,
            ),
            Ok(text) => match session.answer(text) {
                Ok(answer) => (answer, None),
                Err(e @ EngineError::Unavailable(_)) => {
                    let answer = failure_json(&Failure {
                        code: ErrorCode::Unavailable,
                        message: e.to_string(),
                        original: None,
                    });
                    unavailable = Some(e);
                    (answer, None)
                }
                Err(e) => {
                    let message = format!("the engine failed: {e}");
                    let answer = json!({"ok": false, "error": "engine_failed", "message": message});
                    (answer, Some(e))
                }
            },
        };
        serde_json::to_writer(&mut output, &answer)?;
        output.write_all(b"\n")?;
        output.flush()?;
        if let Some(e) = fatal {
            return Err(io::Error::other(e));
        }
    }
}

fn failure_json(f: &Failure) -> Value {
    let mut answer = json!({"ok": false, "error": f.code.as_str(), "message": f.message});
    if let Some(original) = f.original {
        answer["original"] = Value::from(original.as_str());
    }
    answer
}

struct Session<'a> {
    client: &'a mut Client,
    manual_clock: Option<&'a ManualClock>,
}

/// A failed line: the wire code and a message for a person.
struct Failure {
    code: ErrorCode,
    message: String,
    /// A duplicate's first answer, while its session remembers it.
    original: Option<Answer>,
}

/// Why a line got no answer at all: the engine itself is gone.
enum Fatal {
    Line(Failure),
    Engine(EngineError),
}

impl From<Failure> for Fatal {
    fn from(f: Failure) -> Fatal {
        Fatal::Line(f)
    }
}

impl From<AmountError> for Fatal {
    fn from(e: AmountError) -> Fatal {
        Fatal::Line(e.into())
    }
}

fn invalid_order(message: &str) -> Failure {
    Failure {
        code: ErrorCode::InvalidOrder,
        message: message.into(),
        original: None,
    }
}

fn malformed(message: impl Into<String>) -> Failure {
    Failure {
        code: ErrorCode::Malformed,
        message: message.into(),
        original: None,
    }
}

impl From<AmountError> for Failure {
    fn from(e: AmountError) -> Failure {
        let code = match e {
            AmountError::Invalid(_) => ErrorCode::InvalidAmount,
            AmountError::Overflow(_) => ErrorCode::Overflow,
        };
        Failure {
            code,
            message: e.to_string(),
            original: None,
        }
    }
}

impl Session<'_> {
    fn answer(&mut self, line: &str) -> Result<Value, EngineError> {
        match self.try_answer(line) {
            Ok(mut fields) => {
                fields.insert("ok".into(), Value::Bool(true));
                Ok(Value::Object(fields))
            }
            Err(Fatal::Line(f)) => Ok(failure_json(&f)),
            Err(Fatal::Engine(e)) => Err(e),
        }
    }

    fn try_answer(&mut self, line: &str) -> Result<Map<String, Value>, Fatal> {
        if line.trim().is_empty() {
            return Err(malformed("the line is empty: expected a JSON object").into());
        }
        let value = strict_json::from_str(line).map_err(|e| match e.classify() {
            Category::Data => malformed(e.to_string()),
            _ => malformed(format!("not valid JSON: {e}")),
        })?;
        let Value::Object(fields) = value else {
            return Err(malformed("each line must be a JSON object").into());
        };
        let f = Fields(&fields);
        let op = f.str("op")?;
        let req = f.opt_u64("req")?;
        if req == Some(0) {
            return Err(malformed("req must be 1 or more").into());
        }
        if op == "barrier" {
            self.client.barrier().map_err(Fatal::Engine)?;
            return Ok(Map::new());
        }
        let request = match self.request(op, &f) {
            Ok(request) => request,
            Err(Fatal::Line(refused)) => {
                return match req {
                    Some(req) if NUMBERED_OPS.contains(&op) => self.use_up(req, refused, &fields),
                    _ => Err(refused.into()),
                }
            }
            Err(fatal) => return Err(fatal),
        };
        let outcome = match req {
            Some(req) if request.is_numbered() => {
                self.require_session()?;
                self.client.call_numbered(request, req)
            }
            _ => self.client.call(request),
        }
        .map_err(Fatal::Engine)?;
        Ok(self.render(&fields, outcome)?)
    }

    /// Numbered lines need the session `run` opened at start.
    fn require_session(&self) -> Result<(), Failure> {
        match self.client.session() {
            Some(_) => Ok(()),
            None => Err(Failure {
                code: ErrorCode::SessionExpired,
                message: "no session is open here, so `req` cannot be honoured".into(),
                original: None,
            }),
        }
    }

    /// Uses up `req` with the edge's refusal as its answer: sequenced and
    /// journaled, so a retry (also after a restart) is a `duplicate` that
    /// names this refusal's code. The line is answered with the refusal
    /// itself, unless the number was already used (`duplicate`) or the
    /// session has retired.
    fn use_up(
        &mut self,
        req: u64,
        refused: Failure,
        fields: &Map<String, Value>,
    ) -> Result<Map<String, Value>, Fatal> {
        self.require_session()?;
        let outcome = self
            .client
            .call_numbered(Request::Rejected { code: refused.code }, req)
            .map_err(Fatal::Engine)?;
        match outcome {
            Err(Reject::AtEdge(_)) => Err(refused.into()),
            other => Ok(self.render(fields, other)?),
        }
    }

    /// The request a line asks for, checked and converted at this edge.
    fn request(&mut self, op: &str, f: &Fields) -> Result<Request, Fatal> {
        let scale = self.client.scale();
        let request = match op {
            "open_account" => Request::OpenAccount {
                account: f.u64("account")?,
            },
            "deposit" => Request::Deposit {
                account: f.u64("account")?,
                amount: f.amount("amount", scale)?,
            },
            "withdraw" => Request::Withdraw {
                account: f.u64("account")?,
                amount: f.amount("amount", scale)?,
            },
            "transfer" => Request::Transfer {
                from: f.u64("from")?,
                to: f.u64("to")?,
                amount: f.amount("amount", scale)?,
            },
            "balance" => Request::Balance {
                account: f.u64("account")?,
            },
            "history" => Request::History {
                account: f.u64("account")?,
                limit: f.u64("limit")?.min(u64::from(u32::MAX)) as u32,
            },
            "list_instrument" => Request::ListInstrument {
                symbol: f.symbol("instrument")?,
                supply: f.u64("shares")?,
                price: f.amount("price", scale)?,
            },
            "instrument" => {
                let symbol = f.symbol("instrument")?;
                let instrument = self.client.instrument_id(&symbol).ok_or_else(|| Failure {
                    code: ErrorCode::UnknownInstrument,
                    message: format!("instrument {symbol} is not listed"),
                    original: None,
                })?;
                Request::Instrument { instrument }
            }
            "reserve" => {
                let symbol = f.symbol("instrument")?;
                Request::Reserve {
                    reservation: f.u64("reservation")?,
                    account: f.u64("account")?,
                    instrument: self.client.instrument_id(&symbol).unwrap_or(UNLISTED),
                    qty: f.u64("qty")?,
                    ttl_ms: f.opt_u64("ttl_ms")?.unwrap_or(0),
                    partial: f.opt_bool("partial")?.unwrap_or(false),
                }
            }
            "confirm" => Request::Confirm {
                reservation: f.u64("reservation")?,
            },
            "cancel" => Request::Cancel {
                reservation: f.u64("reservation")?,
            },
            "holdings" => Request::Holdings {
                account: f.u64("account")?,
            },
            "tick" => {
                let now_ms = f.u64("now_ms")?;
                let clock = self.manual_clock.ok_or_else(|| {
                    malformed("tick needs the manual clock: start with --clock manual")
                })?;
                clock
                    .advance_to(now_ms)
                    .map_err(|e| malformed(e.to_string()))?;
                Request::Tick
            }
            "digest" => Request::Digest,
            "place" => self.place(f)?,
            "amend" => Request::Amend {
                order: f.u64("order")?,
                qty: f.opt_u64("qty")?,
                price: match f.0.get("price") {
                    None => None,
                    Some(_) => Some(f.amount("price", scale)?),
                },
            },
            "cancel_order" => Request::CancelOrder {
                order: f.u64("order")?,
            },
            "order" => Request::Order {
                order: f.u64("order")?,
            },
            "book" => {
                let symbol = f.symbol("instrument")?;
                let depth = f.opt_u64("depth")?.unwrap_or(10);
                if !(1..=u64::from(BOOK_DEPTH_MAX)).contains(&depth) {
                    return Err(
                        malformed(format!("field `depth` must be 1 to {BOOK_DEPTH_MAX}")).into(),
                    );
                }
                let instrument = self.client.instrument_id(&symbol).ok_or_else(|| Failure {
                    code: ErrorCode::UnknownInstrument,
                    message: format!("instrument {symbol} is not listed"),
                    original: None,
                })?;
                Request::Book {
                    instrument,
                    depth: depth as u32,
                }
            }
            other => return Err(malformed(format!("unknown op {other:?}")).into()),
        };
        Ok(request)
    }

    /// A `place` line: the wire's defaults (limit; gtc for a limit, ioc for
    /// a market order; cancel_resting) filled in. A limit without a price
    /// or a market order with one is `invalid_order` here; the Ledger
    /// checks every other combination.
    fn place(&mut self, f: &Fields) -> Result<Request, Fatal> {
        let scale = self.client.scale();
        let symbol = f.symbol("instrument")?;
        let side = match f.str("side")? {
            "buy" => Side::Buy,
            "sell" => Side::Sell,
            other => {
                return Err(malformed(format!("side must be buy or sell, not {other:?}")).into())
            }
        };
        let market = match f.opt_str("type")? {
            None | Some("limit") => false,
            Some("market") => true,
            Some(other) => {
                return Err(
                    malformed(format!("type must be limit or market, not {other:?}")).into(),
                )
            }
        };
        let tif = match f.opt_str("tif")? {
            None if market => Tif::Ioc,
            None | Some("gtc") => Tif::Gtc,
            Some("ioc") => Tif::Ioc,
            Some("fok") => Tif::Fok,
            Some(other) => {
                return Err(malformed(format!("tif must be gtc, ioc or fok, not {other:?}")).into())
            }
        };
        let stp = match f.opt_str("stp")? {
            None | Some("cancel_resting") => Stp::CancelResting,
            Some("cancel_incoming") => Stp::CancelIncoming,
            Some(other) => {
                return Err(malformed(format!(
                    "stp must be cancel_resting or cancel_incoming, not {other:?}"
                ))
                .into())
            }
        };
        let order = f.u64("order")?;
        let account = f.u64("account")?;
        let qty = f.u64("qty")?;
        let post_only = f.opt_bool("post_only")?.unwrap_or(false);
        let has_price = f.0.contains_key("price");
        let price = match (market, has_price) {
            (false, true) => f.amount("price", scale)?,
            (true, false) => 0,
            (false, false) => return Err(invalid_order("a limit order needs a price").into()),
            (true, true) => return Err(invalid_order("a market order takes no price").into()),
        };
        Ok(Request::Place {
            order,
            account,
            instrument: self.client.instrument_id(&symbol).unwrap_or(UNLISTED),
            side,
            market,
            tif,
            post_only,
            stp,
            qty,
            price,
        })
    }

    fn render(
        &self,
        fields: &Map<String, Value>,
        outcome: Outcome,
    ) -> Result<Map<String, Value>, Failure> {
        let scale = self.client.scale();
        let money = |units| Value::String(scale.format(units));
        let reply = outcome.map_err(|reject| Failure {
            code: reject.code(),
            message: describe(&reject, fields, scale),
            original: match reject {
                Reject::Duplicate { original, .. } => original,
                _ => None,
            },
        })?;
        let answer = match reply {
            Reply::Done
            | Reply::Listed { .. }
            | Reply::RebateCredited { .. }
            | Reply::Session { .. } => json!({}),
            Reply::Moved { balance } => json!({"balance": money(balance)}),
            Reply::Balance {
                balance,
                held,
                available,
            } => {
                json!({"balance": money(balance), "held": money(held), "available": money(available)})
            }
            Reply::History { entries, truncated } => {
                let entries: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        json!({
                            "seq": e.seq,
                            "time_ms": e.time_ms,
                            "kind": e.kind.as_str(),
                            "amount": money(e.amount),
                            "balance": money(e.balance),
                        })
                    })
                    .collect();
                json!({"entries": entries, "truncated": truncated})
            }
            Reply::Instrument(view) => json!({
                "supply": view.supply,
                "available": view.available,
                "reserved": view.reserved,
                "sold": view.sold,
                "price": money(view.price),
            }),
            Reply::Reserved { qty } => json!({"qty": qty}),
            Reply::Holdings(shares) => {
                let owned: Map<String, Value> = shares
                    .iter()
                    .map(|(s, q, _)| (s.as_str().to_string(), json!(q)))
                    .collect();
                let held: Map<String, Value> = shares
                    .iter()
                    .filter(|(_, _, h)| *h > 0)
                    .map(|(s, _, h)| (s.as_str().to_string(), json!(h)))
                    .collect();
                json!({"shares": owned, "held": held})
            }
            Reply::Digest(digest) => json!({"digest": format!("{digest:016x}")}),
            Reply::Placed {
                status,
                filled,
                resting,
                events,
            } => {
                let mut answer = Map::new();
                if let Some(order) = fields.get("order") {
                    answer.insert("order".into(), order.clone());
                }
                answer.extend(orders::placed_fields(
                    status, filled, resting, &events, scale,
                ));
                Value::Object(answer)
            }
            Reply::OrderCancelled { cancelled } => json!({"cancelled": cancelled}),
            Reply::Order(o) => json!({
                "account": o.account,
                "instrument": o.symbol.as_str(),
                "side": orders::side_str(o.side),
                "price": money(o.price),
                "qty": o.qty,
                "filled": o.filled,
            }),
            Reply::Book(depth) => json!({
                "bids": orders::levels_json(&depth.bids, scale),
                "asks": orders::levels_json(&depth.asks, scale),
            }),
        };
        let Value::Object(fields) = answer else {
            unreachable!("every answer above is an object")
        };
        Ok(fields)
    }
}

/// A rejection in the caller's terms: decimal amounts, instrument symbols.
fn describe(reject: &Reject, fields: &Map<String, Value>, scale: Scale) -> String {
    let symbol = || {
        fields
            .get("instrument")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string()
    };
    match *reject {
        Reject::InsufficientFunds {
            account,
            available,
            requested,
        } => format!(
            "account {account} has {} available, {} needed",
            scale.format(available),
            scale.format(requested)
        ),
        Reject::UnknownInstrument(_) => format!("instrument {} is not listed", symbol()),
        Reject::InsufficientShares {
            available,
            requested,
            ..
        } => {
            format!(
                "instrument {} has {available} shares available, {requested} requested",
                symbol()
            )
        }
        Reject::UnknownReservation {
            reservation,
            closed: Some(Closure::Confirmed),
        } => {
            format!("reservation {reservation} was already confirmed")
        }
        Reject::UnknownReservation {
            reservation,
            closed: Some(Closure::Cancelled),
        } => {
            format!("reservation {reservation} was cancelled")
        }
        _ => reject.to_string(),
    }
}

/// Typed access to a line's fields; anything missing or mistyped is malformed.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn get(&self, name: &str) -> Result<&Value, Failure> {
        self.0
            .get(name)
            .ok_or_else(|| malformed(format!("missing field `{name}`")))
    }

    fn str(&self, name: &str) -> Result<&str, Failure> {
        self.get(name)?
            .as_str()
            .ok_or_else(|| malformed(format!("field `{name}` must be a string")))
    }

    fn u64(&self, name: &str) -> Result<u64, Failure> {
        self.get(name)?
            .as_u64()
            .ok_or_else(|| malformed(format!("field `{name}` must be a non-negative integer")))
    }

    /// An optional field is left out, or has its type: `null` is not
    /// "absent" (a null `req` would silently make a request unnumbered).
    fn opt_u64(&self, name: &str) -> Result<Option<u64>, Failure> {
        match self.0.get(name) {
            None => Ok(None),
            Some(_) => self.u64(name).map(Some),
        }
    }

    fn opt_str(&self, name: &str) -> Result<Option<&str>, Failure> {
        match self.0.get(name) {
            None => Ok(None),
            Some(_) => self.str(name).map(Some),
        }
    }

    fn opt_bool(&self, name: &str) -> Result<Option<bool>, Failure> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| malformed(format!("field `{name}` must be true or false"))),
        }
    }

    fn amount(&self, name: &str, scale: Scale) -> Result<i64, Failure> {
        let text = self.get(name)?.as_str().ok_or_else(|| {
            malformed(format!(
                "field `{name}` must be a string such as \"10.50\" (amounts travel as strings)"
            ))
        })?;
        Ok(scale.parse(text)?)
    }

    fn symbol(&self, name: &str) -> Result<Symbol, Failure> {
        Symbol::new(self.str(name)?).map_err(malformed)
    }
}

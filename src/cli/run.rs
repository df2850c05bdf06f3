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

use std::borrow::BorrowMut;
use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Read, Write};

use serde_json::error::Category;
use serde_json::{json, Map, Value};

use super::{orders, strict_json};
use crate::book::{Side, Stp, Tif};
use crate::engine::{Client, EngineError, ManualClock};
use crate::ledger::BOOK_DEPTH_MAX;
use crate::metrics::Metrics;
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

/// Lines read ahead of their answers at most: enough that the engine works
/// on a batch while this thread parses the next lines, far below a client's
/// response queue.
const WINDOW: usize = 1024;

/// Bytes read from the input at once: with a file or a full pipe, many
/// lines per system call.
const INPUT_BUFFER_BYTES: usize = 1 << 16;

/// Answers every line of `input` on `output`, in order. Lines are pipelined:
/// each is sent to the engine as soon as it is read, up to [`WINDOW`] ahead
/// of its answer, and answers are written as they come back. Whenever no
/// complete line is waiting in the input (it paused, as an interactive
/// client does after each line), everything read so far is answered and
/// flushed first, so the command can still be driven one line at a time
/// through pipes. Every line gets exactly one answer, even a blank one or
/// one that is not UTF-8; if the engine itself fails, the line is answered
/// with the failure and serving stops with it. If the engine stopped
/// because its journal cannot be written (a full disk), that line and every
/// later one is answered `unavailable`, and the failure is returned at the
/// end of the input.
///
/// A line whose handling depends on earlier lines' effects waits for them:
/// `barrier` and `tick` (the clock must not move under requests still in
/// flight) wait for everything in flight, and `instrument` or `reserve`
/// wait for an earlier `list_instrument` still in flight, whose symbol they
/// may name.
///
/// With `metrics`, every line is counted by op and every answer by its
/// outcome code (relaxed atomic adds on this thread).
pub fn serve(
    client: &mut Client,
    manual_clock: Option<&ManualClock>,
    metrics: Option<&Metrics>,
    input: impl Read,
    mut output: impl Write,
) -> io::Result<()> {
    let mut session = Session::new(client, manual_clock, metrics);
    let mut input = BufReader::with_capacity(INPUT_BUFFER_BYTES, input);
    let mut bytes = Vec::new();
    loop {
        if !input.buffer().contains(&b'\n') {
            session.answer_all(&mut output)?;
            output.flush()?;
        }
        bytes.clear();
        if input.read_until(b'\n', &mut bytes)? == 0 {
            session.answer_all(&mut output)?;
            output.flush()?;
            return match session.take_unavailable() {
                Some(e) => Err(io::Error::other(e)),
                None => Ok(()),
            };
        }
        let line = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        session.take_line(line, &mut output)?;
    }
}

/// A line read and not yet answered on the output.
enum Pending {
    /// Answered without the engine (or after waiting for it).
    Answered(Value),
    /// Sent to the engine: its outcome is the client's next one to receive
    /// once every earlier pending line is answered.
    Sent {
        fields: Map<String, Value>,
        /// A numbered line refused at this edge: its number was used up
        /// with the refusal, which is its answer unless the engine says
        /// otherwise (see [`Session::use_up`]).
        refused: Option<Failure>,
        /// A `list_instrument` line (see [`Session::listings_in_flight`]).
        listing: bool,
    },
}

fn success_json(mut fields: Map<String, Value>) -> Value {
    fields.insert("ok".into(), Value::Bool(true));
    Value::Object(fields)
}

fn write_line(output: &mut impl Write, answer: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *output, answer)?;
    output.write_all(b"\n")
}

/// Writes the most common answers (a balance after a move, a bare success)
/// straight to `output`, byte for byte as [`write_line`] writes them after
/// [`render`], without building a `Value`. False if `outcome` is not one of
/// them: nothing was written.
fn write_plain(output: &mut impl Write, scale: Scale, outcome: &Outcome) -> io::Result<bool> {
    match outcome {
        Ok(Reply::Moved { balance }) => {
            // A formatted amount is digits, a dot and a sign: nothing to escape.
            writeln!(
                output,
                r#"{{"balance":"{}","ok":true}}"#,
                scale.format(*balance)
            )?;
        }
        Ok(
            Reply::Done
            | Reply::Listed { .. }
            | Reply::RebateCredited { .. }
            | Reply::Session { .. },
        ) => {
            output.write_all(b"{\"ok\":true}\n")?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The answer to a line the engine could not take because it failed or
/// was fenced (`not_leader`).
pub fn engine_failure_json(e: &EngineError) -> Value {
    match e {
        // Fenced by a newer leader: the engine stopped, and says why.
        EngineError::NotLeader(_) => {
            json!({"ok": false, "error": ErrorCode::NotLeader.as_str(), "message": e.to_string()})
        }
        _ => {
            let message = format!("the engine failed: {e}");
            json!({"ok": false, "error": "engine_failed", "message": message})
        }
    }
}

/// Answers a line with the engine's failure and stops serving.
fn fail(e: EngineError, output: &mut impl Write) -> io::Result<()> {
    write_line(output, &engine_failure_json(&e))?;
    output.flush()?;
    Err(io::Error::other(e))
}

/// A line refused with `code` at some other edge than this one (`serve`'s
/// checks of a NATS message), in the same form as this edge's refusals.
pub fn refusal_json(code: ErrorCode, message: impl Into<String>) -> Value {
    failure_json(&Failure {
        code,
        message: message.into(),
        original: None,
    })
}

/// An answer's outcome code: `ok`, or its `error`.
fn outcome_code(answer: &Value) -> &str {
    match answer.get("error").and_then(Value::as_str) {
        Some(code) => code,
        None => "ok",
    }
}

fn failure_json(f: &Failure) -> Value {
    let mut answer = json!({"ok": false, "error": f.code.as_str(), "message": f.message});
    if let Some(original) = f.original {
        answer["original"] = Value::from(original.as_str());
    }
    answer
}

/// One client's lines, answered in the order they were taken in: the
/// contract [`serve`] keeps over stdin, and `serve` over NATS keeps per
/// session (see `cli::serve`). `C` is the engine client, owned or borrowed.
pub struct Session<'a, C: BorrowMut<Client> = &'a mut Client> {
    client: C,
    manual_clock: Option<&'a ManualClock>,
    metrics: Option<&'a Metrics>,
    /// Whether the line being taken in was counted by its op yet.
    op_counted: bool,
    /// Lines read, oldest first, whose answers are not written yet.
    pending: VecDeque<Pending>,
    /// `list_instrument` lines sent whose answers have not come back: until
    /// they have, the symbols they list may not be resolvable yet.
    listings_in_flight: usize,
    /// Why the engine became unavailable, once it has: returned at the end.
    unavailable: Option<EngineError>,
}

/// A failed line: the wire code and a message for a person.
struct Failure {
    code: ErrorCode,
    message: String,
    /// A duplicate's first answer, while its session remembers it.
    original: Option<Answer>,
}

/// Why a line could not be taken in.
enum Fatal {
    /// It is answered with this failure.
    Line(Failure),
    /// The engine itself is gone: the line is answered with that, and
    /// serving stops.
    Engine(EngineError),
    /// Serving stopped while an earlier line was answered.
    Stopped(io::Error),
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

impl<'a, C: BorrowMut<Client>> Session<'a, C> {
    pub fn new(
        client: C,
        manual_clock: Option<&'a ManualClock>,
        metrics: Option<&'a Metrics>,
    ) -> Self {
        Session {
            client,
            manual_clock,
            metrics,
            op_counted: false,
            pending: VecDeque::with_capacity(WINDOW),
            listings_in_flight: 0,
            unavailable: None,
        }
    }

    fn client(&mut self) -> &mut Client {
        self.client.borrow_mut()
    }

    /// Lines taken in whose answers are not written yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Why the engine became unavailable, if it did since the last call.
    pub fn take_unavailable(&mut self) -> Option<EngineError> {
        self.unavailable.take()
    }

    /// Takes one line in (without its line ending): answers it at this
    /// edge or sends it to the engine, and writes the oldest answer once a
    /// window of lines (1,024) wait for theirs. An error means serving stops: the
    /// engine failed (the line was answered with the failure) or `output`
    /// failed.
    pub fn take_line(&mut self, line: &[u8], output: &mut impl Write) -> io::Result<()> {
        self.op_counted = false;
        let pending = match std::str::from_utf8(line) {
            Err(_) => Pending::Answered(failure_json(&malformed("the line is not valid UTF-8"))),
            Ok(text) => match self.take(text, output) {
                Ok(pending) => pending,
                Err(Fatal::Line(failure)) => Pending::Answered(failure_json(&failure)),
                Err(Fatal::Engine(e)) => {
                    self.answer_all(output)?;
                    if let (Some(metrics), false) = (self.metrics, self.op_counted) {
                        metrics.invalid_request();
                    }
                    return self.engine_error(e, output);
                }
                Err(Fatal::Stopped(e)) => return Err(e),
            },
        };
        if let (Some(metrics), false) = (self.metrics, self.op_counted) {
            metrics.invalid_request();
        }
        self.pending.push_back(pending);
        if self.pending.len() >= WINDOW {
            self.answer_oldest(output)?;
        }
        Ok(())
    }

    /// Takes one line in: answers it at this edge, or sends it to the engine
    /// (first waiting for the earlier lines it depends on, see [`serve`]).
    fn take(&mut self, line: &str, output: &mut impl Write) -> Result<Pending, Fatal> {
        let fields = read_object(line)?;
        let f = Fields(&fields);
        let (op, req) = op_and_req(&f)?;
        if let Some(metrics) = self.metrics {
            metrics.request(op);
        }
        self.op_counted = true;
        let waits_for_all = matches!(op, "barrier" | "tick");
        let names_listing = matches!(op, "instrument" | "reserve") && self.listings_in_flight > 0;
        if waits_for_all || names_listing {
            self.answer_all(output).map_err(Fatal::Stopped)?;
        }
        if op == "barrier" {
            self.client().barrier().map_err(Fatal::Engine)?;
            return Ok(Pending::Answered(success_json(Map::new())));
        }
        let client: &Client = self.client.borrow();
        let edge = Edge {
            scale: client.scale(),
            instruments: &|symbol| client.instrument_id(symbol),
            manual_clock: self.manual_clock,
        };
        let request = match edge.request(op, &f) {
            Ok(request) => request,
            Err(refused) => {
                return match req {
                    Some(req) if NUMBERED_OPS.contains(&op) => self.use_up(req, refused, fields),
                    _ => Err(refused.into()),
                }
            }
        };
        let listing = matches!(request, Request::ListInstrument { .. });
        match req {
            Some(req) if request.is_numbered() => {
                self.require_session()?;
                self.client().send_numbered(request, req)
            }
            _ => self.client().send(request),
        }
        .map_err(Fatal::Engine)?;
        if listing {
            self.listings_in_flight += 1;
        }
        Ok(Pending::Sent {
            fields,
            refused: None,
            listing,
        })
    }

    /// Writes the answers of every line taken in so far, waiting for the
    /// engine's outcomes.
    pub fn answer_all(&mut self, output: &mut impl Write) -> io::Result<()> {
        while !self.pending.is_empty() {
            self.answer_oldest(output)?;
        }
        Ok(())
    }

    /// Writes the oldest pending line's answer, waiting for the engine's
    /// outcome if it was sent. If the engine failed, the line is answered
    /// with the failure and the error returned: serving stops.
    fn answer_oldest(&mut self, output: &mut impl Write) -> io::Result<()> {
        let answer = match self.pending.pop_front() {
            None => return Ok(()),
            Some(Pending::Answered(answer)) => answer,
            Some(Pending::Sent {
                fields,
                refused,
                listing,
            }) => {
                if listing {
                    self.listings_in_flight -= 1;
                }
                let scale = self.client().scale();
                match self.client().recv() {
                    Ok(outcome) if refused.is_none() && write_plain(output, scale, &outcome)? => {
                        if let Some(metrics) = self.metrics {
                            metrics.answer("ok");
                        }
                        return Ok(());
                    }
                    Ok(outcome) => self.outcome_json(&fields, refused, outcome),
                    Err(e) => return self.engine_error(e, output),
                }
            }
        };
        if let Some(metrics) = self.metrics {
            metrics.answer(outcome_code(&answer));
        }
        write_line(output, &answer)
    }

    /// Answers a line the engine could not take. `unavailable` (its journal
    /// cannot be written): serving goes on, every later line that needs the
    /// engine is answered so too, and the failure is returned at the end of
    /// the input. Any other failure: the line is answered with it and
    /// serving stops.
    fn engine_error(&mut self, e: EngineError, output: &mut impl Write) -> io::Result<()> {
        if let Some(metrics) = self.metrics {
            metrics.answer(match e {
                EngineError::Unavailable(_) => ErrorCode::Unavailable.as_str(),
                EngineError::NotLeader(_) => ErrorCode::NotLeader.as_str(),
                _ => "engine_failed",
            });
        }
        if let EngineError::Unavailable(_) = e {
            let answer = failure_json(&Failure {
                code: ErrorCode::Unavailable,
                message: e.to_string(),
                original: None,
            });
            self.unavailable = Some(e);
            return write_line(output, &answer);
        }
        fail(e, output)
    }

    /// The answer to a sent line, given its outcome.
    fn outcome_json(
        &self,
        fields: &Map<String, Value>,
        refused: Option<Failure>,
        outcome: Outcome,
    ) -> Value {
        match (refused, outcome) {
            // The number was used up with the refusal: the refusal answers.
            (Some(refused), Err(Reject::AtEdge(_))) => failure_json(&refused),
            (_, outcome) => match render(self.client.borrow().scale(), fields, outcome) {
                Ok(fields) => success_json(fields),
                Err(failure) => failure_json(&failure),
            },
        }
    }

    /// Numbered lines need the session `run` opened at start.
    fn require_session(&self) -> Result<(), Failure> {
        match self.client.borrow().session() {
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
        fields: Map<String, Value>,
    ) -> Result<Pending, Fatal> {
        self.require_session()?;
        self.client()
            .send_numbered(Request::Rejected { code: refused.code }, req)
            .map_err(Fatal::Engine)?;
        Ok(Pending::Sent {
            fields,
            refused: Some(refused),
            listing: false,
        })
    }
}

/// What turning a line into a request needs from the engine: the money
/// scale, the instrument directory, and the manual clock a `tick` moves.
/// Kept apart from [`Session`] so that the fuzz targets and their corpus
/// test drive the very same conversion without an engine.
pub(crate) struct Edge<'a> {
    pub scale: Scale,
    pub instruments: &'a dyn Fn(&Symbol) -> Option<InstrumentId>,
    pub manual_clock: Option<&'a ManualClock>,
}

impl Edge<'_> {
    /// The request a line asks for, checked and converted at this edge.
    fn request(&self, op: &str, f: &Fields) -> Result<Request, Failure> {
        let scale = self.scale;
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
                let instrument = (self.instruments)(&symbol).ok_or_else(|| Failure {
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
                    instrument: (self.instruments)(&symbol).unwrap_or(UNLISTED),
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
                    return Err(malformed(format!(
                        "field `depth` must be 1 to {BOOK_DEPTH_MAX}"
                    )));
                }
                let instrument = (self.instruments)(&symbol).ok_or_else(|| Failure {
                    code: ErrorCode::UnknownInstrument,
                    message: format!("instrument {symbol} is not listed"),
                    original: None,
                })?;
                Request::Book {
                    instrument,
                    depth: depth as u32,
                }
            }
            other => return Err(malformed(format!("unknown op {other:?}"))),
        };
        Ok(request)
    }

    /// A `place` line: the wire's defaults (limit; gtc for a limit, ioc for
    /// a market order; cancel_resting) filled in. A limit without a price
    /// or a market order with one is `invalid_order` here; the Ledger
    /// checks every other combination.
    fn place(&self, f: &Fields) -> Result<Request, Failure> {
        let scale = self.scale;
        let symbol = f.symbol("instrument")?;
        let side = match f.str("side")? {
            "buy" => Side::Buy,
            "sell" => Side::Sell,
            other => {
                return Err(malformed(format!(
                    "side must be buy or sell, not {other:?}"
                )))
            }
        };
        let market = match f.opt_str("type")? {
            None | Some("limit") => false,
            Some("market") => true,
            Some(other) => {
                return Err(malformed(format!(
                    "type must be limit or market, not {other:?}"
                )))
            }
        };
        let tif = match f.opt_str("tif")? {
            None if market => Tif::Ioc,
            None | Some("gtc") => Tif::Gtc,
            Some("ioc") => Tif::Ioc,
            Some("fok") => Tif::Fok,
            Some(other) => {
                return Err(malformed(format!(
                    "tif must be gtc, ioc or fok, not {other:?}"
                )))
            }
        };
        let stp = match f.opt_str("stp")? {
            None | Some("cancel_resting") => Stp::CancelResting,
            Some("cancel_incoming") => Stp::CancelIncoming,
            Some(other) => {
                return Err(malformed(format!(
                    "stp must be cancel_resting or cancel_incoming, not {other:?}"
                )))
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
            (false, false) => return Err(invalid_order("a limit order needs a price")),
            (true, true) => return Err(invalid_order("a market order takes no price")),
        };
        Ok(Request::Place {
            order,
            account,
            instrument: (self.instruments)(&symbol).unwrap_or(UNLISTED),
            side,
            market,
            tif,
            post_only,
            stp,
            qty,
            price,
        })
    }
}

/// What [`serve`] makes of one line without an engine: the request it
/// sends (`None` for `barrier`, which only waits), or the answer it
/// refuses the line with at this edge. The fuzz targets drive this.
pub(crate) fn line_request(line: &str, edge: &Edge) -> Result<Option<Request>, Value> {
    let take = || {
        let fields = read_object(line)?;
        let f = Fields(&fields);
        let (op, _) = op_and_req(&f)?;
        match op {
            "barrier" => Ok(None),
            _ => edge.request(op, &f).map(Some),
        }
    };
    take().map_err(|failure| failure_json(&failure))
}

/// A line's JSON object, or why it is not one.
fn read_object(line: &str) -> Result<Map<String, Value>, Failure> {
    if line.trim().is_empty() {
        return Err(malformed("the line is empty: expected a JSON object"));
    }
    let value = strict_json::from_str(line).map_err(|e| match e.classify() {
        Category::Data => malformed(e.to_string()),
        _ => malformed(format!("not valid JSON: {e}")),
    })?;
    let Value::Object(fields) = value else {
        return Err(malformed("each line must be a JSON object"));
    };
    Ok(fields)
}

/// A line's op and its request number, if it carries one (never 0).
fn op_and_req<'f>(f: &Fields<'f>) -> Result<(&'f str, Option<u64>), Failure> {
    let op = f.str("op")?;
    let req = f.opt_u64("req")?;
    if req == Some(0) {
        return Err(malformed("req must be 1 or more"));
    }
    Ok((op, req))
}

/// The fields of a sent line's answer, or the failure it is answered with.
fn render(
    scale: Scale,
    fields: &Map<String, Value>,
    outcome: Outcome,
) -> Result<Map<String, Value>, Failure> {
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
                    let mut entry = json!({
                        "seq": e.seq,
                        "time_ms": e.time_ms,
                        "kind": e.kind.as_str(),
                        "amount": money(e.amount),
                        "balance": money(e.balance),
                    });
                    if let Some(trade) = e.trade {
                        entry["trade"] = json!(trade);
                    }
                    entry
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
            let events = events.get().expect("a client's outcome carries its events");
            answer.extend(orders::placed_fields(
                status, filled, resting, events, scale,
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

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Result<&'a Value, Failure> {
        self.0
            .get(name)
            .ok_or_else(|| malformed(format!("missing field `{name}`")))
    }

    fn str(&self, name: &str) -> Result<&'a str, Failure> {
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

    fn opt_str(&self, name: &str) -> Result<Option<&'a str>, Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::InstrumentId;

    #[test]
    fn plain_answers_are_the_rendered_ones_byte_for_byte() {
        let outcomes = [
            Ok(Reply::Moved { balance: 0 }),
            Ok(Reply::Moved { balance: -1_050 }),
            Ok(Reply::Moved { balance: i64::MAX }),
            Ok(Reply::Done),
            Ok(Reply::Listed {
                instrument: InstrumentId(3),
            }),
        ];
        for places in [0, 2, 18] {
            let scale = Scale::new(places).unwrap();
            for outcome in &outcomes {
                let mut plain = Vec::new();
                assert!(write_plain(&mut plain, scale, outcome).unwrap());
                let mut rendered = Vec::new();
                let fields = render(scale, &Map::new(), outcome.clone()).ok().unwrap();
                write_line(&mut rendered, &success_json(fields)).unwrap();
                assert_eq!(String::from_utf8(plain), String::from_utf8(rendered));
            }
        }
        let mut untouched = Vec::new();
        let reserved = Ok(Reply::Reserved { qty: 1 });
        assert!(!write_plain(&mut untouched, Scale::default(), &reserved).unwrap());
        assert!(untouched.is_empty());
    }
}

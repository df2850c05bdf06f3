//! The order book of one instrument as a pure data structure: price levels
//! best first, FIFO at each price, matching that reports fills. It knows
//! nothing of money or accounts: an order's owner is an opaque tag used only
//! for self-trade prevention, and a market buy's spending limit is a plain
//! budget of price × qty. The Ledger checks backing, holds and settles
//! from the fills the book reports.
//!
//! Layout, and why:
//! - Orders live in one arena (`Vec<Node>`) reused through a free list, with
//!   intrusive `prev`/`next` slot links forming each level's FIFO queue, and
//!   an id → slot hash index. Once the arena and index have grown to the
//!   book's peak size, placing, cancelling and matching allocate nothing.
//! - Each side's levels are one `Vec<Level>` sorted so that the best price is
//!   the *last* element. Matching consumes from the end (O(1) pop of an
//!   emptied level), finding a level is a binary search, and a new level is
//!   a `Vec::insert` whose memmove covers only the levels better than it:
//!   in exchange-core's workload (orders placed and moved near the best
//!   price) that is a handful of 24-byte entries, contiguous in cache,
//!   with no per-level allocation as a `BTreeMap` node split would need.
//!   The worst case (a new best-far level on a very deep book) is a memmove
//!   of the whole side, which stays cheap for the ~1,000 levels the
//!   reference workload keeps.

#[cfg(test)]
mod tests;

use bincode::{Decode, Encode};
use rustc_hash::FxHashMap;

/// An order's id, chosen by the caller; unique among resting orders.
pub type OrderId = u64;
/// Whose order it is, opaque to the book (the Ledger puts the account here).
pub type Owner = u64;
/// A price in ticks (the Ledger's minor units); always positive.
pub type Price = i64;

/// Slot number meaning "no slot" in the intrusive links.
const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Side {
    Buy,
    Sell,
}

impl Side {
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// Whether an order on this side at `limit` may trade with a resting
    /// order on the other side at `resting`.
    fn crosses(self, limit: Price, resting: Price) -> bool {
        match self {
            Side::Buy => limit >= resting,
            Side::Sell => limit <= resting,
        }
    }
}

/// Time in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Tif {
    /// Rest whatever does not fill now.
    Gtc,
    /// Fill what can be filled now, cancel the rest.
    Ioc,
    /// Fill everything now or do nothing at all.
    Fok,
}

/// Self-trade prevention: what happens when an order meets its owner's own
/// resting order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Stp {
    /// Cancel the resting order and go on matching.
    CancelResting,
    /// Stop matching and cancel the incoming order's unfilled rest.
    CancelIncoming,
}

/// An order arriving at the book (a new one, or a resting one re-placed by
/// an amend that moved it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Incoming {
    pub id: OrderId,
    pub owner: Owner,
    pub side: Side,
    /// `None` is a market order.
    pub price: Option<Price>,
    pub qty: u64,
    pub tif: Tif,
    pub post_only: bool,
    pub stp: Stp,
    /// A market buy's spending limit: it fills while the budget left pays
    /// for the next share at the next maker's price. `None` is unlimited.
    pub budget: Option<u128>,
    /// Shares the order traded before (kept across amends).
    pub filled_before: u64,
}

/// One trade, at the maker's price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Fill {
    pub maker: OrderId,
    pub maker_owner: Owner,
    pub price: Price,
    pub qty: u64,
    /// The maker's qty still resting after this fill (0: it left the book).
    pub maker_left: u64,
}

/// An order taken off the book without trading (a cancel, or self-trade
/// prevention), with what it still had resting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub struct Removed {
    pub id: OrderId,
    pub owner: Owner,
    pub side: Side,
    pub price: Price,
    pub qty: u64,
    pub filled: u64,
}

/// Where matching reports what it did; the caller owns it and clears it
/// when it has read it, so its capacity is reused from request to request.
#[derive(Clone, Debug, Default, Encode, Decode)]
pub struct Events {
    pub fills: Vec<Fill>,
    pub stp_cancelled: Vec<Removed>,
}

impl Events {
    pub fn clear(&mut self) {
        self.fills.clear();
        self.stp_cancelled.clear();
    }
}

/// How a place or amend ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// All of the order's qty has traded.
    Filled,
    /// Some qty rests on the book.
    Resting,
    /// Nothing rests: an ioc or market remainder, an fok that could not
    /// fill, a self-trade stop.
    Cancelled,
}

/// The result of a place or amend that the book accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Placed {
    pub status: Status,
    /// Qty traded by this request.
    pub filled: u64,
    /// Qty now resting.
    pub resting: u64,
}

/// Why the book refused a request; a refused request changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The id names a resting order.
    OrderExists,
    /// The id names no resting order.
    UnknownOrder,
    /// A post-only order would trade on arrival.
    WouldCross,
}

/// A resting order, as queries see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OrderView {
    pub id: OrderId,
    pub owner: Owner,
    pub side: Side,
    pub price: Price,
    /// Still resting.
    pub qty: u64,
    /// Traded so far, across amends.
    pub filled: u64,
    pub post_only: bool,
    pub stp: Stp,
}

/// One price level, as depth queries see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LevelView {
    pub price: Price,
    pub qty: u64,
    pub orders: u32,
}

#[derive(Clone, Copy, Debug, Encode, Decode)]
struct Node {
    id: OrderId,
    owner: Owner,
    price: Price,
    qty: u64,
    filled: u64,
    prev: u32,
    next: u32,
    side: Side,
    post_only: bool,
    stp: Stp,
}

#[derive(Clone, Copy, Debug, Encode, Decode)]
struct Level {
    price: Price,
    qty: u64,
    head: u32,
    tail: u32,
    orders: u32,
}

/// The sort key that puts each side's best level last.
fn key(side: Side, price: Price) -> Price {
    match side {
        Side::Buy => price,
        Side::Sell => !price,
    }
}

/// One instrument's book.
#[derive(Clone, Debug, Encode, Decode)]
pub struct Book {
    nodes: Vec<Node>,
    /// Head of the free list of slots, threaded through `Node::next`.
    free: u32,
    index: FxHashMap<OrderId, u32>,
    bids: Vec<Level>,
    asks: Vec<Level>,
}

impl Default for Book {
    fn default() -> Book {
        Book::new()
    }
}

impl Book {
    pub fn new() -> Book {
        Book::with_capacity(0)
    }

    /// A book with room for `orders` resting orders before it allocates.
    pub fn with_capacity(orders: usize) -> Book {
        let mut index = FxHashMap::default();
        index.reserve(orders);
        Book {
            nodes: Vec::with_capacity(orders),
            free: NIL,
            index,
            bids: Vec::new(),
            asks: Vec::new(),
        }
    }

    /// Resting orders.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn levels(&self, side: Side) -> &Vec<Level> {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn levels_mut(&mut self, side: Side) -> &mut Vec<Level> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// The best price on `side`.
    pub fn best(&self, side: Side) -> Option<Price> {
        self.levels(side).last().map(|l| l.price)
    }

    /// The resting order `id`.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        let slot = *self.index.get(&id)?;
        Some(self.view(slot))
    }

    fn view(&self, slot: u32) -> OrderView {
        let n = &self.nodes[slot as usize];
        OrderView {
            id: n.id,
            owner: n.owner,
            side: n.side,
            price: n.price,
            qty: n.qty,
            filled: n.filled,
            post_only: n.post_only,
            stp: n.stp,
        }
    }

    /// The best `depth` levels of `side`, best first.
    pub fn depth(&self, side: Side, depth: usize) -> impl Iterator<Item = LevelView> + '_ {
        self.levels(side)
            .iter()
            .rev()
            .take(depth)
            .map(|l| LevelView {
                price: l.price,
                qty: l.qty,
                orders: l.orders,
            })
    }

    /// Every resting order of `side` in priority order (best price first,
    /// earliest first at a price).
    pub fn orders(&self, side: Side) -> impl Iterator<Item = OrderView> + '_ {
        self.levels(side).iter().rev().flat_map(move |l| {
            let mut slot = l.head;
            std::iter::from_fn(move || {
                if slot == NIL {
                    return None;
                }
                let here = slot;
                slot = self.nodes[here as usize].next;
                Some(self.view(here))
            })
        })
    }

    /// A stable hash of the book's logical state (orders in priority order
    /// with everything that decides future behaviour), independent of slot
    /// layout and hash-map order.
    pub fn digest(&self) -> u64 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for side in [Side::Buy, Side::Sell] {
            h.update(&[side as u8]);
            for o in self.orders(side) {
                digest_order(&mut h, &o);
            }
        }
        h.digest()
    }

    /// Places `order`: matches it against the other side, then rests what a
    /// gtc limit order has left. Fills and self-trade cancellations are
    /// appended to `events` in the order they happened. Refused (changing
    /// nothing) when the id is resting already or a post-only order would
    /// trade.
    pub fn place(&mut self, order: Incoming, events: &mut Events) -> Result<Placed, Refusal> {
        if self.index.contains_key(&order.id) {
            return Err(Refusal::OrderExists);
        }
        self.check_post_only(&order)?;
        Ok(self.place_unchecked(order, events))
    }

    fn check_post_only(&self, order: &Incoming) -> Result<(), Refusal> {
        if order.post_only {
            if let (Some(limit), Some(best)) = (order.price, self.best(order.side.opposite())) {
                if order.side.crosses(limit, best) {
                    return Err(Refusal::WouldCross);
                }
            }
        }
        Ok(())
    }

    fn place_unchecked(&mut self, order: Incoming, events: &mut Events) -> Placed {
        if order.tif == Tif::Fok && self.fillable(&order) < order.qty {
            return Placed {
                status: Status::Cancelled,
                filled: 0,
                resting: 0,
            };
        }
        let (filled, stopped) = self.sweep(&order, events);
        let left = order.qty - filled;
        if left == 0 {
            return Placed {
                status: Status::Filled,
                filled,
                resting: 0,
            };
        }
        match order.price {
            Some(price) if order.tif == Tif::Gtc && !stopped => {
                self.rest(&order, price, left, order.filled_before + filled);
                Placed {
                    status: Status::Resting,
                    filled,
                    resting: left,
                }
            }
            _ => Placed {
                status: Status::Cancelled,
                filled,
                resting: 0,
            },
        }
    }

    /// How much of `order` would trade now (up to its qty), counting only
    /// liquidity it could really take: its owner's own orders are skipped
    /// (cancel_resting) or end the walk (cancel_incoming), and a budget
    /// stops it at the first share it cannot pay for.
    fn fillable(&self, order: &Incoming) -> u64 {
        let mut got = 0u64;
        let mut budget = order.budget;
        for level in self.levels(order.side.opposite()).iter().rev() {
            if let Some(limit) = order.price {
                if !order.side.crosses(limit, level.price) {
                    break;
                }
            }
            let mut slot = level.head;
            while slot != NIL {
                let n = &self.nodes[slot as usize];
                slot = n.next;
                if n.owner == order.owner {
                    match order.stp {
                        Stp::CancelResting => continue,
                        Stp::CancelIncoming => return got,
                    }
                }
                let want = n.qty.min(order.qty - got);
                let mut take = want;
                if let Some(b) = budget.as_mut() {
                    let affordable = *b / level.price as u128;
                    take = take.min(affordable.min(u64::MAX as u128) as u64);
                    *b -= take as u128 * level.price as u128;
                }
                got += take;
                if got == order.qty || take < want {
                    return got;
                }
            }
        }
        got
    }

    /// Trades `order` against the other side's best levels until it is
    /// filled, its limit no longer crosses, its budget runs out, the side is
    /// empty, or self-trade prevention stops it. Returns the qty traded and
    /// whether a self-trade stop (cancel_incoming) ended it.
    fn sweep(&mut self, order: &Incoming, events: &mut Events) -> (u64, bool) {
        let opp = order.side.opposite();
        let mut filled = 0u64;
        let mut budget = order.budget;
        while filled < order.qty {
            let Some(level) = self.levels(opp).last() else {
                break;
            };
            let price = level.price;
            if let Some(limit) = order.price {
                if !order.side.crosses(limit, price) {
                    break;
                }
            }
            let slot = level.head;
            let n = self.nodes[slot as usize];
            if n.owner == order.owner {
                match order.stp {
                    Stp::CancelIncoming => return (filled, true),
                    Stp::CancelResting => {
                        self.unlink(slot);
                        events.stp_cancelled.push(Removed {
                            id: n.id,
                            owner: n.owner,
                            side: n.side,
                            price: n.price,
                            qty: n.qty,
                            filled: n.filled,
                        });
                        continue;
                    }
                }
            }
            let want = n.qty.min(order.qty - filled);
            let mut take = want;
            if let Some(b) = budget.as_mut() {
                let affordable = *b / price as u128;
                take = take.min(affordable.min(u64::MAX as u128) as u64);
                *b -= take as u128 * price as u128;
            }
            if take > 0 {
                let left = n.qty - take;
                events.fills.push(Fill {
                    maker: n.id,
                    maker_owner: n.owner,
                    price,
                    qty: take,
                    maker_left: left,
                });
                filled += take;
                if left == 0 {
                    self.unlink(slot);
                } else {
                    let node = &mut self.nodes[slot as usize];
                    node.qty = left;
                    node.filled += take;
                    let last = self.levels_mut(opp).last_mut().expect("level just read");
                    last.qty -= take;
                }
            }
            if take < want {
                break;
            }
        }
        (filled, false)
    }

    /// Adds a new order at the back of its price level.
    fn rest(&mut self, order: &Incoming, price: Price, qty: u64, filled: u64) {
        let node = Node {
            id: order.id,
            owner: order.owner,
            price,
            qty,
            filled,
            prev: NIL,
            next: NIL,
            side: order.side,
            post_only: order.post_only,
            stp: order.stp,
        };
        let slot = if self.free != NIL {
            let slot = self.free;
            self.free = self.nodes[slot as usize].next;
            self.nodes[slot as usize] = node;
            slot
        } else {
            let slot = u32::try_from(self.nodes.len()).expect("fewer than 2^32 resting orders");
            assert!(slot != NIL, "fewer than 2^32 - 1 resting orders");
            self.nodes.push(node);
            slot
        };
        self.index.insert(order.id, slot);
        let side = order.side;
        let k = key(side, price);
        let levels = self.levels_mut(side);
        let at = match levels.binary_search_by(|l| key(side, l.price).cmp(&k)) {
            Ok(at) => at,
            Err(at) => {
                levels.insert(
                    at,
                    Level {
                        price,
                        qty: 0,
                        head: NIL,
                        tail: NIL,
                        orders: 0,
                    },
                );
                at
            }
        };
        let level = &mut levels[at];
        let tail = level.tail;
        level.tail = slot;
        if tail == NIL {
            level.head = slot;
        }
        level.qty += qty;
        level.orders += 1;
        if tail != NIL {
            self.nodes[tail as usize].next = slot;
            self.nodes[slot as usize].prev = tail;
        }
    }

    /// Takes the order in `slot` off the book: out of its level (dropping
    /// the level when it empties), out of the index, into the free list.
    fn unlink(&mut self, slot: u32) {
        let n = self.nodes[slot as usize];
        let levels = self.levels_mut(n.side);
        let k = key(n.side, n.price);
        let at = levels
            .binary_search_by(|l| key(n.side, l.price).cmp(&k))
            .expect("a resting order's level exists");
        let level = &mut levels[at];
        level.qty -= n.qty;
        level.orders -= 1;
        if level.orders == 0 {
            levels.remove(at);
        } else {
            if n.prev == NIL {
                level.head = n.next;
            }
            if n.next == NIL {
                level.tail = n.prev;
            }
        }
        if n.prev != NIL {
            self.nodes[n.prev as usize].next = n.next;
        }
        if n.next != NIL {
            self.nodes[n.next as usize].prev = n.prev;
        }
        self.index.remove(&n.id);
        self.nodes[slot as usize].next = self.free;
        self.free = slot;
    }

    /// Takes resting order `id` off the book.
    pub fn cancel(&mut self, id: OrderId) -> Result<Removed, Refusal> {
        let slot = *self.index.get(&id).ok_or(Refusal::UnknownOrder)?;
        let v = self.view(slot);
        self.unlink(slot);
        Ok(Removed {
            id,
            owner: v.owner,
            side: v.side,
            price: v.price,
            qty: v.qty,
            filled: v.filled,
        })
    }

    /// Changes resting order `id` to `qty` still resting (`None`: as now) at
    /// `price` (`None`: as now). A smaller qty at the same price keeps the
    /// order's place; a larger qty or a new price moves it to the back of
    /// its (new) level, and a new price trades at once as an arriving gtc
    /// order would, with the order's own post-only and self-trade settings.
    /// Refused, changing nothing, for an unknown id or a post-only order
    /// whose new price would trade. `qty` must be positive.
    pub fn amend(
        &mut self,
        id: OrderId,
        qty: Option<u64>,
        price: Option<Price>,
        events: &mut Events,
    ) -> Result<Placed, Refusal> {
        let slot = *self.index.get(&id).ok_or(Refusal::UnknownOrder)?;
        let v = self.view(slot);
        let new_qty = qty.unwrap_or(v.qty);
        let new_price = price.unwrap_or(v.price);
        debug_assert!(new_qty > 0, "the caller refuses an amend to qty 0");
        if new_price == v.price && new_qty <= v.qty {
            let cut = v.qty - new_qty;
            self.nodes[slot as usize].qty = new_qty;
            let levels = self.levels_mut(v.side);
            let k = key(v.side, v.price);
            let at = levels
                .binary_search_by(|l| key(v.side, l.price).cmp(&k))
                .expect("a resting order's level exists");
            levels[at].qty -= cut;
            return Ok(Placed {
                status: Status::Resting,
                filled: 0,
                resting: new_qty,
            });
        }
        let order = Incoming {
            id,
            owner: v.owner,
            side: v.side,
            price: Some(new_price),
            qty: new_qty,
            tif: Tif::Gtc,
            post_only: v.post_only,
            stp: v.stp,
            budget: None,
            filled_before: v.filled,
        };
        self.check_post_only(&order)?;
        self.unlink(slot);
        Ok(self.place_unchecked(order, events))
    }
}

/// The digest's encoding of one order; the tests' reference book uses the
/// same one so that the two books' digests are comparable.
pub fn digest_order(h: &mut xxhash_rust::xxh3::Xxh3, o: &OrderView) {
    h.update(&o.id.to_le_bytes());
    h.update(&o.owner.to_le_bytes());
    h.update(&o.price.to_le_bytes());
    h.update(&o.qty.to_le_bytes());
    h.update(&o.filled.to_le_bytes());
    h.update(&[o.post_only as u8, o.stp as u8]);
}

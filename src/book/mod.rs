//! The order book of one instrument as a pure data structure: price levels
//! best first, FIFO at each price, matching that reports fills. It knows
//! nothing of money or accounts: an order's owner is an opaque tag used only
//! for self-trade prevention, and a market buy's spending limit is a plain
//! budget of price × qty. The Ledger checks backing, holds and settles
//! from the fills the book reports.
//!
//! Layout, and why (measured with `cargo bench --bench orderbook`, the
//! exchange-core mix: ~1,000 orders over ~750 levels, 82% moves):
//! - Orders live in an arena of fixed-size pages (a page never moves, so
//!   growing the arena copies nothing and wastes at most one page), reused
//!   through a free list, with intrusive `prev`/`next` slot links forming
//!   each level's FIFO queue. A node names its level, not its price, so
//!   taking an order off the book finds its level without a search.
//! - [`SlotBook`] has no id index: its caller finds orders by [`Slot`] and
//!   keeps the id → slot index itself, from the slots each request reports
//!   ([`Events::left`], [`Events::rested`]). The Ledger keeps one index over
//!   all its books (an order is found by id alone, and one index is a third
//!   of the memory of an index per book plus an id → book map); [`Book`] is
//!   a book with its own index, for callers with one book per lock. Either
//!   index is a hash table of bare 4-byte slot numbers, compared through the
//!   node's id, instead of a map of (id, slot) pairs (16 bytes a bucket with
//!   padding).
//! - Each side's levels are found by price through a *ladder*: a window of
//!   ticks (one slot per price, a power of two wide, placed around the
//!   prices in use) with an occupancy bitset, so adding or finding a level
//!   is an array access and the next best level after the best empties is
//!   a scan for the next set bit. Prices too far from the others to share
//!   a window of at most `WINDOW_TICKS_MAX` ticks go to a sorted list
//!   beside it. The sorted vector of levels this replaced cost a binary
//!   search and a memmove of half a side for every level created or
//!   emptied: ~60% of a move's time in the mix.
//! - Once the arena, index and levels have grown to the book's peak size,
//!   placing, cancelling and matching allocate nothing.

#[cfg(test)]
mod tests;

use std::hash::BuildHasher;

use bincode::{Decode, Encode};
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// An order's id, chosen by the caller; unique among resting orders.
pub type OrderId = u64;
/// Whose order it is, opaque to the book (the Ledger puts the account here).
pub type Owner = u64;
/// A price in ticks (the Ledger's minor units); always positive.
pub type Price = i64;

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
#[derive(Clone, Debug, Default)]
pub struct Events {
    pub fills: Vec<Fill>,
    pub stp_cancelled: Vec<Removed>,
    /// Every order that left the book, with the slot it had: makers filled
    /// in full, self-trade cancellations, and an amended order that moved
    /// (it rests again at [`Events::rested`] if anything of it rests). What
    /// an id index kept outside the book removes.
    pub left: Vec<(OrderId, Slot)>,
    /// Where the last place or amend rested its order: `None` when nothing
    /// rested, or an amend kept the order where it was.
    pub rested: Option<Slot>,
}

impl Events {
    pub fn clear(&mut self) {
        self.fills.clear();
        self.stp_cancelled.clear();
        self.left.clear();
        self.rested = None;
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

/// Slot number meaning "no slot" in the intrusive links, the index and the
/// ladders.
const NIL: u32 = u32::MAX;
/// Nodes per arena page.
const PAGE_BITS: u32 = 10;
const PAGE: usize = 1 << PAGE_BITS;
/// Narrowest window a ladder starts with.
const WINDOW_TICKS_MIN: usize = 256;
/// Widest a ladder's window grows (256 KiB of level slots per side); levels
/// beyond it go to the sorted list.
const WINDOW_TICKS_MAX: usize = 1 << 16;

/// A resting order: 48 bytes.
#[derive(Clone, Copy, Debug)]
struct Node {
    id: OrderId,
    owner: Owner,
    qty: u64,
    filled: u64,
    prev: u32,
    next: u32,
    /// The level it rests in, which knows its price and side.
    level: u32,
    post_only: bool,
    stp: Stp,
}

const EMPTY_NODE: Node = Node {
    id: 0,
    owner: 0,
    qty: 0,
    filled: 0,
    prev: NIL,
    next: NIL,
    level: NIL,
    post_only: false,
    stp: Stp::CancelResting,
};

#[derive(Clone, Copy, Debug)]
struct Level {
    price: Price,
    qty: u64,
    head: u32,
    tail: u32,
    orders: u32,
    side: Side,
}

/// The sort key that makes each side's best level the highest key.
fn key(side: Side, price: Price) -> i64 {
    match side {
        Side::Buy => price,
        Side::Sell => !price,
    }
}

fn hash(id: OrderId) -> u64 {
    FxBuildHasher.hash_one(id)
}

/// One side's levels by key (see the module docs): a window of ticks
/// `[base, base + ticks.len())` with an occupancy bitset, and the levels
/// whose keys fall outside it in `far`. A key is in the window exactly
/// when it lies in its range; the window never reaches past `i64`.
#[derive(Clone, Debug, Default)]
struct Ladder {
    base: i64,
    /// Level per tick, `NIL` where none.
    ticks: Vec<u32>,
    bits: Vec<u64>,
    /// Levels in the window.
    count: u32,
    /// The highest occupied tick while `count > 0`.
    top: usize,
    /// (key, level) outside the window, ascending (best last).
    far: Vec<(i64, u32)>,
}

impl Ladder {
    fn tick(&self, key: i64) -> Option<usize> {
        // Exact because `base + ticks.len()` never passes i64::MAX: a key
        // below `base` wraps to at least `ticks.len()`.
        let t = key.wrapping_sub(self.base) as u64;
        (t < self.ticks.len() as u64).then_some(t as usize)
    }

    fn find(&self, key: i64) -> u32 {
        match self.tick(key) {
            Some(t) => self.ticks[t],
            None => match self.far.binary_search_by_key(&key, |&(k, _)| k) {
                Ok(at) => self.far[at].1,
                Err(_) => NIL,
            },
        }
    }

    /// The best level, or `NIL`.
    fn best(&self) -> u32 {
        match (self.count > 0, self.far.last()) {
            (true, Some(&(k, level))) if k > self.base + self.top as i64 => level,
            (true, _) => self.ticks[self.top],
            (false, Some(&(_, level))) => level,
            (false, None) => NIL,
        }
    }

    /// The highest occupied tick at or below `t`.
    fn highest_from(&self, t: usize) -> Option<usize> {
        let mut w = t / 64;
        let mut word = self.bits[w] & (u64::MAX >> (63 - t % 64));
        loop {
            if word != 0 {
                return Some(w * 64 + 63 - word.leading_zeros() as usize);
            }
            if w == 0 {
                return None;
            }
            w -= 1;
            word = self.bits[w];
        }
    }

    fn lowest_tick(&self) -> usize {
        let w = self
            .bits
            .iter()
            .position(|&word| word != 0)
            .expect("an occupied window");
        w * 64 + self.bits[w].trailing_zeros() as usize
    }

    fn set(&mut self, t: usize, level: u32) {
        self.ticks[t] = level;
        self.bits[t / 64] |= 1 << (t % 64);
        if self.count == 0 || t > self.top {
            self.top = t;
        }
        self.count += 1;
    }

    fn insert(&mut self, key: i64, level: u32) {
        if self.tick(key).is_none() {
            self.make_room(key);
        }
        match self.tick(key) {
            Some(t) => self.set(t, level),
            None => {
                let at = self.far.partition_point(|&(k, _)| k < key);
                self.far.insert(at, (key, level));
            }
        }
    }

    fn remove(&mut self, key: i64) {
        match self.tick(key) {
            Some(t) => {
                self.ticks[t] = NIL;
                self.bits[t / 64] &= !(1 << (t % 64));
                self.count -= 1;
                if self.count > 0 && t == self.top {
                    self.top = self.highest_from(t).expect("the window still has a level");
                }
            }
            None => {
                let at = self
                    .far
                    .binary_search_by_key(&key, |&(k, _)| k)
                    .expect("a level being removed is in its ladder");
                self.far.remove(at);
            }
        }
    }

    /// Moves (and widens, up to `WINDOW_TICKS_MAX`) the window so that it
    /// covers `key` and every level it holds now, then takes in the far
    /// levels that fall inside. Leaves the window as it is when that would
    /// need more than `WINDOW_TICKS_MAX` ticks.
    fn make_room(&mut self, key: i64) {
        let (lo, hi) = if self.count > 0 {
            let lowest = self.base + self.lowest_tick() as i64;
            let highest = self.base + self.top as i64;
            (lowest.min(key), highest.max(key))
        } else {
            (key, key)
        };
        let span = (i128::from(hi) - i128::from(lo) + 1) as u128;
        if span > WINDOW_TICKS_MAX as u128 {
            return;
        }
        let width = (span as usize)
            .next_power_of_two()
            .max(self.ticks.len())
            .max(WINDOW_TICKS_MIN);
        let centred = i128::from(lo) - (width as i128 - span as i128) / 2;
        let base = centred.clamp(
            i128::from(i64::MIN),
            i128::from(i64::MAX) - width as i128 + 1,
        ) as i64;
        let old = std::mem::replace(
            self,
            Ladder {
                base,
                ticks: vec![NIL; width],
                bits: vec![0; width / 64],
                count: 0,
                top: 0,
                far: Vec::new(),
            },
        );
        for (t, &level) in old.ticks.iter().enumerate() {
            if level != NIL {
                let moved = self
                    .tick(old.base + t as i64)
                    .expect("the new window covers the old levels");
                self.set(moved, level);
            }
        }
        self.far = old.far;
        let mut kept = 0;
        for i in 0..self.far.len() {
            let (k, level) = self.far[i];
            match self.tick(k) {
                Some(t) => self.set(t, level),
                None => {
                    self.far[kept] = (k, level);
                    kept += 1;
                }
            }
        }
        self.far.truncate(kept);
    }

    /// Every level, best first.
    fn levels(&self) -> impl Iterator<Item = u32> + '_ {
        let split = self.far.partition_point(|&(k, _)| k < self.base);
        let above = self.far[split..].iter().rev().map(|&(_, l)| l);
        let below = self.far[..split].iter().rev().map(|&(_, l)| l);
        let mut next = (self.count > 0).then_some(self.top);
        let window = std::iter::from_fn(move || {
            let t = next?;
            next = t.checked_sub(1).and_then(|t| self.highest_from(t));
            Some(self.ticks[t])
        });
        above.chain(window).chain(below)
    }
}

/// Where a resting order is in its book's arena. A resting order keeps
/// its slot until it leaves the book (or an amend moves it): see
/// [`Events::left`] and [`Events::rested`]. Slots are numbered from 0 and
/// handed out page by page ([`SLOTS_PER_PAGE`] a page), so a caller may
/// pack them into its own index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Slot(u32);

impl Slot {
    /// The slot numbered `n`. Handing a book a slot that holds no resting
    /// order of it is a caller's bug (the book panics or answers nonsense).
    pub fn new(n: u32) -> Slot {
        Slot(n)
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// Slots per page of a book's arena: slot `n` is on page `n / SLOTS_PER_PAGE`.
pub const SLOTS_PER_PAGE: u32 = PAGE as u32;

/// One instrument's book, without an id index: orders are found by
/// [`Slot`], and the caller keeps the id → slot index (see the module docs).
#[derive(Clone, Debug)]
pub struct SlotBook {
    /// The arena: pages of `PAGE` nodes.
    pages: Vec<Box<[Node]>>,
    /// Slots handed out so far (free or in use); the rest of the last page
    /// is unused.
    slots: u32,
    /// Head of the free list of slots, threaded through `Node::next`.
    free: u32,
    /// Resting orders.
    resting: u32,
    /// Levels of both sides, reused through a free list threaded through
    /// `Level::head`.
    levels: Vec<Level>,
    free_level: u32,
    bids: Ladder,
    asks: Ladder,
}

impl Default for SlotBook {
    fn default() -> SlotBook {
        SlotBook::new()
    }
}

impl SlotBook {
    pub fn new() -> SlotBook {
        SlotBook::with_capacity(0)
    }

    /// A book with room for `orders` resting orders before it allocates.
    pub fn with_capacity(orders: usize) -> SlotBook {
        SlotBook {
            pages: (0..orders.div_ceil(PAGE))
                .map(|_| vec![EMPTY_NODE; PAGE].into_boxed_slice())
                .collect(),
            slots: 0,
            free: NIL,
            resting: 0,
            levels: Vec::new(),
            free_level: NIL,
            bids: Ladder::default(),
            asks: Ladder::default(),
        }
    }

    /// Resting orders.
    pub fn len(&self) -> usize {
        self.resting as usize
    }

    pub fn is_empty(&self) -> bool {
        self.resting == 0
    }

    /// The id of the order resting at `slot`, for an index kept outside the
    /// book (it compares ids through the slots it holds).
    #[inline]
    pub fn id_at(&self, slot: Slot) -> OrderId {
        self.node(slot.0).id
    }

    #[inline]
    fn node(&self, slot: u32) -> &Node {
        &self.pages[(slot >> PAGE_BITS) as usize][slot as usize & (PAGE - 1)]
    }

    #[inline]
    fn node_mut(&mut self, slot: u32) -> &mut Node {
        &mut self.pages[(slot >> PAGE_BITS) as usize][slot as usize & (PAGE - 1)]
    }

    fn ladder(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn ladder_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// The best price on `side`.
    pub fn best(&self, side: Side) -> Option<Price> {
        let level = self.ladder(side).best();
        (level != NIL).then(|| self.levels[level as usize].price)
    }

    /// The resting order at `slot`.
    pub fn at(&self, slot: Slot) -> OrderView {
        self.view(slot.0)
    }

    fn view(&self, slot: u32) -> OrderView {
        let n = self.node(slot);
        let level = &self.levels[n.level as usize];
        OrderView {
            id: n.id,
            owner: n.owner,
            side: level.side,
            price: level.price,
            qty: n.qty,
            filled: n.filled,
            post_only: n.post_only,
            stp: n.stp,
        }
    }

    /// The best `depth` levels of `side`, best first.
    pub fn depth(&self, side: Side, depth: usize) -> impl Iterator<Item = LevelView> + '_ {
        self.ladder(side).levels().take(depth).map(|l| {
            let l = &self.levels[l as usize];
            LevelView {
                price: l.price,
                qty: l.qty,
                orders: l.orders,
            }
        })
    }

    /// Every resting order of `side` in priority order (best price first,
    /// earliest first at a price).
    pub fn orders(&self, side: Side) -> impl Iterator<Item = OrderView> + '_ {
        self.side_slots(side).map(|slot| self.view(slot.0))
    }

    /// The slot of every resting order: bids, then asks, each in priority
    /// order.
    pub fn slots(&self) -> impl Iterator<Item = Slot> + '_ {
        self.side_slots(Side::Buy)
            .chain(self.side_slots(Side::Sell))
    }

    fn side_slots(&self, side: Side) -> impl Iterator<Item = Slot> + '_ {
        self.ladder(side).levels().flat_map(move |l| {
            let mut slot = self.levels[l as usize].head;
            std::iter::from_fn(move || {
                if slot == NIL {
                    return None;
                }
                let here = slot;
                slot = self.node(here).next;
                Some(Slot(here))
            })
        })
    }

    /// A stable hash of the book's logical state (orders in priority order
    /// with everything that decides future behaviour), independent of slot
    /// layout and hash-table order.
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

    /// Places `order`, whose id the caller checked is not resting: matches
    /// it against the other side, then rests what a gtc limit order has
    /// left. Fills, self-trade cancellations and the orders that left are
    /// appended to `events` in the order they happened, and
    /// `events.rested` says where the order rests. Refused (changing
    /// nothing) when a post-only order would trade.
    pub fn place(&mut self, order: Incoming, events: &mut Events) -> Result<Placed, Refusal> {
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
        events.rested = None;
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
                let slot = self.rest(&order, price, left, order.filled_before + filled);
                events.rested = Some(Slot(slot));
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
        for level in self.ladder(order.side.opposite()).levels() {
            let level = &self.levels[level as usize];
            if let Some(limit) = order.price {
                if !order.side.crosses(limit, level.price) {
                    break;
                }
            }
            let mut slot = level.head;
            while slot != NIL {
                let n = self.node(slot);
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
            let level = self.ladder(opp).best();
            if level == NIL {
                break;
            }
            let Level { price, head, .. } = self.levels[level as usize];
            if let Some(limit) = order.price {
                if !order.side.crosses(limit, price) {
                    break;
                }
            }
            let slot = head;
            let n = *self.node(slot);
            if n.owner == order.owner {
                match order.stp {
                    Stp::CancelResting => {
                        events.stp_cancelled.push(Removed {
                            id: n.id,
                            owner: n.owner,
                            side: opp,
                            price,
                            qty: n.qty,
                            filled: n.filled,
                        });
                        events.left.push((n.id, Slot(slot)));
                        self.unlink(slot);
                        continue;
                    }
                    Stp::CancelIncoming => return (filled, true),
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
                    events.left.push((n.id, Slot(slot)));
                    self.unlink(slot);
                } else {
                    let node = self.node_mut(slot);
                    node.qty = left;
                    node.filled += take;
                    self.levels[level as usize].qty -= take;
                }
            }
            if take < want {
                break;
            }
        }
        (filled, false)
    }

    /// Adds a new order at the back of its price level; returns its slot.
    fn rest(&mut self, order: &Incoming, price: Price, qty: u64, filled: u64) -> u32 {
        let slot = self.new_slot();
        *self.node_mut(slot) = Node {
            id: order.id,
            owner: order.owner,
            qty,
            filled,
            prev: NIL,
            next: NIL,
            level: NIL,
            post_only: order.post_only,
            stp: order.stp,
        };
        self.append(slot, order.side, price);
        self.resting += 1;
        slot
    }

    /// Links the order in `slot` (in no level) at the back of the level of
    /// `price` on `side`, making the level if there is none.
    fn append(&mut self, slot: u32, side: Side, price: Price) {
        let k = key(side, price);
        let mut level = self.ladder(side).find(k);
        if level == NIL {
            level = self.new_level(side, price);
            self.ladder_mut(side).insert(k, level);
        }
        let qty = self.node(slot).qty;
        let tail = {
            let l = &mut self.levels[level as usize];
            let tail = l.tail;
            l.tail = slot;
            if tail == NIL {
                l.head = slot;
            }
            l.qty += qty;
            l.orders += 1;
            tail
        };
        let node = self.node_mut(slot);
        node.prev = tail;
        node.next = NIL;
        node.level = level;
        if tail != NIL {
            self.node_mut(tail).next = slot;
        }
    }

    fn new_slot(&mut self) -> u32 {
        if self.free != NIL {
            let slot = self.free;
            self.free = self.node(slot).next;
            return slot;
        }
        let slot = self.slots;
        assert!(slot != NIL, "fewer than 2^32 - 1 resting orders");
        if slot as usize == self.pages.len() * PAGE {
            self.pages.push(vec![EMPTY_NODE; PAGE].into_boxed_slice());
        }
        self.slots += 1;
        slot
    }

    fn new_level(&mut self, side: Side, price: Price) -> u32 {
        let fresh = Level {
            price,
            qty: 0,
            head: NIL,
            tail: NIL,
            orders: 0,
            side,
        };
        if self.free_level != NIL {
            let level = self.free_level;
            self.free_level = self.levels[level as usize].head;
            self.levels[level as usize] = fresh;
            return level;
        }
        let level = u32::try_from(self.levels.len()).expect("fewer than 2^32 levels");
        self.levels.push(fresh);
        level
    }

    /// Takes the order in `slot` off the book: out of its level (dropping
    /// the level when it empties), into the free list.
    fn unlink(&mut self, slot: u32) {
        self.detach(slot);
        self.resting -= 1;
        let free = self.free;
        *self.node_mut(slot) = Node {
            next: free,
            ..EMPTY_NODE
        };
        self.free = slot;
    }

    /// Takes the order in `slot` out of its level, dropping the level when
    /// it empties; the order keeps its slot.
    fn detach(&mut self, slot: u32) {
        let n = *self.node(slot);
        let l = &mut self.levels[n.level as usize];
        l.qty -= n.qty;
        l.orders -= 1;
        if l.orders == 0 {
            let (side, price) = (l.side, l.price);
            l.head = self.free_level;
            self.free_level = n.level;
            self.ladder_mut(side).remove(key(side, price));
        } else {
            if n.prev == NIL {
                l.head = n.next;
            }
            if n.next == NIL {
                l.tail = n.prev;
            }
            if n.prev != NIL {
                self.node_mut(n.prev).next = n.next;
            }
            if n.next != NIL {
                self.node_mut(n.next).prev = n.prev;
            }
        }
    }

    /// Takes the order at `slot` off the book.
    pub fn cancel_at(&mut self, slot: Slot) -> Removed {
        let v = self.view(slot.0);
        self.unlink(slot.0);
        Removed {
            id: v.id,
            owner: v.owner,
            side: v.side,
            price: v.price,
            qty: v.qty,
            filled: v.filled,
        }
    }

    /// Changes the order at `slot` to `qty` still resting (`None`: as now)
    /// at `price` (`None`: as now). A smaller qty at the same price keeps
    /// the order's place (and slot); a larger qty or a new price moves it to
    /// the back of its (new) level (it is in `events.left`, and in
    /// `events.rested` if it rests again), and a new price trades at once as
    /// an arriving gtc order would, with the order's own post-only and
    /// self-trade settings. Refused, changing nothing, for a post-only order
    /// whose new price would trade. `qty` must be positive.
    pub fn amend_at(
        &mut self,
        slot: Slot,
        qty: Option<u64>,
        price: Option<Price>,
        events: &mut Events,
    ) -> Result<Placed, Refusal> {
        events.rested = None;
        let slot = slot.0;
        let v = self.view(slot);
        let new_qty = qty.unwrap_or(v.qty);
        let new_price = price.unwrap_or(v.price);
        debug_assert!(new_qty > 0, "the caller refuses an amend to qty 0");
        if new_price == v.price && new_qty <= v.qty {
            let node = self.node_mut(slot);
            node.qty = new_qty;
            let level = node.level;
            self.levels[level as usize].qty -= v.qty - new_qty;
            return Ok(Placed {
                status: Status::Resting,
                filled: 0,
                resting: new_qty,
            });
        }
        let order = Incoming {
            id: v.id,
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
        let opposite = self.best(v.side.opposite());
        if opposite.is_none_or(|best| !v.side.crosses(new_price, best)) {
            // Nothing to trade with (the common move): the order goes to
            // the back of its new level in place, keeping its slot (so the
            // Ledger's index entry stays right), as unlinking and resting it
            // again would leave it.
            self.detach(slot);
            self.node_mut(slot).qty = new_qty;
            self.append(slot, v.side, new_price);
            return Ok(Placed {
                status: Status::Resting,
                filled: 0,
                resting: new_qty,
            });
        }
        events.left.push((v.id, Slot(slot)));
        self.unlink(slot);
        Ok(self.place_unchecked(order, events))
    }
}

/// A book with its own id index: for a caller with one book per lock (the
/// mutex baseline) or one book alone. The Ledger keeps one index over all
/// its books and uses [`SlotBook`]s instead.
#[derive(Clone, Debug, Default)]
pub struct Book {
    book: SlotBook,
    /// Slot of every resting order, hashed by its id.
    index: HashTable<u32>,
}

impl Book {
    pub fn new() -> Book {
        Book::with_capacity(0)
    }

    /// A book with room for `orders` resting orders before it allocates.
    pub fn with_capacity(orders: usize) -> Book {
        Book {
            book: SlotBook::with_capacity(orders),
            index: HashTable::with_capacity(orders),
        }
    }

    /// Resting orders.
    pub fn len(&self) -> usize {
        self.book.len()
    }

    pub fn is_empty(&self) -> bool {
        self.book.is_empty()
    }

    /// The best price on `side`.
    pub fn best(&self, side: Side) -> Option<Price> {
        self.book.best(side)
    }

    /// Where the resting order `id` is.
    pub fn find(&self, id: OrderId) -> Option<Slot> {
        let book = &self.book;
        self.index
            .find(hash(id), |&slot| book.id_at(Slot(slot)) == id)
            .map(|&slot| Slot(slot))
    }

    /// The resting order `id`.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        Some(self.book.at(self.find(id)?))
    }

    /// The best `depth` levels of `side`, best first.
    pub fn depth(&self, side: Side, depth: usize) -> impl Iterator<Item = LevelView> + '_ {
        self.book.depth(side, depth)
    }

    /// Every resting order of `side` in priority order.
    pub fn orders(&self, side: Side) -> impl Iterator<Item = OrderView> + '_ {
        self.book.orders(side)
    }

    /// See [`SlotBook::digest`].
    pub fn digest(&self) -> u64 {
        self.book.digest()
    }

    /// [`SlotBook::place`], refused (changing nothing) as well when the id
    /// is resting already.
    pub fn place(&mut self, order: Incoming, events: &mut Events) -> Result<Placed, Refusal> {
        if self.find(order.id).is_some() {
            return Err(Refusal::OrderExists);
        }
        let from = events.left.len();
        let placed = self.book.place(order, events)?;
        self.reindex(events, from);
        Ok(placed)
    }

    /// Takes resting order `id` off the book.
    pub fn cancel(&mut self, id: OrderId) -> Result<Removed, Refusal> {
        let slot = self.find(id).ok_or(Refusal::UnknownOrder)?;
        self.unindex(id, slot);
        Ok(self.book.cancel_at(slot))
    }

    /// [`SlotBook::amend_at`] of resting order `id`; refused as well for an
    /// unknown id.
    pub fn amend(
        &mut self,
        id: OrderId,
        qty: Option<u64>,
        price: Option<Price>,
        events: &mut Events,
    ) -> Result<Placed, Refusal> {
        let slot = self.find(id).ok_or(Refusal::UnknownOrder)?;
        let from = events.left.len();
        let placed = self.book.amend_at(slot, qty, price, events)?;
        self.reindex(events, from);
        Ok(placed)
    }

    /// Drops the orders that left since `events.left[from]` from the index
    /// and adds the one that rested.
    fn reindex(&mut self, events: &Events, from: usize) {
        for &(id, slot) in &events.left[from..] {
            self.unindex(id, slot);
        }
        if let Some(slot) = events.rested {
            let book = &self.book;
            self.index
                .insert_unique(hash(book.id_at(slot)), slot.0, |&s| {
                    hash(book.id_at(Slot(s)))
                });
        }
    }

    fn unindex(&mut self, id: OrderId, slot: Slot) {
        self.index
            .find_entry(hash(id), |&s| s == slot.0)
            .expect("a resting order is indexed")
            .remove();
    }
}

/// A resting order as a snapshot stores it: the book is saved as its
/// orders in priority order and rebuilt by resting them again, so the
/// format does not depend on the arena, index or ladder layout.
#[derive(Encode, Decode)]
struct Saved {
    id: OrderId,
    owner: Owner,
    side: Side,
    price: Price,
    qty: u64,
    filled: u64,
    post_only: bool,
    stp: Stp,
}

impl Encode for SlotBook {
    fn encode<E: bincode::enc::Encoder>(
        &self,
        encoder: &mut E,
    ) -> Result<(), bincode::error::EncodeError> {
        (self.len() as u64).encode(encoder)?;
        for side in [Side::Buy, Side::Sell] {
            for o in self.orders(side) {
                Saved {
                    id: o.id,
                    owner: o.owner,
                    side: o.side,
                    price: o.price,
                    qty: o.qty,
                    filled: o.filled,
                    post_only: o.post_only,
                    stp: o.stp,
                }
                .encode(encoder)?;
            }
        }
        Ok(())
    }
}

/// Decoding checks the saved orders' shape and priority order, not that
/// their ids are distinct: that is the index keeper's check.
impl<Context> Decode<Context> for SlotBook {
    fn decode<D: bincode::de::Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> Result<SlotBook, bincode::error::DecodeError> {
        let bad = |why: &'static str| bincode::error::DecodeError::Other(why);
        let len = u64::decode(decoder)?;
        let mut book = SlotBook::new();
        let mut last: Option<(u8, i64)> = None;
        for _ in 0..len {
            let o = Saved::decode(decoder)?;
            if o.qty == 0 || o.price <= 0 {
                return Err(bad("a saved order with no qty or no price"));
            }
            // Priority order: bids best first, then asks best first.
            let here = (o.side as u8, !key(o.side, o.price));
            if last.is_some_and(|l| l > here) {
                return Err(bad("saved orders out of priority order"));
            }
            last = Some(here);
            let order = Incoming {
                id: o.id,
                owner: o.owner,
                side: o.side,
                price: Some(o.price),
                qty: o.qty,
                tif: Tif::Gtc,
                post_only: o.post_only,
                stp: o.stp,
                budget: None,
                filled_before: 0,
            };
            book.rest(&order, o.price, o.qty, o.filled);
        }
        Ok(book)
    }
}

bincode::impl_borrow_decode!(SlotBook);

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

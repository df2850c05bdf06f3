use super::*;

fn limit(id: OrderId, owner: Owner, side: Side, price: Price, qty: u64) -> Incoming {
    Incoming {
        id,
        owner,
        side,
        price: Some(price),
        qty,
        tif: Tif::Gtc,
        post_only: false,
        stp: Stp::CancelResting,
        budget: None,
        filled_before: 0,
    }
}

fn levels(book: &Book, side: Side) -> Vec<(Price, u64, u32)> {
    book.depth(side, usize::MAX)
        .map(|l| (l.price, l.qty, l.orders))
        .collect()
}

fn ids(book: &Book, side: Side) -> Vec<OrderId> {
    book.orders(side).map(|o| o.id).collect()
}

fn fills(events: &Events) -> Vec<(OrderId, Price, u64)> {
    events
        .fills
        .iter()
        .map(|f| (f.maker, f.price, f.qty))
        .collect()
}

#[test]
fn levels_are_best_first_and_fifo_within_a_price() {
    let mut b = Book::new();
    let mut ev = Events::default();
    for (id, price) in [(1, 100), (2, 102), (3, 101), (4, 102)] {
        b.place(limit(id, 9, Side::Buy, price, 5), &mut ev).unwrap();
    }
    for (id, price) in [(5, 110), (6, 105), (7, 105)] {
        b.place(limit(id, 9, Side::Sell, price, 3), &mut ev)
            .unwrap();
    }
    assert!(ev.fills.is_empty());
    assert_eq!(
        levels(&b, Side::Buy),
        vec![(102, 10, 2), (101, 5, 1), (100, 5, 1)]
    );
    assert_eq!(levels(&b, Side::Sell), vec![(105, 6, 2), (110, 3, 1)]);
    assert_eq!(ids(&b, Side::Buy), vec![2, 4, 3, 1]);
    assert_eq!(b.best(Side::Sell), Some(105));
}

#[test]
fn a_crossing_order_trades_at_makers_prices_in_priority_then_rests() {
    let mut b = Book::new();
    let mut ev = Events::default();
    b.place(limit(1, 1, Side::Sell, 101, 2), &mut ev).unwrap();
    b.place(limit(2, 2, Side::Sell, 100, 3), &mut ev).unwrap();
    b.place(limit(3, 3, Side::Sell, 100, 4), &mut ev).unwrap();
    let placed = b.place(limit(4, 4, Side::Buy, 101, 10), &mut ev).unwrap();
    assert_eq!(fills(&ev), vec![(2, 100, 3), (3, 100, 4), (1, 101, 2)]);
    assert_eq!(
        placed,
        Placed {
            status: Status::Resting,
            filled: 9,
            resting: 1
        }
    );
    assert_eq!(levels(&b, Side::Sell), vec![]);
    assert_eq!(levels(&b, Side::Buy), vec![(101, 1, 1)]);
    let o = b.order(4).unwrap();
    assert_eq!((o.qty, o.filled), (1, 9));
}

#[test]
fn a_partial_fill_leaves_the_maker_at_the_front() {
    let mut b = Book::new();
    let mut ev = Events::default();
    b.place(limit(1, 1, Side::Buy, 50, 10), &mut ev).unwrap();
    b.place(limit(2, 1, Side::Buy, 50, 10), &mut ev).unwrap();
    let mut sell = limit(3, 2, Side::Sell, 50, 4);
    sell.tif = Tif::Ioc;
    b.place(sell, &mut ev).unwrap();
    assert_eq!(fills(&ev), vec![(1, 50, 4)]);
    assert_eq!(ev.fills[0].maker_left, 6);
    assert_eq!(ids(&b, Side::Buy), vec![1, 2]);
    assert_eq!(levels(&b, Side::Buy), vec![(50, 16, 2)]);
}

#[test]
fn fok_trades_all_or_nothing_and_counts_only_takeable_liquidity() {
    let mut b = Book::new();
    let mut ev = Events::default();
    b.place(limit(1, 1, Side::Sell, 10, 5), &mut ev).unwrap();
    b.place(limit(2, 7, Side::Sell, 10, 5), &mut ev).unwrap();
    let mut fok = limit(3, 7, Side::Buy, 10, 6);
    fok.tif = Tif::Fok;
    let placed = b.place(fok, &mut ev).unwrap();
    assert_eq!(placed.status, Status::Cancelled);
    assert_eq!(placed.filled, 0);
    assert!(ev.fills.is_empty() && ev.stp_cancelled.is_empty());
    assert_eq!(b.len(), 2);
    fok.qty = 5;
    let placed = b.place(fok, &mut ev).unwrap();
    assert_eq!(placed.status, Status::Filled);
    assert_eq!(fills(&ev), vec![(1, 10, 5)]);
    assert!(
        ev.stp_cancelled.is_empty(),
        "filled before meeting its own order"
    );
}

#[test]
fn self_trade_prevention_cancels_resting_or_stops_incoming() {
    let mut b = Book::new();
    let mut ev = Events::default();
    b.place(limit(1, 7, Side::Sell, 10, 5), &mut ev).unwrap();
    b.place(limit(2, 1, Side::Sell, 10, 5), &mut ev).unwrap();
    let placed = b.place(limit(3, 7, Side::Buy, 10, 5), &mut ev).unwrap();
    assert_eq!(ev.stp_cancelled.len(), 1);
    assert_eq!(ev.stp_cancelled[0].id, 1);
    assert_eq!(fills(&ev), vec![(2, 10, 5)]);
    assert_eq!(placed.status, Status::Filled);
    ev.clear();
    b.place(limit(4, 7, Side::Sell, 10, 5), &mut ev).unwrap();
    let mut incoming = limit(5, 7, Side::Buy, 10, 5);
    incoming.stp = Stp::CancelIncoming;
    let placed = b.place(incoming, &mut ev).unwrap();
    assert_eq!(placed.status, Status::Cancelled);
    assert!(ev.fills.is_empty() && ev.stp_cancelled.is_empty());
    assert_eq!(ids(&b, Side::Sell), vec![4]);
    assert!(b.order(5).is_none());
}

#[test]
fn a_budget_stops_a_market_buy_at_the_first_share_it_cannot_pay_for() {
    let mut b = Book::new();
    let mut ev = Events::default();
    b.place(limit(1, 1, Side::Sell, 10, 2), &mut ev).unwrap();
    b.place(limit(2, 1, Side::Sell, 15, 5), &mut ev).unwrap();
    let market = Incoming {
        price: None,
        tif: Tif::Ioc,
        budget: Some(49),
        ..limit(3, 2, Side::Buy, 0, 100)
    };
    let placed = b.place(market, &mut ev).unwrap();
    assert_eq!(fills(&ev), vec![(1, 10, 2), (2, 15, 1)]);
    assert_eq!(placed.status, Status::Cancelled);
    assert_eq!(placed.filled, 3);
    assert_eq!(levels(&b, Side::Sell), vec![(15, 4, 1)]);
}

#[test]
fn post_only_refuses_to_cross_and_duplicates_are_refused() {
    let mut b = Book::new();
    let mut ev = Events::default();
    b.place(limit(1, 1, Side::Sell, 10, 2), &mut ev).unwrap();
    let mut po = limit(2, 1, Side::Buy, 10, 1);
    po.post_only = true;
    assert_eq!(b.place(po, &mut ev), Err(Refusal::WouldCross));
    assert_eq!(
        b.place(limit(1, 1, Side::Buy, 5, 1), &mut ev),
        Err(Refusal::OrderExists)
    );
    po.price = Some(9);
    assert_eq!(b.place(po, &mut ev).unwrap().status, Status::Resting);
    assert_eq!(b.len(), 2);
}

#[test]
fn amend_keeps_priority_only_for_a_smaller_qty_at_the_same_price() {
    let mut b = Book::new();
    let mut ev = Events::default();
    for id in 1..=3 {
        b.place(limit(id, id, Side::Buy, 10, 5), &mut ev).unwrap();
    }
    b.amend(1, Some(2), None, &mut ev).unwrap();
    assert_eq!(ids(&b, Side::Buy), vec![1, 2, 3]);
    b.amend(2, Some(6), None, &mut ev).unwrap();
    assert_eq!(ids(&b, Side::Buy), vec![1, 3, 2]);
    b.amend(1, None, Some(11), &mut ev).unwrap();
    b.amend(1, None, Some(10), &mut ev).unwrap();
    assert_eq!(ids(&b, Side::Buy), vec![3, 2, 1]);
    assert_eq!(levels(&b, Side::Buy), vec![(10, 13, 3)]);
    assert_eq!(
        b.amend(9, Some(1), None, &mut ev),
        Err(Refusal::UnknownOrder)
    );
}

#[test]
fn an_amend_to_a_crossing_price_trades_and_keeps_counting_filled() {
    let mut b = Book::new();
    let mut ev = Events::default();
    b.place(limit(1, 1, Side::Sell, 12, 3), &mut ev).unwrap();
    b.place(limit(2, 2, Side::Buy, 10, 5), &mut ev).unwrap();
    let placed = b.amend(2, None, Some(12), &mut ev).unwrap();
    assert_eq!(fills(&ev), vec![(1, 12, 3)]);
    assert_eq!(
        (placed.status, placed.filled, placed.resting),
        (Status::Resting, 3, 2)
    );
    ev.clear();
    b.place(limit(3, 3, Side::Sell, 12, 1), &mut ev).unwrap();
    assert_eq!(b.order(2).unwrap().filled, 4);
}

#[test]
fn cancel_frees_the_slot_for_reuse_and_forgets_the_id() {
    let mut b = Book::with_capacity(4);
    let mut ev = Events::default();
    b.place(limit(1, 1, Side::Sell, 12, 3), &mut ev).unwrap();
    b.place(limit(2, 1, Side::Sell, 12, 4), &mut ev).unwrap();
    let removed = b.cancel(1).unwrap();
    assert_eq!((removed.qty, removed.price), (3, 12));
    assert_eq!(b.cancel(1), Err(Refusal::UnknownOrder));
    b.place(limit(1, 1, Side::Sell, 13, 1), &mut ev).unwrap();
    assert_eq!(b.book.slots, 2, "the freed slot was reused");
    assert_eq!(levels(&b, Side::Sell), vec![(12, 4, 1), (13, 1, 1)]);
}

#[test]
fn digest_depends_on_priority_not_on_slots() {
    let mut a = Book::new();
    let mut b = Book::new();
    let mut ev = Events::default();
    a.place(limit(1, 1, Side::Sell, 12, 3), &mut ev).unwrap();
    a.place(limit(2, 1, Side::Sell, 12, 3), &mut ev).unwrap();
    b.place(limit(9, 1, Side::Sell, 12, 3), &mut ev).unwrap();
    b.place(limit(1, 1, Side::Sell, 12, 3), &mut ev).unwrap();
    b.cancel(9).unwrap();
    b.place(limit(2, 1, Side::Sell, 12, 3), &mut ev).unwrap();
    assert_eq!(a.digest(), b.digest());
    b.amend(1, None, Some(13), &mut ev).unwrap();
    assert_ne!(a.digest(), b.digest());
}

#[test]
fn prices_far_apart_keep_priority_across_the_window_and_the_far_list() {
    let far = [
        1,
        100,
        101,
        70_000,
        1 << 40,
        i64::MAX,
        99,
        i64::MAX - 1,
        2,
        1 << 20,
    ];
    for side in [Side::Buy, Side::Sell] {
        let mut b = Book::new();
        let mut ev = Events::default();
        for (id, &price) in far.iter().enumerate() {
            b.place(limit(id as u64, 9, side, price, 1), &mut ev)
                .unwrap();
        }
        let mut expected: Vec<(Price, u64, u32)> = far.iter().map(|&p| (p, 1, 1)).collect();
        expected.sort();
        if side == Side::Buy {
            expected.reverse();
        }
        assert_eq!(levels(&b, side), expected);
        // One market order sweeps them all, best first.
        let sweep = Incoming {
            price: None,
            tif: Tif::Ioc,
            ..limit(999, 8, side.opposite(), 0, 1_000)
        };
        b.place(sweep, &mut ev).unwrap();
        let prices: Vec<Price> = ev.fills.iter().map(|f| f.price).collect();
        let best_first: Vec<Price> = expected.iter().map(|l| l.0).collect();
        assert_eq!(prices, best_first);
        assert_eq!(b.best(side), None);
        // The emptied window re-centres on the next price and takes in the
        // far levels near it.
        for (id, price) in [(500, 1 << 40), (501, (1 << 40) + 5), (502, 3)] {
            b.place(limit(id, 9, side, price, 1), &mut ev).unwrap();
        }
        let mut again = vec![((1 << 40) + 5, 1, 1), (1 << 40, 1, 1), (3, 1, 1)];
        if side == Side::Sell {
            again.reverse();
        }
        assert_eq!(levels(&b, side), again);
        assert_eq!(b.cancel(501).map(|r| r.price), Ok((1 << 40) + 5));
        assert_eq!(b.order(502).map(|o| o.price), Some(3));
    }
}

/// The ladder against a sorted set of keys, through random inserts and
/// removes of keys both near one another and far apart.
#[test]
fn a_ladder_finds_levels_and_the_best_like_a_sorted_set() {
    let mut ladder = Ladder::default();
    let mut reference = std::collections::BTreeMap::new();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut rand = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..20_000u32 {
        let r = rand();
        let k = match r % 16 {
            0 => i64::MIN + (r >> 60) as i64,
            1 => i64::MAX - (r >> 60) as i64,
            2 => (r >> 8) as i64,
            3 => 1_000 + (r >> 40) as i64 % 200_000,
            _ => 1_000 + (r >> 40) as i64 % 600,
        };
        if let std::collections::btree_map::Entry::Vacant(e) = reference.entry(k) {
            e.insert(step);
            ladder.insert(k, step);
        } else {
            reference.remove(&k);
            ladder.remove(k);
        }
        assert_eq!(ladder.find(k), reference.get(&k).copied().unwrap_or(NIL));
        let best = reference.last_key_value().map_or(NIL, |(_, &l)| l);
        assert_eq!(ladder.best(), best, "step {step}");
        if step % 1_000 == 0 {
            let all: Vec<u32> = ladder.levels().collect();
            let expected: Vec<u32> = reference.values().rev().copied().collect();
            assert_eq!(all, expected, "step {step}");
        }
    }
}

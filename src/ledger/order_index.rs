//! The Ledger's one index of resting orders over all its books: order id →
//! (instrument, slot), so that `cancel_order`, `amend` and `order`, which
//! name only the order, find it with one hash lookup.
//!
//! Memory is the point (issue #11: at most 64 bytes per resting order, its
//! arena node included). A bucket holds a bare 4-byte *handle*, and the
//! table compares ids through the node the handle names, so an entry costs
//! 4 bytes plus hashbrown's control byte. An index per book beside an
//! id → instrument map cost 4 + 16 bytes (plus two control bytes), and an
//! entry naming (instrument, slot) would cost 8. A handle numbers slots
//! over all books: the first time a slot of a book's arena page is indexed,
//! that page gets the next Ledger-wide page number, and `pages` maps the
//! number back to (book, page). Pages are never given back (a book's arena
//! never shrinks), so a handle stays valid while its slot is in use.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use crate::book::{OrderId, Slot, SlotBook, SLOTS_PER_PAGE};
use crate::request::InstrumentId;

fn hash(id: OrderId) -> u64 {
    FxBuildHasher.hash_one(id)
}

#[derive(Clone, Debug, Default)]
pub(super) struct OrderIndex {
    /// The handle of every resting order, hashed by its id.
    table: HashTable<u32>,
    /// Ledger-wide page → (instrument, the book's own page).
    pages: Vec<(InstrumentId, u32)>,
    /// Per instrument: the book's page → Ledger-wide page.
    book_pages: Vec<Vec<u32>>,
}

/// Where the order with `handle` rests.
fn locate(pages: &[(InstrumentId, u32)], handle: u32) -> (InstrumentId, Slot) {
    let (instrument, page) = pages[(handle / SLOTS_PER_PAGE) as usize];
    (
        instrument,
        Slot::new(page * SLOTS_PER_PAGE + handle % SLOTS_PER_PAGE),
    )
}

fn id_of(books: &[SlotBook], pages: &[(InstrumentId, u32)], handle: u32) -> OrderId {
    let (instrument, slot) = locate(pages, handle);
    books[instrument.0 as usize].id_at(slot)
}

impl OrderIndex {
    /// Resting orders indexed.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Where resting order `id` is.
    #[inline]
    pub fn find(&self, books: &[SlotBook], id: OrderId) -> Option<(InstrumentId, Slot)> {
        let pages = &self.pages;
        self.table
            .find(hash(id), |&h| id_of(books, pages, h) == id)
            .map(|&h| locate(pages, h))
    }

    /// The handle of `slot` of `instrument`'s book, if its page has one.
    fn handle(&self, instrument: InstrumentId, slot: Slot) -> Option<u32> {
        let page = self
            .book_pages
            .get(instrument.0 as usize)?
            .get((slot.get() / SLOTS_PER_PAGE) as usize)?;
        Some(page * SLOTS_PER_PAGE + slot.get() % SLOTS_PER_PAGE)
    }

    /// Indexes the order that rests at `slot` of `instrument`'s book (its id
    /// must not be indexed). Allocates only when the book's arena grew a
    /// page since (or the table must grow).
    pub fn insert(&mut self, books: &[SlotBook], instrument: InstrumentId, slot: Slot) {
        let handle = match self.handle(instrument, slot) {
            Some(handle) => handle,
            None => self.number_pages(instrument, slot),
        };
        let id = books[instrument.0 as usize].id_at(slot);
        let pages = &self.pages;
        self.table
            .insert_unique(hash(id), handle, |&h| hash(id_of(books, pages, h)));
    }

    /// Gives Ledger-wide numbers to `instrument`'s pages up to `slot`'s.
    #[cold]
    fn number_pages(&mut self, instrument: InstrumentId, slot: Slot) -> u32 {
        let book = instrument.0 as usize;
        if self.book_pages.len() <= book {
            self.book_pages.resize_with(book + 1, Vec::new);
        }
        let wanted = (slot.get() / SLOTS_PER_PAGE) as usize;
        while self.book_pages[book].len() <= wanted {
            let number = u32::try_from(self.pages.len())
                .ok()
                .filter(|&n| n < u32::MAX / SLOTS_PER_PAGE)
                .expect("fewer than 2^32 order slots over all books");
            let page = self.book_pages[book].len() as u32;
            self.pages.push((instrument, page));
            self.book_pages[book].push(number);
        }
        self.handle(instrument, slot)
            .expect("the slot's page was just numbered")
    }

    /// Forgets order `id`, which was indexed at `slot` of `instrument`'s
    /// book (its node may be reused already: the entry is found by handle).
    pub fn remove(&mut self, id: OrderId, instrument: InstrumentId, slot: Slot) {
        let handle = self
            .handle(instrument, slot)
            .expect("an indexed order's page is numbered");
        self.table
            .find_entry(hash(id), |&h| h == handle)
            .expect("a resting order is indexed")
            .remove();
    }

    /// The index of every order resting on `books` (after a snapshot is
    /// read); an error if an id rests twice.
    pub fn rebuild(books: &[SlotBook]) -> Result<OrderIndex, String> {
        let mut index = OrderIndex {
            table: HashTable::with_capacity(books.iter().map(SlotBook::len).sum()),
            ..OrderIndex::default()
        };
        for (b, book) in books.iter().enumerate() {
            let instrument = InstrumentId(b as u32);
            for slot in book.slots() {
                let id = book.id_at(slot);
                if let Some((other, _)) = index.find(books, id) {
                    return Err(format!(
                        "order {id} rests twice (on the books of instruments #{} and #{})",
                        other.0, instrument.0
                    ));
                }
                index.insert(books, instrument, slot);
            }
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{Events, Incoming, Side, Stp, Tif};

    fn rest(book: &mut SlotBook, id: OrderId) -> Slot {
        let mut events = Events::default();
        book.place(
            Incoming {
                id,
                owner: 1,
                side: Side::Buy,
                price: Some(10),
                qty: 1,
                tif: Tif::Gtc,
                post_only: false,
                stp: Stp::CancelResting,
                budget: None,
                filled_before: 0,
            },
            &mut events,
        )
        .unwrap();
        events.rested.unwrap()
    }

    #[test]
    fn an_id_resting_on_two_books_is_refused_on_rebuild() {
        let mut books = vec![SlotBook::new(), SlotBook::new()];
        rest(&mut books[0], 7);
        rest(&mut books[1], 8);
        assert_eq!(OrderIndex::rebuild(&books).unwrap().len(), 2);
        rest(&mut books[1], 7);
        let err = OrderIndex::rebuild(&books).unwrap_err();
        assert!(err.contains("order 7 rests twice"), "{err}");
    }

    #[test]
    fn handles_name_each_books_pages_in_the_order_they_were_first_used() {
        let mut books = vec![SlotBook::new(), SlotBook::new()];
        let mut index = OrderIndex::default();
        let per_page = SLOTS_PER_PAGE as u64;
        // Book 0 fills a page and starts another; book 1 starts between.
        for id in 0..per_page {
            let slot = rest(&mut books[0], id);
            index.insert(&books, InstrumentId(0), slot);
        }
        let slot = rest(&mut books[1], 1_000_000);
        index.insert(&books, InstrumentId(1), slot);
        let slot = rest(&mut books[0], per_page);
        index.insert(&books, InstrumentId(0), slot);
        assert_eq!(
            index.pages,
            vec![
                (InstrumentId(0), 0),
                (InstrumentId(1), 0),
                (InstrumentId(0), 1)
            ]
        );
        for id in 0..=per_page {
            let (instrument, slot) = index.find(&books, id).unwrap();
            assert_eq!(instrument, InstrumentId(0));
            assert_eq!(books[0].id_at(slot), id);
        }
        assert_eq!(
            index.find(&books, 1_000_000).map(|(i, _)| i),
            Some(InstrumentId(1))
        );
        index.remove(per_page, InstrumentId(0), slot);
        assert_eq!(index.find(&books, per_page), None);
        assert_eq!(index.len(), per_page as usize + 1);
    }
}

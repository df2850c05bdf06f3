//! The lock-free multi-producer / single-consumer ring between the gateway
//! threads and the business thread.
//!
//! Why a hand-written ring rather than a general queue: the business thread
//! wants *batches* (everything published, released with one cursor store), the
//! producers must feel back-pressure instead of losing requests, and shutdown
//! must be exact — every request a producer was told was accepted is
//! delivered, none twice. The design follows the LMAX Disruptor:
//!
//! * a producer claims a sequence with one `fetch_add` on the claim cursor,
//!   writes the preallocated slot in place and publishes it by storing the
//!   sequence + 1 into the slot's stamp (Release);
//! * the consumer reads slots in sequence order while their stamp says
//!   "published" (Acquire), then releases the whole batch with one Release
//!   store of its cursor;
//! * a producer only waits for space when its claim is a full lap ahead of
//!   the consumer cursor it last saw, so the common push never touches the
//!   consumer's cache line;
//! * closing sets a bit on the claim cursor with `fetch_or`: each producer's
//!   own `fetch_add` result tells it whether it claimed before or after the
//!   close, and the consumer drains exactly up to the claim value the close
//!   saw;
//! * under `WaitStrategy::Block` both sides end up parked, not spinning: the
//!   consumer until the next push, a producer facing a full ring until the
//!   consumer frees a batch. Each side announces itself (a flag, a waiter
//!   count), issues a SeqCst fence and re-checks before parking; the waking
//!   side publishes, fences and checks the announcement (the eventcount
//!   pattern), so nothing is lost and nobody makes a syscall while the other
//!   side is awake.
//!
//! All `unsafe` of the crate lives in this module.
//!
//! # Example
//!
//! ```
//! use ringledger::ring::{channel, WaitStrategy};
//!
//! let (producer, mut consumer) = channel::<u64>(1024, WaitStrategy::Block);
//! let gateway = std::thread::spawn(move || {
//!     for request in 0..10 {
//!         producer.push(request).expect("the consumer is alive");
//!     }
//!     // Dropping the last producer closes the ring.
//! });
//!
//! let mut received = Vec::new();
//! while let Ok(_count) = consumer.wait_drain(256, |request| received.push(request)) {}
//! gateway.join().unwrap();
//! assert_eq!(received, (0..10).collect::<Vec<_>>());
//! ```

use std::cell::Cell;
use std::fmt;
use std::mem::MaybeUninit;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crossbeam::utils::CachePadded;

use self::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use self::sync::{Arc, Mutex, Thread, UnsafeCell};

/// The same code runs on std primitives and, under `--cfg loom`, on loom's
/// model-checked ones; this shim is the only place that differs.
mod sync {
    #[cfg(loom)]
    pub(super) use loom::{
        cell::UnsafeCell,
        hint::spin_loop,
        sync::{atomic, Arc, Mutex, MutexGuard},
        thread::{self, Thread},
    };
    use std::time::Duration;
    #[cfg(not(loom))]
    pub(super) use std::{
        hint::spin_loop,
        sync::{atomic, Arc, Mutex, MutexGuard},
        thread::{self, Thread},
    };

    /// std's `UnsafeCell` with loom's closure API, so call sites are shared.
    #[cfg(not(loom))]
    pub(super) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        pub(super) fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        pub(super) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }

    /// Loom has no timed park; a yield lets the model run other threads and
    /// the caller re-checks its condition, which is all a timeout needs.
    #[cfg(loom)]
    pub(super) fn park_timeout(_timeout: Duration) {
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    pub(super) fn park_timeout(timeout: Duration) {
        std::thread::park_timeout(timeout);
    }
}

/// Set on the claim cursor by `close`. Sequences are `u64` and never reach
/// 2^63, so the bit never collides with a real claim and later `fetch_add`s
/// keep it set.
const CLOSED: u64 = 1 << 63;

/// `close_seq` before any close; no drain position can equal it.
const NOT_CLOSED: u64 = u64::MAX;

/// Busy-wait rounds before `Yield` starts yielding. Short: on a 2-core
/// machine the thread we wait for often needs our core. Loom would explore
/// every interleaving of each round, so the models skip straight to
/// parking, the path whose lost wake-ups they exist to rule out.
#[cfg(not(loom))]
const SPIN_ROUNDS: u32 = 64;
#[cfg(loom)]
const SPIN_ROUNDS: u32 = 0;

/// How long a `Block` waiter on a ring made by [`channel_spinning`] spins
/// before it parks is up to its maker (other rings: `SPIN_ROUNDS` only).
/// Waking a parked thread costs its waker a system call and the sleeper tens
/// of microseconds on a virtual machine (the idle vCPU has to be woken by the
/// host), so a wait that ends within the budget is answered from the spin;
/// a longer one parks and costs no CPU. No yields in between: a thread that
/// yields while another is runnable gives its core away for a whole time
/// slice (milliseconds), and three yielding threads on two cores never park
/// at all, which is the worst of both. Loom models park at once.
#[cfg(loom)]
const LOOM_SPIN_BUDGET: Duration = Duration::ZERO;

/// One round of waiting, producer or consumer alike.
enum Pause {
    Spin,
    Yield,
    Park,
}

/// Consecutive rounds of one wait: what each next round does under the
/// wait strategy.
struct Backoff {
    wait: WaitStrategy,
    /// How long `Block` spins (after the first rounds) before parking.
    budget: Duration,
    round: u32,
    /// When a `Block` waiter's spin budget runs out (read once the first
    /// rounds are spent, so a short wait never reads the clock).
    spin_until: Option<Instant>,
}

impl Backoff {
    fn new(wait: WaitStrategy, budget: Duration) -> Backoff {
        #[cfg(loom)]
        let budget = budget.min(LOOM_SPIN_BUDGET);
        Backoff {
            wait,
            budget,
            round: 0,
            spin_until: None,
        }
    }

    // Under loom the spin phase is empty on purpose (see SPIN_ROUNDS).
    #[cfg_attr(loom, allow(clippy::absurd_extreme_comparisons))]
    fn next(&mut self) -> Pause {
        self.round = self.round.saturating_add(1);
        match self.wait {
            WaitStrategy::Spin => Pause::Spin,
            _ if self.round <= SPIN_ROUNDS => Pause::Spin,
            WaitStrategy::Yield => Pause::Yield,
            WaitStrategy::Block if self.budget.is_zero() => Pause::Park,
            WaitStrategy::Block => {
                let now = Instant::now();
                let until = *self.spin_until.get_or_insert(now + self.budget);
                if now < until {
                    Pause::Spin
                } else {
                    Pause::Park
                }
            }
        }
    }
}

/// How a waiting thread spends its time. Chosen at construction because the
/// right answer depends on how many cores there are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WaitStrategy {
    /// Lowest latency; burns a core per waiting thread. Only with a core each.
    Spin,
    /// Spins briefly, then gives the core away on every round; low latency
    /// when threads outnumber cores, but the waiter still shows as busy.
    Yield,
    /// Spins for a few tens of microseconds (never yielding), then parks:
    /// the consumer until the next push, a producer waiting for space until
    /// the consumer frees a batch. Idle costs nothing; while nobody sleeps,
    /// a push costs one fence plus one load and a drained batch the same.
    #[default]
    Block,
}

impl fmt::Display for WaitStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WaitStrategy::Spin => "spin",
            WaitStrategy::Yield => "yield",
            WaitStrategy::Block => "block",
        })
    }
}

impl FromStr for WaitStrategy {
    type Err = ParseWaitStrategyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "spin" => Ok(WaitStrategy::Spin),
            "yield" => Ok(WaitStrategy::Yield),
            "block" => Ok(WaitStrategy::Block),
            _ => Err(ParseWaitStrategyError {
                input: s.to_owned(),
            }),
        }
    }
}

/// The text given for a wait strategy was none of the known names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseWaitStrategyError {
    input: String,
}

impl fmt::Display for ParseWaitStrategyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown wait strategy `{}`: expected `spin`, `yield` or `block`",
            self.input
        )
    }
}

impl std::error::Error for ParseWaitStrategyError {}

/// The ring no longer accepts values; the refused value is handed back so the
/// caller can answer its client instead of losing the request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Closed<T>(pub T);

impl<T> Closed<T> {
    /// The value that was not pushed.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Closed(..)")
    }
}

impl<T> fmt::Display for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the ring is closed or its consumer is gone; the value was not pushed")
    }
}

impl<T> std::error::Error for Closed<T> {}

/// The ring was closed (or every producer dropped) and everything accepted
/// before that has been drained: nothing more will ever arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disconnected;

impl fmt::Display for Disconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the ring is closed and fully drained")
    }
}

impl std::error::Error for Disconnected {}

struct Slot<T> {
    /// `seq + 1` once the value for sequence `seq` is written. The consumer
    /// never resets it: the next writer of this slot is `seq + capacity`,
    /// whose stamp differs, so a stale stamp never looks published.
    stamp: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

struct Shared<T> {
    /// Next sequence to claim, plus the `CLOSED` bit. Written by every push.
    claim: CachePadded<AtomicU64>,
    /// Every sequence below it has been taken out by the consumer; written
    /// once per batch, read by producers only when they may be a lap ahead.
    consumed: CachePadded<AtomicU64>,
    /// The consumer is (about to be) parked; read by every `Block` push, so
    /// it lives apart from the cursors that are written often.
    sleeping: CachePadded<AtomicBool>,
    /// The claim cursor as `close` found it: the end of what is delivered.
    close_seq: AtomicU64,
    /// Lets producers waiting for space give up instead of hanging.
    consumer_gone: AtomicBool,
    producers: AtomicUsize,
    /// Where to send the unpark; the consumer may move between threads.
    consumer_thread: Mutex<Option<Thread>>,
    /// How many producers are (about to be) parked waiting for space; read
    /// by the consumer once per `Block` batch.
    space_waiters: AtomicUsize,
    space_waiter_threads: Mutex<Vec<Thread>>,
    slots: Box<[Slot<T>]>,
    mask: u64,
    wait: WaitStrategy,
    /// See [`channel_spinning`].
    spin_budget: Duration,
}

// `Shared` hands values of `T` from producer threads to the consumer thread.
// Each slot's value is accessed by one thread at a time: the producer that
// claimed the sequence (until it publishes via the stamp, Release) and then
// the consumer (until it releases via `consumed`, Release), each side
// acquiring the other's store before touching the slot.
//
// SAFETY: values of `T` move between threads, so `T: Send` is required, and
// it suffices because no `&T` is ever shared (`T: Sync` is not needed).
unsafe impl<T: Send> Send for Shared<T> {}
// SAFETY: see `Send` above; every shared field other than the slot values is
// an atomic or a mutex.
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    fn capacity(&self) -> u64 {
        self.mask + 1
    }

    fn slot(&self, seq: u64) -> &Slot<T> {
        &self.slots[(seq & self.mask) as usize]
    }

    /// Idempotent; only the first close fixes the end of the stream.
    fn close(&self) {
        let before = self.claim.fetch_or(CLOSED, Ordering::Relaxed);
        if before & CLOSED == 0 {
            self.close_seq.store(before, Ordering::Release);
            self.wake_consumer();
        }
    }

    /// Producer half of the eventcount: the caller has just made progress
    /// visible (a stamp or `close_seq`). The SeqCst fence pairs with the one
    /// in `park_consumer`: either the consumer sees our store after setting
    /// `sleeping`, or we see `sleeping` here — never neither. While the
    /// consumer is awake this is one fence and one load, no syscall.
    /// Producers never write `sleeping`; the handle in `consumer_thread` is
    /// the wake-up token, so of all producers seeing `sleeping` only the
    /// first to take it makes the unpark syscall.
    fn wake_consumer(&self) {
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            let token = self.lock_consumer_thread().take();
            if let Some(thread) = token {
                thread.unpark();
            }
        }
    }

    /// Whether the consumer, positioned at `next`, has something to do.
    fn ready(&self, next: u64) -> bool {
        self.slot(next).stamp.load(Ordering::Acquire) == next + 1
            || self.close_seq.load(Ordering::Acquire) == next
    }

    /// Consumer half of the eventcount; see `wake_consumer`.
    fn park_consumer(&self, next: u64, deadline: Option<Instant>) {
        self.park_consumer_unless(deadline, &mut || self.ready(next));
    }

    /// Parks the consumer unless `ready()`, checked after announcing the
    /// park: whatever can make it true must be followed by `wake_consumer`
    /// (a push, or a [`Waker`]).
    fn park_consumer_unless(&self, deadline: Option<Instant>, ready: &mut dyn FnMut() -> bool) {
        *self.lock_consumer_thread() = Some(sync::thread::current());
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if !ready() {
            match deadline {
                None => sync::thread::park(),
                Some(deadline) => {
                    sync::park_timeout(deadline.saturating_duration_since(Instant::now()))
                }
            }
        }
        self.sleeping.store(false, Ordering::Relaxed);
        // An untaken token would only cost a spurious wake-up later.
        self.lock_consumer_thread().take();
    }

    fn lock_consumer_thread(&self) -> sync::MutexGuard<'_, Option<Thread>> {
        self.consumer_thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_space_waiters(&self) -> sync::MutexGuard<'_, Vec<Thread>> {
        self.space_waiter_threads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Consumer half of the second eventcount, run after `consumed` moved
    /// (or the consumer went away). The fence pairs with the one in
    /// `park_for_space`: either the producer sees the new cursor, or we see
    /// it registered. One fence and one load when no producer waits.
    fn wake_producers(&self) {
        fence(Ordering::SeqCst);
        if self.space_waiters.load(Ordering::Relaxed) != 0 {
            for thread in self.lock_space_waiters().drain(..) {
                thread.unpark();
            }
        }
    }

    /// Parks a producer until the consumer frees space or goes away (or a
    /// spurious wake-up); the caller re-checks either way.
    fn park_for_space(&self, seq: u64) {
        let me = sync::thread::current();
        {
            let mut waiters = self.lock_space_waiters();
            waiters.push(me.clone());
            self.space_waiters.fetch_add(1, Ordering::Relaxed);
        }
        fence(Ordering::SeqCst);
        let consumed = self.consumed.load(Ordering::Acquire);
        if seq >= consumed + self.capacity() && !self.consumer_gone.load(Ordering::Acquire) {
            sync::thread::park();
        }
        let mut waiters = self.lock_space_waiters();
        if let Some(index) = waiters.iter().position(|t| t.id() == me.id()) {
            waiters.swap_remove(index);
        }
        self.space_waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> Drop for Shared<T> {
    /// Values published after the consumer's last drain (a producer racing
    /// the consumer's drop) are still in the ring; they are dropped here,
    /// when no other thread can touch the slots any more.
    fn drop(&mut self) {
        let consumed = self.consumed.load(Ordering::Relaxed);
        for seq in consumed..consumed + self.capacity() {
            let slot = self.slot(seq);
            if slot.stamp.load(Ordering::Relaxed) == seq + 1 {
                slot.value.with_mut(|value| {
                    // The stamp says sequence `seq` was written and, being at
                    // or above `consumed`, not yet taken; we are the last
                    // owner of the ring (in `Drop` with `&mut self`), so
                    // nobody else reads or writes the slot. Each slot index
                    // appears once in `capacity` consecutive sequences.
                    // SAFETY: initialized, untaken, ours alone: no double drop.
                    unsafe { (*value).assume_init_drop() }
                });
            }
        }
    }
}

/// Creates a ring of at least `capacity` slots (rounded up to a power of two,
/// at least 2) allocated once here; pushes never allocate.
///
/// # Panics
/// If the rounded capacity does not fit in `usize`.
pub fn channel<T: Send>(capacity: usize, wait: WaitStrategy) -> (Producer<T>, Consumer<T>) {
    channel_spinning(capacity, wait, Duration::ZERO)
}

/// [`channel`] whose `Block` waiters spin for up to `spin_budget` before
/// they park: for a thread that has a core to itself and whose next item
/// usually arrives within the budget (the business thread under a steady
/// stream of requests), where parking would add a wake-up to every item.
pub fn channel_spinning<T: Send>(
    capacity: usize,
    wait: WaitStrategy,
    spin_budget: Duration,
) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity
        .max(2)
        .checked_next_power_of_two()
        .expect("ring capacity too large: it must round up to a power of two that fits in usize");
    let slots = (0..capacity)
        .map(|_| Slot {
            stamp: AtomicU64::new(0),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        })
        .collect();
    let shared = Arc::new(Shared {
        claim: CachePadded::new(AtomicU64::new(0)),
        consumed: CachePadded::new(AtomicU64::new(0)),
        sleeping: CachePadded::new(AtomicBool::new(false)),
        close_seq: AtomicU64::new(NOT_CLOSED),
        consumer_gone: AtomicBool::new(false),
        producers: AtomicUsize::new(1),
        consumer_thread: Mutex::new(None),
        space_waiters: AtomicUsize::new(0),
        space_waiter_threads: Mutex::new(Vec::new()),
        slots,
        mask: capacity as u64 - 1,
        wait,
        spin_budget,
    });
    let producer = Producer {
        shared: Arc::clone(&shared),
        consumed_seen: Cell::new(0),
    };
    (producer, Consumer { shared, next: 0 })
}

/// The sending end. Clone it once per thread: the cached consumer cursor is
/// per handle, which is also why it is `Send` but not `Sync`.
pub struct Producer<T> {
    shared: Arc<Shared<T>>,
    /// The consumer cursor as last read: a push only looks at the real one
    /// when this says the ring may be full.
    consumed_seen: Cell<u64>,
}

impl<T: Send> Producer<T> {
    /// Waits while the ring is full (back-pressure: nothing is dropped or
    /// overwritten). Gives the value back if the ring was closed before this
    /// claim, or if the consumer is gone.
    pub fn push(&self, value: T) -> Result<(), Closed<T>> {
        self.push_deferring_wake(value)?;
        self.wake();
        Ok(())
    }

    /// Like [`Producer::push`], but leaves waking a parked consumer to a
    /// later [`Producer::wake`]. A producer that publishes a burst (the
    /// business thread answering a batch) then pays the wake-up check, a
    /// SeqCst fence, once per burst instead of once per item. The consumer
    /// may sleep until `wake` is called, so call it once the burst is done.
    pub fn push_deferring_wake(&self, value: T) -> Result<(), Closed<T>> {
        let shared = &*self.shared;
        // Relaxed: which side of a close the claim falls on is decided by the
        // claim cursor's modification order alone; the slot hand-off is
        // ordered by the stamp and `consumed`.
        let claimed = shared.claim.fetch_add(1, Ordering::Relaxed);
        if claimed & CLOSED != 0 {
            return Err(Closed(value));
        }
        let seq = claimed;
        if seq >= self.consumed_seen.get() + shared.capacity() && !self.wait_for_space(seq) {
            return Err(Closed(value));
        }
        let slot = shared.slot(seq);
        slot.value.with_mut(|cell| {
            // We own sequence `seq` (unique `fetch_add` result) and the
            // consumer has taken sequence `seq - capacity` out of this slot:
            // `seq < consumed + capacity` for a `consumed` we loaded with
            // Acquire, pairing with the consumer's Release store after it
            // read the slot. Until we store the stamp, nobody else touches it.
            // SAFETY: the slot is free and exclusively ours until published.
            unsafe { cell.write(MaybeUninit::new(value)) }
        });
        slot.stamp.store(seq + 1, Ordering::Release);
        Ok(())
    }

    /// Wakes the consumer if it parked (Block strategy); see
    /// [`Producer::push_deferring_wake`]. Costs one fence and one load.
    pub fn wake(&self) {
        if self.shared.wait == WaitStrategy::Block {
            self.shared.wake_consumer();
        }
    }

    /// Refuses new pushes from now on, on every handle; everything claimed
    /// before is still delivered.
    pub fn close(&self) {
        self.shared.close();
    }

    /// The ring's real capacity (after rounding).
    pub fn capacity(&self) -> usize {
        self.shared.capacity() as usize
    }

    /// Slots claimed and not yet drained, as of two loads that may straddle
    /// a push or a drain (a gauge for monitoring, never for control).
    pub fn occupancy(&self) -> u64 {
        let consumed = self.shared.consumed.load(Ordering::Relaxed);
        let claimed = self.shared.claim.load(Ordering::Relaxed);
        claimed.saturating_sub(consumed)
    }

    /// Returns `false` if the consumer is gone: the claim will never be read.
    fn wait_for_space(&self, seq: u64) -> bool {
        let shared = &*self.shared;
        let mut backoff = Backoff::new(shared.wait, shared.spin_budget);
        loop {
            let consumed = shared.consumed.load(Ordering::Acquire);
            self.consumed_seen.set(consumed);
            // Checked after loading `consumed`: the consumer's drop marks
            // itself gone before it frees slots, so space made by that final
            // cleanup is never mistaken for a consumer that will read us.
            if shared.consumer_gone.load(Ordering::Acquire) {
                return false;
            }
            if seq < consumed + shared.capacity() {
                return true;
            }
            match backoff.next() {
                Pause::Spin => sync::spin_loop(),
                Pause::Yield => sync::thread::yield_now(),
                Pause::Park => shared.park_for_space(seq),
            }
        }
    }
}

impl<T> Clone for Producer<T> {
    fn clone(&self) -> Self {
        self.shared.producers.fetch_add(1, Ordering::Relaxed);
        Producer {
            shared: Arc::clone(&self.shared),
            consumed_seen: Cell::new(self.consumed_seen.get()),
        }
    }
}

impl<T> Drop for Producer<T> {
    /// The last producer closes the ring, so the consumer learns that nothing
    /// more will come once it has drained.
    fn drop(&mut self) {
        if self.shared.producers.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.close();
        }
    }
}

/// Wakes a ring's consumer waiting in [`Consumer::wait_until`] without
/// pushing. Costs one fence and one load while the consumer is awake.
pub struct Waker<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Waker<T> {
    /// Call after making the waiting consumer's condition true.
    pub fn wake(&self) {
        if self.shared.wait == WaitStrategy::Block {
            self.shared.wake_consumer();
        }
    }
}

/// The receiving end, owned by the one business thread.
pub struct Consumer<T> {
    shared: Arc<Shared<T>>,
    /// Next sequence to read; the consumer's private copy of `consumed`.
    next: u64,
}

/// Publishes the consumer cursor when a batch ends, even if the callback
/// panics mid-batch, so values already handed out are never read again.
struct Batch<'a, T> {
    shared: &'a Shared<T>,
    start: u64,
    next: &'a mut u64,
}

impl<T> Drop for Batch<'_, T> {
    fn drop(&mut self) {
        if *self.next != self.start {
            self.shared.consumed.store(*self.next, Ordering::Release);
            if self.shared.wait == WaitStrategy::Block {
                self.shared.wake_producers();
            }
        }
    }
}

impl<T> Consumer<T> {
    /// `drain` without the `T: Send` bound, so `Drop` can use it too.
    fn take_published(&mut self, max: usize, mut f: impl FnMut(T)) -> usize {
        let Consumer { shared, next } = self;
        let start = *next;
        let end = start.saturating_add(max as u64);
        let batch = Batch {
            shared,
            start,
            next,
        };
        while *batch.next < end {
            let seq = *batch.next;
            let slot = shared.slot(seq);
            if slot.stamp.load(Ordering::Acquire) != seq + 1 {
                break;
            }
            let value = slot.value.with_mut(|cell| {
                // The stamp (Acquire, pairing with the producer's Release)
                // says the value for `seq` is fully written, and the producer
                // of `seq + capacity` cannot write the slot before we store a
                // cursor above `seq`. We read it exactly once: the cursor
                // moves past `seq` before `f` runs, and `Batch` publishes it
                // even on panic.
                // SAFETY: initialized, not yet read, not yet reusable.
                unsafe { (*cell).assume_init_read() }
            });
            *batch.next = seq + 1;
            f(value);
        }
        (*batch.next - start) as usize
    }
}

impl<T: Send> Consumer<T> {
    /// Never waits. Hands every published value, up to `max`, to `f` in
    /// sequence order, then frees their slots with one store; returns how
    /// many were handed out.
    pub fn drain(&mut self, max: usize, f: impl FnMut(T)) -> usize {
        self.take_published(max, f)
    }

    /// Like `drain`, but first waits (per the wait strategy) for at least one
    /// value. `Err(Disconnected)` once the ring is closed and everything
    /// accepted before the close has been drained.
    ///
    /// # Panics
    /// If `max` is 0: the call could never make progress.
    pub fn wait_drain(&mut self, max: usize, f: impl FnMut(T)) -> Result<usize, Disconnected> {
        self.wait_drain_until(max, None, f)
    }

    /// `wait_drain` that gives up after `timeout` with `Ok(0)`, so the
    /// business thread can do timed work (expiries) while idle.
    ///
    /// # Panics
    /// If `max` is 0.
    pub fn wait_drain_timeout(
        &mut self,
        max: usize,
        timeout: Duration,
        f: impl FnMut(T),
    ) -> Result<usize, Disconnected> {
        // A timeout too large to represent is no timeout.
        self.wait_drain_until(max, Instant::now().checked_add(timeout), f)
    }

    /// Refuses new pushes from now on; everything claimed before is still
    /// delivered.
    pub fn close(&self) {
        self.shared.close();
    }

    /// The ring's real capacity (after rounding).
    pub fn capacity(&self) -> usize {
        self.shared.capacity() as usize
    }

    /// Whether a drain would hand out a value now, or the ring is closed
    /// and drained: either way a waiting consumer has something to do.
    pub fn ready(&self) -> bool {
        self.shared.ready(self.next)
    }

    /// Whether the ring is closed and everything accepted was drained.
    pub fn is_disconnected(&self) -> bool {
        self.shared.close_seq.load(Ordering::Acquire) == self.next
    }

    /// A handle that wakes this consumer while it waits in
    /// [`Consumer::wait_until`], for whoever makes its condition true
    /// without pushing to this ring.
    pub fn waker(&self) -> Waker<T> {
        Waker {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Waits, per the wait strategy, until `ready()` holds, so one consumer
    /// can wait on this ring and something else at once (the business thread
    /// on the gateways' ring and the rebate lane). A push to this ring or a
    /// [`Waker::wake`] wakes it; `ready` is checked after the consumer
    /// announced its park, so whatever makes `ready` true and then calls
    /// `wake` is never missed. `ready` typically checks [`Consumer::ready`]
    /// of this ring and of the other one.
    pub fn wait_until(&self, mut ready: impl FnMut() -> bool) {
        let mut backoff = Backoff::new(self.shared.wait, self.shared.spin_budget);
        while !ready() {
            match backoff.next() {
                Pause::Spin => sync::spin_loop(),
                Pause::Yield => sync::thread::yield_now(),
                Pause::Park => self.shared.park_consumer_unless(None, &mut ready),
            }
        }
    }

    fn wait_drain_until(
        &mut self,
        max: usize,
        deadline: Option<Instant>,
        mut f: impl FnMut(T),
    ) -> Result<usize, Disconnected> {
        assert!(max > 0, "wait_drain needs max >= 1 to make progress");
        let mut backoff = Backoff::new(self.shared.wait, self.shared.spin_budget);
        loop {
            let count = self.drain(max, &mut f);
            if count > 0 {
                return Ok(count);
            }
            if self.shared.close_seq.load(Ordering::Acquire) == self.next {
                return Err(Disconnected);
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Ok(0);
            }
            match backoff.next() {
                Pause::Spin => sync::spin_loop(),
                Pause::Yield => sync::thread::yield_now(),
                Pause::Park => self.shared.park_consumer(self.next, deadline),
            }
        }
    }
}

impl<T> Drop for Consumer<T> {
    /// Producers must fail rather than hang, and undrained values must not
    /// wait for the last producer to be dropped.
    fn drop(&mut self) {
        self.shared.consumer_gone.store(true, Ordering::Release);
        self.shared.close();
        self.take_published(usize::MAX, drop);
        self.shared.wake_producers();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize as StdAtomicUsize;
    use std::sync::Arc as StdArc;
    use std::thread;

    const STRATEGIES: [WaitStrategy; 3] =
        [WaitStrategy::Spin, WaitStrategy::Yield, WaitStrategy::Block];

    fn collect<T: Send>(consumer: &mut Consumer<T>) -> Vec<T> {
        let mut out = Vec::new();
        consumer.drain(usize::MAX, |v| out.push(v));
        out
    }

    #[test]
    fn handles_can_move_to_other_threads() {
        fn assert_send<T: Send>() {}
        assert_send::<Producer<Vec<u8>>>();
        assert_send::<Consumer<Vec<u8>>>();
    }

    #[test]
    fn capacity_is_rounded_up_to_a_power_of_two_of_at_least_two() {
        for (asked, got) in [(0, 2), (1, 2), (2, 2), (3, 4), (1000, 1024), (1024, 1024)] {
            let (producer, consumer) = channel::<u8>(asked, WaitStrategy::Spin);
            assert_eq!((producer.capacity(), consumer.capacity()), (got, got));
        }
    }

    /// `Block` never yields: a yield hands the core to another runnable
    /// thread for a whole time slice, and threads that yield to each other
    /// on two cores never park (issue 10: every request then paid a
    /// scheduler slice now and then, and idle threads burned CPU).
    #[test]
    fn block_spins_then_parks_and_never_yields() {
        let mut backoff = Backoff::new(WaitStrategy::Block, Duration::ZERO);
        let rounds: Vec<_> = (0..SPIN_ROUNDS + 8).map(|_| backoff.next()).collect();
        assert!(rounds[..SPIN_ROUNDS as usize]
            .iter()
            .all(|p| matches!(p, Pause::Spin)));
        assert!(rounds[SPIN_ROUNDS as usize..]
            .iter()
            .all(|p| matches!(p, Pause::Park)));

        // With a budget it keeps spinning until the budget is spent, then
        // parks, still without a yield.
        let budget = Duration::from_millis(20);
        let mut backoff = Backoff::new(WaitStrategy::Block, budget);
        let started = Instant::now();
        loop {
            match backoff.next() {
                Pause::Spin => std::hint::spin_loop(),
                Pause::Yield => panic!("Block yielded"),
                Pause::Park => break,
            }
        }
        assert!(started.elapsed() >= budget);

        let mut backoff = Backoff::new(WaitStrategy::Yield, budget);
        let rounds: Vec<_> = (0..SPIN_ROUNDS + 8).map(|_| backoff.next()).collect();
        assert!(matches!(rounds[SPIN_ROUNDS as usize], Pause::Yield));
    }

    #[test]
    fn wait_strategy_parses_its_names_and_explains_bad_input() {
        for strategy in STRATEGIES {
            assert_eq!(strategy.to_string().parse::<WaitStrategy>(), Ok(strategy));
        }
        assert_eq!("Block".parse::<WaitStrategy>(), Ok(WaitStrategy::Block));
        assert_eq!(WaitStrategy::default(), WaitStrategy::Block);
        let error = "sleep".parse::<WaitStrategy>().unwrap_err();
        assert_eq!(
            error.to_string(),
            "unknown wait strategy `sleep`: expected `spin`, `yield` or `block`"
        );
    }

    #[test]
    fn one_producer_is_received_in_push_order() {
        let (producer, mut consumer) = channel(8, WaitStrategy::Spin);
        for i in 0..8 {
            producer.push(i).unwrap();
        }
        assert_eq!(collect(&mut consumer), (0..8).collect::<Vec<_>>());
        assert_eq!(consumer.drain(10, |_: i32| unreachable!()), 0);
    }

    #[test]
    fn drain_hands_out_at_most_max_per_batch() {
        let (producer, mut consumer) = channel(16, WaitStrategy::Spin);
        for i in 0..10 {
            producer.push(i).unwrap();
        }
        let mut got = Vec::new();
        assert_eq!(consumer.drain(4, |v| got.push(v)), 4);
        assert_eq!(consumer.drain(4, |v| got.push(v)), 4);
        assert_eq!(consumer.wait_drain(4, |v| got.push(v)), Ok(2));
        assert_eq!(consumer.drain(0, |v| got.push(v)), 0);
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn tiny_rings_wrap_around_many_times() {
        for capacity in [2, 4] {
            let (producer, mut consumer) = channel(capacity, WaitStrategy::Spin);
            let mut expected = 0u64;
            for round in 0..10_000u64 {
                let burst = round % capacity as u64 + 1;
                for _ in 0..burst {
                    producer.push(round).unwrap();
                }
                let got = collect(&mut consumer);
                assert_eq!(got, vec![round; burst as usize]);
                expected += burst;
            }
            assert!(expected > 10_000);
        }
    }

    #[test]
    fn tiny_rings_wrap_around_across_threads() {
        for capacity in [2, 4] {
            for strategy in STRATEGIES {
                let (producer, mut consumer) = channel(capacity, strategy);
                let sender = thread::spawn(move || {
                    for i in 0..50_000u64 {
                        producer.push(i).unwrap();
                    }
                });
                let mut expected = 0u64;
                let mut check = |v| {
                    assert_eq!(v, expected);
                    expected += 1;
                };
                while consumer.wait_drain(3, &mut check).is_ok() {}
                sender.join().unwrap();
                assert_eq!(expected, 50_000);
            }
        }
    }

    #[test]
    fn full_ring_holds_the_producer_until_the_consumer_drains() {
        for strategy in STRATEGIES {
            let (producer, mut consumer) = channel(2, strategy);
            producer.push(0).unwrap();
            producer.push(1).unwrap();
            let pushed = StdArc::new(AtomicBool::new(false));
            let sender = {
                let pushed = StdArc::clone(&pushed);
                thread::spawn(move || {
                    producer.push(2).unwrap();
                    pushed.store(true, Ordering::SeqCst);
                })
            };
            thread::sleep(Duration::from_millis(50));
            assert!(
                !pushed.load(Ordering::SeqCst),
                "push must wait, not overwrite"
            );
            assert_eq!(collect(&mut consumer), vec![0, 1]);
            sender.join().unwrap();
            assert!(pushed.load(Ordering::SeqCst));
            assert_eq!(collect(&mut consumer), vec![2]);
            assert_eq!(consumer.wait_drain(1, |_| {}), Err(Disconnected));
        }
    }

    #[test]
    fn deferred_pushes_reach_a_parked_consumer_once_woken() {
        let (producer, mut consumer) = channel::<u32>(64, WaitStrategy::Block);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < 10 {
                consumer.wait_drain(64, |v| got.push(v)).unwrap();
            }
            got
        });
        std::thread::sleep(Duration::from_millis(20)); // let it park
        for v in 0..10 {
            producer.push_deferring_wake(v).unwrap();
        }
        producer.wake();
        assert_eq!(reader.join().unwrap(), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn push_after_close_gives_the_value_back() {
        let (producer, consumer) = channel(4, WaitStrategy::Block);
        producer.close();
        assert_eq!(
            producer.push(String::from("late")),
            Err(Closed(String::from("late")))
        );
        consumer.close();
        let other = producer.clone();
        assert_eq!(other.push(String::from("x")).unwrap_err().into_inner(), "x");
    }

    #[test]
    fn values_pushed_before_close_are_delivered_then_disconnected() {
        for strategy in STRATEGIES {
            let (producer, mut consumer) = channel(8, strategy);
            let _keep_open = producer.clone();
            producer.push(1).unwrap();
            producer.push(2).unwrap();
            consumer.close();
            assert!(producer.push(3).is_err());
            let mut got = Vec::new();
            assert_eq!(consumer.wait_drain(1, |v| got.push(v)), Ok(1));
            assert_eq!(consumer.wait_drain(8, |v| got.push(v)), Ok(1));
            assert_eq!(got, vec![1, 2]);
            assert_eq!(consumer.wait_drain(8, |v| got.push(v)), Err(Disconnected));
            assert_eq!(
                consumer.wait_drain_timeout(8, Duration::from_millis(1), |v| got.push(v)),
                Err(Disconnected)
            );
        }
    }

    #[test]
    fn dropping_the_consumer_fails_a_producer_waiting_for_space() {
        for strategy in STRATEGIES {
            let (producer, consumer) = channel(2, strategy);
            producer.push(0).unwrap();
            producer.push(1).unwrap();
            let sender = thread::spawn(move || {
                let waited = producer.push(2);
                (waited, producer.push(3))
            });
            thread::sleep(Duration::from_millis(20));
            drop(consumer);
            let (waited, after) = sender.join().unwrap();
            assert_eq!(waited, Err(Closed(2)));
            assert_eq!(after, Err(Closed(3)));
        }
    }

    #[test]
    fn dropping_every_producer_disconnects_after_the_last_value() {
        for strategy in STRATEGIES {
            let (producer, mut consumer) = channel(4, strategy);
            let senders: Vec<_> = (0..3u64)
                .map(|id| {
                    let producer = producer.clone();
                    thread::spawn(move || producer.push(id).unwrap())
                })
                .collect();
            drop(producer);
            let mut got = Vec::new();
            while consumer.wait_drain(2, |v| got.push(v)).is_ok() {}
            for sender in senders {
                sender.join().unwrap();
            }
            got.sort_unstable();
            assert_eq!(got, vec![0, 1, 2]);
        }
    }

    #[test]
    fn wait_drain_timeout_returns_zero_when_nothing_arrives() {
        for strategy in STRATEGIES {
            let (_producer, mut consumer) = channel::<u8>(4, strategy);
            let got = consumer.wait_drain_timeout(4, Duration::from_millis(5), |_| {});
            assert_eq!(got, Ok(0));
        }
    }

    #[test]
    fn a_parked_consumer_is_woken_by_a_push() {
        let (producer, mut consumer) = channel(4, WaitStrategy::Block);
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            producer.push(7u32).unwrap();
        });
        let mut got = Vec::new();
        assert_eq!(consumer.wait_drain(4, |v| got.push(v)), Ok(1));
        assert_eq!(got, vec![7]);
        sender.join().unwrap();
        assert_eq!(consumer.wait_drain(4, |v| got.push(v)), Err(Disconnected));
    }

    /// Owns heap data and counts its drops, to prove none leaks or doubles.
    struct Tracked {
        _payload: Vec<u8>,
        drops: StdArc<StdAtomicUsize>,
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn tracked(drops: &StdArc<StdAtomicUsize>) -> Tracked {
        Tracked {
            _payload: vec![1; 64],
            drops: StdArc::clone(drops),
        }
    }

    #[test]
    fn undrained_values_are_dropped_exactly_once_when_the_consumer_goes_first() {
        let drops = StdArc::new(StdAtomicUsize::new(0));
        let (producer, mut consumer) = channel(8, WaitStrategy::Block);
        for _ in 0..6 {
            producer.push(tracked(&drops)).unwrap();
        }
        assert_eq!(consumer.drain(2, drop), 2);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        drop(consumer);
        assert_eq!(drops.load(Ordering::SeqCst), 6, "dropped with the consumer");
        let refused = producer.push(tracked(&drops)).unwrap_err();
        drop(refused);
        drop(producer);
        assert_eq!(drops.load(Ordering::SeqCst), 7);
    }

    #[test]
    fn undrained_values_are_dropped_exactly_once_when_the_producers_go_first() {
        let drops = StdArc::new(StdAtomicUsize::new(0));
        let (producer, mut consumer) = channel(4, WaitStrategy::Spin);
        for round in 0..5 {
            for _ in 0..3 {
                producer.push(tracked(&drops)).unwrap();
            }
            if round < 4 {
                assert_eq!(consumer.drain(3, drop), 3);
            }
        }
        drop(producer);
        assert_eq!(drops.load(Ordering::SeqCst), 12);
        drop(consumer);
        assert_eq!(drops.load(Ordering::SeqCst), 15);
    }

    #[test]
    fn a_panicking_callback_does_not_cause_a_double_drop() {
        let drops = StdArc::new(StdAtomicUsize::new(0));
        let (producer, mut consumer) = channel(4, WaitStrategy::Spin);
        for _ in 0..4 {
            producer.push(tracked(&drops)).unwrap();
        }
        let mut seen = 0;
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            consumer.drain(4, |value| {
                seen += 1;
                drop(value);
                assert!(seen < 2, "callback fails on the second value");
            })
        }));
        assert!(panicked.is_err());
        assert_eq!(drops.load(Ordering::SeqCst), 2);
        assert_eq!(consumer.drain(4, drop), 2);
        drop((producer, consumer));
        assert_eq!(drops.load(Ordering::SeqCst), 4);
    }

    /// 4 producers × 100k values: each arrives exactly once, and each
    /// producer's values arrive in the order it pushed them.
    fn stress(strategy: WaitStrategy) {
        const PRODUCERS: u64 = 4;
        const PER_PRODUCER: u64 = 100_000;
        let (producer, mut consumer) = channel(1024, strategy);
        let senders: Vec<_> = (0..PRODUCERS)
            .map(|id| {
                let producer = producer.clone();
                thread::spawn(move || {
                    for i in 0..PER_PRODUCER {
                        producer.push((id, i)).unwrap();
                    }
                })
            })
            .collect();
        drop(producer);
        let mut next_expected = [0u64; PRODUCERS as usize];
        let mut total = 0u64;
        while let Ok(count) = consumer.wait_drain(256, |(id, i)| {
            assert_eq!(i, next_expected[id as usize], "producer {id} out of order");
            next_expected[id as usize] += 1;
        }) {
            total += count as u64;
        }
        for sender in senders {
            sender.join().unwrap();
        }
        assert_eq!(total, PRODUCERS * PER_PRODUCER);
        assert_eq!(next_expected, [PER_PRODUCER; PRODUCERS as usize]);
    }

    #[test]
    fn four_producers_stress_spin() {
        stress(WaitStrategy::Spin);
    }

    #[test]
    fn four_producers_stress_yield() {
        stress(WaitStrategy::Yield);
    }

    #[test]
    fn four_producers_stress_block() {
        stress(WaitStrategy::Block);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use loom::thread;

    /// Two producers × two values through a 2-slot ring: the ring fills and
    /// wraps; every value arrives once, each producer's in order.
    #[test]
    fn full_and_wrapping_ring_delivers_everything_once_in_order() {
        loom::model(|| {
            let (producer, mut consumer) = channel(2, WaitStrategy::Block);
            let senders: Vec<_> = (0..2u8)
                .map(|id| {
                    let producer = producer.clone();
                    thread::spawn(move || {
                        producer.push((id, 0)).unwrap();
                        producer.push((id, 1)).unwrap();
                    })
                })
                .collect();
            drop(producer);
            let mut next_expected = [0u8; 2];
            while consumer
                .wait_drain(4, |(id, i)| {
                    assert_eq!(i, next_expected[id as usize]);
                    next_expected[id as usize] += 1;
                })
                .is_ok()
            {}
            for sender in senders {
                sender.join().unwrap();
            }
            assert_eq!(next_expected, [2, 2]);
        });
    }

    /// A consumer parked under `Block` is always woken by a push (loom
    /// reports a deadlock if a wake-up is lost).
    #[test]
    fn a_parked_consumer_never_misses_a_push() {
        loom::model(|| {
            let (producer, mut consumer) = channel(2, WaitStrategy::Block);
            let sender = thread::spawn(move || {
                producer.push(1u8).unwrap();
                // Kept alive so only the push, not a close, can wake us.
                producer
            });
            let mut got = Vec::new();
            assert_eq!(consumer.wait_drain(2, |v| got.push(v)), Ok(1));
            assert_eq!(got, [1]);
            drop(sender.join().unwrap());
            assert_eq!(consumer.wait_drain(2, |v| got.push(v)), Err(Disconnected));
        });
    }

    /// A consumer parked on one ring until another has a value is always
    /// woken by that ring's producer calling the first ring's waker.
    #[test]
    fn a_consumer_waiting_on_two_rings_never_misses_a_waker() {
        loom::model(|| {
            let (_main_producer, main) = channel::<u8>(2, WaitStrategy::Block);
            let (lane_producer, mut lane) = channel(2, WaitStrategy::Block);
            let waker = main.waker();
            let sender = thread::spawn(move || {
                lane_producer.push(7u8).unwrap();
                waker.wake();
                lane_producer
            });
            main.wait_until(|| main.ready() || lane.ready());
            let mut got = Vec::new();
            lane.drain(2, |v| got.push(v));
            assert_eq!(got, [7]);
            drop(sender.join().unwrap());
        });
    }

    /// A push racing a close is either refused (value back) or delivered,
    /// never lost and never doubled.
    #[test]
    fn a_push_racing_close_is_delivered_or_refused() {
        loom::model(|| {
            let (producer, mut consumer) = channel(2, WaitStrategy::Block);
            let keep_open = producer.clone();
            let sender = thread::spawn(move || producer.push(5u8).is_ok());
            consumer.close();
            let mut got = Vec::new();
            while consumer.wait_drain(2, |v| got.push(v)).is_ok() {}
            let accepted = sender.join().unwrap();
            assert_eq!(got, if accepted { vec![5] } else { vec![] });
            drop(keep_open);
        });
    }
}

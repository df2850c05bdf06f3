//! Throughput of the request ring against `crossbeam::queue::ArrayQueue`
//! used the careful way (back off on full and on empty), for 1 and 2
//! producers into one consumer, with a u64 and a 96-byte request-sized value.
//!
//! Both sides use yielding waits: the benchmark runs more threads than this
//! machine has cores, where spinning only steals the CPU from the other side.

use std::hint::black_box;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use crossbeam::queue::ArrayQueue;
use crossbeam::utils::Backoff;
use ringledger::ring::{channel, WaitStrategy};

const ITEMS: u64 = 200_000;
const CAPACITY: usize = 1024;

/// Stands in for a gateway request: 96 bytes, `Copy`.
#[derive(Clone, Copy)]
struct Request {
    id: u64,
    _body: [u64; 11],
}

trait Item: Copy + Send + 'static {
    fn new(id: u64) -> Self;
    fn id(&self) -> u64;
}

impl Item for u64 {
    fn new(id: u64) -> Self {
        id
    }
    fn id(&self) -> u64 {
        *self
    }
}

impl Item for Request {
    fn new(id: u64) -> Self {
        Request {
            id,
            _body: [id; 11],
        }
    }
    fn id(&self) -> u64 {
        self.id
    }
}

/// Moves `ITEMS` values from `producers` threads to this thread.
fn through_ring<T: Item>(producers: u64) -> u64 {
    let (producer, mut consumer) = channel::<T>(CAPACITY, WaitStrategy::Yield);
    let per_producer = ITEMS / producers;
    let senders: Vec<_> = (0..producers)
        .map(|p| {
            let producer = producer.clone();
            thread::spawn(move || {
                for i in 0..per_producer {
                    producer.push(T::new(p * per_producer + i)).unwrap();
                }
            })
        })
        .collect();
    drop(producer);
    let mut sum = 0u64;
    while consumer
        .wait_drain(CAPACITY, |v| sum = sum.wrapping_add(v.id()))
        .is_ok()
    {}
    for sender in senders {
        sender.join().unwrap();
    }
    sum
}

/// The same transfer through `ArrayQueue`: producers retry a full queue with
/// `Backoff::snooze` (spins, then yields), the consumer pops until it has
/// everything, snoozing while empty.
fn through_array_queue<T: Item>(producers: u64) -> u64 {
    let queue = Arc::new(ArrayQueue::<T>::new(CAPACITY));
    let per_producer = ITEMS / producers;
    let senders: Vec<_> = (0..producers)
        .map(|p| {
            let queue = Arc::clone(&queue);
            thread::spawn(move || {
                for i in 0..per_producer {
                    let mut value = T::new(p * per_producer + i);
                    let backoff = Backoff::new();
                    while let Err(refused) = queue.push(value) {
                        value = refused;
                        backoff.snooze();
                    }
                }
            })
        })
        .collect();
    let mut sum = 0u64;
    let mut received = 0u64;
    let backoff = Backoff::new();
    while received < per_producer * producers {
        match queue.pop() {
            Some(v) => {
                sum = sum.wrapping_add(v.id());
                received += 1;
                backoff.reset();
            }
            None => backoff.snooze(),
        }
    }
    for sender in senders {
        sender.join().unwrap();
    }
    sum
}

fn bench_payload<T: Item>(c: &mut Criterion, payload: &str) {
    let mut group = c.benchmark_group(format!("ring_{payload}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(ITEMS));
    for producers in [1u64, 2] {
        let name = format!("{producers}p1c");
        group.bench_with_input(
            BenchmarkId::new("ours_yield", &name),
            &producers,
            |b, &p| b.iter(|| black_box(through_ring::<T>(p))),
        );
        group.bench_with_input(
            BenchmarkId::new("array_queue", &name),
            &producers,
            |b, &p| b.iter(|| black_box(through_array_queue::<T>(p))),
        );
    }
    group.finish();
}

fn ring(c: &mut Criterion) {
    bench_payload::<u64>(c, "u64");
    bench_payload::<Request>(c, "request96");
}

criterion_group!(benches, ring);
criterion_main!(benches);

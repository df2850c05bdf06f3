//! Journal costs on this machine: append throughput (page cache), fdatasync
//! latency after a 64 KiB batch in a preallocated segment versus appending
//! to a growing file, segment roll cost, and replay from the page cache.
//! Files go under /work (a real disk), never a tmpfs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hdrhistogram::Histogram;
use ringledger::journal::{
    read_records, replay, Durability, JournalConfig, JournalWriter, SEGMENT_BYTES_DEFAULT,
};
use ringledger::{LedgerConfig, Stamped};

#[path = "common/wallet.rs"]
mod wallet;
use wallet::{stamped, ACCOUNTS};

const BATCH: usize = 64;
const REPLAY_RECORDS: u64 = 2_000_000;
const SYNC_SAMPLES: usize = 200;
const SYNC_BATCH_BYTES: usize = 64 << 10;

fn bench_dir(name: &str) -> tempfile::TempDir {
    std::fs::create_dir_all("/work/bench-tmp-journal").unwrap();
    tempfile::Builder::new()
        .prefix(name)
        .tempdir_in("/work/bench-tmp-journal")
        .unwrap()
}

fn config(durability: Durability) -> JournalConfig {
    JournalConfig {
        segment_bytes: SEGMENT_BYTES_DEFAULT,
        durability,
    }
}

/// The length of a segment's first frame, header included (journal/README.md:
/// a 48-byte segment header, the frame's length at offset 16 of the frame).
fn frame_length(segment: &[u8]) -> usize {
    u32::from_le_bytes(segment[64..68].try_into().unwrap()) as usize
}

/// Restamps a preallocated batch with the next seqs: no allocation per batch.
fn next_batch(batch: &mut [Stamped], seq: &mut u64) {
    for s in batch {
        *seq += 1;
        s.stamp.seq = *seq;
    }
}

fn append(c: &mut Criterion) {
    let mut x = 0x1234_5678u64;
    let template: Vec<Stamped> = (1..=BATCH as u64)
        .map(|s| stamped(ACCOUNTS + s, &mut x))
        .collect();
    let frame_bytes = {
        let dir = bench_dir("frame");
        let mut w = JournalWriter::open(dir.path(), config(Durability::Async)).unwrap();
        let mut first = template.clone();
        next_batch(&mut first, &mut 0);
        w.append(&first).unwrap();
        let seg = std::fs::read(w.segment_path().unwrap()).unwrap();
        (frame_length(&seg) as u64 + 7) & !7
    };
    println!(
        "journal: {BATCH}-record frame = {frame_bytes} bytes ({} bytes/record)",
        frame_bytes / BATCH as u64
    );

    let mut g = c.benchmark_group("journal_append_64");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for (name, throughput) in [
        ("bytes", Throughput::Bytes(frame_bytes)),
        ("records", Throughput::Elements(BATCH as u64)),
    ] {
        g.throughput(throughput);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                // Steady state: a fresh journal whose one segment is sized
                // to hold this sample, created before the clock starts, so
                // no roll happens inside the timing (rolls: see below).
                let dir = bench_dir("append");
                let segment_bytes = 4096 + (iters + 1) * frame_bytes;
                let mut w = JournalWriter::open(
                    dir.path(),
                    JournalConfig {
                        segment_bytes,
                        durability: Durability::Async,
                    },
                )
                .unwrap();
                let mut batch = template.clone();
                let mut seq = 0;
                next_batch(&mut batch, &mut seq);
                w.append(&batch).unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    next_batch(&mut batch, &mut seq);
                    w.append(&batch).unwrap();
                }
                start.elapsed()
            })
        });
    }
    g.finish();
    settle();
    append_with_rolls(&template, frame_bytes, Durability::Async);
    settle();
    append_with_rolls(&template, frame_bytes, Durability::Sync);
}

/// 512 MiB through default 64 MiB segments, timing each append: the overall
/// rate with segment rolls included, and the append latency tail they cause.
fn append_with_rolls(template: &[Stamped], frame_bytes: u64, durability: Durability) {
    let dir = bench_dir("rolls");
    // Sync mode only changes how segments are preallocated here (zero-filled
    // rather than sparse); no fdatasync is called in this loop.
    let mut w = JournalWriter::open(dir.path(), config(durability)).unwrap();
    let mut batch = template.to_vec();
    let mut seq = 0;
    next_batch(&mut batch, &mut seq);
    w.append(&batch).unwrap();
    let batches = (512u64 << 20) / frame_bytes;
    let mut h = Histogram::<u64>::new(3).unwrap();
    let start = Instant::now();
    for _ in 0..batches {
        next_batch(&mut batch, &mut seq);
        let t = Instant::now();
        w.append(&batch).unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "journal ({durability} preallocation): 512 MiB in 64 MiB segments, rolls included: {:.0} MB/s, {:.1} M records/s; \
         append p50 {:.2} us, p99 {:.2} us, p99.99 {:.0} us, max {:.2} ms",
        (batches * frame_bytes) as f64 / secs / 1e6,
        (batches * BATCH as u64) as f64 / secs / 1e6,
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.9999) as f64 / 1e3,
        h.max() as f64 / 1e6,
    );
}

fn print_percentiles(what: &str, h: &Histogram<u64>) {
    println!(
        "{what}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms over {} samples",
        h.value_at_quantile(0.50) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.max() as f64 / 1e3,
        h.len()
    );
}

/// fdatasync after a 64 KiB batch: through the journal (preallocated,
/// zero-filled segment), then raw files to show why preallocation matters.
fn fdatasync_latency() {
    let dir = bench_dir("sync");
    let mut x = 0x9abc_def0u64;
    let per_batch = {
        let probe: Vec<Stamped> = (1..=100).map(|s| stamped(ACCOUNTS + s, &mut x)).collect();
        let d = bench_dir("probe");
        let mut w = JournalWriter::open(d.path(), config(Durability::Async)).unwrap();
        let mut first = probe.clone();
        next_batch(&mut first, &mut 0);
        w.append(&first).unwrap();
        let seg = std::fs::read(w.segment_path().unwrap()).unwrap();
        let bytes_per_record = frame_length(&seg) / 100;
        SYNC_BATCH_BYTES / bytes_per_record
    };
    let mut batch: Vec<Stamped> = (1..=per_batch as u64)
        .map(|s| stamped(ACCOUNTS + s, &mut x))
        .collect();

    let mut w = JournalWriter::open(dir.path(), config(Durability::Sync)).unwrap();
    let mut seq = 0;
    let roll_start = Instant::now();
    next_batch(&mut batch, &mut seq);
    w.append(&batch).unwrap();
    println!(
        "journal: first {} MiB segment made inline (zero-fill + fsync + rename): {:.1} ms",
        SEGMENT_BYTES_DEFAULT >> 20,
        roll_start.elapsed().as_secs_f64() * 1e3
    );
    w.sync().unwrap();
    let mut h = Histogram::<u64>::new(3).unwrap();
    for _ in 0..SYNC_SAMPLES {
        next_batch(&mut batch, &mut seq);
        w.append(&batch).unwrap();
        let start = Instant::now();
        w.sync().unwrap();
        h.record(start.elapsed().as_micros() as u64).unwrap();
    }
    print_percentiles(
        &format!(
            "journal: fdatasync after a {per_batch}-record (~64 KiB) batch, preallocated segment"
        ),
        &h,
    );

    let chunk = vec![0x5au8; SYNC_BATCH_BYTES];
    let raw = |path: &Path, preallocate: bool| {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        if preallocate {
            let zeros = vec![0u8; 1 << 20];
            let mut file: &File = &f;
            for _ in 0..(SYNC_SAMPLES * SYNC_BATCH_BYTES) >> 20 {
                file.write_all(&zeros).unwrap();
            }
            f.sync_all().unwrap();
        }
        let mut h = Histogram::<u64>::new(3).unwrap();
        for i in 0..SYNC_SAMPLES {
            f.write_all_at(&chunk, (i * SYNC_BATCH_BYTES) as u64)
                .unwrap();
            let start = Instant::now();
            f.sync_data().unwrap();
            h.record(start.elapsed().as_micros() as u64).unwrap();
        }
        h
    };
    print_percentiles(
        "raw file: fdatasync after 64 KiB appended to a growing file",
        &raw(&dir.path().join("append.raw"), false),
    );
    print_percentiles(
        "raw file: fdatasync after 64 KiB over zero-filled space",
        &raw(&dir.path().join("prealloc.raw"), true),
    );
}

fn replay_bench(c: &mut Criterion) {
    let dir = bench_dir("replay");
    let mut w = JournalWriter::open(dir.path(), config(Durability::Async)).unwrap();
    let mut x = 0x0bad_cafeu64;
    let mut batch = Vec::with_capacity(BATCH);
    let mut seq = 0;
    while seq < REPLAY_RECORDS {
        batch.clear();
        for _ in 0..BATCH {
            seq += 1;
            batch.push(stamped(seq, &mut x));
        }
        w.append(&batch).unwrap();
    }
    drop(w);

    let once = replay(dir.path(), LedgerConfig::default(), false).unwrap();
    assert_eq!(once.recovered.records_replayed, REPLAY_RECORDS);
    println!(
        "journal: replay of {REPLAY_RECORDS} records ({} MiB) rebuilt the Ledger at {:.1} M records/s",
        once.journal_bytes >> 20,
        once.records_per_sec() / 1e6
    );

    let mut g = c.benchmark_group("journal_replay_2M");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(REPLAY_RECORDS));
    g.bench_function("read_decode", |b| {
        b.iter(|| {
            let last = read_records(dir.path(), 1)
                .unwrap()
                .fold(0, |_, r| r.unwrap().stamp.seq);
            assert_eq!(last, REPLAY_RECORDS);
        })
    });
    let records: Vec<Stamped> = read_records(dir.path(), 1)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    g.bench_function("apply_only", |b| {
        b.iter(|| {
            let mut ledger = ringledger::Ledger::new(LedgerConfig::default());
            for batch in records.chunks(BATCH) {
                ledger.apply_batch(batch, |_, _| {});
            }
            assert_eq!(ledger.last_seq(), REPLAY_RECORDS);
        })
    });
    drop(records);
    g.bench_function("read_decode_apply", |b| {
        b.iter(|| {
            let r = replay(dir.path(), LedgerConfig::default(), false).unwrap();
            assert_eq!(r.recovered.records_replayed, REPLAY_RECORDS);
        })
    });
    g.finish();
}

/// Lets earlier phases' dirty pages reach the disk, so one phase's writeback
/// does not land in the next phase's fdatasync or replay figures.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

fn sync_first(_: &mut Criterion) {
    settle();
    fdatasync_latency();
    settle();
}

criterion_group!(benches, sync_first, replay_bench, append);
criterion_main!(benches);

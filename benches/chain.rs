//! What the journal's per-frame checksum costs, to choose it by measurement
//! (journal/README.md, "Why XXH3-128"): CRC-32C (format 3's frame
//! checksum), XXH3-128 and BLAKE3 (cut to 128 bits) over frames of 1 to 256
//! records of 32 to 64 bytes plus the 64-byte frame header, the sizes smart
//! batching makes.
//!
//! `cargo bench --bench chain`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// Frame header bytes covered by the checksum in format 4 (all but the
/// checksum field itself).
const HEADER_COVERED_BYTES: usize = 48;

fn frame(records: usize, record_bytes: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..HEADER_COVERED_BYTES + records * record_bytes)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn checksums(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_checksum");
    for records in [1usize, 8, 64, 256] {
        for record_bytes in [32usize, 48, 64] {
            let bytes = frame(records, record_bytes);
            let id = format!("{records}x{record_bytes}B");
            group.throughput(Throughput::Bytes(bytes.len() as u64));
            group.bench_with_input(BenchmarkId::new("crc32c", &id), &bytes, |b, bytes| {
                b.iter(|| crc32c::crc32c(std::hint::black_box(bytes)))
            });
            group.bench_with_input(BenchmarkId::new("xxh3_128", &id), &bytes, |b, bytes| {
                b.iter(|| xxhash_rust::xxh3::xxh3_128(std::hint::black_box(bytes)))
            });
            group.bench_with_input(BenchmarkId::new("blake3_128", &id), &bytes, |b, bytes| {
                b.iter(|| {
                    let hash = blake3::hash(std::hint::black_box(bytes));
                    let mut out = [0u8; 16];
                    out.copy_from_slice(&hash.as_bytes()[..16]);
                    out
                })
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_millis(700));
    targets = checksums
}
criterion_main!(benches);

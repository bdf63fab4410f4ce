//! Breaker core benchmarks (numbers and how to read them: docs/PERFORMANCE.md).
//!
//! Run: `cargo bench -p beamline-core --bench breaker`. Every workload is one call in
//! closed state: acquire a permit, record a success.
//! - `breaker_op`: on a breaker already in hand (one key, one thread); beamline also with a
//!   real clock read per call, since the other crates read the clock inside;
//! - `single_key` / `many_keys`: look the breaker up by key first, on one key or on one of
//!   100,000 chosen at random; the other crates sit behind an `RwLock<HashMap>` from key to
//!   breaker, the thread-safe map a router would have to keep for them;
//! - the same for `failsafe` and `tower-resilience` (its `Service` API, polled once with a
//!   no-op waker on a ready inner service);
//! - `two_threads`: throughput of two threads on one key and on distinct keys, against
//!   one thread;
//! - memory per breaker: a counting allocator measures the registry's growth for N keys
//!   (printed; the 1 KiB bound is asserted by `tests/memory.rs`).
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]
// A benchmark measures wall time; the injected-clock rule is for the router's code.
#![allow(clippy::disallowed_methods)]

#[path = "support/competitors.rs"]
mod competitors;

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use beamline_core::breaker::{BreakerRegistry, NoopObserver};
use beamline_core::rng::{JitterRng, SplitMix64};
use beamline_core::{BreakerKey, Outcome, Timestamp};
use competitors::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const MANY: usize = 100_000;

/// The breaker operation alone, on a breaker already in hand (one key, one thread).
fn breaker_op(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_op");
    g.throughput(Throughput::Elements(1));
    let key = keys(1).remove(0);

    let reg = registry();
    let handle = reg.handle(&key);
    let mut t = 0u64;
    g.bench_function("beamline", |b| {
        b.iter(|| {
            t += 1_000; // 1 µs of virtual time per call: buckets roll as in production
            let now = Timestamp::from_nanos(t);
            let permit = handle.acquire(now).expect("closed");
            black_box(permit.record(Outcome::Success, now));
        })
    });

    let origin = Instant::now();
    g.bench_function("beamline_with_clock_read", |b| {
        b.iter(|| {
            let now = Timestamp::from_nanos(origin.elapsed().as_nanos() as u64);
            let permit = handle.acquire(now).expect("closed");
            black_box(permit.record(Outcome::Success, now));
        })
    });

    let cb = failsafe_breaker();
    g.bench_function("failsafe", |b| b.iter(|| failsafe_call(black_box(&cb))));

    let mut svc = tower_breaker();
    g.bench_function("tower_resilience", |b| {
        b.iter(|| tower_call(black_box(&mut svc)))
    });
    g.finish();
}

/// Lookup by key in a thread-safe map, then the operation (one key, one thread).
fn single_key(c: &mut Criterion) {
    let mut g = c.benchmark_group("single_key");
    g.throughput(Throughput::Elements(1));
    let key = keys(1).remove(0);

    let reg = registry();
    let mut t = 0u64;
    g.bench_function("beamline", |b| {
        b.iter(|| {
            t += 1_000;
            beamline_call(&reg, black_box(&key), Timestamp::from_nanos(t));
        })
    });

    let map = map_of(std::slice::from_ref(&key), failsafe_breaker);
    g.bench_function("failsafe", |b| {
        b.iter(|| failsafe_keyed(&map, black_box(&key)))
    });

    let map = map_of(std::slice::from_ref(&key), tower_breaker);
    g.bench_function("tower_resilience", |b| {
        b.iter(|| tower_keyed(&map, black_box(&key)))
    });
    g.finish();
}

/// Lookup and operation on one of 100,000 keys chosen at random.
fn many_keys(c: &mut Criterion) {
    let mut g = c.benchmark_group("many_keys");
    g.throughput(Throughput::Elements(1));
    let keys = keys(MANY);
    let pick = |rng: &mut SplitMix64| (rng.next_u64() % MANY as u64) as usize;

    let reg = registry();
    for k in &keys {
        drop(reg.handle(k));
    }
    let mut rng = SplitMix64::new(42);
    let mut t = 0u64;
    g.bench_function("beamline", |b| {
        b.iter(|| {
            t += 1_000;
            beamline_call(&reg, &keys[pick(&mut rng)], Timestamp::from_nanos(t));
        })
    });
    drop(reg);

    let map = map_of(&keys, failsafe_breaker);
    g.bench_function("failsafe", |b| {
        b.iter(|| failsafe_keyed(&map, &keys[pick(&mut rng)]))
    });
    drop(map);

    let map = map_of(&keys, tower_breaker);
    g.bench_function("tower_resilience", |b| {
        b.iter(|| tower_keyed(&map, &keys[pick(&mut rng)]))
    });
    g.finish();
}

/// `threads` threads each make `iters` calls, on virtual time from `start` (ns) on; returns
/// the wall time. Virtual time must keep moving forward across samples, as the real clock
/// does: calls stamped before the breaker's newest bucket are late events, not the
/// closed-state path under test.
fn run_threads(
    reg: &BreakerRegistry<NoopObserver>,
    keys: &[BreakerKey],
    threads: usize,
    iters: u64,
    start: u64,
) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        for i in 0..threads {
            let key = &keys[i % keys.len()];
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                let mut t = start;
                for _ in 0..iters {
                    t += 1_000;
                    beamline_call(reg, key, Timestamp::from_nanos(t));
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed()
    })
}

fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads");
    let all = keys(2);
    for (name, threads, keys) in [
        ("one_thread", 1, &all[..1]),
        ("same_key", 2, &all[..1]),
        ("distinct_keys", 2, &all[..2]),
    ] {
        // Throughput counts every thread's calls: elements per iteration = threads.
        g.throughput(Throughput::Elements(threads as u64));
        let reg = Arc::new(registry());
        let mut start = 0u64;
        g.bench_with_input(BenchmarkId::new("beamline", name), &threads, |b, &n| {
            b.iter_custom(|iters| {
                let wall = run_threads(&reg, keys, n, iters, start);
                start += iters * 1_000;
                wall
            })
        });
    }
    g.finish();
}

/// Bytes the registry holds per breaker at the default config, measured by the allocator.
fn memory_per_breaker(_c: &mut Criterion) {
    const N: usize = 100_000;
    let keys = keys(N);
    let region = Region::new(GLOBAL);
    let reg = registry();
    for k in &keys {
        drop(reg.handle(k));
    }
    let stats = region.change();
    let net =
        stats.bytes_allocated as isize - stats.bytes_deallocated as isize + stats.bytes_reallocated;
    println!(
        "memory_per_breaker: {N} breakers, {net} bytes net, {:.0} bytes per breaker \
         (id strings are shared with the caller's keys and not counted; target <= 1024)",
        net as f64 / N as f64
    );
    black_box(&reg);
    drop(reg);
    // The others, each in the map a router would keep them in (`Map`, as in `many_keys`).
    let per_entry = |build: &dyn Fn() -> Box<dyn std::any::Any>| {
        let region = Region::new(GLOBAL);
        let held = build();
        let stats = region.change();
        let net = stats.bytes_allocated as isize - stats.bytes_deallocated as isize
            + stats.bytes_reallocated;
        drop(held);
        net as f64 / N as f64
    };
    let failsafe = per_entry(&|| Box::new(map_of(&keys, failsafe_breaker)));
    let tower = per_entry(&|| Box::new(map_of(&keys, tower_breaker)));
    println!(
        "memory_per_breaker: failsafe {failsafe:.0} bytes, tower-resilience {tower:.0} bytes per \
         breaker and map entry, default config"
    );
}

criterion_group!(
    benches,
    memory_per_breaker,
    breaker_op,
    single_key,
    many_keys,
    two_threads
);
criterion_main!(benches);

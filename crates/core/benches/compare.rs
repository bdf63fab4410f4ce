//! Head to head, interleaved: beamline against `failsafe` and `tower-resilience` on the
//! same workloads, in rounds, so that the machine's noise (these are shared VMs whose
//! memory-bound figures swing by ±40% from one minute to the next) hits every library
//! alike. docs/PERFORMANCE.md quotes its ratios.
//!
//! Each round runs, for every workload, one batch per library in a rotating order (a short
//! untimed warm-up first, so a batch does not pay for the cache the previous library
//! left). A batch is timed as a whole; the figure per library is the median over rounds of
//! ns per call, and a ratio is the median of the per-round ratios (each taken between
//! batches a few milliseconds apart).
//!
//! Workloads (every call: acquire a permit, record a success, closed state):
//! - `op`: a breaker already in hand, one key;
//! - `single_key`: look the breaker up by key first, one key;
//! - `many_keys`: the same on one of 100,000 keys chosen at random (the same sequence for
//!   every library).
//!
//! beamline takes time as an argument (`now`): its rows advance virtual time by 1 µs per
//! call of the workload (so on 100,000 keys a breaker sees 30 calls per 3 s bucket, and
//! the first call of each bucket takes its lock). The other two read the clock inside
//! every call, which they cannot avoid; the `beamline+clock` rows read the real clock per
//! call too, as a router that read it once per attempt would (the breaker still gets the
//! workload's virtual time: real time would roll every bucket between two batches of a
//! workload, while the other workloads run, and the next batch would start with every
//! breaker's first call of a new bucket). Reading the clock also
//! orders the calls one after the other (the processor cannot start the next call's cache
//! misses before the clock read of this one), which is how calls meet a breaker in a
//! router that does other work between them; without it, consecutive calls overlap.
//!
//! Run: `cargo bench -p beamline-core --bench compare`; `COMPARE_ROUNDS` (default 15).
//! Without `--bench` (as under `cargo test --benches`) it does nothing.
#![allow(
    clippy::disallowed_methods, // a benchmark measures wall time: that is its job
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout
)]

#[path = "support/competitors.rs"]
mod competitors;

use std::hint::black_box;
use std::time::Instant;

use beamline_core::rng::{JitterRng, SplitMix64};
use beamline_core::{Outcome, Timestamp};
use competitors::*;

const MANY: usize = 100_000;

/// One library's batch of `n` calls of one workload.
type Batch<'a> = Box<dyn FnMut(u64) + 'a>;

struct Workload<'a> {
    name: &'static str,
    /// Calls per timed batch (and a tenth of it as warm-up).
    calls: u64,
    libraries: Vec<(&'static str, Batch<'a>)>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rounds: usize = std::env::var("COMPARE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);

    let one = keys(1);
    let key = &one[0];
    let many = keys(MANY);
    let pick = |rng: &mut SplitMix64| &many[(rng.next_u64() % MANY as u64) as usize];
    let origin = Instant::now();
    let clock = move || Timestamp::from_nanos(origin.elapsed().as_nanos() as u64);

    // Our registries keep virtual time moving forward across batches, as real time does.
    // One registry per workload: each sees time from its own clock only.
    let reg_op = registry();
    let reg_one = registry();
    let reg_many = registry();
    for k in &many {
        drop(reg_many.handle(k));
    }
    let fs_one = failsafe_breaker();
    let fs_map_one = map_of(&one, failsafe_breaker);
    let fs_map_many = map_of(&many, failsafe_breaker);
    let tw_one = std::cell::RefCell::new(tower_breaker());
    let tw_map_one = map_of(&one, tower_breaker);
    let tw_map_many = map_of(&many, tower_breaker);
    let handle = reg_op.handle(key);
    // One virtual clock per workload, each moving 1 µs per call of its own: a breaker's
    // buckets roll at the pace of the calls it sees, as in the criterion benchmark.
    let clocks: [std::cell::Cell<u64>; 3] = Default::default();
    let tick = |w: usize| {
        clocks[w].set(clocks[w].get() + 1_000);
        Timestamp::from_nanos(clocks[w].get())
    };
    // The `beamline+clock` rows: the real clock is read (its cost, and the ordering it
    // imposes), the breaker gets the workload's virtual time (so its buckets roll at the
    // pace of its own calls, not of the other workloads' batches in between).
    let read_and_tick = |w: usize| {
        black_box(clock());
        tick(w)
    };
    let seed = std::cell::Cell::new(0u64);

    let mut workloads = [
        Workload {
            name: "op",
            calls: 2_000_000,
            libraries: vec![
                (
                    "beamline",
                    Box::new(|n| {
                        for _ in 0..n {
                            let now = tick(0);
                            let permit = handle.acquire(now).expect("closed");
                            black_box(permit.record(Outcome::Success, now));
                        }
                    }),
                ),
                (
                    "beamline+clock",
                    Box::new(|n| {
                        for _ in 0..n {
                            black_box(clock());
                            let now = tick(0);
                            let permit = handle.acquire(now).expect("closed");
                            black_box(permit.record(Outcome::Success, now));
                        }
                    }),
                ),
                (
                    "failsafe",
                    Box::new(|n| (0..n).for_each(|_| failsafe_call(black_box(&fs_one)))),
                ),
                (
                    "tower-resilience",
                    Box::new(|n| {
                        let mut svc = tw_one.borrow_mut();
                        (0..n).for_each(|_| tower_call(black_box(&mut svc)))
                    }),
                ),
            ],
        },
        Workload {
            name: "single_key",
            calls: 2_000_000,
            libraries: vec![
                (
                    "beamline",
                    Box::new(|n| {
                        (0..n).for_each(|_| beamline_call(&reg_one, black_box(key), tick(1)))
                    }),
                ),
                (
                    "beamline+clock",
                    Box::new(|n| {
                        (0..n)
                            .for_each(|_| beamline_call(&reg_one, black_box(key), read_and_tick(1)))
                    }),
                ),
                (
                    "failsafe",
                    Box::new(|n| (0..n).for_each(|_| failsafe_keyed(&fs_map_one, black_box(key)))),
                ),
                (
                    "tower-resilience",
                    Box::new(|n| (0..n).for_each(|_| tower_keyed(&tw_map_one, black_box(key)))),
                ),
            ],
        },
        Workload {
            name: "many_keys",
            calls: 400_000,
            libraries: vec![
                (
                    "beamline",
                    Box::new(|n| {
                        let mut rng = SplitMix64::new(seed.get());
                        (0..n).for_each(|_| beamline_call(&reg_many, pick(&mut rng), tick(2)))
                    }),
                ),
                (
                    "beamline+clock",
                    Box::new(|n| {
                        let mut rng = SplitMix64::new(seed.get());
                        (0..n).for_each(|_| {
                            beamline_call(&reg_many, pick(&mut rng), read_and_tick(2))
                        })
                    }),
                ),
                (
                    "failsafe",
                    Box::new(|n| {
                        let mut rng = SplitMix64::new(seed.get());
                        (0..n).for_each(|_| failsafe_keyed(&fs_map_many, pick(&mut rng)))
                    }),
                ),
                (
                    "tower-resilience",
                    Box::new(|n| {
                        let mut rng = SplitMix64::new(seed.get());
                        (0..n).for_each(|_| tower_keyed(&tw_map_many, pick(&mut rng)))
                    }),
                ),
            ],
        },
    ];

    // ns per call: [workload][library][round]
    let mut results: Vec<Vec<Vec<f64>>> = workloads
        .iter()
        .map(|w| vec![Vec::new(); w.libraries.len()])
        .collect();
    for round in 0..rounds {
        seed.set(round as u64 + 1);
        for (w, workload) in workloads.iter_mut().enumerate() {
            let n = workload.libraries.len();
            for i in 0..n {
                let lib = (i + round) % n;
                let (_, batch) = &mut workload.libraries[lib];
                batch(workload.calls / 10);
                let start = Instant::now();
                batch(workload.calls);
                let ns = start.elapsed().as_nanos() as f64 / workload.calls as f64;
                results[w][lib].push(ns);
            }
        }
        print!("round {:2}:", round + 1);
        for (w, workload) in workloads.iter().enumerate() {
            let cells: Vec<String> = results[w]
                .iter()
                .map(|r| format!("{:.1}", r[round]))
                .collect();
            print!("  {} {}", workload.name, cells.join("/"));
        }
        println!();
    }

    println!("\nmedians over {rounds} rounds (ns per call), and the median of per-round ratios:");
    println!(
        "{:12} {:>10} {:>15} {:>10} {:>17} {:>11} {:>11} {:>13} {:>13}",
        "workload",
        "beamline",
        "beamline+clock",
        "failsafe",
        "tower-resilience",
        "fs/beam",
        "tower/beam",
        "fs/beam+clk",
        "tower/beam+clk"
    );
    for (w, workload) in workloads.iter().enumerate() {
        let r = &results[w];
        let ratio =
            |a: usize, b: usize| median(r[a].iter().zip(&r[b]).map(|(x, y)| x / y).collect());
        let range = |a: usize, b: usize| {
            let v: Vec<f64> = r[a].iter().zip(&r[b]).map(|(x, y)| x / y).collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            format!("{lo:.2}–{hi:.2}")
        };
        println!(
            "{:12} {:>10.1} {:>15.1} {:>10.1} {:>17.1} {:>11.2} {:>11.2} {:>13.2} {:>13.2}",
            workload.name,
            median(r[0].clone()),
            median(r[1].clone()),
            median(r[2].clone()),
            median(r[3].clone()),
            ratio(2, 0),
            ratio(3, 0),
            ratio(2, 1),
            ratio(3, 1),
        );
        println!(
            "{:12} per-round ranges: fs/beam {}, tower/beam {}, fs/beam+clk {}, tower/beam+clk {}",
            "",
            range(2, 0),
            range(3, 0),
            range(2, 1),
            range(3, 1)
        );
    }
}

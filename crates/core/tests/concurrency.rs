//! Many threads on one key through the registry: never more probes per half-open episode
//! than `half_open_max_calls`, transitions reported in order, and no lost count.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use beamline_core::breaker::{BreakerConfig, BreakerObserver, BreakerRegistry, State, Transition};
use beamline_core::rng::{JitterRng, SplitMix64};
use beamline_core::{BreakerKey, Clock, FailureKind, ManualClock, Outcome, ProviderId, TenantId};

/// Checks that each key's transitions chain (`from` of one is `to` of the one before).
#[derive(Default)]
struct Chain {
    last: Mutex<Option<State>>,
    breaks: AtomicU64,
    transitions: AtomicU64,
}

impl BreakerObserver for Chain {
    fn on_transition(&self, _key: &BreakerKey, t: &Transition) {
        self.transitions.fetch_add(1, Ordering::Relaxed);
        let mut last = self.last.lock().unwrap();
        if last.is_some_and(|s| s != t.from) {
            self.breaks.fetch_add(1, Ordering::Relaxed);
        }
        *last = Some(t.to);
    }
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    acquires: u64,
    admitted: u64,
    rejected: u64,
    successes: u64,
    failures: u64,
    ignored: u64,
}

#[test]
fn many_threads_on_one_key_never_over_admit_probes_and_never_lose_a_count() {
    const THREADS: u64 = 8;
    const OPS: u64 = 100_000;
    let config = BreakerConfig {
        failure_threshold: 3,
        window_seconds: 1.0,
        open_timeout_ms: 5,
        open_timeout_max_ms: 20,
        half_open_max_calls: 2,
        success_threshold: 2,
        probe_lease_ms: Some(30),
        ..BreakerConfig::default()
    };
    let max = u64::from(config.half_open_max_calls);
    let settings = config.validate(Duration::from_secs(2)).unwrap();
    let registry = BreakerRegistry::new(settings, 4, 9, Chain::default());
    let key = BreakerKey::new(
        TenantId::try_new("t").unwrap(),
        ProviderId::try_new("p").unwrap(),
    );
    let clock = ManualClock::default();
    // Probes per episode (generation), minus those that reported `ignored`.
    let probes: Mutex<HashMap<u64, u64>> = Mutex::new(HashMap::new());
    let total = Mutex::new(Tally::default());

    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (registry, key, clock, probes, total) = (&registry, &key, &clock, &probes, &total);
            s.spawn(move || {
                let mut rng = SplitMix64::new(thread);
                let mut tally = Tally::default();
                let handle = registry.handle(key);
                for _ in 0..OPS {
                    clock.advance(Duration::from_micros(rng.next_u64() % 300));
                    tally.acquires += 1;
                    let Ok(permit) = handle.acquire(clock.now()) else {
                        tally.rejected += 1;
                        continue;
                    };
                    tally.admitted += 1;
                    let generation = permit.admission().map(|a| a.generation());
                    if permit.is_probe() {
                        let mut p = probes.lock().unwrap();
                        *p.entry(generation.unwrap()).or_default() += 1;
                    }
                    let roll = rng.next_u64() % 100;
                    let outcome = match roll {
                        0..55 => Outcome::Success,
                        55..90 => Outcome::Failure(FailureKind::Connection),
                        90..95 => Outcome::Ignored,
                        _ => {
                            // Dropped unreported: counts as ignored and frees a probe slot.
                            if permit.is_probe() {
                                *probes
                                    .lock()
                                    .unwrap()
                                    .get_mut(&generation.unwrap())
                                    .unwrap() -= 1;
                            }
                            drop(permit);
                            tally.ignored += 1;
                            continue;
                        }
                    };
                    if permit.is_probe() && outcome == Outcome::Ignored {
                        *probes
                            .lock()
                            .unwrap()
                            .get_mut(&generation.unwrap())
                            .unwrap() -= 1;
                    }
                    match outcome {
                        Outcome::Success => tally.successes += 1,
                        Outcome::Failure(_) => tally.failures += 1,
                        Outcome::Ignored => tally.ignored += 1,
                    }
                    permit.record(outcome, clock.now());
                }
                let mut t = total.lock().unwrap();
                t.acquires += tally.acquires;
                t.admitted += tally.admitted;
                t.rejected += tally.rejected;
                t.successes += tally.successes;
                t.failures += tally.failures;
                t.ignored += tally.ignored;
            });
        }
    });

    let total = total.into_inner().unwrap();
    let probes = probes.into_inner().unwrap();
    let worst = probes.values().copied().max().unwrap_or(0);
    assert!(
        worst <= max,
        "an episode admitted {worst} probes (max {max})"
    );
    assert!(
        probes.len() > 10,
        "too few half-open episodes to mean anything: {}",
        probes.len()
    );

    let snap = registry.handle(&key).snapshot(clock.now());
    let stats = snap.stats;
    assert_eq!(total.acquires, THREADS * OPS);
    assert_eq!(total.admitted + total.rejected, total.acquires);
    let seen = Tally {
        acquires: stats.admitted + stats.rejected,
        admitted: stats.admitted,
        rejected: stats.rejected,
        successes: stats.successes,
        failures: stats.failures,
        ignored: stats.ignored,
    };
    assert_eq!(
        seen, total,
        "the breaker's statistics lost or invented a count"
    );
    assert_eq!(
        stats.successes + stats.failures + stats.ignored,
        stats.admitted
    );
    let observer = registry.observer();
    assert_eq!(
        observer.breaks.load(Ordering::Relaxed),
        0,
        "transitions out of order"
    );
    assert!(observer.transitions.load(Ordering::Relaxed) > 30);
}

#[test]
fn threads_creating_the_same_keys_at_once_share_one_breaker_per_key() {
    let registry = BreakerRegistry::new(
        BreakerConfig::default()
            .validate(Duration::from_secs(2))
            .unwrap(),
        2,
        1,
        beamline_core::breaker::NoopObserver,
    );
    let keys: Vec<BreakerKey> = (0..200)
        .map(|i| {
            BreakerKey::new(
                TenantId::try_new(&format!("t{i}")).unwrap(),
                ProviderId::try_new("p").unwrap(),
            )
        })
        .collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for k in &keys {
                    let h = registry.handle(k);
                    let permit = h.acquire(beamline_core::Timestamp::from_millis(1)).unwrap();
                    permit.record(Outcome::Success, beamline_core::Timestamp::from_millis(1));
                }
            });
        }
    });
    assert_eq!(registry.len(), keys.len());
    for k in &keys {
        let stats = registry
            .get(k)
            .unwrap()
            .snapshot(beamline_core::Timestamp::from_millis(2))
            .stats;
        assert_eq!((stats.admitted, stats.successes), (4, 4), "{k}");
    }
}

/// Healthy traffic (fast successes, counted on the lock-free fast lane) from many threads,
/// with a reader that keeps taking the lock (each read empties the lane) and the odd
/// dropped permit: every success lands in the statistics and in the window exactly once.
/// (Failures and slow calls close the lane; the equivalence property test covers them.)
#[test]
fn fast_successes_from_many_threads_are_counted_exactly_once() {
    const THREADS: u64 = 6;
    const OPS: u64 = 100_000;
    // A window no call leaves during the test: its totals must equal what was reported.
    let config = BreakerConfig {
        window_seconds: 3600.0,
        window_buckets: 10,
        ..BreakerConfig::default()
    };
    let settings = config.validate(Duration::from_secs(2)).unwrap();
    let registry = BreakerRegistry::new(settings, 1, 3, Chain::default());
    let key = BreakerKey::new(
        TenantId::try_new("t").unwrap(),
        ProviderId::try_new("p").unwrap(),
    );
    let clock = ManualClock::default();
    let total = Mutex::new(Tally::default());
    let writing = AtomicU64::new(THREADS);
    std::thread::scope(|s| {
        // A reader that keeps taking the lock (each read empties the fast lane) while the
        // writers count on it.
        s.spawn(|| {
            let handle = registry.handle(&key);
            while writing.load(Ordering::Relaxed) > 0 {
                let _ = handle.snapshot(clock.now());
            }
        });
        for thread in 0..THREADS {
            let (registry, key, clock, total, writing) =
                (&registry, &key, &clock, &total, &writing);
            s.spawn(move || {
                let mut rng = SplitMix64::new(thread);
                let mut tally = Tally::default();
                let handle = registry.handle(key);
                for _ in 0..OPS {
                    // 1 hour / 10 buckets = 6 min per bucket; 20 µs per call: several
                    // bucket changes over the test.
                    clock.advance(Duration::from_micros(20));
                    let permit = handle.acquire(clock.now()).unwrap();
                    if rng.next_u64().is_multiple_of(2000) {
                        drop(permit);
                        tally.ignored += 1;
                        continue;
                    }
                    tally.successes += 1;
                    permit.record(Outcome::Success, clock.now());
                }
                let mut t = total.lock().unwrap();
                t.successes += tally.successes;
                t.failures += tally.failures;
                t.ignored += tally.ignored;
                writing.fetch_sub(1, Ordering::Relaxed);
            });
        }
    });
    let total = total.into_inner().unwrap();
    let snap = registry.handle(&key).snapshot(clock.now());
    assert_eq!(snap.state, State::Closed);
    assert_eq!(
        (
            snap.stats.successes,
            snap.stats.failures,
            snap.stats.ignored
        ),
        (total.successes, total.failures, total.ignored)
    );
    assert_eq!(snap.stats.admitted, THREADS * OPS);
    assert_eq!(
        u64::from(snap.window.calls),
        total.successes,
        "the window lost or invented a call"
    );
}

/// Breakers come and go while threads use them: lookups and calls on many keys race with
/// idle eviction and `reset_all`, which free slots for reuse. A handle must keep its own
/// breaker for as long as it is held (a slot reused under it would show another key's
/// calls in its statistics, or lose its own), and every key keeps one breaker at a time.
#[test]
fn slots_freed_by_eviction_and_reset_are_never_reused_under_a_held_handle() {
    const THREADS: usize = 4;
    const ROUNDS: usize = 20_000;
    let settings = BreakerConfig::default()
        .validate(Duration::from_secs(2))
        .unwrap();
    let registry = BreakerRegistry::new(settings, 4, 5, beamline_core::breaker::NoopObserver);
    let keys: Vec<Vec<BreakerKey>> = (0..THREADS)
        .map(|t| {
            (0..50)
                .map(|k| {
                    BreakerKey::new(
                        TenantId::try_new(&format!("t{t}-{k}")).unwrap(),
                        ProviderId::try_new("p").unwrap(),
                    )
                })
                .collect()
        })
        .collect();
    let clock = ManualClock::default();
    let running = AtomicU64::new(THREADS as u64);
    /// Counts a worker out when it ends, however it ends (a failed assertion included).
    struct Done<'a>(&'a AtomicU64);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 0u64;
            while running.load(Ordering::Relaxed) > 0 {
                i += 1;
                if i.is_multiple_of(50) {
                    registry.reset_all(clock.now());
                } else {
                    registry.evict_idle(clock.now(), Duration::ZERO);
                }
            }
        });
        for (t, keys) in keys.iter().enumerate() {
            let (registry, clock, running) = (&registry, &clock, &running);
            s.spawn(move || {
                let _done = Done(running);
                let mut rng = SplitMix64::new(t as u64);
                for _ in 0..ROUNDS {
                    let key = &keys[(rng.next_u64() % keys.len() as u64) as usize];
                    let handle = registry.handle(key);
                    let before = handle.snapshot(clock.now()).stats;
                    let calls = 1 + rng.next_u64() % 5;
                    for _ in 0..calls {
                        clock.advance(Duration::from_micros(10));
                        let permit = handle.acquire(clock.now()).unwrap();
                        permit.record(Outcome::Success, clock.now());
                    }
                    let after = handle.snapshot(clock.now()).stats;
                    assert_eq!(
                        (after.successes - before.successes, after.failures),
                        (calls, before.failures),
                        "{key}: another key's calls, or lost ones"
                    );
                    assert_eq!(handle.key(), key);
                }
            });
        }
    });
    // Every key has at most one breaker: the tables hold each at most once.
    let mut seen = std::collections::HashSet::new();
    for handle in registry.handles() {
        assert!(seen.insert(handle.key().clone()), "{} twice", handle.key());
    }
}

//! Memory per breaker at the default config, measured by a counting allocator: the
//! registry's growth for N breakers, divided by N. DESIGN.md §3 bounds it at 1 KiB.
//! (Alone in its test binary: the allocator counts every thread of the process.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // test code

use beamline_core::breaker::{BreakerRegistry, BreakerSettings, NoopObserver};
use beamline_core::{BreakerKey, ProviderId, TenantId, Timestamp};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

fn net_bytes(f: impl FnOnce()) -> isize {
    let region = Region::new(GLOBAL);
    f();
    let s = region.change();
    s.bytes_allocated as isize - s.bytes_deallocated as isize + s.bytes_reallocated
}

#[test]
fn a_breaker_at_the_default_config_takes_under_one_kib() {
    const N: usize = 20_000;
    // Every key parsed for itself (its own id allocations), as the worst case of a router
    // that shares none: measured apart, then added.
    let mut keys = Vec::with_capacity(N);
    let id_bytes = net_bytes(|| {
        keys.extend((0..N).map(|i| {
            BreakerKey::new(
                TenantId::try_new(&format!("tenant-{i:05}")).unwrap(),
                ProviderId::try_new(&format!("provider-{}", i % 10)).unwrap(),
            )
        }))
    }) - (N * std::mem::size_of::<BreakerKey>()) as isize;
    let registry = BreakerRegistry::new(BreakerSettings::defaults(), 64, 1, NoopObserver);
    let bytes = net_bytes(|| {
        for k in &keys {
            let h = registry.handle(k);
            // Use it once so every lazily sized part exists.
            let permit = h.acquire(Timestamp::from_millis(1)).unwrap();
            permit.record(beamline_core::Outcome::Success, Timestamp::from_millis(2));
        }
    });
    let per_breaker = bytes as f64 / N as f64;
    let ids = id_bytes as f64 / N as f64;
    println!("memory per breaker: {per_breaker:.0} bytes + {ids:.0} bytes of its own ids");
    assert!(
        per_breaker + ids <= 1024.0,
        "{per_breaker:.0} + {ids:.0} bytes per breaker"
    );
}

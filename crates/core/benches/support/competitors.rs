//! What both breaker benchmarks share: the keys, and the two Rust breakers we compare
//! against, each called the way its documentation means it to be, behind the thread-safe
//! map from key to breaker a router would have to keep for it.

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use beamline_core::breaker::{BreakerRegistry, BreakerSettings, NoopObserver};
use beamline_core::{BreakerKey, Outcome, ProviderId, TenantId, Timestamp};
use failsafe::CircuitBreaker as _;
use tower::Service;

/// `n` keys over `n / 10` tenants and 10 providers; as in a router, ids are parsed once
/// (one allocation per tenant and per provider) and shared by the keys that name them.
pub fn keys(n: usize) -> Vec<BreakerKey> {
    let providers: Vec<ProviderId> = (0..10)
        .map(|p| ProviderId::try_new(&format!("provider-{p}")).unwrap())
        .collect();
    let tenants: Vec<TenantId> = (0..n.div_ceil(10))
        .map(|t| TenantId::try_new(&format!("tenant-{t}")).unwrap())
        .collect();
    (0..n)
        .map(|i| BreakerKey::new(tenants[i / 10].clone(), providers[i % 10].clone()))
        .collect()
}

/// Our registry at the default config, as the router builds it.
pub fn registry() -> BreakerRegistry<NoopObserver> {
    BreakerRegistry::new(BreakerSettings::defaults(), 64, 1, NoopObserver)
}

/// One call through beamline: lookup, acquire, record a success.
#[inline]
pub fn beamline_call(reg: &BreakerRegistry<NoopObserver>, key: &BreakerKey, now: Timestamp) {
    let handle = reg.handle(key);
    let permit = handle.acquire(now).expect("closed");
    black_box(permit.record(Outcome::Success, now));
}

/// failsafe at its default config (success rate over a time window, or consecutive
/// failures, with jittered backoff).
pub type Failsafe = failsafe::StateMachine<
    failsafe::failure_policy::OrElse<
        failsafe::failure_policy::SuccessRateOverTimeWindow<failsafe::backoff::EqualJittered>,
        failsafe::failure_policy::ConsecutiveFailures<failsafe::backoff::EqualJittered>,
    >,
    (),
>;

pub fn failsafe_breaker() -> Failsafe {
    failsafe::Config::new().build()
}

pub fn failsafe_call(cb: &Failsafe) {
    black_box(cb.call(|| Ok::<(), ()>(()))).unwrap();
}

type Inner = tower::util::ServiceFn<fn(()) -> std::future::Ready<Result<(), ()>>>;

/// tower-resilience's circuit breaker at its default config, around an always-ready
/// service.
pub type TowerCb = tower_resilience::circuitbreaker::CircuitBreaker<
    Inner,
    tower_resilience::circuitbreaker::DefaultClassifier,
>;

pub fn tower_breaker() -> TowerCb {
    let layer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .unwrap();
    let inner: fn(()) -> std::future::Ready<Result<(), ()>> = |_| std::future::ready(Ok(()));
    layer.layer_fn(tower::service_fn(inner))
}

/// One call through tower-resilience: poll_ready, call, poll the (ready) future once.
pub fn tower_call(svc: &mut TowerCb) {
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut fut = svc.call(());
    match Pin::new(&mut fut).poll(&mut cx) {
        Poll::Ready(r) => {
            black_box(r).unwrap();
        }
        Poll::Pending => panic!("tower-resilience future pending on a ready inner service"),
    }
}

/// A thread-safe map from key to a competitor's breaker, as a router would keep them: a
/// read lock and a lookup per call (our registry's shards play this part for beamline).
pub type Map<T> = std::sync::RwLock<hashbrown::HashMap<BreakerKey, T>>;

pub fn map_of<T>(keys: &[BreakerKey], make: impl Fn() -> T) -> Map<T> {
    Map::new(keys.iter().map(|k| (k.clone(), make())).collect())
}

pub fn failsafe_keyed(map: &Map<Failsafe>, key: &BreakerKey) {
    failsafe_call(map.read().unwrap().get(key).unwrap());
}

/// tower services are `Clone` and take `&mut self`: the idiomatic shared use clones the
/// service out of the map for each request.
pub fn tower_keyed(map: &Map<TowerCb>, key: &BreakerKey) {
    let mut svc = map.read().unwrap().get(key).unwrap().clone();
    tower_call(&mut svc);
}

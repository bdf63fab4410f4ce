//! The breaker registry: one [`Breaker`] per [`BreakerKey`], shared by every thread.
//!
//! Breakers are created on first use and live in shards (a hash table behind a
//! reader-writer lock each, chosen by the key's hash), so threads working on different keys
//! rarely meet, and lookups of one key from many threads share the shard. A request
//! looks its breaker up once ([`BreakerRegistry::handle`]) and then takes one [`Permit`] per
//! attempt; the permit reports exactly one outcome, and a permit dropped without a report
//! counts as `Ignored` (which frees a half-open probe slot).
//!
//! Every transition, whoever causes it (an acquire, a record, a read, an admin action), is
//! reported to the registry's [`BreakerObserver`] while the breaker's lock is held, so an
//! observer sees each key's transitions in order. Observers must be quick (count, log).
//!
//! # The lock-free closed path
//! In closed state (the state nearly every call meets) `acquire` takes no lock: every
//! holder of a breaker's lock publishes, before releasing it, an atomic *gate* saying
//! whether the next acquire needs a decision, and the generation to stamp on the permit.
//! An acquire that races with an opening is ordered before it: its permit carries the old
//! generation and its outcome is stale, exactly as if it had taken the lock first. Such a
//! call counts in `stats.admitted` when it reports. Recording an outcome takes the lock
//! unless it goes through the fast lane.
//!
//! # The fast lane
//! Nearly every outcome a healthy breaker sees is a fast success, and a fast success
//! cannot open a breaker whose window holds no failure and no slow call: it only needs
//! counting. So while that holds, every holder of the lock *arms* the breaker's fast lane
//! before releasing it (the head bucket's span and the generation, see
//! [`Breaker::fast_lane`]), and a success reported inside it is counted with one
//! compare-and-swap on the lane's word, no lock. Every holder of the lock first takes the
//! lane's count and hands it to the breaker ([`Breaker::absorb_fast_successes`]), so
//! whatever happens under the lock (an outcome, a read, an admin action) sees every
//! success counted before it, exactly as if each had taken the lock itself. The word
//! carries an arming sequence number with the count, so a success can only be counted
//! into the arming whose span and generation it was checked against. Anything else (a
//! failure, a slow call, a probe, a success past the head bucket, a breaker with failures
//! in its window) takes the lock. One difference: idle time (for eviction) counts from
//! the start of the bucket of the last fast success, not from the success itself.
//!
//! Idle eviction ([`BreakerRegistry::evict_idle`]) drops closed, unforced breakers that
//! nobody holds and that saw no call for the idle period.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use std::hash::BuildHasher;

use super::config::BreakerSettings;
use super::machine::{
    Admission, Breaker, BreakerSnapshot, FastLane, RecordEffect, Rejection, State, Transition,
};
use crate::keys::BreakerKey;
use crate::outcome::Outcome;
use crate::time::Timestamp;

/// Receives what happens to breakers, for metrics and logs.
pub trait BreakerObserver: Send + Sync {
    /// A breaker changed state.
    fn on_transition(&self, key: &BreakerKey, transition: &Transition);
    /// A call was refused.
    fn on_rejection(&self, _key: &BreakerKey, _rejection: &Rejection) {}
    /// An outcome was reported.
    fn on_outcome(&self, _key: &BreakerKey, _outcome: Outcome, _effect: RecordEffect) {}
}

/// An observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl BreakerObserver for NoopObserver {
    fn on_transition(&self, _key: &BreakerKey, _transition: &Transition) {}
}

/// Bits of a [`FastLaneCell`] word that count successes; the rest is the arming number.
const LANE_COUNT_BITS: u32 = 24;
const LANE_COUNT_MASK: u64 = (1 << LANE_COUNT_BITS) - 1;

/// A breaker's fast lane (see the module doc), shared lock-free. The span, generation and
/// latency bound are written by the lock holder only while the lane is disarmed (word 0),
/// then published by storing the word; a success checked against them counts only if the
/// word still names that arming.
#[derive(Debug, Default)]
struct FastLaneCell {
    /// `arming << LANE_COUNT_BITS | successes`; 0 while disarmed. Arming numbers start at
    /// 1 and wrap within their 40 bits, skipping 0.
    word: AtomicU64,
    generation: AtomicU64,
    from: AtomicU64,
    until: AtomicU64,
    slow_above: AtomicU64,
}

impl FastLaneCell {
    /// Counts one success of `admission` at `now`, if the lane takes it.
    #[inline]
    fn try_count(&self, admission: &Admission, now: Timestamp) -> bool {
        let mut word = self.word.load(Ordering::Acquire);
        if word == 0 {
            return false;
        }
        let lane = self.lane();
        if !admission.fits_fast_lane(&lane, now) {
            return false;
        }
        loop {
            if word & LANE_COUNT_MASK == LANE_COUNT_MASK {
                return false; // full: the lock holder empties it
            }
            match self.word.compare_exchange_weak(
                word,
                word + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                // Another success counted meanwhile: same arming, try again.
                Err(now_word) if now_word >> LANE_COUNT_BITS == word >> LANE_COUNT_BITS => {
                    word = now_word;
                }
                Err(_) => return false, // emptied or re-armed: the checks no longer hold
            }
        }
    }

    fn lane(&self) -> FastLane {
        FastLane {
            generation: self.generation.load(Ordering::Relaxed),
            from: self.from.load(Ordering::Relaxed),
            until: self.until.load(Ordering::Relaxed),
            slow_above: self.slow_above.load(Ordering::Relaxed),
        }
    }

    /// Disarms the lane and hands its successes to `breaker` (lock held).
    fn drain_into(&self, breaker: &mut Breaker) {
        if self.word.load(Ordering::Relaxed) == 0 {
            return;
        }
        let word = self.word.swap(0, Ordering::AcqRel);
        let n = (word & LANE_COUNT_MASK) as u32; // 24 bits
        if n > 0 {
            breaker.absorb_fast_successes(self.lane(), n);
        }
    }

    /// Arms the lane for `breaker`'s current state, if it has one (lock held, lane empty).
    fn arm(&self, breaker: &Breaker, armings: &mut u64) {
        if let Some(lane) = breaker.fast_lane() {
            self.generation.store(lane.generation, Ordering::Relaxed);
            self.from.store(lane.from, Ordering::Relaxed);
            self.until.store(lane.until, Ordering::Relaxed);
            self.slow_above.store(lane.slow_above, Ordering::Relaxed);
            *armings = (*armings % ((1 << (64 - LANE_COUNT_BITS)) - 1)) + 1;
            self.word
                .store(*armings << LANE_COUNT_BITS, Ordering::Release);
        }
    }
}

/// A breaker and its key, as stored in the registry.
#[derive(Debug)]
#[repr(C)] // key, gate, lane and lock first: a lookup, an acquire and a fast success touch
// the first cache lines only
pub struct BreakerCell {
    key: BreakerKey,
    /// [`Breaker::gate`] as of the last release of `breaker`'s lock.
    gate: AtomicU64,
    lane: FastLaneCell,
    breaker: Mutex<Locked>,
}

/// What the cell's lock guards: the breaker, and the lane's arming counter.
#[derive(Debug)]
struct Locked {
    breaker: Breaker,
    armings: u64,
}

impl BreakerCell {
    fn new(key: BreakerKey, breaker: Breaker) -> Self {
        let cell = BreakerCell {
            key,
            gate: AtomicU64::new(breaker.gate()),
            lane: FastLaneCell::default(),
            breaker: Mutex::new(Locked {
                breaker,
                armings: 0,
            }),
        };
        cell.with(|_| ());
        cell
    }

    /// Runs `f` on the breaker under its lock, with every fast success counted first; then
    /// publishes the gate and re-arms the lane for whatever state `f` left.
    fn with<T>(&self, f: impl FnOnce(&mut Breaker) -> T) -> T {
        // A panic while holding the lock cannot leave a breaker half-updated in a way that
        // matters more than losing the key's protection, so poisoning is ignored.
        let mut guard = self
            .breaker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let locked = &mut *guard;
        self.lane.drain_into(&mut locked.breaker);
        let result = f(&mut locked.breaker);
        self.gate.store(locked.breaker.gate(), Ordering::Release);
        self.lane.arm(&locked.breaker, &mut locked.armings);
        result
    }
}

type Table = HashTable<Arc<BreakerCell>>;

/// One shard, alone on its cache lines (128 bytes: adjacent-line prefetch pairs lines), so
/// threads working on keys of different shards never contend for a line. Lookups share
/// the read lock; only creating, evicting and clearing breakers write.
#[derive(Debug)]
#[repr(align(128))]
struct Shard(RwLock<Table>);

impl Shard {
    // A panic while holding a shard lock leaves the table consistent (hashbrown's
    // operations do not unwind half-done), so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }
}

/// All breakers of a router.
#[derive(Debug)]
pub struct BreakerRegistry<O> {
    shards: Box<[Shard]>,
    hasher: DefaultHashBuilder,
    defaults: Arc<BreakerSettings>,
    observer: O,
    seed: u64,
}

impl<O: BreakerObserver> BreakerRegistry<O> {
    /// A registry with `shards` shards (rounded up to a power of two, at least 1) whose new
    /// breakers use `defaults`; `seed` drives their jitter.
    pub fn new(defaults: BreakerSettings, shards: usize, seed: u64, observer: O) -> Self {
        let n = shards.max(1).next_power_of_two();
        BreakerRegistry {
            shards: (0..n).map(|_| Shard(RwLock::new(Table::new()))).collect(),
            hasher: DefaultHashBuilder::default(),
            defaults: Arc::new(defaults),
            observer,
            seed,
        }
    }

    /// The observer.
    pub fn observer(&self) -> &O {
        &self.observer
    }

    /// The settings of breakers created without their own.
    pub fn defaults(&self) -> &Arc<BreakerSettings> {
        &self.defaults
    }

    fn hash(&self, tenant: &str, provider: &str) -> u64 {
        self.hasher.hash_one((tenant, provider))
    }

    fn shard(&self, hash: u64) -> &Shard {
        // High bits choose the shard; the table itself uses the low bits.
        &self.shards[(hash >> 48) as usize & (self.shards.len() - 1)]
    }

    /// The breaker for `key`, created with the default settings if missing.
    pub fn handle(&self, key: &BreakerKey) -> BreakerHandle<'_, O> {
        self.handle_with(key, &self.defaults)
    }

    /// The breaker for `key`, created with `settings` if missing. An existing breaker keeps
    /// its settings until it is reset through [`BreakerRegistry::replace_settings`].
    pub fn handle_with(
        &self,
        key: &BreakerKey,
        settings: &Arc<BreakerSettings>,
    ) -> BreakerHandle<'_, O> {
        let hash = self.hash(key.tenant.as_str(), key.provider.as_str());
        let eq = |c: &Arc<BreakerCell>| c.key == *key;
        let shard = self.shard(hash);
        let found = shard.read().find(hash, eq).map(Arc::clone);
        let cell = match found {
            Some(cell) => cell,
            None => {
                let mut table = shard.write();
                // Another thread may have created it between the two locks.
                match table.find(hash, eq) {
                    Some(cell) => Arc::clone(cell),
                    None => {
                        let now = Timestamp::ZERO;
                        let breaker = Breaker::new(Arc::clone(settings), now, self.seed ^ hash);
                        let cell = Arc::new(BreakerCell::new(key.clone(), breaker));
                        let hasher = &self.hasher;
                        table.insert_unique(hash, Arc::clone(&cell), |c| {
                            hasher.hash_one((c.key.tenant.as_str(), c.key.provider.as_str()))
                        });
                        cell
                    }
                }
            }
        };
        BreakerHandle {
            registry: self,
            cell,
        }
    }

    /// The breaker for `key` if it exists (never creates one).
    pub fn get(&self, key: &BreakerKey) -> Option<BreakerHandle<'_, O>> {
        let hash = self.hash(key.tenant.as_str(), key.provider.as_str());
        let cell = self
            .shard(hash)
            .read()
            .find(hash, |c| c.key == *key)
            .map(Arc::clone)?;
        Some(BreakerHandle {
            registry: self,
            cell,
        })
    }

    /// Every breaker, in no particular order.
    pub fn handles(&self) -> Vec<BreakerHandle<'_, O>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read();
            out.extend(shard.iter().map(|cell| BreakerHandle {
                registry: self,
                cell: Arc::clone(cell),
            }));
        }
        out
    }

    /// Number of breakers.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether there are no breakers.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives the breaker for `key` new settings; it restarts fresh and closed.
    pub fn replace_settings(
        &self,
        key: &BreakerKey,
        settings: Arc<BreakerSettings>,
        now: Timestamp,
    ) {
        let handle = self.handle_with(key, &settings);
        handle.with(|b, on| {
            if !Arc::ptr_eq(b.settings(), &settings) {
                b.reconfigure(settings, now, &mut |t| on(t));
            }
        });
    }

    /// Drops breakers that are closed, not forced, not held by anyone and idle for `idle`.
    /// Returns how many were dropped.
    pub fn evict_idle(&self, now: Timestamp, idle: Duration) -> usize {
        let mut evicted = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            shard.retain(|cell| {
                let keep = Arc::strong_count(cell) > 1 || !cell.with(|b| b.is_evictable(now, idle));
                evicted += usize::from(!keep);
                keep
            });
        }
        evicted
    }

    /// Removes every breaker (tests and `reset all`).
    pub fn reset_all(&self, now: Timestamp) {
        for handle in self.handles() {
            handle.reset(now);
        }
        for shard in self.shards.iter() {
            shard.write().clear();
        }
    }
}

/// One breaker, looked up. Cheap to keep for the length of a request.
#[derive(Debug)]
pub struct BreakerHandle<'r, O> {
    registry: &'r BreakerRegistry<O>,
    cell: Arc<BreakerCell>,
}

impl<'r, O: BreakerObserver> BreakerHandle<'r, O> {
    /// The key.
    pub fn key(&self) -> &BreakerKey {
        &self.cell.key
    }

    fn with<T>(&self, f: impl FnOnce(&mut Breaker, &mut dyn FnMut(Transition)) -> T) -> T {
        let observer = &self.registry.observer;
        let key = &self.cell.key;
        let mut on = |t: Transition| observer.on_transition(key, &t);
        self.cell.with(|breaker| f(breaker, &mut on))
    }

    /// Asks to make one call at `now`.
    pub fn acquire(&self, now: Timestamp) -> Result<Permit<'_, 'r, O>, Rejection> {
        if let Some(admission) = Breaker::admit_by_gate(self.cell.gate.load(Ordering::Acquire), now)
        {
            return Ok(Permit {
                handle: self,
                admission: Some(admission),
            });
        }
        let result = self.with(|b, on| b.acquire(now, &mut |t| on(t)));
        match result {
            Ok(admission) => Ok(Permit {
                handle: self,
                admission: Some(admission),
            }),
            Err(rejection) => {
                self.registry
                    .observer
                    .on_rejection(&self.cell.key, &rejection);
                Err(rejection)
            }
        }
    }

    /// The rejection an acquire at `now` would get, if any; admits and counts nothing
    /// (lazy transitions applied). Lock-free when the gate admits, as an acquire is, so
    /// routing's per-request check does not empty the fast lane.
    pub fn peek(&self, now: Timestamp) -> Option<Rejection> {
        if Breaker::admit_by_gate(self.cell.gate.load(Ordering::Acquire), now).is_some() {
            return None;
        }
        self.with(|b, on| b.peek(now, &mut |t| on(t)))
    }

    /// The state at `now` (lazy transitions applied).
    pub fn state(&self, now: Timestamp) -> State {
        self.with(|b, on| b.state(now, &mut |t| on(t)))
    }

    /// A full view at `now` (lazy transitions applied; nothing admitted or counted).
    pub fn snapshot(&self, now: Timestamp) -> BreakerSnapshot {
        self.with(|b, on| b.snapshot(now, &mut |t| on(t)))
    }

    /// The breaker's settings.
    pub fn settings(&self) -> Arc<BreakerSettings> {
        self.cell.with(|b| Arc::clone(b.settings()))
    }

    /// Holds the breaker open until released.
    pub fn force_open(&self, now: Timestamp) {
        self.with(|b, on| b.force_open(now, &mut |t| on(t)));
    }

    /// Holds the breaker closed until released.
    pub fn force_closed(&self, now: Timestamp) {
        self.with(|b, on| b.force_closed(now, &mut |t| on(t)));
    }

    /// Ends an override.
    pub fn release(&self, now: Timestamp) {
        self.with(|b, on| b.release(now, &mut |t| on(t)));
    }

    /// Makes the breaker fresh and closed.
    pub fn reset(&self, now: Timestamp) {
        self.with(|b, on| b.reset(now, &mut |t| on(t)));
    }

    fn record(&self, admission: Admission, outcome: Outcome, now: Timestamp) -> RecordEffect {
        let effect = if outcome == Outcome::Success && self.cell.lane.try_count(&admission, now) {
            RecordEffect::Counted
        } else {
            self.with(|b, on| b.record(admission, outcome, now, &mut |t| on(t)))
        };
        self.registry
            .observer
            .on_outcome(&self.cell.key, outcome, effect);
        effect
    }
}

/// Permission for one call. Report its outcome with [`Permit::record`]; dropping it
/// unreported counts as `Ignored`, which frees a half-open probe slot.
#[derive(Debug)]
#[must_use = "a permit reports its call's outcome; dropping it counts as ignored"]
pub struct Permit<'h, 'r, O: BreakerObserver> {
    handle: &'h BreakerHandle<'r, O>,
    admission: Option<Admission>,
}

impl<O: BreakerObserver> Permit<'_, '_, O> {
    /// The admission data (probe or not, start time).
    pub fn admission(&self) -> Option<&Admission> {
        self.admission.as_ref()
    }

    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.admission.is_some_and(|a| a.is_probe())
    }

    /// Reports the call's outcome at `now`. Exactly one outcome per permit.
    pub fn record(mut self, outcome: Outcome, now: Timestamp) -> RecordEffect {
        match self.admission.take() {
            Some(admission) => self.handle.record(admission, outcome, now),
            None => RecordEffect::Stale,
        }
    }
}

impl<O: BreakerObserver> Drop for Permit<'_, '_, O> {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.handle
                .record(admission, Outcome::Ignored, admission.started());
        }
    }
}

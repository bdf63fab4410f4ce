//! The breaker registry: one [`Breaker`] per [`BreakerKey`], shared by every thread.
//!
//! Breakers are created on first use. A request looks its breaker up once
//! ([`BreakerRegistry::handle`]) and then takes one [`Permit`] per attempt; the permit
//! reports exactly one outcome, and a permit dropped without a report counts as `Ignored`
//! (which frees a half-open probe slot).
//!
//! Every transition, whoever causes it (an acquire, a record, a read, an admin action), is
//! reported to the registry's [`BreakerObserver`] while the breaker's lock is held, so an
//! observer sees each key's transitions in order. Observers must be quick (count, log).
//!
//! # Layout: what a call touches
//! A router may hold hundreds of thousands of breakers, and a call on one of them should
//! touch as little memory as possible: on that many keys every line it touches is a
//! cache miss. So each breaker is split in two, and both parts live in slabs (arrays that
//! grow in chunks and never move, so a handle borrows them straight from the registry,
//! with no reference count to share between threads):
//! - its **cell**: one cache line of atomics (the lock-free gate and fast lane below, the
//!   handles' pin count, and what a lookup needs to recognise its key), in a dense array
//!   of cells: 100,000 breakers' cells fit in 6.4 MB;
//! - its **state**: its key and its [`Breaker`] behind a mutex, which only the slow path
//!   touches.
//!
//! Keys map to slots through shards (chosen by the key's hash), each with a table that
//! lookups read without a lock (`table.rs`: one atomic word per entry, the low 32 bits of
//! the key's hash beside the slot, so a lookup reads one line of it) and that only
//! creating, evicting and clearing breakers lock. Keys hash through the hashes their ids
//! carry ([`BreakerKey::hash64`]). A lookup pins the slot it finds (one atomic add on the
//! cell), then recognises its key in the cell by the addresses of its ids' allocations
//! (exact: the state holds the key, so those allocations live as long as the breaker, and
//! no other live id can share their addresses); a key parsed anew (same ids, other
//! allocations) is compared id by id under the breaker's lock. So a call on a breaker
//! already in the table writes to nothing but its cell, and reads one line of its shard's
//! table and its cell: on 100,000 keys, two likely cache misses.

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
//! before releasing it (the head bucket's span and the latency bound, see
//! `Breaker::fast_lane`; the lane's generation is the gate's), and a success reported
//! inside it is counted with one compare-and-swap on the lane's word, no lock. Every
//! holder of the lock first takes the lane's count and hands it to the breaker
//! (`Breaker::absorb_fast_successes`), so whatever happens under the lock (an outcome, a
//! read, an admin action) sees every success counted before it, exactly as if each had
//! taken the lock itself. The word carries an arming sequence number with the count, so a
//! success can only be counted into the arming whose span and generation it was checked
//! against. Anything else (a failure, a slow call, a probe, a success past the head bucket,
//! a breaker with failures in its window) takes the lock. One difference: idle time (for
//! eviction) counts from the start of the bucket of the last fast success, not from the
//! success itself.
//!
//! # Slots: eviction and reuse
//! A handle *pins* its slot: a count in the cell's `refs` word, taken by the lookup before
//! it trusts what it found. The same word says whether the slot may be pinned at all: a
//! slot that has been let go is *retired* ([`RETIRED`]: free, or about to be), and a
//! lookup whose pin lands on a retired slot, or on a slot that now holds another key,
//! takes its pin back and looks further (and, failing that, asks again under the table's
//! lock). Idle eviction ([`BreakerRegistry::evict_idle`]) retires closed, unforced
//! breakers that nobody pins and that saw no call for the idle period (it retires first,
//! so no lookup can pin them while it looks, then removes them from their table), and
//! their slots are reused by the next breakers created. [`BreakerRegistry::reset_all`]
//! empties the tables even of pinned breakers: those are *detached* ([`DETACHED`]: no new
//! pins), keep working for the handles that hold them, and are retired when the last pin
//! (a handle's, or a passing lookup's) is taken back. A slot's arming numbers continue
//! across reuses, so a stale lane word can never match.
//!
//! Slots are `u32`: past 4,294,967,295 live breakers (terabytes of them) new keys share one
//! overflow breaker instead of getting their own. Nothing panics.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::config::BreakerSettings;
use super::machine::{
    Admission, Breaker, BreakerSnapshot, FastLane, RecordEffect, Rejection, State, Transition,
};
use super::slab::Slab;
use super::table::SlotTable;
use crate::keys::{BreakerKey, ProviderId, TenantId};
use crate::message::payload_fingerprint;
use crate::outcome::Outcome;
use crate::time::Timestamp;

/// Receives what happens to breakers, for metrics and logs. Transitions are reported
/// under the breaker's lock: an observer must be quick and must not call back into the
/// registry.
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

/// Bits of a lane word that count successes; the rest is the arming number.
const LANE_COUNT_BITS: u32 = 24;
const LANE_COUNT_MASK: u64 = (1 << LANE_COUNT_BITS) - 1;

/// The `refs` bit of a cell that left its table while pinned (see the module doc).
const DETACHED: u32 = 1 << 31;
/// The `refs` bit of a cell whose slot is free or being evicted: it may not be pinned.
const RETIRED: u32 = 1 << 30;

/// Lane bounds are kept in units of 2^10 ns, rounded toward a narrower lane.
const LANE_UNIT_BITS: u32 = 10;

/// A breaker's lock-free part, alone on its cache line (see the module doc).
///
/// The lane's span and latency bound are written by the lock holder only while the lane
/// is disarmed (word 0), then published by storing the word; a success checked against
/// them (and against the gate's generation) counts only if the word still names that
/// arming when its compare-and-swap lands. They are kept in one word, in units of
/// 2^10 ns rounded down (see [`LaneLimits`]): the lane this cell admits is never wider
/// than the breaker's, so the narrowing only sends the odd success (in the last
/// microsecond of a bucket, or within a microsecond of the latency threshold) through
/// the lock, where it counts exactly as it would have.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Cell {
    /// [`Breaker::gate`] as of the last release of the breaker's lock.
    gate: AtomicU64,
    /// `arming << LANE_COUNT_BITS | successes`; 0 while disarmed. Arming numbers start at
    /// 1 and wrap within `u32`, skipping 0.
    lane: AtomicU64,
    lane_from: AtomicU64,
    /// [`LaneLimits`]: the lane's length and latency bound.
    lane_limits: AtomicU64,
    /// Where the key's ids live ([`BreakerKey::allocations`]): a lookup with a key made
    /// of the same allocations recognises its breaker here, without reading any id.
    key_at: [AtomicUsize; 2],
    /// The low 32 bits of the key's hash, which its shard's table files it under.
    tag: AtomicU32,
    /// Pins (handles, and lookups checking the cell), plus [`DETACHED`] and [`RETIRED`].
    refs: AtomicU32,
    /// The last arming number (written under the breaker's lock only).
    armings: AtomicU32,
}

/// A lane's length and latency bound in one word: `length << 32 | slow_above`, each in
/// units of 2^10 ns, rounded down and capped (a lane of 73 minutes at most).
struct LaneLimits;

impl LaneLimits {
    fn pack(lane: &FastLane) -> u64 {
        let units =
            |nanos: u64| u64::from(u32::try_from(nanos >> LANE_UNIT_BITS).unwrap_or(u32::MAX));
        units(lane.until.saturating_sub(lane.from)) << 32 | units(lane.slow_above)
    }

    fn unpack(word: u64, from: u64) -> (u64, u64) {
        let until = from.saturating_add((word >> 32) << LANE_UNIT_BITS);
        let slow_above = (word & u64::from(u32::MAX)) << LANE_UNIT_BITS;
        (until, slow_above)
    }
}

impl Cell {
    /// Whether `key` is made of the allocations of this cell's key. Exact: this cell's key
    /// (held in its slot's state) keeps its allocations alive, and two live allocations
    /// never share an address. Read by a holder of a pin that found the slot neither
    /// retired nor detached (see `try_pin`), which orders it after the slot's creation and
    /// before its reuse.
    #[inline]
    fn is_made_of(&self, key: &BreakerKey) -> bool {
        let [tenant, provider] = key.allocations();
        self.key_at[0].load(Ordering::Relaxed) == tenant
            && self.key_at[1].load(Ordering::Relaxed) == provider
    }

    /// Takes back a pin on `slot` (this cell's); the last pin on a detached cell retires it.
    #[inline]
    fn unpin(&self, slot: u32, slots: &Mutex<Slots>) {
        if self.refs.fetch_sub(1, Ordering::AcqRel) == DETACHED | 1 {
            self.retire_detached(slot, slots);
        }
    }

    /// Frees `slot` (this cell's) if it is detached and nobody pins it: once, whoever of
    /// the last pin's holder and `reset_all` gets here first.
    #[cold]
    fn retire_detached(&self, slot: u32, slots: &Mutex<Slots>) {
        let retired =
            self.refs
                .compare_exchange(DETACHED, RETIRED, Ordering::AcqRel, Ordering::Relaxed);
        if retired.is_ok() {
            give_back(slots, [slot]);
        }
    }

    /// Counts one success of `admission` at `now`, if the lane takes it.
    #[inline]
    fn try_count(&self, admission: &Admission, now: Timestamp) -> bool {
        let mut word = self.lane.load(Ordering::Acquire);
        if word == 0 {
            return false;
        }
        if !admission.fits_fast_lane(&self.fast_lane(), now) {
            return false;
        }
        loop {
            if word & LANE_COUNT_MASK == LANE_COUNT_MASK {
                return false; // full: the lock holder empties it
            }
            match self.lane.compare_exchange_weak(
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

    /// The lane as armed. Read after an acquiring load of an armed word, it is that
    /// arming's lane, or a later one's, in which case the word has moved on and the
    /// compare-and-swap fails.
    #[inline]
    fn fast_lane(&self) -> FastLane {
        let from = self.lane_from.load(Ordering::Relaxed);
        let (until, slow_above) =
            LaneLimits::unpack(self.lane_limits.load(Ordering::Relaxed), from);
        FastLane {
            generation: Breaker::gate_generation(self.gate.load(Ordering::Relaxed)),
            from,
            until,
            slow_above,
        }
    }

    /// Disarms the lane and hands its successes to `breaker` (lock held).
    fn drain_into(&self, breaker: &mut Breaker) {
        if self.lane.load(Ordering::Relaxed) == 0 {
            return;
        }
        let word = self.lane.swap(0, Ordering::AcqRel);
        let n = (word & LANE_COUNT_MASK) as u32; // 24 bits
        if n > 0 {
            breaker.absorb_fast_successes(self.fast_lane(), n);
        }
    }

    /// Publishes `breaker`'s gate and arms the lane for its state, if it has one (lock
    /// held, lane disarmed).
    fn publish(&self, breaker: &Breaker) {
        self.gate.store(breaker.gate(), Ordering::Release);
        if let Some(lane) = breaker.fast_lane() {
            self.lane_from.store(lane.from, Ordering::Relaxed);
            self.lane_limits
                .store(LaneLimits::pack(&lane), Ordering::Relaxed);
            let arming = self.armings.load(Ordering::Relaxed).wrapping_add(1).max(1);
            self.armings.store(arming, Ordering::Relaxed);
            self.lane
                .store(u64::from(arming) << LANE_COUNT_BITS, Ordering::Release);
        }
    }
}

/// What a breaker's lock guards: its key and its state machine.
#[derive(Debug)]
struct Guarded {
    /// The key's ids (its hash is in the cell's tag and the table).
    tenant: TenantId,
    provider: ProviderId,
    breaker: Breaker,
}

impl Guarded {
    fn is_for(&self, key: &BreakerKey) -> bool {
        self.tenant == *key.tenant() && self.provider == *key.provider()
    }

    fn key(&self) -> BreakerKey {
        BreakerKey::new(self.tenant.clone(), self.provider.clone())
    }
}

fn lock(state: &Mutex<Guarded>) -> MutexGuard<'_, Guarded> {
    // A panic while holding the lock cannot leave a breaker half-updated in a way that
    // matters more than losing the key's protection, so poisoning is ignored.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs `f` on the breaker under its lock, with every fast success counted first; then
/// publishes the gate and re-arms the lane for whatever state `f` left.
fn locked<T>(cell: &Cell, state: &Mutex<Guarded>, f: impl FnOnce(&mut Breaker) -> T) -> T {
    let mut state = lock(state);
    cell.drain_into(&mut state.breaker);
    let result = f(&mut state.breaker);
    cell.publish(&state.breaker);
    result
}

/// One shard, alone on its cache lines (128 bytes: adjacent-line prefetch pairs lines), so
/// threads creating breakers in different shards never contend for a line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(SlotTable);

/// Cells per chunk of the cell slab (64 KiB) and breakers per chunk of the state slab.
const CELL_CHUNK_BITS: u32 = 10;
const STATE_CHUNK_BITS: u32 = 6;

/// The slot number no breaker has: the overflow breaker's.
const OVERFLOW: u32 = u32::MAX;

/// Which slots are taken.
#[derive(Debug, Default)]
struct Slots {
    /// Slots below this have been handed out at least once.
    next: u32,
    /// Slots handed out and given back.
    free: Vec<u32>,
}

/// All breakers of a router.
#[derive(Debug)]
pub struct BreakerRegistry<O> {
    shards: Box<[Shard]>,
    cells: Slab<Cell>,
    states: Slab<Mutex<Guarded>>,
    slots: Mutex<Slots>,
    /// Shared by the keys created once every slot is taken (see the module doc).
    overflow: (Cell, Mutex<Guarded>),
    defaults: Arc<BreakerSettings>,
    observer: O,
    seed: u64,
}

impl<O: BreakerObserver> BreakerRegistry<O> {
    /// A registry with `shards` shards (rounded up to a power of two, at least 1) whose new
    /// breakers use `defaults`; `seed` drives their jitter (with the key: the same seed and
    /// key give the same open timeouts, run after run).
    pub fn new(defaults: BreakerSettings, shards: usize, seed: u64, observer: O) -> Self {
        let n = shards.max(1).next_power_of_two();
        let defaults = Arc::new(defaults);
        // The overflow breaker's own key is never shown: its handles show theirs.
        let overflow = (
            Cell::default(),
            Mutex::new(Guarded {
                tenant: TenantId::known_valid("overflow"),
                provider: ProviderId::known_valid("overflow"),
                breaker: Breaker::new(Arc::clone(&defaults), Timestamp::ZERO, seed),
            }),
        );
        locked(&overflow.0, &overflow.1, |_| ());
        BreakerRegistry {
            shards: (0..n).map(|_| Shard::default()).collect(),
            cells: Slab::new(CELL_CHUNK_BITS),
            states: Slab::new(STATE_CHUNK_BITS),
            slots: Mutex::new(Slots::default()),
            overflow,
            defaults,
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

    #[inline]
    fn shard(&self, hash: u64) -> &Shard {
        // Bits 48.. choose the shard; the table uses the low bits for the position and the
        // top seven for its tags.
        &self.shards[(hash >> 48) as usize & (self.shards.len() - 1)]
    }

    // A slot is created in both slabs before it is put in a table or handed to a handle,
    // and chunks are never removed: every slot a caller can name exists.

    /// The cell of `slot`.
    #[inline]
    fn cell(&self, slot: u32) -> &Cell {
        if slot == OVERFLOW {
            return &self.overflow.0;
        }
        #[allow(clippy::expect_used)]
        self.cells.get(slot).expect("slot created before use")
    }

    /// The lock and state of `slot`.
    fn state(&self, slot: u32) -> &Mutex<Guarded> {
        if slot == OVERFLOW {
            return &self.overflow.1;
        }
        #[allow(clippy::expect_used)]
        self.states.get(slot).expect("slot created before use")
    }

    /// The slot and cell of `key`'s breaker in `table`, pinned. Without the table's lock,
    /// `None` may be a miss (see `table.rs`); with it, it is exact.
    #[inline]
    fn find(&self, table: &SlotTable, key: &BreakerKey) -> Option<(u32, &Cell)> {
        let tag = key.hash64() as u32; // the low bits; the shard took bits 48..
        table.find(tag, |slot| self.try_pin(slot, tag, key))
    }

    /// Pins `slot` if it holds `key`'s breaker.
    #[inline]
    fn try_pin(&self, slot: u32, tag: u32, key: &BreakerKey) -> Option<(u32, &Cell)> {
        let cell = self.cell(slot);
        // Acquire: a slot reused since the table was read is seen with its new key.
        let before = cell.refs.fetch_add(1, Ordering::Acquire);
        let holds = before & (RETIRED | DETACHED) == 0
            && cell.tag.load(Ordering::Relaxed) == tag
            // Not the allocations of its key: another parse of the same ids, or (one in
            // 2^32) another key with the same tag. Compare the ids themselves.
            && (cell.is_made_of(key) || lock(self.state(slot)).is_for(key));
        if holds {
            return Some((slot, cell));
        }
        cell.unpin(slot, &self.slots);
        None
    }

    /// A handle on `slot`, pinned by the caller.
    #[inline]
    fn handle_on<'r>(
        &'r self,
        (slot, cell): (u32, &'r Cell),
        key: Cow<'r, BreakerKey>,
    ) -> BreakerHandle<'r, O> {
        BreakerHandle {
            registry: self,
            key,
            cell,
            slot,
        }
    }

    /// The breaker for `key`, created with the default settings if missing.
    #[inline]
    pub fn handle<'r>(&'r self, key: &'r BreakerKey) -> BreakerHandle<'r, O> {
        self.handle_with(key, &self.defaults)
    }

    /// The breaker for `key`, created with `settings` if missing. An existing breaker keeps
    /// its settings until it is reset through [`BreakerRegistry::replace_settings`].
    #[inline]
    pub fn handle_with<'r>(
        &'r self,
        key: &'r BreakerKey,
        settings: &Arc<BreakerSettings>,
    ) -> BreakerHandle<'r, O> {
        let table = &self.shard(key.hash64()).0;
        match self.find(table, key) {
            Some(found) => self.handle_on(found, Cow::Borrowed(key)),
            None => self.create(key, settings),
        }
    }

    /// The slow half of [`BreakerRegistry::handle_with`]: `key` was not found without the
    /// table's lock.
    #[cold]
    #[inline(never)]
    fn create<'r>(
        &'r self,
        key: &'r BreakerKey,
        settings: &Arc<BreakerSettings>,
    ) -> BreakerHandle<'r, O> {
        let table = &self.shard(key.hash64()).0;
        let mut writer = table.write();
        // It may exist after all (created meanwhile, or moved while we looked).
        if let Some(found) = self.find(table, key) {
            return self.handle_on(found, Cow::Borrowed(key));
        }
        let Some(slot) = self.take_slot() else {
            // Overflow handles do not pin (their breaker is never evicted).
            return BreakerHandle {
                registry: self,
                key: Cow::Borrowed(key),
                cell: &self.overflow.0,
                slot: OVERFLOW,
            };
        };
        // The slot is new, or retired: no table names it, no handle pins it, and passing
        // lookups back off until it is filed again below.
        let fresh = || Guarded {
            tenant: key.tenant().clone(),
            provider: key.provider().clone(),
            breaker: Breaker::new(
                Arc::clone(settings),
                Timestamp::ZERO,
                self.seed ^ key_seed(key),
            ),
        };
        let cell = self.cells.get_or_create(slot, Cell::default);
        let state = self.states.get_or_create(slot, || Mutex::new(fresh()));
        let [tenant, provider] = key.allocations();
        cell.key_at[0].store(tenant, Ordering::Relaxed);
        cell.key_at[1].store(provider, Ordering::Relaxed);
        let tag = key.hash64() as u32;
        cell.tag.store(tag, Ordering::Relaxed);
        {
            let mut state = lock(state);
            cell.drain_into(&mut state.breaker); // what the slot's last breaker left
            *state = fresh();
            cell.publish(&state.breaker);
        }
        // Open to pins (Release: a lookup that pins it sees the key above), pinned once.
        cell.refs.fetch_and(!RETIRED, Ordering::Release);
        cell.refs.fetch_add(1, Ordering::Relaxed);
        writer.insert(tag, slot);
        self.handle_on((slot, cell), Cow::Borrowed(key))
    }

    /// The breaker for `key` if it exists (never creates one).
    #[inline]
    pub fn get<'r>(&'r self, key: &'r BreakerKey) -> Option<BreakerHandle<'r, O>> {
        let table = &self.shard(key.hash64()).0;
        let version = table.version();
        let found = self.find(table, key).or_else(|| {
            if table.unchanged_since(version) {
                return None; // a true miss: no writer came between
            }
            let _writer = table.write();
            self.find(table, key)
        })?;
        Some(self.handle_on(found, Cow::Borrowed(key)))
    }

    /// Every breaker, in no particular order.
    pub fn handles(&self) -> Vec<BreakerHandle<'_, O>> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let table = shard.0.write();
            out.extend(table.slots().map(|slot| {
                let cell = self.cell(slot);
                // Filed, under the table's lock: neither retired nor detached.
                cell.refs.fetch_add(1, Ordering::Relaxed);
                let key = lock(self.state(slot)).key();
                self.handle_on((slot, cell), Cow::Owned(key))
            }));
        }
        out
    }

    /// Number of breakers.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.write().len()).sum()
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
        let (mut evicted, mut count) = (Vec::new(), 0);
        for shard in self.shards.iter() {
            shard.0.write().retain(|slot| {
                let (cell, state) = (self.cell(slot), self.state(slot));
                // Retired first, so that no lookup pins it while we look.
                let unpinned = cell
                    .refs
                    .compare_exchange(0, RETIRED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok();
                if !unpinned {
                    return true;
                }
                if !locked(cell, state, |b| b.is_evictable(now, idle)) {
                    cell.refs.fetch_and(!RETIRED, Ordering::Release);
                    return true;
                }
                evicted.push(slot);
                false
            });
            // Given back once no table names them (another shard may reuse them at once).
            count += evicted.len();
            give_back(&self.slots, evicted.drain(..));
        }
        count
    }

    /// Removes every breaker (tests and `reset all`). Handles still held keep working on
    /// their (reset) breaker, which no lookup finds any more.
    pub fn reset_all(&self, now: Timestamp) {
        for handle in self.handles() {
            handle.reset(now);
        }
        let (cell, state) = &self.overflow;
        locked(cell, state, |b| b.reset(now, &mut |_| ()));
        for shard in self.shards.iter() {
            for slot in shard.0.write().drain() {
                let cell = self.cell(slot);
                if cell.refs.fetch_or(DETACHED, Ordering::AcqRel) == 0 {
                    cell.retire_detached(slot, &self.slots); // no holder: free now
                }
            }
        }
    }

    fn take_slot(&self) -> Option<u32> {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(slot) = slots.free.pop() {
            return Some(slot);
        }
        let slot = slots.next;
        if slot == OVERFLOW {
            return None;
        }
        slots.next += 1;
        Some(slot)
    }
}

/// Returns `freed` for reuse: retired slots that no table names and no handle pins.
#[cold]
fn give_back(slots: &Mutex<Slots>, freed: impl IntoIterator<Item = u32>) {
    let mut slots = slots.lock().unwrap_or_else(PoisonError::into_inner);
    slots.free.extend(freed);
}

/// The part of a breaker's jitter seed that comes from its key: stable across processes
/// (unlike [`BreakerKey::hash64`]), so a router started with the same seed draws the same
/// open timeouts for the same key.
fn key_seed(key: &BreakerKey) -> u64 {
    payload_fingerprint(key.tenant().as_str().as_bytes()).rotate_left(32)
        ^ payload_fingerprint(key.provider().as_str().as_bytes())
}

/// One breaker, looked up: it borrows the registry (and the caller's key), pins the
/// breaker against eviction, and is cheap to keep for the length of a request.
#[derive(Debug)]
pub struct BreakerHandle<'r, O> {
    registry: &'r BreakerRegistry<O>,
    key: Cow<'r, BreakerKey>,
    cell: &'r Cell,
    slot: u32,
}

impl<O> Drop for BreakerHandle<'_, O> {
    #[inline]
    fn drop(&mut self) {
        if self.slot != OVERFLOW {
            self.cell.unpin(self.slot, &self.registry.slots);
        }
    }
}

impl<'r, O: BreakerObserver> BreakerHandle<'r, O> {
    /// The key.
    pub fn key(&self) -> &BreakerKey {
        &self.key
    }

    fn with<T>(&self, f: impl FnOnce(&mut Breaker, &mut dyn FnMut(Transition)) -> T) -> T {
        let observer = &self.registry.observer;
        let key = &*self.key;
        let mut on = |t: Transition| observer.on_transition(key, &t);
        locked(self.cell, self.registry.state(self.slot), |breaker| {
            f(breaker, &mut on)
        })
    }

    /// [`BreakerHandle::record`] of an outcome the fast lane does not take.
    #[cold]
    #[inline(never)]
    fn record_locked(
        &self,
        admission: Admission,
        outcome: Outcome,
        now: Timestamp,
    ) -> RecordEffect {
        self.with(|b, on| b.record(admission, outcome, now, &mut |t| on(t)))
    }

    /// Asks to make one call at `now`.
    #[inline]
    pub fn acquire(&self, now: Timestamp) -> Result<Permit<'_, 'r, O>, Rejection> {
        match Breaker::admit_by_gate(self.cell.gate.load(Ordering::Acquire), now) {
            Some(admission) => Ok(Permit {
                handle: self,
                admission: Some(admission),
            }),
            None => self.acquire_locked(now),
        }
    }

    /// [`BreakerHandle::acquire`] when the gate says the state machine must decide.
    #[cold]
    #[inline(never)]
    fn acquire_locked(&self, now: Timestamp) -> Result<Permit<'_, 'r, O>, Rejection> {
        let result = self.with(|b, on| b.acquire(now, &mut |t| on(t)));
        match result {
            Ok(admission) => Ok(Permit {
                handle: self,
                admission: Some(admission),
            }),
            Err(rejection) => {
                self.registry.observer.on_rejection(&self.key, &rejection);
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
        locked(self.cell, self.registry.state(self.slot), |b| {
            Arc::clone(b.settings())
        })
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

    #[inline]
    fn record(&self, admission: Admission, outcome: Outcome, now: Timestamp) -> RecordEffect {
        let effect = if outcome == Outcome::Success && self.cell.try_count(&admission, now) {
            RecordEffect::Counted
        } else {
            self.record_locked(admission, outcome, now)
        };
        self.registry
            .observer
            .on_outcome(&self.key, outcome, effect);
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
    #[inline]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerConfig;
    use crate::keys::{ProviderId, TenantId};
    use crate::outcome::FailureKind;

    fn key(tenant: &str) -> BreakerKey {
        BreakerKey::new(
            TenantId::try_new(tenant).unwrap(),
            ProviderId::try_new("p").unwrap(),
        )
    }

    fn registry() -> BreakerRegistry<NoopObserver> {
        registry_of(2)
    }

    fn registry_of(shards: usize) -> BreakerRegistry<NoopObserver> {
        let settings = BreakerConfig::default()
            .validate(Duration::from_secs(2))
            .unwrap();
        BreakerRegistry::new(settings, shards, 7, NoopObserver)
    }

    fn fail(handle: &BreakerHandle<'_, NoopObserver>, at: Timestamp) {
        let permit = handle.acquire(at).unwrap();
        permit.record(Outcome::Failure(FailureKind::BrokerError), at);
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// Runs its closure when dropped, panicking or not: a stress thread that fails must
    /// still release the threads waiting on it, so the test fails instead of hanging.
    struct OnExit<F: FnMut()>(F);

    impl<F: FnMut()> Drop for OnExit<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }

    #[test]
    fn an_evicted_breakers_slot_serves_the_next_key_with_a_fresh_breaker() {
        let reg = registry();
        let (a, b) = (key("a"), key("b"));
        let t0 = Timestamp::from_millis(1);
        fail(&reg.handle(&a), t0);
        assert_eq!(reg.handle(&a).snapshot(t0).stats.failures, 1);
        let later = t0.add(HOUR);
        assert_eq!(reg.evict_idle(later, HOUR), 1);
        assert!(reg.get(&a).is_none());
        // `b` takes the freed slot: nothing of `a` shows through.
        let snap = reg.handle(&b).snapshot(later);
        assert_eq!((snap.stats.failures, snap.window.calls), (0, 0));
        assert_eq!(reg.slots.lock().unwrap().next, 1, "the slot was reused");
        // `a` comes back fresh, in a new slot.
        assert_eq!(reg.handle(&a).snapshot(later).stats.failures, 0);
        assert_eq!(reg.len(), 2);
    }

    #[test]
    fn a_key_parsed_again_finds_the_same_breaker() {
        let reg = registry();
        let t = Timestamp::from_millis(1);
        let first = key("a");
        reg.handle(&first).force_open(t);
        // A request parses its ids anew: other allocations, same key.
        let again = key("a");
        assert_ne!(first.allocations(), again.allocations());
        let handle = reg.handle(&again);
        assert_eq!(handle.state(t), State::Open);
        assert_eq!(handle.key(), &again);
        assert!(reg.get(&again).is_some());
        assert_eq!(reg.len(), 1);
        // Once the first key is gone, its allocations may be reused by other ids: the
        // breaker is still found by its ids' text, and no other key takes it.
        drop(first);
        let others: Vec<BreakerKey> = (0..100).map(|i| key(&format!("o{i}"))).collect();
        for k in &others {
            assert_eq!(reg.handle(k).state(t), State::Closed, "{k}");
        }
        assert_eq!(reg.handle(&key("a")).state(t), State::Open);
        assert_eq!(reg.len(), 101);
    }

    #[test]
    fn a_cells_lane_is_never_wider_than_the_breakers() {
        let cases = [
            (0, 3_000_000_000, 1_000_000_000),
            (7, 7 + 1_023, 1_023),
            (1 << 40, (1 << 40) + 123_456_789, 999_999),
            (5, u64::MAX, u64::MAX),
        ];
        for (from, until, slow_above) in cases {
            let lane = FastLane {
                generation: 0,
                from,
                until,
                slow_above,
            };
            let (u, s) = LaneLimits::unpack(LaneLimits::pack(&lane), from);
            assert!(u <= until && s <= slow_above, "{lane:?} -> {u} {s}");
            if until - from < 1 << 42 {
                assert!(until - u < 1024 && slow_above - s < 1024, "{lane:?}");
            }
        }
    }

    #[test]
    fn a_pinned_breaker_is_not_evicted() {
        let reg = registry();
        let a = key("a");
        let held = reg.handle(&a);
        let later = Timestamp::from_millis(1).add(HOUR);
        assert_eq!(reg.evict_idle(later, Duration::ZERO), 0);
        drop(held);
        assert_eq!(reg.evict_idle(later, Duration::ZERO), 1);
        assert!(reg.is_empty());
    }

    #[test]
    fn a_handle_held_across_reset_all_keeps_its_breaker_until_it_is_dropped() {
        let reg = registry();
        let (a, b) = (key("a"), key("b"));
        let t = Timestamp::from_millis(1);
        let held = reg.handle(&a);
        reg.reset_all(t);
        assert!(reg.is_empty());
        // The detached breaker still works for its holder, and its slot is not reused.
        held.force_open(t);
        assert_eq!(held.state(t), State::Open);
        assert_eq!(reg.handle(&b).state(t), State::Closed);
        assert_eq!(
            reg.handle(&a).state(t),
            State::Closed,
            "a lookup finds a new breaker"
        );
        assert_eq!(reg.slots.lock().unwrap().next, 3);
        drop(held);
        // Now the slot is free, and the next key gets it fresh.
        let c = key("c");
        let snap = reg.handle(&c).snapshot(t);
        assert_eq!((snap.state, snap.forced), (State::Closed, None));
        assert_eq!(reg.slots.lock().unwrap().next, 3, "the slot was reused");
    }

    #[test]
    fn the_lane_of_a_reused_slot_never_counts_for_its_new_breaker() {
        let reg = registry();
        let (a, b) = (key("a"), key("b"));
        let t = Timestamp::from_millis(1);
        // `a` leaves its lane armed with one success counted.
        let h = reg.handle(&a);
        h.acquire(t).unwrap().record(Outcome::Success, t);
        drop(h);
        let later = t.add(HOUR);
        assert_eq!(reg.evict_idle(later, HOUR), 1);
        let h = reg.handle(&b);
        let snap = h.snapshot(later);
        assert_eq!((snap.stats.successes, snap.window.calls), (0, 0));
        h.acquire(later).unwrap().record(Outcome::Success, later);
        assert_eq!(h.snapshot(later).stats.successes, 1);
    }

    /// Lookups without a lock race with creation (the table growing), eviction and
    /// `reset_all`: a handle must always hold its own key's breaker, and every slot must end
    /// up either filed or free, once.
    #[test]
    fn lookups_racing_with_growth_eviction_and_reset_only_ever_pin_their_own_breaker() {
        use std::sync::atomic::AtomicBool;
        const ROUNDS: u32 = 2_000;
        // Two shards: a slot evicted from one may be reused by the other at once.
        let reg = registry_of(2);
        let keys: Vec<BreakerKey> = (0..48).map(|i| key(&format!("k{i}"))).collect();
        let (done, rounds, evicted) = (
            AtomicBool::new(false),
            AtomicU32::new(0),
            AtomicUsize::new(0),
        );
        let t = Timestamp::from_millis(1);
        std::thread::scope(|scope| {
            for worker in 0..3u64 {
                let (reg, keys, done, rounds) = (&reg, &keys, &done, &rounds);
                scope.spawn(move || {
                    use crate::rng::JitterRng as _;
                    let _done = OnExit(|| done.store(true, Ordering::Relaxed));
                    let mut rng = crate::rng::SplitMix64::new(worker);
                    // Until the churn below has run its rounds, and a while at least.
                    let mut i = 0u64;
                    // Some handles are kept a while, so that a slot wrongly pinned would be
                    // reused under them.
                    let mut held = std::collections::VecDeque::new();
                    while i < 20_000 || rounds.load(Ordering::Relaxed) < ROUNDS {
                        i += 1;
                        let n = rng.next_u64() as usize % keys.len();
                        let k = &keys[n];
                        let h = reg.handle(k);
                        assert!(
                            lock(reg.state(h.slot)).is_for(k),
                            "{k} pinned another breaker"
                        );
                        h.acquire(t).unwrap().record(Outcome::Success, t);
                        held.push_back((k, h));
                        if held.len() > 4 {
                            let (k, h) = held.pop_front().unwrap();
                            assert!(lock(reg.state(h.slot)).is_for(k), "{k} lost its breaker");
                        }
                        // Now and then a key parsed anew: found by its ids, not its allocations.
                        if i.is_multiple_of(7) {
                            let again = key(&format!("k{n}"));
                            let h = reg.handle(&again);
                            assert!(
                                lock(reg.state(h.slot)).is_for(&again),
                                "{again} (parsed anew)"
                            );
                        }
                    }
                });
            }
            scope.spawn(|| {
                let _release = OnExit(|| rounds.store(u32::MAX, Ordering::Relaxed));
                let mut round = 0u32;
                while round < ROUNDS || !done.load(Ordering::Relaxed) {
                    round += 1;
                    rounds.store(round, Ordering::Relaxed);
                    // New keys make the table grow; evicting everything idle empties it.
                    for j in 0..16 {
                        drop(reg.handle(&key(&format!("n{round}-{j}"))));
                    }
                    evicted.fetch_add(
                        reg.evict_idle(t.add(HOUR), Duration::ZERO),
                        Ordering::Relaxed,
                    );
                    if round.is_multiple_of(16) {
                        reg.reset_all(t);
                    }
                }
            });
        });
        assert!(evicted.into_inner() > ROUNDS as usize, "the churn evicted");
        let filed = reg.len();
        let slots = reg.slots.lock().unwrap();
        let mut free = slots.free.clone();
        free.sort_unstable();
        free.dedup();
        assert_eq!(free.len(), slots.free.len(), "a slot was given back twice");
        assert_eq!(slots.next as usize, filed + free.len(), "a slot was lost");
    }

    /// `get` answers without the lock while the table grows, rebuilds and loses evicted
    /// breakers around the key: a breaker that exists is always found, one that does not
    /// never is.
    #[test]
    fn get_is_exact_while_the_table_changes_around_the_key() {
        use std::sync::atomic::AtomicBool;
        let reg = registry_of(1);
        let (kept, never) = (key("kept"), key("never"));
        let held = reg.handle(&kept); // pinned: never evicted
        let done = AtomicBool::new(false);
        let t = Timestamp::from_millis(1);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _done = OnExit(|| done.store(true, Ordering::Relaxed));
                for round in 0..3_000u32 {
                    for j in 0..8 {
                        drop(reg.handle(&key(&format!("n{round}-{j}"))));
                    }
                    if round % 4 == 3 {
                        reg.evict_idle(t.add(HOUR), Duration::ZERO);
                    }
                }
            });
            for _ in 0..2 {
                scope.spawn(|| {
                    while !done.load(Ordering::Relaxed) {
                        let found = reg.get(&kept).expect("a breaker that exists is found");
                        assert_eq!(found.slot, held.slot);
                        assert!(reg.get(&never).is_none());
                    }
                });
            }
        });
    }

    #[test]
    fn past_the_last_slot_new_keys_share_the_overflow_breaker() {
        let reg = registry();
        reg.slots.lock().unwrap().next = OVERFLOW;
        let (a, b) = (key("a"), key("b"));
        let t = Timestamp::from_millis(1);
        let ha = reg.handle(&a);
        assert_eq!(ha.key(), &a);
        ha.force_open(t);
        let hb = reg.handle(&b);
        assert_eq!((hb.key(), hb.state(t)), (&b, State::Open));
        assert!(reg.is_empty(), "overflow keys are in no table");
        drop((ha, hb));
        reg.reset_all(t);
        assert_eq!(reg.handle(&a).state(t), State::Closed);
    }
}

//! A shard's index of breakers, read without a lock: which slot holds the breaker whose
//! key hashes to a given tag.
//!
//! An open-addressing table with linear probing whose entries are atomic words `tag << 32
//! | slot + 1`, so a probe reads one word per candidate and, nearly always, one cache line
//! per lookup. Readers ([`SlotTable::find`]) take no lock and may miss a breaker that a
//! writer is moving meanwhile, or see a slot that a writer has just let go: a reader must
//! check what it finds (the registry pins the slot and compares its key) and treat a miss
//! as "ask again under [`SlotTable::write`]", whose answers are exact, since every change
//! to the table is made under that lock.
//!
//! The table's words live in parts that never move: part 0 holds the first [`FIRST`]
//! positions, part `p` the next `FIRST << (p - 1)`, so a table of `FIRST << n` positions is
//! parts `0..=n`. Growing adds the next part (doubling the table), moves every entry to its
//! position in the doubled table and only then publishes the new size; tombstones left by
//! removals are cleared the same way, in place. A reader probing meanwhile may miss (see
//! above), but never reads freed memory, and no memory is kept beyond the table in use.
//!
//! A reader can also tell a true miss without the lock: the table counts the times its
//! writers' lock was taken and released ([`SlotTable::version`]), and a miss during which
//! that count stood still and even is exact ([`SlotTable::unchanged_since`]).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// Positions in part 0.
const FIRST_BITS: u32 = 3;
const FIRST: usize = 1 << FIRST_BITS;
/// Parts up to 2^33 positions: room for every `u32` slot.
const PARTS: usize = 31;

/// No entry here, nor further along this probe sequence.
const EMPTY: u64 = 0;
/// A removed entry: the probe sequence goes on past it.
const TOMBSTONE: u64 = u64::MAX << 32;

fn entry(tag: u32, slot: u32) -> u64 {
    // Slot u32::MAX (the registry's overflow breaker) is never filed.
    u64::from(tag) << 32 | u64::from(slot.wrapping_add(1))
}

/// The slot of a live entry; `None` for an empty one or a tombstone.
fn slot_of(entry: u64) -> Option<u32> {
    (entry as u32).checked_sub(1)
}

/// Where position `at` lives: (part, offset in the part).
#[inline]
fn locate(at: usize) -> (usize, usize) {
    match at >> FIRST_BITS {
        0 => (0, at),
        q => {
            let part = (usize::BITS - q.leading_zeros()) as usize; // q in [2^(part-1), 2^part)
            (part, at - (FIRST << (part - 1)))
        }
    }
}

/// What the writers keep: how full the table is.
#[derive(Debug, Default)]
struct Census {
    live: usize,
    tombstones: usize,
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct SlotTable {
    /// The last part in use: the table has `FIRST << last` positions.
    last: AtomicUsize,
    parts: [OnceLock<Box<[AtomicU64]>>; PARTS],
    /// Odd while a writer holds the lock; moves on with every writer.
    version: AtomicU64,
    census: Mutex<Census>,
}

impl Default for SlotTable {
    fn default() -> Self {
        let table = SlotTable {
            last: AtomicUsize::new(0),
            parts: std::array::from_fn(|_| OnceLock::new()),
            version: AtomicU64::new(0),
            census: Mutex::new(Census::default()),
        };
        let _ = table.parts[0].set(empty_words(FIRST));
        table
    }
}

fn empty_words(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(EMPTY)).collect()
}

impl SlotTable {
    /// The word at `at`, if its part exists (every position below the published size has
    /// one: a part is created before the size that reaches it is published).
    #[inline]
    fn word(&self, at: usize) -> Option<&AtomicU64> {
        let (part, offset) = locate(at);
        self.parts.get(part)?.get()?.get(offset)
    }

    /// The positions in use.
    #[inline]
    fn len(&self) -> usize {
        FIRST << self.last.load(Ordering::Acquire)
    }

    /// The first `Some` that `check` returns for the slots filed under `tag`, in probe
    /// order; `None` if there is none. Lock-free: see the module doc for what a reader may
    /// see without the writers' lock; with it held, the answer is exact.
    #[inline]
    pub(crate) fn find<T>(&self, tag: u32, mut check: impl FnMut(u32) -> Option<T>) -> Option<T> {
        let len = self.len();
        let mut at = tag as usize & (len - 1);
        for _ in 0..len {
            let word = self.word(at)?.load(Ordering::Acquire);
            if word == EMPTY {
                return None;
            }
            if (word >> 32) as u32 == tag
                && let Some(found) = slot_of(word).and_then(&mut check)
            {
                return Some(found);
            }
            at = (at + 1) & (len - 1);
        }
        None
    }

    /// The writers' lock: every change goes through it.
    pub(crate) fn write(&self) -> TableWriter<'_> {
        let census = self.census.lock().unwrap_or_else(PoisonError::into_inner);
        self.version.fetch_add(1, Ordering::Relaxed);
        fence(Ordering::Release); // the odd count is seen before any change it covers
        TableWriter {
            table: self,
            census,
        }
    }

    /// Where the writers stand, to be read before a [`SlotTable::find`].
    #[inline]
    pub(crate) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Whether no writer held the lock between [`SlotTable::version`] (which returned
    /// `version`) and now: then a `None` from a `find` made in between is exact.
    #[inline]
    pub(crate) fn unchanged_since(&self, version: u64) -> bool {
        fence(Ordering::Acquire); // the find's reads happen before the count is read again
        version.is_multiple_of(2) && self.version.load(Ordering::Relaxed) == version
    }

    /// Every word in use.
    fn words(&self) -> impl Iterator<Item = &AtomicU64> {
        let last = self.last.load(Ordering::Acquire);
        self.parts[..=last]
            .iter()
            .filter_map(OnceLock::get)
            .flat_map(|part| part.iter())
    }
}

/// The table under its writers' lock.
pub(crate) struct TableWriter<'t> {
    table: &'t SlotTable,
    census: MutexGuard<'t, Census>,
}

impl Drop for TableWriter<'_> {
    fn drop(&mut self) {
        // Even again, after every change (the lock is released after this).
        self.table.version.fetch_add(1, Ordering::Release);
    }
}

impl TableWriter<'_> {
    /// Files `slot` under `tag` (not filed yet). Published with a releasing store: whoever
    /// finds it sees what was written before.
    pub(crate) fn insert(&mut self, tag: u32, slot: u32) {
        // At most 7/8 full, tombstones included, so probe sequences stay short and end.
        if (self.census.live + self.census.tombstones + 1) * 8 > self.table.len() * 7 {
            self.make_room();
        }
        self.place(entry(tag, slot), self.table.len());
        self.census.live += 1;
    }

    /// Stores `word` at the first position without a live entry along its probe sequence
    /// in a table of `len` positions.
    fn place(&mut self, word: u64, len: usize) {
        let mut at = (word >> 32) as usize & (len - 1);
        for _ in 0..len {
            let Some(here) = self.table.word(at) else {
                return; // unreachable: `len` positions exist
            };
            let old = here.load(Ordering::Relaxed);
            if slot_of(old).is_none() {
                if old == TOMBSTONE {
                    self.census.tombstones -= 1;
                }
                here.store(word, Ordering::Release);
                return;
            }
            at = (at + 1) & (len - 1);
        }
    }

    /// Clears the tombstones, doubling the table if more than half of it is live.
    #[cold]
    fn make_room(&mut self) {
        let live: Vec<u64> = self.live_words().collect();
        let last = self.table.last.load(Ordering::Relaxed);
        let grow = (live.len() + 1) * 2 > self.table.len() && last + 1 < PARTS;
        // Readers probing meanwhile may miss: they ask again under this lock.
        for word in self.table.words() {
            word.store(EMPTY, Ordering::Relaxed);
        }
        self.census.tombstones = 0;
        let len = if grow {
            let _ = self.table.parts[last + 1].set(empty_words(FIRST << last));
            self.table.len() * 2
        } else {
            self.table.len()
        };
        for word in live {
            self.place(word, len);
        }
        if grow {
            self.table.last.store(last + 1, Ordering::Release);
        }
    }

    fn live_words(&self) -> impl Iterator<Item = u64> + '_ {
        self.table
            .words()
            .map(|w| w.load(Ordering::Relaxed))
            .filter(|&w| slot_of(w).is_some())
    }

    /// The slots filed.
    pub(crate) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.live_words().filter_map(slot_of)
    }

    /// How many slots are filed.
    pub(crate) fn len(&self) -> usize {
        self.census.live
    }

    /// Keeps the slots for which `keep` says so.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        for word in self.table.words() {
            let Some(slot) = slot_of(word.load(Ordering::Relaxed)) else {
                continue;
            };
            if !keep(slot) {
                word.store(TOMBSTONE, Ordering::Release);
                self.census.live -= 1;
                self.census.tombstones += 1;
            }
        }
    }

    /// Removes every slot, returning them.
    pub(crate) fn drain(&mut self) -> Vec<u32> {
        let slots = self.slots().collect();
        for word in self.table.words() {
            word.store(EMPTY, Ordering::Release);
        }
        *self.census = Census::default();
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(table: &SlotTable, tag: u32) -> Vec<u32> {
        let mut found = Vec::new();
        table.find(tag, |slot| {
            found.push(slot);
            None::<()>
        });
        found
    }

    #[test]
    fn positions_map_to_distinct_words_part_by_part() {
        let mut seen = std::collections::HashSet::new();
        for at in 0..FIRST << 12 {
            let (part, offset) = locate(at);
            let size = if part == 0 {
                FIRST
            } else {
                FIRST << (part - 1)
            };
            assert!(offset < size, "{at}");
            assert!(seen.insert((part, offset)), "{at}");
            assert!(
                FIRST << part > at,
                "{at} is inside a table of parts 0..={part}"
            );
        }
        assert_eq!(
            locate((FIRST << (PARTS - 1)) - 1),
            (PARTS - 1, (FIRST << (PARTS - 2)) - 1)
        );
    }

    #[test]
    fn slots_are_found_under_their_tags_through_growth_removal_and_rebuilds() {
        let table = SlotTable::default();
        let mut model = std::collections::BTreeMap::<u32, Vec<u32>>::new();
        // Tags that collide on the low bits, and one tag shared by several slots.
        let tag = |i: u32| {
            if i.is_multiple_of(5) {
                7
            } else {
                i.wrapping_mul(0x9E37_79B9) & !0xF
            }
        };
        for i in 0..2_000u32 {
            table.write().insert(tag(i), i);
            model.entry(tag(i)).or_default().push(i);
            if i.is_multiple_of(3) {
                let gone = i / 2;
                table.write().retain(|s| s != gone);
                for slots in model.values_mut() {
                    slots.retain(|&s| s != gone);
                }
            }
        }
        for (&t, slots) in &model {
            let mut found = all(&table, t);
            found.sort_unstable();
            assert_eq!(&found, slots, "tag {t}");
        }
        let w = table.write();
        assert_eq!(w.len(), model.values().map(Vec::len).sum::<usize>());
        assert_eq!(w.slots().count(), w.len());
        assert_eq!(table.len(), 2048, "1,333 live slots at most 7/8 full");
        assert_eq!(
            table.words().count(),
            2048,
            "no words beyond the table in use"
        );
    }

    #[test]
    fn a_miss_is_known_exact_only_if_no_writer_came_between() {
        let table = SlotTable::default();
        let before = table.version();
        assert!(all(&table, 1).is_empty());
        assert!(table.unchanged_since(before));
        table.write().insert(1, 1);
        assert!(!table.unchanged_since(before), "a writer came between");
        let writer = table.write();
        let during = table.version();
        assert!(!table.unchanged_since(during), "a writer holds the lock");
        drop(writer);
        let after = table.version();
        assert!(table.unchanged_since(after));
    }

    #[test]
    fn tombstones_are_cleared_in_place_when_few_slots_are_live() {
        let table = SlotTable::default();
        for round in 0..1_000u32 {
            table.write().insert(round, round);
            table.write().retain(|s| s != round);
        }
        assert_eq!(table.len(), FIRST, "never grew");
        let mut w = table.write();
        assert_eq!(w.len(), 0);
        w.insert(3, 3);
        assert_eq!(w.drain(), vec![3]);
        drop(w);
        assert!(all(&table, 3).is_empty());
    }
}

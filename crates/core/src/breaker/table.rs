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
//! Growing moves the entries to a new array twice the size, published by one store; the
//! older arrays stay alive until the table drops (a reader may still be probing one), which
//! at most doubles the table's memory. Tombstones left by removals are cleared by rebuilding
//! the array in place.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};

/// Entries of the first array (level 0); level `l` has `FIRST << l`.
const FIRST_BITS: u32 = 3;
/// Levels up to 2^33 entries: room for every `u32` slot.
const LEVELS: usize = 31;

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

/// What the writers keep: how full the current array is.
#[derive(Debug, Default)]
pub(crate) struct Census {
    live: usize,
    tombstones: usize,
}

/// See the module doc.
#[derive(Debug)]
pub(crate) struct SlotTable {
    /// The level of the array in use.
    current: AtomicUsize,
    levels: [OnceLock<Box<[AtomicU64]>>; LEVELS],
    census: Mutex<Census>,
}

fn array(level: usize) -> Box<[AtomicU64]> {
    (0..FIRST << level).map(|_| AtomicU64::new(EMPTY)).collect()
}

const FIRST: usize = 1 << FIRST_BITS;

impl Default for SlotTable {
    fn default() -> Self {
        let levels = std::array::from_fn(|_| OnceLock::new());
        let table = SlotTable {
            current: AtomicUsize::new(0),
            levels,
            census: Mutex::new(Census::default()),
        };
        let _ = table.levels[0].set(array(0));
        table
    }
}

impl SlotTable {
    /// The array in use.
    #[inline]
    fn entries(&self) -> &[AtomicU64] {
        let level = self.current.load(Ordering::Acquire);
        // The level is published after its array is set.
        self.levels[level].get().map_or(&[], |a| a)
    }

    /// The first `Some` that `check` returns for the slots filed under `tag`, in probe
    /// order; `None` if there is none. Lock-free: see the module doc for what a reader may
    /// see without the writers' lock; with it held, the answer is exact.
    #[inline]
    pub(crate) fn find<T>(&self, tag: u32, check: impl FnMut(u32) -> Option<T>) -> Option<T> {
        probe(self.entries(), tag, check)
    }

    /// The writers' lock: every change goes through it.
    pub(crate) fn write(&self) -> TableWriter<'_> {
        TableWriter {
            table: self,
            census: self.census.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }
}

#[inline]
fn probe<T>(entries: &[AtomicU64], tag: u32, mut check: impl FnMut(u32) -> Option<T>) -> Option<T> {
    let mask = entries.len().wrapping_sub(1);
    let mut at = tag as usize & mask;
    for _ in 0..entries.len() {
        let word = entries[at].load(Ordering::Acquire);
        if word == EMPTY {
            return None;
        }
        if (word >> 32) as u32 == tag
            && let Some(found) = slot_of(word).and_then(&mut check)
        {
            return Some(found);
        }
        at = (at + 1) & mask;
    }
    None
}

/// The table under its writers' lock.
pub(crate) struct TableWriter<'t> {
    table: &'t SlotTable,
    census: MutexGuard<'t, Census>,
}

impl TableWriter<'_> {
    /// Files `slot` under `tag` (not filed yet). Published with a releasing store: whoever
    /// finds it sees what was written before.
    pub(crate) fn insert(&mut self, tag: u32, slot: u32) {
        let len = self.table.entries().len();
        // At most 7/8 full, tombstones included, so probe sequences stay short and end.
        if (self.census.live + self.census.tombstones + 1) * 8 > len * 7 {
            self.make_room();
        }
        let entries = self.table.entries();
        let mask = entries.len() - 1;
        let mut at = tag as usize & mask;
        loop {
            let word = entries[at].load(Ordering::Relaxed);
            if slot_of(word).is_none() {
                if word == TOMBSTONE {
                    self.census.tombstones -= 1;
                }
                entries[at].store(entry(tag, slot), Ordering::Release);
                self.census.live += 1;
                return;
            }
            at = (at + 1) & mask;
        }
    }

    /// Rebuilds the array without its tombstones, in a new array twice the size if more
    /// than half of it is live.
    #[cold]
    fn make_room(&mut self) {
        let live: Vec<u64> = self.live_entries().collect();
        let level = self.table.current.load(Ordering::Relaxed);
        let grow = (live.len() + 1) * 2 > FIRST << level && level + 1 < LEVELS;
        let target = if grow {
            let next = array(level + 1);
            let _ = self.table.levels[level + 1].set(next);
            level + 1
        } else {
            // Readers probing meanwhile may miss: they ask again under this lock.
            for word in self.table.entries() {
                word.store(EMPTY, Ordering::Relaxed);
            }
            level
        };
        let entries = self.table.levels[target].get().map_or(&[][..], |a| a);
        let mask = entries.len() - 1;
        for word in live {
            let mut at = (word >> 32) as usize & mask;
            while entries[at].load(Ordering::Relaxed) != EMPTY {
                at = (at + 1) & mask;
            }
            entries[at].store(word, Ordering::Release);
        }
        self.table.current.store(target, Ordering::Release);
        self.census.tombstones = 0;
    }

    fn live_entries(&self) -> impl Iterator<Item = u64> + '_ {
        self.table
            .entries()
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .filter(|&w| slot_of(w).is_some())
    }

    /// The slots filed.
    pub(crate) fn slots(&self) -> impl Iterator<Item = u32> + '_ {
        self.live_entries().filter_map(slot_of)
    }

    /// How many slots are filed.
    pub(crate) fn len(&self) -> usize {
        self.census.live
    }

    /// Keeps the slots for which `keep` says so.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(u32) -> bool) {
        for word in self.table.entries() {
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
        for word in self.table.entries() {
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
            if i % 3 == 0 {
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
        assert!(table.entries().len() <= 4096, "{}", table.entries().len());
    }

    #[test]
    fn tombstones_are_cleared_in_place_when_few_slots_are_live() {
        let table = SlotTable::default();
        for round in 0..1_000u32 {
            table.write().insert(round, round);
            table.write().retain(|s| s != round);
        }
        assert_eq!(table.current.load(Ordering::Relaxed), 0, "never grew");
        let mut w = table.write();
        assert_eq!(w.len(), 0);
        w.insert(3, 3);
        assert_eq!(w.drain(), vec![3]);
        drop(w);
        assert!(all(&table, 3).is_empty());
    }
}

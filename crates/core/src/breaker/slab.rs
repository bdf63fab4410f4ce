//! Storage whose elements never move: what lets a breaker handle borrow its breaker's cells
//! straight from the registry.
//!
//! A [`Slab`] is an array indexed by `u32` that grows in chunks of `2^chunk_bits` elements.
//! A chunk is created (every element built at once) the first time an index in it is
//! asked for, and is never moved or freed before the slab: so `&T` handed out by
//! [`Slab::get`] lives as long as the borrow of the slab, whatever other threads add
//! meanwhile. Chunks are found through a directory of levels that double in size (level
//! `l` lists chunks `2^l - 1 ..= 2^(l+1) - 2`), so the whole `u32` range is reachable while
//! a small slab costs one chunk and a few empty levels. Reading an element is three
//! dependent loads of memory that stays in cache (level, chunk pointer, element) and no
//! lock; creating a chunk is the only write, done once through [`OnceLock`].
//!
//! The slab knows nothing of which indices are in use: its owner allocates them (the
//! registry keeps a free list) and must create an index with [`Slab::get_or_create`]
//! before it reads it with [`Slab::get`].

use std::sync::OnceLock;

/// Levels needed for every chunk of a `u32` index space with chunks of one element.
const LEVELS: usize = 33;

type Chunk<T> = OnceLock<Box<[T]>>;

/// An append-only, chunked array (see the module doc).
pub(crate) struct Slab<T> {
    chunk_bits: u32,
    levels: [OnceLock<Box<[Chunk<T>]>>; LEVELS],
}

impl<T> std::fmt::Debug for Slab<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chunks: usize = self
            .levels
            .iter()
            .filter_map(OnceLock::get)
            .map(|level| level.iter().filter(|c| c.get().is_some()).count())
            .sum();
        f.debug_struct("Slab")
            .field("chunk_len", &(1u64 << self.chunk_bits))
            .field("chunks", &chunks)
            .finish()
    }
}

impl<T> Slab<T> {
    /// An empty slab whose chunks hold `2^chunk_bits` elements (`chunk_bits` at most 31).
    pub(crate) fn new(chunk_bits: u32) -> Self {
        Slab {
            chunk_bits: chunk_bits.min(31),
            levels: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Where `index` lives: (level, chunk within the level, element within the chunk).
    #[inline]
    fn locate(&self, index: u32) -> (usize, usize, usize) {
        let chunk = u64::from(index >> self.chunk_bits) + 1; // 1 ..= 2^32
        let level = 63 - chunk.leading_zeros(); // chunk in [2^level, 2^(level+1))
        let within = chunk - (1u64 << level);
        let element = index & ((1u32 << self.chunk_bits) - 1);
        (level as usize, within as usize, element as usize)
    }

    /// The element at `index`, if its chunk has been created.
    #[inline]
    pub(crate) fn get(&self, index: u32) -> Option<&T> {
        let (level, within, element) = self.locate(index);
        self.levels[level].get()?[within].get()?.get(element)
    }

    /// The element at `index`, creating its chunk with `make` (called once per element of
    /// the chunk) if it does not exist yet.
    pub(crate) fn get_or_create(&self, index: u32, mut make: impl FnMut() -> T) -> &T {
        let (level, within, element) = self.locate(index);
        let chunks = self.levels[level].get_or_init(|| {
            // The last level holds only the chunks that `u32` indices reach.
            let chunks_in_all = 1u64 << (32 - self.chunk_bits);
            let len = (1u64 << level).min(chunks_in_all + 1 - (1u64 << level));
            (0..len)
                .map(|_| OnceLock::new())
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        let chunk = chunks[within].get_or_init(|| {
            (0..1usize << self.chunk_bits)
                .map(|_| make())
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        &chunk[element]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_created_a_chunk_at_a_time_and_never_move() {
        let slab: Slab<u32> = Slab::new(2);
        assert!(slab.get(0).is_none());
        let mut made = 0;
        let first: *const u32 = slab.get_or_create(5, || {
            made += 1;
            7
        });
        assert_eq!(made, 4, "one chunk of four");
        assert_eq!(slab.get(4), Some(&7));
        assert!(slab.get(3).is_none() && slab.get(8).is_none());
        for i in [0u32, 100, 4096, 1 << 20, u32::MAX] {
            assert_eq!(*slab.get_or_create(i, || i), i);
        }
        assert!(std::ptr::eq(first, slab.get(5).unwrap()));
        assert_eq!(slab.get(u32::MAX), Some(&u32::MAX));
    }

    #[test]
    fn indices_map_to_distinct_places() {
        let slab: Slab<()> = Slab::new(3);
        let mut seen = std::collections::HashSet::new();
        for i in 0..10_000u32 {
            assert!(seen.insert(slab.locate(i)), "index {i}");
        }
        assert_eq!(slab.locate(u32::MAX), (29, 0, 7));
        assert_eq!(slab.locate(u32::MAX - 8), (28, (1 << 28) - 1, 7));
        assert_eq!(slab.locate((1 << 31) - 1), (28, 0, 7));
    }
}

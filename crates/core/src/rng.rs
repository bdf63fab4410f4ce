//! Injected randomness for jitter.
//!
//! Jitter is the only randomness in the core. It comes through [`JitterRng`] so that
//! tests, replays and the scenario runner can seed it and reproduce a run exactly.

/// A source of uniformly distributed random numbers.
pub trait JitterRng {
    /// The next 64 random bits.
    fn next_u64(&mut self) -> u64;

    /// A uniform float in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        // 53 random mantissa bits.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform float in `[-1, 1)`.
    fn next_signed_unit(&mut self) -> f64 {
        self.next_unit() * 2.0 - 1.0
    }
}

/// SplitMix64: tiny, fast, seedable, statistically good enough for jitter. Not for secrets.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator seeded with `seed`; equal seeds give equal sequences.
    pub const fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }
}

impl JitterRng for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Applies `± fraction` jitter to `value`: `value × (1 + fraction × u)`, `u` uniform in
/// `[-1, 1)`, never negative. `fraction` 0 returns `value` unchanged without drawing.
pub fn jittered(value: f64, fraction: f64, rng: &mut impl JitterRng) -> f64 {
    if fraction <= 0.0 {
        return value;
    }
    (value * (1.0 + fraction * rng.next_signed_unit())).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_seeds_give_equal_sequences() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn units_stay_in_range() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..10_000 {
            let u = rng.next_unit();
            assert!((0.0..1.0).contains(&u));
            let s = rng.next_signed_unit();
            assert!((-1.0..1.0).contains(&s));
        }
    }

    #[test]
    fn jitter_stays_within_the_fraction_and_never_goes_negative() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..10_000 {
            let v = jittered(100.0, 0.2, &mut rng);
            assert!((80.0..=120.0).contains(&v), "{v}");
            assert!(jittered(100.0, 5.0, &mut rng) >= 0.0);
        }
        assert_eq!(jittered(100.0, 0.0, &mut rng), 100.0);
    }
}

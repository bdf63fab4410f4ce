//! Exponential backoff with jitter, safe at any retry number.
//!
//! The delay before retry `n` (1-based) is `base × 2^(n-1)`, computed in saturating integer
//! arithmetic and capped at `max`; jitter multiplies it by `1 ± jitter` and the result is
//! clamped to `[0, max]`. There is no overflow at any `n` (Polly #2163 went negative after
//! retry 1025) and no negative delay whatever the jitter (failsafe #115).

use std::time::Duration;

use super::config::RetryConfig;
use crate::rng::{JitterRng, jittered};

/// The delay to wait before retry number `retry` (1 = the first retry). `retry` 0 is
/// treated as 1.
pub fn delay_before_retry(config: &RetryConfig, retry: u32, rng: &mut impl JitterRng) -> Duration {
    let cap = config.max_ms;
    let doublings = retry.max(1) - 1;
    let factor = if doublings >= 63 {
        u64::MAX
    } else {
        1u64 << doublings
    };
    let raw = config.base_ms.saturating_mul(factor).min(cap);
    let ms = jittered(raw as f64, config.jitter, rng).clamp(0.0, cap as f64);
    Duration::from_secs_f64(ms / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn doubles_from_base_up_to_the_cap_without_jitter() {
        let c = RetryConfig {
            base_ms: 2000,
            max_ms: 30_000,
            jitter: 0.0,
            ..Default::default()
        };
        let mut rng = SplitMix64::new(0);
        let ms: Vec<u128> = [1, 2, 3, 4, 5, 10, 1025, u32::MAX]
            .iter()
            .map(|n| delay_before_retry(&c, *n, &mut rng).as_millis())
            .collect();
        assert_eq!(
            ms,
            [2000, 4000, 8000, 16_000, 30_000, 30_000, 30_000, 30_000]
        );
    }

    #[test]
    fn jitter_never_leaves_zero_to_cap() {
        let c = RetryConfig {
            base_ms: 100,
            max_ms: 300,
            jitter: 1.0,
            ..Default::default()
        };
        let mut rng = SplitMix64::new(9);
        for n in [1, 2, 3, 64, 1024, u32::MAX] {
            for _ in 0..1000 {
                let d = delay_before_retry(&c, n, &mut rng);
                assert!(d <= Duration::from_millis(300), "{d:?}");
            }
        }
    }
}

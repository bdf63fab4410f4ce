//! Reading the router's journals: when each breaker was open or half-open, which
//! broker-side attempts fell inside those periods, the bounds the retry and breaker
//! configurations put on measured times, and the bucketed series the charts draw.

use beamline_core::breaker::BreakerConfig;
use beamline_core::retry::RetryConfig;

use crate::client::{AttemptRecord, TransitionRecord};

/// A period in one state, in router-clock microseconds; `end` is `None` while ongoing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    /// Entered at.
    pub start: u64,
    /// Left at.
    pub end: Option<u64>,
    /// Index of the transition that entered it.
    pub entered_by: usize,
}

impl Period {
    /// Whether `t` lies in `[start + grace, end)`.
    pub fn contains(&self, t: u64, grace: u64) -> bool {
        t >= self.start.saturating_add(grace) && self.end.is_none_or(|e| t < e)
    }
}

/// The transitions of one key, in order.
pub fn of_key<'a>(
    all: &'a [TransitionRecord],
    tenant: &str,
    provider: &str,
) -> Vec<&'a TransitionRecord> {
    all.iter()
        .filter(|t| t.tenant_id == tenant && t.provider_id == provider)
        .collect()
}

/// The periods the key spent in `state`.
pub fn periods(transitions: &[&TransitionRecord], state: &str) -> Vec<Period> {
    let mut out = Vec::new();
    for (i, t) in transitions.iter().enumerate() {
        if t.to == state {
            let end = transitions.get(i + 1).map(|n| n.at_us);
            out.push(Period {
                start: t.at_us,
                end,
                entered_by: i,
            });
        }
    }
    out
}

/// Attempts of the key that started inside `period` (after `grace` µs).
pub fn attempts_in<'a>(
    attempts: &'a [AttemptRecord],
    tenant: &str,
    provider: &str,
    period: &Period,
    grace: u64,
) -> Vec<&'a AttemptRecord> {
    attempts
        .iter()
        .filter(|a| {
            a.tenant_id == tenant && a.provider_id == provider && period.contains(a.at_us, grace)
        })
        .collect()
}

/// `base × 2^(n−1)` for `n ≥ 1` (0 counts as 1), saturating, capped at `cap`.
fn doubled_capped(base: u64, n: u32, cap: u64) -> u64 {
    let doublings = n.max(1) - 1;
    let factor = if doublings >= 63 {
        u64::MAX
    } else {
        1u64 << doublings
    };
    base.saturating_mul(factor).min(cap)
}

/// The range, in ms, of the delay slept before retry number `retry` (1 = first retry):
/// `min(base × 2^(retry-1), max) × (1 ± jitter)`, clamped to `[0, max]` (DESIGN.md §4).
pub fn delay_bounds_ms(retry: &RetryConfig, n: u32) -> (f64, f64) {
    let raw = doubled_capped(retry.base_ms, n, retry.max_ms) as f64;
    let cap = retry.max_ms as f64;
    (
        (raw * (1.0 - retry.jitter)).clamp(0.0, cap),
        (raw * (1.0 + retry.jitter)).clamp(0.0, cap),
    )
}

/// The range, in µs, of the open period after the `n`th opening without a close in
/// between (1 = first): `min(open_timeout × 2^(n-1), open_timeout_max) × (1 ± jitter)`.
pub fn open_period_bounds_us(breaker: &BreakerConfig, n: u32) -> (u64, u64) {
    let capped =
        doubled_capped(breaker.open_timeout_ms, n, breaker.open_timeout_max_ms) as f64 * 1000.0;
    let j = breaker.open_timeout_jitter;
    (
        (capped * (1.0 - j)) as u64,
        // truncated like the breaker's own jittered timeout; checks allow ±1 ms
        (capped * (1.0 + j)) as u64,
    )
}

/// Spread (max − min) of `values`; 0 for fewer than two.
pub fn spread(values: &[u64]) -> u64 {
    match (values.iter().min(), values.iter().max()) {
        (Some(lo), Some(hi)) if values.len() > 1 => hi - lo,
        _ => 0,
    }
}

/// A chart bucket width, in ms, for a span of `span_ms`: about 80 buckets, from a
/// 1-2-5 series between 10 ms and 10 s.
pub fn bucket_ms(span_ms: u64) -> u64 {
    const NICE: [u64; 10] = [10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000];
    let target = span_ms / 80;
    NICE.iter()
        .copied()
        .find(|b| *b >= target)
        .unwrap_or(10_000)
}

/// Counts of `times_us` per bucket of `bucket_ms` from `start_us`, as a rate per second.
pub fn rate_per_sec(times_us: &[u64], start_us: u64, buckets: usize, bucket_ms: u64) -> Vec<f64> {
    let mut counts = vec![0u64; buckets];
    for t in times_us {
        if *t < start_us {
            continue;
        }
        let i = ((t - start_us) / 1000 / bucket_ms) as usize;
        if let Some(c) = counts.get_mut(i) {
            *c += 1;
        }
    }
    counts
        .into_iter()
        .map(|c| c as f64 * 1000.0 / bucket_ms as f64)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(at_us: u64, to: &str) -> TransitionRecord {
        TransitionRecord {
            at_us,
            tenant_id: "t".into(),
            provider_id: "p".into(),
            from: String::new(),
            to: to.into(),
            reason: String::new(),
            rules: vec![],
        }
    }

    fn a(at_us: u64) -> AttemptRecord {
        AttemptRecord {
            at_us,
            tenant_id: "t".into(),
            provider_id: "p".into(),
            faulted: false,
        }
    }

    #[test]
    fn attempts_are_assigned_to_the_periods_they_started_in() {
        let all = vec![t(100, "open"), t(1100, "half_open"), t(1200, "closed")];
        let key = of_key(&all, "t", "p");
        let open = periods(&key, "open");
        assert_eq!(
            open,
            vec![Period {
                start: 100,
                end: Some(1100),
                entered_by: 0
            }]
        );
        let attempts = vec![a(99), a(102), a(600), a(1100), a(1150), a(1200)];
        assert_eq!(attempts_in(&attempts, "t", "p", &open[0], 0).len(), 2);
        assert_eq!(attempts_in(&attempts, "t", "p", &open[0], 5).len(), 1);
        let half = periods(&key, "half_open");
        assert_eq!(attempts_in(&attempts, "t", "p", &half[0], 0).len(), 2);
    }

    #[test]
    fn delay_bounds_follow_the_jittered_capped_doubling() {
        let r = RetryConfig {
            base_ms: 100,
            max_ms: 300,
            jitter: 0.2,
            ..RetryConfig::default()
        };
        assert_eq!(delay_bounds_ms(&r, 1), (80.0, 120.0));
        assert_eq!(delay_bounds_ms(&r, 2), (160.0, 240.0));
        assert_eq!(delay_bounds_ms(&r, 3), (240.0, 300.0));
        assert_eq!(delay_bounds_ms(&r, 1000), (240.0, 300.0));
    }

    #[test]
    fn open_period_bounds_back_off_up_to_the_cap() {
        let b = BreakerConfig {
            open_timeout_ms: 1000,
            open_timeout_max_ms: 3000,
            open_timeout_jitter: 0.1,
            ..BreakerConfig::default()
        };
        assert_eq!(open_period_bounds_us(&b, 1), (900_000, 1_100_000));
        assert_eq!(open_period_bounds_us(&b, 2), (1_800_000, 2_200_000));
        assert_eq!(open_period_bounds_us(&b, 3), (2_700_000, 3_300_000));
    }

    #[test]
    fn rates_and_buckets() {
        assert_eq!(bucket_ms(1000), 20);
        assert_eq!(bucket_ms(0), 10);
        assert_eq!(bucket_ms(10_000_000), 10_000);
        let r = rate_per_sec(&[1000, 1500, 60_000, 5], 1000, 3, 50);
        assert_eq!(r, vec![40.0, 20.0, 0.0]);
        assert_eq!(spread(&[5, 1, 9]), 8);
        assert_eq!(spread(&[5]), 0);
    }
}

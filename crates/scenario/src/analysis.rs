//! Reading the router's journals: when each breaker was open or half-open, and which
//! broker-side attempts fell inside those periods.

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
}

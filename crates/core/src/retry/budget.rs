//! The retry budget: retries may add at most `budget_percent` to a provider's request
//! rate, with a floor of `budget_min_per_sec` retries per second.
//!
//! Requests deposit, retries withdraw, over a sliding window of ten one-second buckets:
//! a retry is allowed while `retries < max(budget_min_per_sec × 10, percent% × requests)`
//! in the window. During a provider-wide outage this caps the extra load retries add to
//! what the provider already sees, before the breakers have opened.

use crate::time::Timestamp;

const BUCKETS: usize = 10;
const BUCKET_NANOS: u64 = 1_000_000_000;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    epoch: u64,
    requests: u32,
    retries: u32,
}

/// One provider's retry budget.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    percent: f64,
    min_per_sec: u32,
    buckets: [Bucket; BUCKETS],
}

impl RetryBudget {
    /// A budget allowing `percent` retries per 100 requests, and at least `min_per_sec`
    /// retries per second.
    pub fn new(percent: f64, min_per_sec: u32) -> Self {
        RetryBudget {
            percent: percent.max(0.0),
            min_per_sec,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    fn bucket(&mut self, now: Timestamp) -> &mut Bucket {
        let epoch = now.as_nanos() / BUCKET_NANOS;
        let b = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if b.epoch != epoch {
            *b = Bucket {
                epoch,
                requests: 0,
                retries: 0,
            };
        }
        b
    }

    fn totals(&self, now: Timestamp) -> (u64, u64) {
        let epoch = now.as_nanos() / BUCKET_NANOS;
        self.buckets
            .iter()
            .filter(|b| b.epoch + BUCKETS as u64 > epoch && b.epoch <= epoch)
            .fold((0, 0), |(q, r), b| {
                (q + u64::from(b.requests), r + u64::from(b.retries))
            })
    }

    /// Counts one request (its first attempt).
    pub fn deposit(&mut self, now: Timestamp) {
        let b = self.bucket(now);
        b.requests = b.requests.saturating_add(1);
    }

    /// Takes one retry from the budget if it allows one.
    pub fn try_withdraw(&mut self, now: Timestamp) -> bool {
        let (requests, retries) = self.totals(now);
        let floor = f64::from(self.min_per_sec) * BUCKETS as f64;
        let share = self.percent / 100.0 * requests as f64;
        if (retries as f64) < floor.max(share) {
            let b = self.bucket(now);
            b.retries = b.retries.saturating_add(1);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_allows_min_per_sec_times_the_window() {
        let mut b = RetryBudget::new(0.0, 2);
        let now = Timestamp::from_millis(500);
        assert_eq!((0..30).filter(|_| b.try_withdraw(now)).count(), 20);
    }

    #[test]
    fn the_share_grows_with_requests_and_expires_with_the_window() {
        let mut b = RetryBudget::new(20.0, 0);
        let now = Timestamp::from_millis(0);
        for _ in 0..100 {
            b.deposit(now);
        }
        assert_eq!((0..50).filter(|_| b.try_withdraw(now)).count(), 20);
        let later = Timestamp::from_millis(10_000);
        assert!(
            !b.try_withdraw(later),
            "requests older than the window no longer count"
        );
    }
}

//! Monotonic time as plain data.
//!
//! A [`Timestamp`] is a count of nanoseconds since an arbitrary origin chosen by the
//! [`Clock`] that produced it. Timestamps from different clocks must not be compared.
//! Arithmetic saturates: a timestamp never wraps and a difference is never negative.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A point on a monotonic clock, in nanoseconds since the clock's origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's origin.
    pub const ZERO: Timestamp = Timestamp(0);

    /// A timestamp `nanos` nanoseconds after the origin.
    pub const fn from_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// A timestamp `millis` milliseconds after the origin (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the origin.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Whole milliseconds since the origin.
    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// This timestamp moved `d` later (saturating at the end of time).
    // Saturating, unlike `std::ops::Add` would suggest; kept as a named method.
    #[allow(clippy::should_implement_trait)]
    pub fn add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_nanos(d)))
    }

    /// Time from `earlier` to `self`; zero when `earlier` is not earlier.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// Time from `self` until `later`; zero when `later` has passed.
    pub fn until(self, later: Timestamp) -> Duration {
        later.since(self)
    }
}

/// A duration in nanoseconds as `u64`, saturating (584 years is the end of time here).
pub fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The only way the router reads time.
///
/// The production clock lives in the service shell (it reads tokio's clock so that
/// integration tests can pause time); tests and the replay tool use [`ManualClock`].
pub trait Clock: Send + Sync {
    /// The current monotonic time.
    fn now(&self) -> Timestamp;
}

/// A clock that only moves when told to: virtual time for tests and replays.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicU64,
}

impl ManualClock {
    /// A manual clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            nanos: AtomicU64::new(start.as_nanos()),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.nanos.fetch_add(duration_nanos(d), Ordering::SeqCst);
    }

    /// Sets the clock to `t` (it may only move forward; earlier values are ignored).
    pub fn set(&self, t: Timestamp) {
        self.nanos.fetch_max(t.as_nanos(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.nanos.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let end = Timestamp::from_nanos(u64::MAX);
        assert_eq!(end.add(Duration::from_secs(1)), end);
        assert_eq!(Timestamp::ZERO.since(end), Duration::ZERO);
        assert_eq!(Timestamp::from_millis(u64::MAX), end);
    }

    #[test]
    fn manual_clock_only_moves_forward() {
        let clock = ManualClock::new(Timestamp::from_millis(10));
        clock.set(Timestamp::from_millis(5));
        assert_eq!(clock.now(), Timestamp::from_millis(10));
        clock.advance(Duration::from_millis(5));
        assert_eq!(clock.now().as_millis(), 15);
    }
}

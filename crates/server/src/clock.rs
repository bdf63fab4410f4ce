//! The production clock: tokio's monotonic clock, so tests can pause and advance time.
//!
//! This is the only module allowed to read the real clock.

use beamline_core::time::duration_nanos;
use beamline_core::{Clock, Timestamp};

/// Reads tokio's clock; timestamps count from the clock's creation.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    #[allow(clippy::disallowed_methods)] // the one place the real clock is read
    pub fn new() -> Self {
        TokioClock {
            origin: tokio::time::Instant::now(),
        }
    }

    /// The tokio instant of a timestamp from this clock (for `sleep_until`).
    pub fn instant(&self, t: Timestamp) -> tokio::time::Instant {
        self.origin + std::time::Duration::from_nanos(t.as_nanos())
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    #[allow(clippy::disallowed_methods)] // the one place the real clock is read
    fn now(&self) -> Timestamp {
        Timestamp::from_nanos(duration_nanos(self.origin.elapsed()))
    }
}

/// Milliseconds since the Unix epoch, for ages that must survive a restart (the outbox).
#[allow(clippy::disallowed_methods)] // the one place the wall clock is read
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

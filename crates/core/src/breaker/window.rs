//! A time-bucketed sliding window of call counts.
//!
//! The window is `buckets` buckets of `bucket_nanos` each. Time is cut into epochs
//! (`t / bucket_nanos`); the bucket for epoch `e` lives at index `e % buckets`. At time `t`
//! (epoch `c`) the window holds exactly the epochs `c - buckets + 1 ..= c`, so:
//! - no event older than the window is ever counted (its epoch is at most `c - buckets`);
//! - every event younger than the window minus one bucket is counted.
//!
//! The buckets form a ring behind the newest epoch (the *head*): sliding the head forward
//! empties every bucket it passes, so a bucket only ever holds the epoch its index has in
//! the window, and needs no epoch of its own. Running totals are kept so a read is O(1);
//! sliding forward subtracts every bucket that left the window (all of them after an idle
//! gap longer than the window: the fault of rubyist/circuitbreaker PR #36 was to clear
//! only one). Memory is `buckets` buckets of 12 bytes, inline in the breaker up to
//! [`INLINE_BUCKETS`] (the default config has 10), one allocation at construction beyond;
//! recording never allocates.
//!
//! Events stamped earlier than the newest bucket (threads racing to the breaker's lock)
//! are counted in their own bucket while it is still in the window, and dropped otherwise.
//!
//! # The failure run
//! The window also keeps the current run of consecutive failures (a success ends it, and
//! so does [`SlidingWindow::end_run`]), counted with the same bucket rule: a failure of the
//! run stops counting when its bucket leaves the window. So the consecutive-failure rule
//! obeys window monotonicity like the rate rules do: four failures, a quiet gap longer than
//! the window, then one failure is a run of one, not five (the fault of case BR05).
//!
//! A run begins in the head bucket of the moment it begins (its *first bucket*). The run
//! holds the failures reported since then that are stamped in that bucket or later; a
//! failure stamped in an earlier bucket (a call that completed before the success that
//! ended the last run, and reached the window after it) happened before the run began,
//! and is not part of it. That makes the run cheap to keep exactly: every bucket after
//! the first one was still in the future when the run began, so all its failures belong
//! to the run, and only the first bucket needs its own count. The run's total is that
//! count plus the failures of the later buckets; as buckets leave the window their share
//! leaves the total, in O(1), and no bucket stores anything about runs.

use serde::Serialize;

/// Counts of completed calls in a window (or a bucket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct WindowCounts {
    /// Completed calls: successes plus failures (ignored outcomes are not calls).
    pub calls: u32,
    /// Failed calls.
    pub failures: u32,
    /// Slow calls: completed (not timed out) with latency above the threshold.
    pub slow: u32,
}

impl WindowCounts {
    /// Failures / calls, 0 for an empty window.
    pub fn error_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// Slow calls / calls, 0 for an empty window.
    pub fn slow_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }

    fn add(&mut self, other: WindowCounts) {
        self.calls = self.calls.saturating_add(other.calls);
        self.failures = self.failures.saturating_add(other.failures);
        self.slow = self.slow.saturating_add(other.slow);
    }

    fn sub(&mut self, other: WindowCounts) {
        self.calls = self.calls.saturating_sub(other.calls);
        self.failures = self.failures.saturating_sub(other.failures);
        self.slow = self.slow.saturating_sub(other.slow);
    }
}

fn ratio(part: u32, whole: u32) -> f64 {
    if whole == 0 {
        0.0
    } else {
        f64::from(part) / f64::from(whole)
    }
}

/// One epoch's counts (which epoch follows from its index and the head).
type Bucket = WindowCounts;

/// Windows of up to this many buckets keep them inline (the default config has 10): one
/// allocation less per breaker, and no pointer to chase.
pub const INLINE_BUCKETS: usize = 10;

/// The buckets: inline up to [`INLINE_BUCKETS`] (only the first `len` are used), on the
/// heap beyond.
// The inline variant is the point: it keeps the default window inside the breaker.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
enum Buckets {
    Inline([Bucket; INLINE_BUCKETS]),
    Heap(Box<[Bucket]>),
}

impl Buckets {
    fn new(n: usize) -> Self {
        if n <= INLINE_BUCKETS {
            Buckets::Inline([Bucket::default(); INLINE_BUCKETS])
        } else {
            Buckets::Heap(vec![Bucket::default(); n].into_boxed_slice())
        }
    }

    fn all(&mut self) -> &mut [Bucket] {
        match self {
            Buckets::Inline(data) => data,
            Buckets::Heap(b) => b,
        }
    }
}

/// The sliding window. Times are nanoseconds on the breaker's clock.
#[derive(Clone, Debug)]
pub struct SlidingWindow {
    bucket_nanos: u64,
    head_epoch: u64,
    /// The epoch of the current run's first bucket.
    run_epoch: u64,
    totals: WindowCounts,
    /// Failures of the current run still in the window.
    run_total: u32,
    /// Failures of the current run in its first bucket (while it is in the window).
    run_first: u32,
    len: u32,
    /// `head_epoch % len`: an event in the newest bucket needs no division.
    head_index: u32,
    buckets: Buckets,
}

impl SlidingWindow {
    /// An empty window of `buckets` buckets (at least 1) of `bucket_nanos` (at least 1).
    pub fn new(buckets: u32, bucket_nanos: u64) -> Self {
        let len = buckets.max(1);
        SlidingWindow {
            buckets: Buckets::new(len as usize),
            bucket_nanos: bucket_nanos.max(1),
            head_epoch: 0,
            head_index: 0,
            len,
            totals: WindowCounts::default(),
            run_epoch: 0,
            run_total: 0,
            run_first: 0,
        }
    }

    fn index(&self, epoch: u64) -> u32 {
        (epoch % u64::from(self.len)) as u32 // < len
    }

    fn bucket(&mut self, index: u32) -> &mut Bucket {
        let len = self.len as usize;
        // `index` < len <= the buckets' length: `index` and `len` come from `self.len`.
        &mut self.buckets.all()[..len][index as usize]
    }

    fn head_start(&self) -> u64 {
        self.head_epoch.saturating_mul(self.bucket_nanos)
    }

    fn head_end(&self) -> u64 {
        self.head_start().saturating_add(self.bucket_nanos)
    }

    /// Slides the window so that it ends at `now_nanos`. Earlier times change nothing.
    #[inline]
    pub fn advance(&mut self, now_nanos: u64) {
        if now_nanos < self.head_end() {
            return; // within (or before) the head bucket: nothing slides
        }
        self.slide(now_nanos);
    }

    fn slide(&mut self, now_nanos: u64) {
        let epoch = now_nanos / self.bucket_nanos;
        if epoch <= self.head_epoch {
            return;
        }
        let len = u64::from(self.len);
        if epoch - self.head_epoch >= len {
            self.buckets.all()[..len as usize].fill(Bucket::default());
            self.totals = WindowCounts::default();
            self.run_total = 0;
            self.run_first = 0;
        } else {
            for e in self.head_epoch + 1..=epoch {
                // Epoch `e` takes the bucket of epoch `e - len`, which leaves the window
                // (none before the first `len` epochs: that bucket is empty).
                let old = std::mem::take(self.bucket(self.index(e)));
                self.totals.sub(old);
                let run_share = match e.checked_sub(len).map(|gone| gone.cmp(&self.run_epoch)) {
                    None | Some(std::cmp::Ordering::Less) => 0,
                    Some(std::cmp::Ordering::Equal) => std::mem::take(&mut self.run_first),
                    Some(std::cmp::Ordering::Greater) => old.failures,
                };
                self.run_total = self.run_total.saturating_sub(run_share);
            }
        }
        self.head_epoch = epoch;
        self.head_index = self.index(epoch);
    }

    /// Records one completed call at `now_nanos`. A success ends the failure run; a failure
    /// extends it.
    pub fn record(&mut self, now_nanos: u64, failure: bool, slow: bool) {
        self.insert(
            now_nanos,
            WindowCounts {
                calls: 1,
                failures: u32::from(failure),
                slow: u32::from(slow),
            },
        );
    }

    /// Records `n` fast successes (not slow) at `now_nanos`: the same as `n` calls of
    /// `record(now_nanos, false, false)`.
    pub fn record_successes(&mut self, now_nanos: u64, n: u32) {
        if n > 0 {
            self.insert(
                now_nanos,
                WindowCounts {
                    calls: n,
                    failures: 0,
                    slow: 0,
                },
            );
        }
    }

    /// The span `[start, end)` of the newest bucket, as of the last advance.
    pub fn head_span(&self) -> (u64, u64) {
        (self.head_start(), self.head_end())
    }

    /// Adds `event` (one failure, or successes only) at `now_nanos`.
    fn insert(&mut self, now_nanos: u64, event: WindowCounts) {
        let failure = event.failures > 0;
        self.advance(now_nanos);
        if !failure {
            self.end_run();
        }
        let (epoch, i) = if now_nanos >= self.head_start() {
            (self.head_epoch, self.head_index)
        } else {
            let epoch = now_nanos / self.bucket_nanos;
            if epoch + u64::from(self.len) <= self.head_epoch {
                return; // older than the window: never counted
            }
            (epoch, self.index(epoch))
        };
        self.bucket(i).add(event);
        self.totals.add(event);
        if failure && epoch >= self.run_epoch {
            if epoch == self.run_epoch {
                self.run_first = self.run_first.saturating_add(event.failures);
            }
            self.run_total = self.run_total.saturating_add(event.failures);
        }
    }

    /// Ends the current failure run: the next failure starts a run of one, in the head
    /// bucket.
    pub fn end_run(&mut self) {
        self.run_epoch = self.head_epoch;
        self.run_total = 0;
        self.run_first = 0;
    }

    /// Failures of the current run (no success since, no [`SlidingWindow::end_run`]) still
    /// in the window ending at `now_nanos`.
    pub fn consecutive_failures(&mut self, now_nanos: u64) -> u32 {
        self.advance(now_nanos);
        self.run_total
    }

    /// The run's failures as of the last advance, without sliding.
    pub fn run_failures(&self) -> u32 {
        self.run_total
    }

    /// The counts of the window ending at `now_nanos`.
    pub fn counts(&mut self, now_nanos: u64) -> WindowCounts {
        self.advance(now_nanos);
        self.totals
    }

    /// The counts as of the last advance, without sliding (for passive displays).
    pub fn totals(&self) -> WindowCounts {
        self.totals
    }

    /// Empties the window and ends the failure run.
    pub fn clear(&mut self) {
        // The head position stays: the buckets are empty, whatever epoch they are given.
        self.buckets.all().fill(Bucket::default());
        self.totals = WindowCounts::default();
        self.end_run();
    }

    /// Heap bytes held by this window.
    pub fn heap_bytes(&self) -> usize {
        match &self.buckets {
            Buckets::Inline(_) => 0,
            Buckets::Heap(b) => std::mem::size_of_val(&**b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn counts_events_inside_the_window_only() {
        let mut w = SlidingWindow::new(10, 1000 * MS);
        w.record(0, true, false);
        w.record(5_000 * MS, false, true);
        assert_eq!(
            w.counts(9_999 * MS),
            WindowCounts {
                calls: 2,
                failures: 1,
                slow: 1
            }
        );
        // At 10 s the bucket of epoch 0 leaves the window.
        assert_eq!(
            w.counts(10_000 * MS),
            WindowCounts {
                calls: 1,
                failures: 0,
                slow: 1
            }
        );
        assert_eq!(w.counts(15_000 * MS).calls, 0);
    }

    #[test]
    fn an_idle_gap_longer_than_the_window_drops_every_bucket() {
        let mut w = SlidingWindow::new(10, 1000 * MS);
        for s in 0..4 {
            w.record(s * 1000 * MS, true, false);
        }
        w.record(15_000 * MS, true, false);
        assert_eq!(w.counts(15_001 * MS).failures, 1);
    }

    #[test]
    fn the_failure_run_forgets_failures_whose_bucket_left_the_window() {
        let mut w = SlidingWindow::new(10, 1000 * MS);
        for s in 0..4 {
            w.record(s * 1000 * MS + MS, true, false);
        }
        assert_eq!(w.consecutive_failures(3001 * MS), 4);
        // 15 s later the four old failures are out of the window: a run of one.
        w.record(15_001 * MS, true, false);
        assert_eq!(w.consecutive_failures(15_001 * MS), 1);
        // Within the window, buckets leave one by one.
        let mut w = SlidingWindow::new(10, 1000 * MS);
        w.record(500 * MS, true, false);
        w.record(5_500 * MS, true, false);
        assert_eq!(w.consecutive_failures(9_999 * MS), 2);
        assert_eq!(w.consecutive_failures(10_000 * MS), 1);
    }

    #[test]
    fn a_success_or_end_run_resets_the_run_but_not_the_rates() {
        let mut w = SlidingWindow::new(10, 1000 * MS);
        w.record(0, true, false);
        w.record(MS, true, false);
        w.record(2 * MS, false, false);
        assert_eq!(w.consecutive_failures(2 * MS), 0);
        w.record(3 * MS, true, false);
        assert_eq!(w.consecutive_failures(3 * MS), 1);
        w.end_run();
        assert_eq!(w.consecutive_failures(3 * MS), 0);
        assert_eq!(w.counts(3 * MS).failures, 3);
        // Failures of an ended run leave the window without touching the new run.
        w.record(9_500 * MS, true, false);
        assert_eq!(w.consecutive_failures(10_000 * MS), 1);
    }

    #[test]
    fn a_failure_stamped_before_the_run_began_is_not_part_of_it() {
        let mut w = SlidingWindow::new(10, 1000 * MS);
        w.record(1_500 * MS, true, false);
        // A success at 2.5 s ends that run; a new one begins in the bucket of 2 s.
        w.record(2_500 * MS, false, false);
        // A call that completed at 1.9 s, reported late: before the run began.
        w.record(1_900 * MS, true, false);
        assert_eq!(w.consecutive_failures(2_500 * MS), 0);
        assert_eq!(w.counts(2_500 * MS).failures, 2, "the rates count it");
        // Late, but stamped in the run's first bucket (or later): part of the run.
        w.record(2_100 * MS, true, false);
        w.record(3_200 * MS, true, false);
        w.record(3_100 * MS, true, false);
        assert_eq!(w.consecutive_failures(3_200 * MS), 3);
        // The run's first bucket leaves the window at 12 s, the next at 13 s.
        assert_eq!(w.consecutive_failures(11_999 * MS), 3);
        assert_eq!(w.consecutive_failures(12_000 * MS), 2);
        assert_eq!(w.consecutive_failures(13_000 * MS), 0);
    }

    #[test]
    fn late_stamped_events_land_in_their_own_bucket_or_nowhere() {
        let mut w = SlidingWindow::new(4, 100 * MS);
        w.record(350 * MS, false, false);
        w.record(120 * MS, true, false); // epoch 1, still inside (epochs 0..=3)
        assert_eq!(w.counts(350 * MS).failures, 1);
        w.record(450 * MS, false, false); // head epoch 4: epoch 0 gone, epoch 1 stays
        w.record(10 * MS, true, false); // epoch 0: outside, dropped
        assert_eq!(
            w.counts(450 * MS),
            WindowCounts {
                calls: 3,
                failures: 1,
                slow: 0
            }
        );
        assert_eq!(
            w.counts(500 * MS),
            WindowCounts {
                calls: 2,
                failures: 0,
                slow: 0
            }
        );
    }
}

//! How hard the analyzer may press the API server: at most `max_in_flight` calls at once and
//! `qps` calls per second on average (bursts of up to `burst`). Thousands of rollouts stepping
//! in the same second queue here instead of flooding the API server; the timeout of each call
//! starts when it is sent, not while it waits its turn. Events are the one kind of call that
//! may be left out: they use what the budget has idle, and at most a tenth of it while other
//! calls queue (`Buckets::take_spare`).

use std::time::Duration;

use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

/// The limits of one client (`serve`'s `--kube-*` flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KubeLimits {
    /// Timeout of one call, once sent.
    pub timeout: Duration,
    /// Average calls per second.
    pub qps: f64,
    /// Calls that may go at once after a quiet spell.
    pub burst: u32,
    /// Calls in flight at most.
    pub max_in_flight: usize,
}

impl Default for KubeLimits {
    fn default() -> Self {
        KubeLimits {
            timeout: Duration::from_secs(10),
            qps: 200.0,
            burst: 400,
            max_in_flight: 32,
        }
    }
}

/// A token bucket in reservation form: `tokens` may go negative, and how far below zero says
/// how long the newest caller waits, so callers are served in arrival order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub fn full(burst: u32, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(burst.max(1)),
            at: now,
        }
    }

    /// Takes one token at `now`; returns how long the caller must wait before sending.
    pub fn take(&mut self, qps: f64, burst: u32, now: Instant) -> Duration {
        let qps = self.refill(qps, burst, now);
        self.tokens -= 1.0;
        Self::wait(self.tokens, qps)
    }

    /// Like `take`, but only if the wait is at most `max_wait`; otherwise takes nothing and
    /// returns `None`, so that a call that may be left out never delays the others.
    pub fn take_within(
        &mut self,
        qps: f64,
        burst: u32,
        now: Instant,
        max_wait: Duration,
    ) -> Option<Duration> {
        let qps = self.refill(qps, burst, now);
        let wait = Self::wait(self.tokens - 1.0, qps);
        (wait <= max_wait).then(|| {
            self.tokens -= 1.0;
            wait
        })
    }

    /// Adds the tokens earned since the last call; returns the rate in effect (no rate: no
    /// limit).
    fn refill(&mut self, qps: f64, burst: u32, now: Instant) -> f64 {
        let qps = if qps.is_finite() && qps > 0.0 {
            qps
        } else {
            f64::MAX
        };
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * qps).min(f64::from(burst.max(1)));
        self.at = now;
        qps
    }

    fn wait(tokens: f64, qps: f64) -> Duration {
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / qps)
        }
    }
}

/// Of the budget, the share Events may still use while rollout writes wait for it.
pub const SPARE_SHARE: f64 = 0.1;

/// The client's bucket, and the Events' share of it for when it has nothing idle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Buckets {
    all: Bucket,
    spare: Bucket,
}

impl Buckets {
    pub fn full(limits: &KubeLimits, now: Instant) -> Self {
        Buckets {
            all: Bucket::full(limits.burst, now),
            spare: Bucket::full(Self::spare_burst(limits), now),
        }
    }

    fn spare_burst(limits: &KubeLimits) -> u32 {
        ((f64::from(limits.burst) * SPARE_SHARE) as u32).max(1)
    }

    /// A call that must go: its wait for a token.
    pub fn take(&mut self, limits: &KubeLimits, now: Instant) -> Duration {
        self.all.take(limits.qps, limits.burst, now)
    }

    /// A call that may be left out (an Event): a token the budget has idle now; or, while
    /// other calls wait for tokens, one within `max_wait` out of at most `SPARE_SHARE` of
    /// the rate; or `None`. So the rollouts' writes keep nine tenths of a saturated
    /// budget, and all of one that keeps up.
    pub fn take_spare(
        &mut self,
        limits: &KubeLimits,
        now: Instant,
        max_wait: Duration,
    ) -> Option<Duration> {
        if let Some(wait) = self
            .all
            .take_within(limits.qps, limits.burst, now, Duration::ZERO)
        {
            return Some(wait);
        }
        self.spare.take_within(
            limits.qps * SPARE_SHARE,
            Self::spare_burst(limits),
            now,
            Duration::ZERO,
        )?;
        self.all
            .take_within(limits.qps, limits.burst, now, max_wait)
    }
}

/// The shared limiter of one client.
pub struct Limiter {
    limits: KubeLimits,
    buckets: Mutex<Buckets>,
    in_flight: Semaphore,
}

impl Limiter {
    pub fn new(limits: KubeLimits) -> Self {
        Limiter {
            limits,
            buckets: Mutex::new(Buckets::full(&limits, Instant::now())),
            in_flight: Semaphore::new(limits.max_in_flight.max(1)),
        }
    }

    pub fn limits(&self) -> KubeLimits {
        self.limits
    }

    /// Waits for a slot and a token; the permit is held while the call is in flight. (The
    /// semaphore is never closed, so `None` does not happen.)
    pub async fn admit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let permit = self.in_flight.acquire().await.ok();
        let wait = self.buckets.lock().await.take(&self.limits, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        permit
    }

    /// For calls that may be left out (Events): a slot within `max_wait` and a token by
    /// `Buckets::take_spare`, or `None`. When thousands of rollouts step at once, or the API
    /// server is slow to answer, the rollouts' own writes go first: an Event that would hold
    /// up a route or a recorded state is dropped instead.
    pub async fn admit_spare(
        &self,
        max_wait: Duration,
    ) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let permit = tokio::time::timeout(max_wait, self.in_flight.acquire())
            .await
            .ok()?
            .ok()?;
        let wait = self
            .buckets
            .lock()
            .await
            .take_spare(&self.limits, Instant::now(), max_wait)?;
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Some(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_calls_are_spaced_by_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::full(3, t0);
        let waits: Vec<Duration> = (0..6).map(|_| b.take(10.0, 3, t0)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        // Then 100 ms apart, in arrival order.
        for (i, w) in waits[3..].iter().enumerate() {
            let want = 0.1 * (i as f64 + 1.0);
            assert!((w.as_secs_f64() - want).abs() < 1e-9, "{i}: {w:?}");
        }
        // After a quiet second the bucket is full again, never fuller than the burst.
        let later = t0 + Duration::from_secs(10);
        let waits: Vec<Duration> = (0..4).map(|_| b.take(10.0, 3, later)).collect();
        assert_eq!(&waits[..3], &[Duration::ZERO; 3]);
        assert!(waits[3] > Duration::ZERO);
    }

    #[test]
    fn a_call_that_may_be_left_out_takes_a_token_only_within_its_wait() {
        let t0 = Instant::now();
        let mut b = Bucket::full(1, t0);
        let max = Duration::from_millis(150);
        assert_eq!(b.take_within(10.0, 1, t0, max), Some(Duration::ZERO));
        // The next token is 100 ms away: within 150 ms, taken.
        let wait = b.take_within(10.0, 1, t0, max).expect("within");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // The one after is 200 ms away: refused, and nothing taken, so a normal call still
        // waits 200 ms, not 300.
        assert_eq!(b.take_within(10.0, 1, t0, max), None);
        assert!((b.take(10.0, 1, t0).as_secs_f64() - 0.2).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_call_that_may_be_left_out_does_not_queue_behind_a_backlog() {
        let max = Duration::from_millis(20);
        let limiter = Limiter::new(KubeLimits {
            max_in_flight: 1,
            qps: 0.0,
            ..KubeLimits::default()
        });
        let held = limiter.admit().await.expect("slot");
        assert!(
            limiter.admit_spare(max).await.is_none(),
            "every slot is taken"
        );
        drop(held);
        assert!(limiter.admit_spare(max).await.is_some(), "a free slot");
    }

    #[test]
    fn events_get_what_is_idle_and_a_tenth_of_a_saturated_budget() {
        let limits = KubeLimits {
            qps: 100.0,
            burst: 20,
            ..KubeLimits::default()
        };
        let t0 = Instant::now();
        let max = Duration::from_millis(500);
        let mut b = Buckets::full(&limits, t0);
        // Idle tokens: an Event takes one as any call would.
        assert_eq!(b.take_spare(&limits, t0, max), Some(Duration::ZERO));
        // Rollout writes spend the rest and queue 10 deep (100 ms).
        for _ in 0..29 {
            b.take(&limits, t0);
        }
        // Now Events draw on their share (burst 2, 10 per second), each queued like a
        // rollout write; once it is spent, they are dropped.
        let queued = b.take_spare(&limits, t0, max).expect("share");
        assert!((queued.as_secs_f64() - 0.11).abs() < 1e-9, "{queued:?}");
        assert!(b.take_spare(&limits, t0, max).is_some());
        assert_eq!(b.take_spare(&limits, t0, max), None, "share spent");
        // The writes behind them waited for two Events, not three.
        let write = b.take(&limits, t0);
        assert!((write.as_secs_f64() - 0.13).abs() < 1e-9, "{write:?}");
        // A tenth of a second later the share has earned one more.
        let later = t0 + Duration::from_millis(100);
        assert!(b.take_spare(&limits, later, max).is_some());
        assert_eq!(b.take_spare(&limits, later, max), None);
        // Never queued longer than asked: with the share full but the queue 1 s deep.
        let mut deep = Buckets::full(&limits, t0);
        for _ in 0..120 {
            deep.take(&limits, t0);
        }
        assert_eq!(deep.take_spare(&limits, t0, max), None);
    }

    #[test]
    fn no_rate_means_no_wait() {
        let t0 = Instant::now();
        let mut b = Bucket::full(1, t0);
        for _ in 0..100 {
            assert_eq!(b.take(0.0, 1, t0), Duration::ZERO);
        }
    }

    #[tokio::test]
    async fn at_most_max_in_flight_at_once() {
        let limiter = std::sync::Arc::new(Limiter::new(KubeLimits {
            max_in_flight: 2,
            qps: 0.0,
            ..KubeLimits::default()
        }));
        let running = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (l, r, p) = (limiter.clone(), running.clone(), peak.clone());
            tasks.push(tokio::spawn(async move {
                let _permit = l.admit().await;
                let now = r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                p.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                r.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(peak.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}

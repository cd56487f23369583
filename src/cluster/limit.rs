//! How hard the analyzer may press the API server: at most `max_in_flight` calls at once and
//! `qps` calls per second on average (bursts of up to `burst`). Thousands of rollouts stepping
//! in the same second queue here instead of flooding the API server; the timeout of each call
//! starts when it is sent, not while it waits its turn.

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
        let qps = if qps.is_finite() && qps > 0.0 {
            qps
        } else {
            f64::MAX
        };
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * qps).min(f64::from(burst.max(1)));
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / qps)
        }
    }
}

/// The shared limiter of one client.
pub struct Limiter {
    limits: KubeLimits,
    bucket: Mutex<Bucket>,
    in_flight: Semaphore,
}

impl Limiter {
    pub fn new(limits: KubeLimits) -> Self {
        Limiter {
            limits,
            bucket: Mutex::new(Bucket::full(limits.burst, Instant::now())),
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
        let wait =
            self.bucket
                .lock()
                .await
                .take(self.limits.qps, self.limits.burst, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        permit
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

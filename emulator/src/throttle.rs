//! Graph's identity write limit per application and tenant: 3,000 writes per 150 s by default
//! (shared/reference/graph-writes.md §4). Graph meters it with a token bucket (its throttling
//! page: "Throttling is based on a token bucket algorithm"), so the emulator does too: a full
//! bucket holds `limit` writes (a burst), and it refills continuously at `limit / window`
//! writes per second (20/s by default). A write that finds less than one token is refused
//! with 429 and `Retry-After` = the whole seconds until one token is back (at least 1).
//!
//! The clock is the emulator's (`AppState::now_millis`, wall clock + `clockOffset`), so a test
//! can refill a bucket by moving `clockOffset` forward instead of waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Graph's documented write quota per application+tenant pair.
pub const DEFAULT_WRITE_LIMIT: u64 = 3000;
pub const DEFAULT_WRITE_WINDOW_SECS: u64 = 150;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

/// What a write found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    /// Admitted; the share of the quota in use after it (0.0..=1.0), for
    /// `x-ms-throttle-limit-percentage`.
    Admitted(f64),
    /// Refused: seconds until the next write can be admitted.
    Throttled(u64),
}

#[derive(Debug)]
pub struct WriteThrottle {
    /// Writes per window; 0 = no limit.
    pub limit: AtomicU64,
    pub window_secs: AtomicU64,
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl WriteThrottle {
    pub fn new(limit: u64, window_secs: u64) -> WriteThrottle {
        WriteThrottle {
            limit: AtomicU64::new(limit),
            window_secs: AtomicU64::new(window_secs.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    pub fn window_secs(&self) -> u64 {
        self.window_secs.load(Ordering::Relaxed)
    }

    /// Forget every bucket (a reset, or a change of the limits): all start full again.
    pub fn clear(&self) {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Take one write for `(tenant, app)` at `now_ms`.
    pub fn admit(&self, tenant: &str, app: &str, now_ms: i64) -> Admission {
        let limit = self.limit();
        if limit == 0 {
            return Admission::Admitted(0.0);
        }
        let cap = limit as f64;
        // Tokens per millisecond.
        let rate = cap / (self.window_secs() as f64 * 1000.0);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b = buckets
            .entry((tenant.to_ascii_lowercase(), app.to_ascii_lowercase()))
            .or_insert(Bucket {
                tokens: cap,
                last_ms: now_ms,
            });
        // A clock moved backwards (clockOffset lowered) refills nothing.
        let elapsed = (now_ms - b.last_ms).max(0) as f64;
        b.tokens = (b.tokens + elapsed * rate).min(cap);
        b.last_ms = b.last_ms.max(now_ms);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Admission::Admitted(1.0 - b.tokens / cap)
        } else {
            let wait_ms = (1.0 - b.tokens) / rate;
            // Less a nanosecond before rounding up: `1 / rate` is not exact in floating point,
            // and a whole number of seconds must not become one more.
            Admission::Throttled((((wait_ms / 1000.0) - 1e-9).ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_window_is_not_rounded_up_to_one_second_more() {
        // Two writes in the same millisecond: 1 / rate is 3,600,000.000…05 ms in f64.
        let t = WriteThrottle::new(1, 3600);
        assert!(matches!(t.admit("t", "a", 0), Admission::Admitted(_)));
        assert_eq!(t.admit("t", "a", 0), Admission::Throttled(3600));
        assert_eq!(t.admit("t", "a", 1), Admission::Throttled(3600));
    }

    #[test]
    fn burst_then_refill() {
        let t = WriteThrottle::new(3, 30); // one token every 10 s
        for _ in 0..3 {
            assert!(matches!(t.admit("t", "a", 0), Admission::Admitted(_)));
        }
        assert_eq!(t.admit("t", "a", 0), Admission::Throttled(10));
        assert_eq!(t.admit("t", "a", 4_000), Admission::Throttled(6));
        // Another app of the same tenant has its own bucket.
        assert!(matches!(t.admit("t", "b", 4_000), Admission::Admitted(_)));
        assert!(matches!(t.admit("t", "a", 10_000), Admission::Admitted(_)));
        assert_eq!(t.admit("t", "a", 10_000), Admission::Throttled(10));
        t.limit.store(0, Ordering::Relaxed);
        assert_eq!(t.admit("t", "a", 10_000), Admission::Admitted(0.0));
    }

    #[test]
    fn default_rate_is_twenty_per_second() {
        let t = WriteThrottle::new(DEFAULT_WRITE_LIMIT, DEFAULT_WRITE_WINDOW_SECS);
        for _ in 0..3000 {
            assert!(matches!(t.admit("t", "a", 0), Admission::Admitted(_)));
        }
        assert_eq!(t.admit("t", "a", 0), Admission::Throttled(1));
        // 20 writes a second once the burst is spent.
        let admitted = (0..40)
            .filter(|_| matches!(t.admit("t", "a", 1_000), Admission::Admitted(_)))
            .count();
        assert_eq!(admitted, 20);
    }
}

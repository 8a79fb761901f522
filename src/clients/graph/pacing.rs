//! Client-side pacing of Graph writes (docs/behaviour.md §6, the reverse direction).
//!
//! Graph meters identity writes per app and tenant with a token bucket: 3,000 per 150 s, so a
//! burst of 3,000 and then 20 per second. [`WritePacer`] keeps a bucket of 90 % of that on the
//! client (a burst of 2,700, then 18 per second: the headroom absorbs latency jitter and
//! clock differences at the bucket's edge), so that a long apply runs at the rate Graph admits
//! instead of collecting 429s. Every write (create, update, delete, restore; each item of a
//! `$batch`) takes one token before it is sent. Tokens are handed out in order: a caller that finds the bucket empty reserves the next
//! token (the count goes negative) and sleeps until it is due, so concurrent writers share the
//! rate fairly and nobody spins.
//!
//! The bucket cannot know about writes it did not see (another process using the same app, a
//! run that ended a minute ago), so Graph may still answer 429: a single write's 429 is retried
//! by the shared HTTP client after `Retry-After` (src/clients/outbound.rs), and a `$batch`
//! item's 429 calls [`WritePacer::hold_off`], which makes every writer of this client wait.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::directory::DirectoryError;

/// Graph's identity write limit per app and tenant (docs/behaviour.md §6).
pub const DEFAULT_WRITE_LIMIT: u32 = 3_000;
pub const DEFAULT_WRITE_WINDOW: Duration = Duration::from_secs(150);

/// The write limit a [`crate::clients::graph::GraphClient`] paces itself to: Graph's `limit`
/// writes per `window` (the client keeps [`HEADROOM`] of it). `limit: 0` turns pacing off
/// (Graph's 429s still slow it down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WritePacing {
    pub limit: u32,
    pub window: Duration,
}

impl WritePacing {
    /// No client-side pacing.
    pub const OFF: WritePacing = WritePacing {
        limit: 0,
        window: DEFAULT_WRITE_WINDOW,
    };
}

impl Default for WritePacing {
    fn default() -> Self {
        Self {
            limit: DEFAULT_WRITE_LIMIT,
            window: DEFAULT_WRITE_WINDOW,
        }
    }
}

/// The share of the limit the pacer uses, both for its burst and its refill rate.
pub const HEADROOM: f64 = 0.9;

/// The token bucket (shared by clones of a client).
#[derive(Debug)]
pub struct WritePacer {
    capacity: f64,
    /// Tokens per second; 0 = off.
    rate: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// May be negative: tokens promised to callers that are waiting for them.
    tokens: f64,
    at: Instant,
    /// No write starts before this (a `Retry-After` seen on a batch item).
    not_before: Option<Instant>,
}

impl WritePacer {
    pub fn new(pacing: WritePacing) -> Self {
        let window = pacing.window.as_secs_f64();
        let (capacity, rate) = if pacing.limit == 0 || window <= 0.0 {
            (0.0, 0.0)
        } else {
            let limit = f64::from(pacing.limit);
            ((limit * HEADROOM).max(1.0), limit * HEADROOM / window)
        };
        Self {
            capacity,
            rate,
            state: Mutex::new(Bucket {
                tokens: capacity,
                at: Instant::now(),
                not_before: None,
            }),
        }
    }

    pub fn is_off(&self) -> bool {
        self.rate == 0.0
    }

    /// Takes `n` tokens, waiting until they are due. A wait that would end at or after
    /// `deadline` is not started: the tokens are given back and the write is `Unavailable`.
    pub async fn acquire(&self, n: u32, deadline: Option<Instant>) -> Result<(), DirectoryError> {
        let wait = self.reserve(n, Instant::now(), deadline)?;
        if !wait.is_zero() {
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "pacing Graph writes to the write limit"
            );
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Every write of this client waits at least `d` from now (Graph said `Retry-After`).
    pub fn hold_off(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut b = self.lock();
        if b.not_before.is_none_or(|t| t < until) {
            b.not_before = Some(until);
        }
    }

    /// Books `n` tokens at `now` and says how long to wait for them.
    fn reserve(
        &self,
        n: u32,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Result<Duration, DirectoryError> {
        let mut b = self.lock();
        let hold = b
            .not_before
            .and_then(|t| t.checked_duration_since(now))
            .unwrap_or_default();
        let mut wait = hold;
        let mut taken = 0.0;
        if self.rate > 0.0 {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + elapsed * self.rate).min(self.capacity);
            b.at = now;
            taken = f64::from(n);
            b.tokens -= taken;
            if b.tokens < 0.0 {
                wait = wait.max(Duration::from_secs_f64(-b.tokens / self.rate));
            }
        }
        if let Some(deadline) = deadline
            && !wait.is_zero()
            && now + wait >= deadline
        {
            b.tokens += taken;
            return Err(DirectoryError::Unavailable(format!(
                "Graph write: waiting {}s for Graph's write limit would pass the run deadline",
                wait.as_secs()
            )));
        }
        Ok(wait)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Bucket> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(limit: u32, window_secs: u64) -> WritePacer {
        WritePacer::new(WritePacing {
            limit,
            window: Duration::from_secs(window_secs),
        })
    }

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn a_full_bucket_bursts_then_paces_at_the_refill_rate() {
        // Graph's default, with the headroom: 2,700 at once, then one every 55.6 ms (18/s).
        let p = WritePacer::new(WritePacing::default());
        let t0 = Instant::now();
        for _ in 0..2700 {
            assert_eq!(p.reserve(1, t0, None).unwrap(), Duration::ZERO);
        }
        assert_eq!(ms(p.reserve(1, t0, None).unwrap()), 55);
        assert_eq!(ms(p.reserve(1, t0, None).unwrap()), 111);
        // Waiters are served in order: one second later, 18 more tokens have come back,
        // two of which were promised already.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(p.reserve(16, t1, None).unwrap(), Duration::ZERO);
        assert_eq!(ms(p.reserve(1, t1, None).unwrap()), 55);
        // 18 per second: the 1,080th write after the burst is due at 60 s, not before.
        let p = WritePacer::new(WritePacing::default());
        let mut admitted_in_first_minute = 0;
        loop {
            let w = p.reserve(1, t0, None).unwrap();
            if w >= Duration::from_secs(60) {
                break;
            }
            admitted_in_first_minute += 1;
        }
        assert_eq!(admitted_in_first_minute, 2700 + 1079);
    }

    #[test]
    fn the_bucket_never_holds_more_than_its_share_of_the_limit() {
        let p = pacer(5, 1); // 4.5 tokens, 4.5 per second
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(p.reserve(4, later, None).unwrap(), Duration::ZERO);
        assert_eq!(ms(p.reserve(1, later, None).unwrap()), 111);
        // A tiny limit still lets one write through at once.
        let p = pacer(1, 10);
        assert_eq!(p.reserve(1, t0, None).unwrap(), Duration::ZERO);
        assert_eq!(ms(p.reserve(1, t0, None).unwrap()), 11_111);
    }

    #[test]
    fn off_never_waits_but_a_hold_off_still_counts() {
        let p = WritePacer::new(WritePacing::OFF);
        assert!(p.is_off());
        let t0 = Instant::now();
        for _ in 0..100_000 {
            assert_eq!(p.reserve(1, t0, None).unwrap(), Duration::ZERO);
        }
        p.hold_off(Duration::from_secs(2));
        let w = p.reserve(1, Instant::now(), None).unwrap();
        assert!(
            w > Duration::from_millis(1500) && w <= Duration::from_secs(2),
            "{w:?}"
        );
    }

    #[test]
    fn a_wait_past_the_deadline_is_refused_and_gives_its_tokens_back() {
        let p = pacer(2, 2); // 1.8 tokens, 0.9 per second
        let t0 = Instant::now();
        assert_eq!(p.reserve(1, t0, None).unwrap(), Duration::ZERO);
        let e = p
            .reserve(1, t0, Some(t0 + Duration::from_millis(100)))
            .unwrap_err();
        assert!(
            matches!(&e, DirectoryError::Unavailable(m) if m.contains("run deadline")),
            "{e}"
        );
        // The refused reservation left nothing booked: the next token is still 222 ms away.
        assert_eq!(ms(p.reserve(1, t0, None).unwrap()), 222);
    }

    #[tokio::test]
    async fn acquire_sleeps_until_the_token_is_due() {
        let p = pacer(2, 1); // 1.8 tokens, 1.8 per second
        let t0 = Instant::now();
        for _ in 0..3 {
            p.acquire(1, None).await.unwrap();
        }
        // The third token is due 1.2 / 1.8 s after the start.
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(650), "{took:?}");
    }
}

//! Adaptive concurrency for applying a plan: how many writes to keep in flight, learned from the
//! latency of the writes themselves (a latency-gradient limiter in the style of TCP Vegas and
//! Netflix's concurrency-limits).
//!
//! A destination that serves requests in parallel answers about as fast with 8 writes in flight
//! as with 1; one that serves them one at a time (a single-threaded SCIM server) answers `n`
//! times slower with `n` in flight, and more in flight only queue up there — or overflow its
//! listen backlog. The limiter compares each write's latency with the lowest seen (the latency
//! without queueing) and moves the limit towards
//!
//! ```text
//! limit × gradient + √limit        gradient = min(1, TOLERANCE × lowest latency / latency)
//! ```
//!
//! so that about `√limit` writes may wait at the server: a parallel server keeps the gradient
//! at 1 and the limit climbs to the maximum; on a serial one latency grows with the limit, the
//! gradient falls to about `TOLERANCE / limit`, and the limit settles where
//! `limit − TOLERANCE ≈ √limit`, i.e. around 3: enough to keep that server always busy, few
//! enough not to pile up at it. Pure: the caller measures the latencies.

use std::time::Duration;

/// Latencies up to this multiple of the lowest count as "no queueing" (network jitter on a
/// parallel server must not hold the limit down).
const TOLERANCE: f64 = 1.5;
/// How far one sample moves the limit towards its target (an exponential average, so one
/// slow or fast outlier moves it a little).
const SMOOTHING: f64 = 0.2;

/// The in-flight limit, between 1 and a maximum (the user's `--concurrency`).
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit {
    max: usize,
    limit: f64,
    /// The lowest latency seen, in seconds: the estimate of a write's cost without queueing.
    lowest: Option<f64>,
}

impl ConcurrencyLimit {
    /// Starts at one write in flight, so that the first samples show the unloaded latency,
    /// and grows from there.
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            limit: 1.0,
            lowest: None,
        }
    }

    /// Writes that may be in flight now.
    pub fn current(&self) -> usize {
        (self.limit as usize).clamp(1, self.max)
    }

    /// One finished write: how long it took, and how many writes were in flight (itself
    /// included) when it was sent.
    pub fn on_sample(&mut self, latency: Duration, in_flight: usize) {
        let rtt = latency.as_secs_f64().max(1e-6);
        let lowest = self.lowest.map_or(rtt, |l| l.min(rtt));
        self.lowest = Some(lowest);
        // Sent while far below the limit: its latency says nothing about the limit.
        if (in_flight as f64) * 2.0 < self.limit {
            return;
        }
        let gradient = (TOLERANCE * lowest / rtt).min(1.0);
        let target = self.limit * gradient + self.limit.sqrt();
        self.limit = (self.limit + SMOOTHING * (target - self.limit)).clamp(1.0, self.max as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `requests` writes through `limit` to a simulated server and returns the limit after
    /// each completion. `latency(n)` is the server's answer time for a write sent with `n` in
    /// flight; completions are processed in time order (deterministic: no clock, no randomness
    /// except `jitter`'s fixed sequence).
    fn simulate(
        limit: &mut ConcurrencyLimit,
        requests: usize,
        mut service: impl FnMut(f64, usize) -> f64,
    ) -> Vec<usize> {
        // (finish time, send time, in flight when sent)
        let mut pending: Vec<(f64, f64, usize)> = Vec::new();
        let (mut now, mut sent, mut seen) = (0.0, 0, Vec::new());
        while seen.len() < requests {
            while pending.len() < limit.current() && sent < requests {
                let n = pending.len() + 1;
                pending.push((service(now, n), now, n));
                sent += 1;
            }
            let next = (0..pending.len())
                .min_by(|&a, &b| pending[a].0.total_cmp(&pending[b].0))
                .expect("something in flight");
            let (done, started, n) = pending.swap_remove(next);
            now = done;
            limit.on_sample(Duration::from_secs_f64(done - started), n);
            seen.push(limit.current());
        }
        seen
    }

    /// A server that handles one request at a time (FIFO), each taking `cost` seconds: a write
    /// finishes `cost` after the server is free for it.
    fn serial(cost: f64) -> impl FnMut(f64, usize) -> f64 {
        let mut free_at = 0.0_f64;
        move |now, _| {
            free_at = free_at.max(now) + cost;
            free_at
        }
    }

    #[test]
    fn a_serial_server_keeps_the_limit_low() {
        for max in [8, 64] {
            let mut limit = ConcurrencyLimit::new(max);
            let seen = simulate(&mut limit, 2000, serial(0.0014));
            let late = &seen[1000..];
            assert!(
                late.iter().all(|&l| (1..=4).contains(&l)),
                "max {max}: {late:?}"
            );
            let mean = late.iter().sum::<usize>() as f64 / late.len() as f64;
            assert!(
                (1.5..=3.5).contains(&mean),
                "max {max}: settles around 2-3, got {mean}"
            );
        }
    }

    #[test]
    fn a_parallel_server_lets_the_limit_reach_the_maximum() {
        let mut limit = ConcurrencyLimit::new(8);
        // Latency independent of load, with ±20 % of deterministic jitter.
        let mut i = 0u32;
        let seen = simulate(&mut limit, 500, |now, _| {
            i += 1;
            now + 0.010 * (1.0 + 0.2 * f64::from(i % 7) / 3.0 - 0.2)
        });
        let first_max = seen.iter().position(|&l| l == 8).expect("reaches 8");
        assert!(
            first_max < 100,
            "climbs quickly: at 8 after {first_max} writes"
        );
        assert!(seen[first_max..].iter().all(|&l| l == 8), "{seen:?}");
    }

    #[test]
    fn a_server_with_a_few_workers_gets_about_that_many() {
        // Four workers: latency is flat up to 4 in flight, then grows with the queue.
        let mut workers = [0.0_f64; 4];
        let mut limit = ConcurrencyLimit::new(32);
        let seen = simulate(&mut limit, 3000, |now, _| {
            let w = (0..4)
                .min_by(|&a, &b| workers[a].total_cmp(&workers[b]))
                .expect("4 workers");
            workers[w] = workers[w].max(now) + 0.005;
            workers[w]
        });
        let late = &seen[1500..];
        assert!(late.iter().all(|&l| (4..=12).contains(&l)), "{late:?}");
    }

    #[test]
    fn the_limit_stays_within_one_and_the_maximum() {
        let mut limit = ConcurrencyLimit::new(3);
        for _ in 0..100 {
            limit.on_sample(Duration::from_millis(1), 3);
        }
        assert_eq!(limit.current(), 3);
        for _ in 0..100 {
            limit.on_sample(Duration::from_secs(30), 3);
        }
        assert_eq!(limit.current(), 1);
        assert_eq!(ConcurrencyLimit::new(0).current(), 1);
    }

    #[test]
    fn samples_sent_far_below_the_limit_do_not_raise_it() {
        let mut limit = ConcurrencyLimit::new(8);
        for _ in 0..200 {
            limit.on_sample(Duration::from_millis(1), 8);
        }
        assert_eq!(limit.current(), 8);
        let mut idle = ConcurrencyLimit::new(64);
        for _ in 0..200 {
            idle.on_sample(Duration::from_millis(1), 1);
        }
        assert!(
            idle.current() <= 2,
            "one write at a time never shows what more would do: {}",
            idle.current()
        );
    }
}

//! When a resource runs and whether the run may write (docs/behaviour.md §1 "sync-now", §3 modes).
//!
//! Pure: no Kubernetes, no clock. [`decide`] reads the mode, the generation, the
//! `dirsync.io/sync-now` annotation and what the status recorded, and says whether to run now
//! and when to look again. All schedule state lives in status, so a restart, a watch event or a
//! duplicate reconcile never adds a run.
//!
//! - Slots are the multiples of the interval since the Unix epoch, shifted by a per-resource
//!   offset in `[0, interval)` derived from the resource's uid ([`slot_offset`]).
//! - A run whose result is transient ([`is_settled`] false) is retried with exponential backoff
//!   (counted from the newest consecutive failed runs of the same generation); a Periodic slot
//!   that comes first wins.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use sha2::{Digest, Sha256};

use crate::crd::{RunRecord, SyncMode};

/// Results after which nothing is retried: the run is done for this trigger (a guard trip or
/// a PartiallyFailed run waits for the next slot, a spec change or `sync-now`).
pub fn is_settled(result: &str) -> bool {
    crate::sync::Reason::parse(result).is_some_and(crate::sync::Reason::is_settled)
}

/// Why a run starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// New resource or a new spec generation.
    SpecChange,
    /// A new `dirsync.io/sync-now` value.
    SyncNow(String),
    /// A Periodic slot.
    Slot(Timestamp),
    /// A retry of a run that failed for a transient reason.
    Retry,
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::SpecChange => "SpecChange",
            Trigger::SyncNow(_) => "SyncNow",
            Trigger::Slot(_) => "Slot",
            Trigger::Retry => "Retry",
        }
    }
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Run now; `apply` says whether the run may write to the destination.
    Run { apply: bool, trigger: Trigger },
    /// Nothing to do; look again at `next` (None: only when something changes).
    Idle { next: Option<Timestamp> },
}

/// The inputs [`decide`] reads.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    pub mode: SyncMode,
    pub generation: i64,
    /// The effective interval (already bounded by `--min-interval`).
    pub interval: Duration,
    /// The per-resource slot offset ([`slot_offset`]).
    pub offset: Duration,
    /// The annotation's value, if any.
    pub sync_now: Option<&'a str>,
    /// `status.lastSyncNow`.
    pub last_sync_now: Option<&'a str>,
    /// `status.history`, newest first (`history[0]` is `status.lastRun`).
    pub history: &'a [RunRecord],
    pub backoff: Backoff,
    pub now: Timestamp,
    /// `spec.approvedPreview` names the pending preview (not yet used): a Periodic resource
    /// applies it at once instead of at its next slot.
    pub approval_due: bool,
}

/// Retry delays for transient failures: `initial * 2^(n-1)`, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(30),
            max: Duration::from_secs(900),
        }
    }
}

impl Backoff {
    /// The delay after `failures` consecutive failures (at least 1).
    pub fn delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        self.initial
            .saturating_mul(1u32 << exp)
            .min(self.max)
            .max(Duration::from_millis(1))
    }
}

/// The stable per-resource offset of the slots: a hash of the uid, modulo the interval
/// (millisecond resolution), so that many resources with the same interval do not all fire
/// at once.
/// Whole seconds when the interval is at least a second, so that `nextRunTime` (which
/// status keeps to the second) is exact.
pub fn slot_offset(uid: &str, interval: Duration) -> Duration {
    let digest = Sha256::digest(uid.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let h = u128::from(u64::from_be_bytes(first));
    if interval.as_secs() >= 1 {
        let secs = u128::from(interval.as_secs());
        Duration::from_secs(u64::try_from(h % secs).unwrap_or(0))
    } else {
        let ms = interval.as_millis().max(1);
        Duration::from_millis(u64::try_from(h % ms).unwrap_or(0))
    }
}

/// The first slot strictly after `t`.
pub fn next_slot_after(t: Timestamp, interval: Duration, offset: Duration) -> Timestamp {
    let iv = i128::try_from(interval.as_millis().max(1)).unwrap_or(i128::MAX);
    let off = i128::try_from(offset.as_millis()).unwrap_or(0) % iv;
    let t_ms = i128::from(t.as_millisecond());
    // smallest k with k*iv + off > t  <=>  k > (t - off) / iv
    let k = (t_ms - off).div_euclid(iv) + 1;
    let slot = k * iv + off;
    i64::try_from(slot)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
        .unwrap_or(Timestamp::MAX)
}

/// `t + d`, saturating at the end of time.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// Failed (unsettled) runs of `generation` at the head of the history.
pub fn consecutive_failures(history: &[RunRecord], generation: i64) -> u32 {
    let n = history
        .iter()
        .take_while(|r| r.generation == Some(generation) && !is_settled(&r.result))
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// When the newest failed run is retried, if the newest run failed.
pub fn retry_at(history: &[RunRecord], generation: i64, backoff: Backoff) -> Option<Timestamp> {
    let last = history.first()?;
    if last.generation != Some(generation) || is_settled(&last.result) {
        return None;
    }
    let ended = last
        .end_time
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(last.start_time.0);
    // The endpoint policy does not change while the operator runs: a refused endpoint waits
    // the longest delay (a spec change or sync-now still runs at once).
    let delay = if last.result == "EndpointNotAllowed" {
        backoff.max
    } else {
        backoff.delay(consecutive_failures(history, generation))
    };
    Some(add(ended, delay))
}

/// Decides what to do now (see the module docs).
pub fn decide(i: &Inputs<'_>) -> Decision {
    let last = i.history.first();
    let same_generation = last.is_some_and(|l| l.generation == Some(i.generation));
    if !same_generation {
        // New resource or changed spec: DryRun and Periodic preview, Once applies. A sync-now
        // value that came with the change is answered by this run too (every run records the
        // annotation), so Periodic never applies at once on create or on a spec change.
        return Decision::Run {
            apply: i.mode == SyncMode::Once || (i.mode == SyncMode::Periodic && i.approval_due),
            trigger: Trigger::SpecChange,
        };
    }
    let sync_now = i
        .sync_now
        .filter(|v| !v.is_empty() && Some(*v) != i.last_sync_now);
    if let Some(v) = sync_now {
        return Decision::Run {
            apply: i.mode != SyncMode::DryRun,
            trigger: Trigger::SyncNow(v.to_owned()),
        };
    }
    let retry = retry_at(i.history, i.generation, i.backoff);
    let slot = match (i.mode, last) {
        (SyncMode::Periodic, Some(l)) => {
            Some(next_slot_after(l.start_time.0, i.interval, i.offset))
        }
        _ => None,
    };
    if let Some(s) = slot
        && i.now >= s
    {
        return Decision::Run {
            apply: true,
            trigger: Trigger::Slot(s),
        };
    }
    if let Some(r) = retry {
        if i.now >= r {
            let apply = i.mode != SyncMode::DryRun && last.is_some_and(|l| l.applied);
            return Decision::Run {
                apply,
                trigger: Trigger::Retry,
            };
        }
        let next = match slot {
            Some(s) if s < r => s,
            _ => r,
        };
        return Decision::Idle { next: Some(next) };
    }
    Decision::Idle { next: slot }
}

/// Formats a duration compactly (`1h30m`, `45s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, n) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= n {
            out.push_str(&format!("{}{unit}", secs / n));
            secs %= n;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn run(generation: i64, start: i64, result: &str, applied: bool) -> RunRecord {
        RunRecord {
            id: format!("r{start}"),
            mode: SyncMode::Periodic,
            applied,
            start_time: Time(ts(start)),
            end_time: Some(Time(ts(start + 1))),
            result: result.into(),
            adds: 0,
            updates: 0,
            deletes: 0,
            conflicts: 0,
            unmanaged: 0,
            failed: 0,
            generation: Some(generation),
            trigger: None,
            kind: None,
            full_reason: None,
            message: None,
        }
    }

    fn inputs<'a>(mode: SyncMode, history: &'a [RunRecord], now: i64) -> Inputs<'a> {
        Inputs {
            mode,
            generation: 1,
            interval: Duration::from_secs(3600),
            offset: Duration::from_secs(600),
            sync_now: None,
            last_sync_now: None,
            history,
            backoff: Backoff {
                initial: Duration::from_secs(10),
                max: Duration::from_secs(60),
            },
            now: ts(now),
            approval_due: false,
        }
    }

    /// A spec change that approves the pending preview applies at once, even for Periodic;
    /// any other spec change of a Periodic resource only previews.
    #[test]
    fn an_approval_applies_at_once() {
        let history = [run(1, 100, "AwaitingApproval", true)];
        let mut i = inputs(SyncMode::Periodic, &history, 200);
        i.generation = 2;
        assert_eq!(
            decide(&i),
            Decision::Run {
                apply: false,
                trigger: Trigger::SpecChange
            }
        );
        i.approval_due = true;
        assert_eq!(
            decide(&i),
            Decision::Run {
                apply: true,
                trigger: Trigger::SpecChange
            }
        );
        // Waiting for an approval is settled: no retry loop.
        let i = inputs(SyncMode::Once, &history, 100_000);
        assert_eq!(decide(&i), Decision::Idle { next: None });
    }

    #[test]
    fn slots_are_multiples_of_the_interval_shifted_by_the_offset() {
        let h = Duration::from_secs(3600);
        let off = Duration::from_secs(600);
        assert_eq!(next_slot_after(ts(0), h, off), ts(600));
        assert_eq!(next_slot_after(ts(600), h, off), ts(4200));
        assert_eq!(next_slot_after(ts(599), h, off), ts(600));
        assert_eq!(
            next_slot_after(ts(3 * 3600 + 601), h, off),
            ts(4 * 3600 + 600)
        );
        // Before the epoch too.
        assert_eq!(next_slot_after(ts(-10), h, Duration::ZERO), ts(0));
    }

    #[test]
    fn the_offset_is_stable_and_within_the_interval() {
        let iv = Duration::from_secs(3600);
        let a = slot_offset("6f1c2a0e-1111-2222-3333-444455556666", iv);
        assert_eq!(a, slot_offset("6f1c2a0e-1111-2222-3333-444455556666", iv));
        assert!(a < iv);
        let b = slot_offset("0b2d3c4e-aaaa-bbbb-cccc-ddddeeeeffff", iv);
        assert_ne!(
            a, b,
            "two uids should (almost always) get different offsets"
        );
    }

    #[test]
    fn a_new_resource_previews_or_applies_by_mode() {
        for (mode, apply) in [
            (SyncMode::DryRun, false),
            (SyncMode::Once, true),
            (SyncMode::Periodic, false),
        ] {
            assert_eq!(
                decide(&inputs(mode, &[], 100)),
                Decision::Run {
                    apply,
                    trigger: Trigger::SpecChange
                }
            );
        }
    }

    #[test]
    fn a_spec_change_runs_again() {
        let h = [run(1, 100, "Synced", true)];
        let mut i = inputs(SyncMode::Once, &h, 200);
        assert_eq!(decide(&i), Decision::Idle { next: None });
        i.generation = 2;
        assert_eq!(
            decide(&i),
            Decision::Run {
                apply: true,
                trigger: Trigger::SpecChange
            }
        );
    }

    #[test]
    fn sync_now_runs_once_per_new_value() {
        let h = [run(1, 100, "PreviewReady", false)];
        let mut i = inputs(SyncMode::DryRun, &h, 200);
        i.sync_now = Some("a");
        assert_eq!(
            decide(&i),
            Decision::Run {
                apply: false,
                trigger: Trigger::SyncNow("a".into())
            }
        );
        i.last_sync_now = Some("a");
        assert_eq!(decide(&i), Decision::Idle { next: None });
        i.sync_now = Some("");
        assert_eq!(decide(&i), Decision::Idle { next: None });
        i.mode = SyncMode::Once;
        i.sync_now = Some("b");
        assert_eq!(
            decide(&i),
            Decision::Run {
                apply: true,
                trigger: Trigger::SyncNow("b".into())
            }
        );
    }

    #[test]
    fn periodic_previews_on_create_then_applies_at_the_next_slot() {
        // Preview at 100 (slot grid: 600, 4200, ...).
        let h = [run(1, 100, "PreviewReady", false)];
        assert_eq!(
            decide(&inputs(SyncMode::Periodic, &h, 200)),
            Decision::Idle {
                next: Some(ts(600))
            }
        );
        assert_eq!(
            decide(&inputs(SyncMode::Periodic, &h, 600)),
            Decision::Run {
                apply: true,
                trigger: Trigger::Slot(ts(600))
            }
        );
        // After the slot's run the next slot is one interval later.
        let h = [run(1, 600, "Synced", true)];
        assert_eq!(
            decide(&inputs(SyncMode::Periodic, &h, 700)),
            Decision::Idle {
                next: Some(ts(4200))
            }
        );
    }

    #[test]
    fn a_spec_change_wins_over_a_sync_now_that_came_with_it() {
        let mut i = inputs(SyncMode::Periodic, &[], 100);
        i.sync_now = Some("x");
        assert_eq!(
            decide(&i),
            Decision::Run {
                apply: false,
                trigger: Trigger::SpecChange
            }
        );
    }

    #[test]
    fn a_sync_now_does_not_move_the_slots() {
        let h = [run(1, 1000, "Synced", true), run(1, 600, "Synced", true)];
        assert_eq!(
            decide(&inputs(SyncMode::Periodic, &h, 1100)),
            Decision::Idle {
                next: Some(ts(4200))
            }
        );
    }

    #[test]
    fn guard_trips_and_partial_failures_wait_for_the_next_slot() {
        for result in ["DeletionThresholdExceeded", "PartiallyFailed"] {
            let h = [run(1, 600, result, true)];
            assert_eq!(
                decide(&inputs(SyncMode::Periodic, &h, 700)),
                Decision::Idle {
                    next: Some(ts(4200))
                }
            );
            assert_eq!(
                decide(&inputs(SyncMode::Once, &h, 700)),
                Decision::Idle { next: None }
            );
        }
    }

    #[test]
    fn a_refused_endpoint_waits_the_longest_delay() {
        // Ended at 101; retried after the 60 s cap, not the 10 s first delay.
        let h = [run(1, 100, "EndpointNotAllowed", false)];
        assert_eq!(
            decide(&inputs(SyncMode::DryRun, &h, 105)),
            Decision::Idle {
                next: Some(ts(161))
            }
        );
    }

    #[test]
    fn transient_failures_retry_with_growing_backoff() {
        let h1 = [run(1, 100, "SourceUnavailable", true)];
        // ended at 101; 1st retry after 10 s.
        assert_eq!(
            decide(&inputs(SyncMode::Once, &h1, 105)),
            Decision::Idle {
                next: Some(ts(111))
            }
        );
        assert_eq!(
            decide(&inputs(SyncMode::Once, &h1, 111)),
            Decision::Run {
                apply: true,
                trigger: Trigger::Retry
            }
        );
        let h3 = [
            run(1, 300, "InvalidCredentials", true),
            run(1, 200, "SecretNotFound", true),
            run(1, 100, "SourceUnavailable", true),
        ];
        // 3 failures: 40 s after the end (301).
        assert_eq!(
            decide(&inputs(SyncMode::Once, &h3, 305)),
            Decision::Idle {
                next: Some(ts(341))
            }
        );
        // Capped at 60 s.
        let many: Vec<RunRecord> = (0..10)
            .map(|n| run(1, 1000 - n * 10, "DestinationUnavailable", true))
            .collect();
        assert_eq!(
            decide(&inputs(SyncMode::Once, &many, 1005)),
            Decision::Idle {
                next: Some(ts(1061))
            }
        );
        // A failed preview is retried as a preview.
        let h = [run(1, 100, "SourceUnavailable", false)];
        assert_eq!(
            decide(&inputs(SyncMode::DryRun, &h, 500)),
            Decision::Run {
                apply: false,
                trigger: Trigger::Retry
            }
        );
    }

    #[test]
    fn a_periodic_slot_before_the_retry_wins() {
        let h = [run(1, 580, "SourceUnavailable", false)];
        // retry at 591, slot at 600
        assert_eq!(
            decide(&inputs(SyncMode::Periodic, &h, 585)),
            Decision::Idle {
                next: Some(ts(591))
            }
        );
        assert_eq!(
            decide(&inputs(SyncMode::Periodic, &h, 592)),
            Decision::Run {
                apply: false,
                trigger: Trigger::Retry
            }
        );
        assert_eq!(
            decide(&inputs(SyncMode::Periodic, &h, 600)),
            Decision::Run {
                apply: true,
                trigger: Trigger::Slot(ts(600))
            }
        );
    }

    /// Parsing is `src/duration.rs`'s (tested there); formatting must read back the same.
    #[test]
    fn durations_format_and_read_back() {
        for d in [
            Duration::from_secs(5400),
            Duration::from_millis(250),
            Duration::from_secs(720 * 3600),
        ] {
            assert_eq!(crate::duration::parse_duration(&format_duration(d)), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}

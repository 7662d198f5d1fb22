//! Restart policy, backoff and the crash-loop limit of one service, as a small value of its
//! own: the state machine asks it what follows an exit or a failed start, and it answers
//! with a delay or a refusal. Nothing here touches the system.

use manifest::RestartPolicy;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A run that lasts this long resets the backoff to "restart at once".
pub const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The manifest's `restart` block, in typed units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub policy: RestartPolicy,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// More than this many restarts within `crash_loop_window` → Failed.
    pub crash_loop_restarts: u32,
    pub crash_loop_window: Duration,
}

impl Limits {
    pub fn from_manifest(r: &manifest::Restart) -> Limits {
        Limits {
            policy: r.policy,
            backoff_initial: Duration::from_millis(r.backoff_initial_ms),
            backoff_max: Duration::from_millis(r.backoff_max_ms),
            crash_loop_restarts: r.crash_loop_restarts,
            crash_loop_window: Duration::from_secs(r.crash_loop_window_secs),
        }
    }

    /// Whether the policy restarts after a run that ended well (`success`) or not.
    pub fn wants_restart(&self, success: bool) -> bool {
        match self.policy {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !success,
            RestartPolicy::Never => false,
        }
    }
}

/// What follows an exit or a failed start, once the policy said "restart".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start again after this delay (zero: at once).
    Restart { delay: Duration },
    /// Too many restarts within the window: give up until started by hand.
    CrashLoop { restarts: usize },
}

/// The restart history of one service.
#[derive(Debug, Clone, Default)]
pub struct Restarts {
    /// Start times of recent restarts, for the crash-loop limit.
    recent: VecDeque<Instant>,
    /// Restarts in a row without a stable run, for the backoff schedule.
    step: u32,
    /// Restarts since PID 1 started (shown in `ps`).
    total: u32,
}

impl Restarts {
    pub fn total(&self) -> u32 {
        self.total
    }

    /// Decides the next restart at `now`. `at_least` is a floor on the delay: a failed
    /// start is never retried at once (nothing that made it fail is fixed in zero ms).
    pub fn next(&mut self, limits: &Limits, now: Instant, at_least: Duration) -> Decision {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > limits.crash_loop_window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u64 >= u64::from(limits.crash_loop_restarts) {
            return Decision::CrashLoop {
                restarts: self.recent.len(),
            };
        }
        self.recent.push_back(now);
        self.total = self.total.saturating_add(1);
        let delay = backoff_delay(self.step, limits.backoff_initial, limits.backoff_max);
        self.step = self.step.saturating_add(1);
        Decision::Restart {
            delay: delay.max(at_least.min(limits.backoff_max)),
        }
    }

    /// The service ran long enough: the next restart is immediate again.
    pub fn stable(&mut self) {
        self.step = 0;
    }

    /// Started by hand: the crash-loop count and the backoff start over.
    pub fn reset(&mut self) {
        self.recent.clear();
        self.step = 0;
    }
}

/// The backoff schedule: the first restart in a row is immediate, then `initial`,
/// doubling per restart up to `max`.
pub fn backoff_delay(step: u32, initial: Duration, max: Duration) -> Duration {
    if step == 0 {
        return Duration::ZERO;
    }
    initial.saturating_mul(1u32 << (step - 1).min(31)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(policy: RestartPolicy) -> Limits {
        Limits {
            policy,
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(1000),
            crash_loop_restarts: 3,
            crash_loop_window: Duration::from_secs(10),
        }
    }

    #[test]
    fn backoff_schedule() {
        let ms = Duration::from_millis;
        let d: Vec<u128> = (0..8)
            .map(|s| backoff_delay(s, ms(100), ms(1000)).as_millis())
            .collect();
        assert_eq!(d, [0, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff_delay(60, ms(100), ms(30_000)), ms(30_000));
        assert_eq!(
            backoff_delay(u32::MAX, Duration::MAX, Duration::MAX),
            Duration::MAX,
            "no overflow at the extremes"
        );
    }

    #[test]
    fn policies() {
        assert!(limits(RestartPolicy::Always).wants_restart(true));
        assert!(limits(RestartPolicy::Always).wants_restart(false));
        assert!(!limits(RestartPolicy::OnFailure).wants_restart(true));
        assert!(limits(RestartPolicy::OnFailure).wants_restart(false));
        assert!(!limits(RestartPolicy::Never).wants_restart(false));
    }

    #[test]
    fn crash_loop_within_the_window_and_not_after_it() {
        let l = limits(RestartPolicy::Always);
        let mut r = Restarts::default();
        let t0 = Instant::now();
        let delays: Vec<Decision> = (0..4).map(|_| r.next(&l, t0, Duration::ZERO)).collect();
        let ms = Duration::from_millis;
        assert_eq!(
            delays,
            [
                Decision::Restart { delay: ms(0) },
                Decision::Restart { delay: ms(100) },
                Decision::Restart { delay: ms(200) },
                Decision::CrashLoop { restarts: 3 },
            ]
        );
        assert_eq!(r.total(), 3);
        // Once the window has passed, the old restarts no longer count.
        let later = t0 + Duration::from_secs(11);
        assert!(matches!(
            r.next(&l, later, Duration::ZERO),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn a_stable_run_resets_the_backoff_and_reset_clears_the_loop() {
        let l = limits(RestartPolicy::Always);
        let mut r = Restarts::default();
        let t = Instant::now();
        r.next(&l, t, Duration::ZERO);
        r.next(&l, t, Duration::ZERO);
        r.stable();
        assert_eq!(
            r.next(&l, t, Duration::ZERO),
            Decision::Restart {
                delay: Duration::ZERO
            }
        );
        assert!(matches!(
            r.next(&l, t, Duration::ZERO),
            Decision::CrashLoop { .. }
        ));
        r.reset();
        assert!(matches!(
            r.next(&l, t, Duration::ZERO),
            Decision::Restart { .. }
        ));
    }

    #[test]
    fn a_failed_start_waits_at_least_the_floor() {
        let l = limits(RestartPolicy::Always);
        let mut r = Restarts::default();
        let floor = l.backoff_initial;
        assert_eq!(
            r.next(&l, Instant::now(), floor),
            Decision::Restart { delay: floor }
        );
    }
}

//! The health gate of a trial boot: a boot-counted entry is blessed only when every service
//! in the health set (today: every service and onboot task of the manifest) is Ready and has
//! stayed so for a settle time, within a deadline. A health-set service that fails (crash
//! loop, start error, a failed onboot task) or a passed deadline makes the boot bad: the entry
//! is marked as having no tries left and the machine reboots into the other slot. Never by
//! the clock alone: an entry is not blessed because time passed.
//!
//! The gate is a pure function of time and the services' states, so it is tested without a
//! machine; `main` feeds it once per loop turn and acts on its verdict.

use std::time::{Duration, Instant};

/// Documented defaults (`docs/update.md`); the kernel command line overrides them
/// (`sysctr.health_settle=SECS`, `sysctr.health_deadline=SECS`).
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(10);
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// Bounds for the command-line values (invariant 12: every bound explicit).
pub const MAX_SETTLE: Duration = Duration::from_secs(3600);
pub const MAX_DEADLINE: Duration = Duration::from_secs(6 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GateConfig {
    pub settle: Duration,
    pub deadline: Duration,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            settle: DEFAULT_SETTLE,
            deadline: DEFAULT_DEADLINE,
        }
    }
}

/// A health-gate value on the kernel command line that is not taken (the default is kept).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateConfigError {
    #[error("{word}: expected whole seconds up to {}; keeping the default", max.as_secs())]
    BadValue { word: String, max: Duration },
    #[error(
        "health settle time {}s is not shorter than the deadline {}s; using the defaults",
        settle.as_secs(),
        deadline.as_secs()
    )]
    SettleNotBeforeDeadline {
        settle: Duration,
        deadline: Duration,
    },
}

impl GateConfig {
    /// `sysctr.health_settle=` and `sysctr.health_deadline=` (seconds, bounded); a bad value
    /// keeps the default and is reported.
    pub fn from_cmdline(cmdline: &str) -> (GateConfig, Vec<GateConfigError>) {
        let mut cfg = GateConfig::default();
        let mut problems = Vec::new();
        for word in cmdline.split_whitespace() {
            let (key, max, slot) = if let Some(v) = word.strip_prefix("sysctr.health_settle=") {
                (v, MAX_SETTLE, &mut cfg.settle)
            } else if let Some(v) = word.strip_prefix("sysctr.health_deadline=") {
                (v, MAX_DEADLINE, &mut cfg.deadline)
            } else {
                continue;
            };
            match key.parse::<u64>() {
                Ok(secs) if Duration::from_secs(secs) <= max => *slot = Duration::from_secs(secs),
                _ => problems.push(GateConfigError::BadValue {
                    word: word.to_string(),
                    max,
                }),
            }
        }
        if cfg.settle >= cfg.deadline {
            problems.push(GateConfigError::SettleNotBeforeDeadline {
                settle: cfg.settle,
                deadline: cfg.deadline,
            });
            cfg = GateConfig::default();
        }
        (cfg, problems)
    }
}

/// The health set's state at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Every service Ready and every onboot task finished successfully.
    pub all_ready: bool,
    /// Services or tasks that failed for good, with their last error.
    pub failed: Vec<(String, String)>,
    /// Not Ready yet (for the deadline's message).
    pub waiting: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Wait,
    Bless,
    Bad(BadBoot),
}

/// Why the gate found a trial boot bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadBoot {
    /// A health-set service or task failed for good; `others` more failed with it.
    #[error("service {service} failed: {why}{}", and_more(*others))]
    ServiceFailed {
        service: String,
        why: String,
        others: usize,
    },
    /// The deadline passed with `waiting` not Ready (empty: Ready, but not settled).
    #[error(
        "not every service Ready and settled within {}s (waiting for: {})",
        deadline.as_secs(),
        waiting_for(waiting)
    )]
    Deadline {
        deadline: Duration,
        waiting: Vec<String>,
    },
}

fn and_more(others: usize) -> String {
    if others > 0 {
        format!(" (and {others} more)")
    } else {
        String::new()
    }
}

fn waiting_for(waiting: &[String]) -> String {
    if waiting.is_empty() {
        "the settle time".to_string()
    } else {
        waiting.join(", ")
    }
}

#[derive(Debug)]
pub struct Gate {
    cfg: GateConfig,
    started: Instant,
    ready_since: Option<Instant>,
    decided: bool,
}

impl Gate {
    pub fn new(cfg: GateConfig, started: Instant) -> Gate {
        Gate {
            cfg,
            started,
            ready_since: None,
            decided: false,
        }
    }

    /// One look at the health set. Returns Bless or Bad once; Wait before and after.
    pub fn step(&mut self, now: Instant, h: &Health) -> Verdict {
        if self.decided {
            return Verdict::Wait;
        }
        let v = self.decide(now, h);
        if v != Verdict::Wait {
            self.decided = true;
        }
        v
    }

    fn decide(&mut self, now: Instant, h: &Health) -> Verdict {
        if let Some((name, why)) = h.failed.first() {
            return Verdict::Bad(BadBoot::ServiceFailed {
                service: name.clone(),
                why: why.clone(),
                others: h.failed.len() - 1,
            });
        }
        if h.all_ready {
            let since = *self.ready_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.cfg.settle {
                return Verdict::Bless;
            }
        } else {
            // A service that restarts or stops being Ready starts the settle time again.
            self.ready_since = None;
        }
        if now.saturating_duration_since(self.started) >= self.cfg.deadline {
            return Verdict::Bad(BadBoot::Deadline {
                deadline: self.cfg.deadline,
                waiting: h.waiting.clone(),
            });
        }
        Verdict::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> Health {
        Health {
            all_ready: true,
            ..Default::default()
        }
    }

    fn waiting(names: &[&str]) -> Health {
        Health {
            all_ready: false,
            failed: vec![],
            waiting: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn blessed_only_after_the_settle_time() {
        let t0 = Instant::now();
        let cfg = GateConfig {
            settle: Duration::from_secs(10),
            deadline: Duration::from_secs(300),
        };
        let mut g = Gate::new(cfg, t0);
        assert_eq!(g.step(t0, &waiting(&["ssh"])), Verdict::Wait);
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(g.step(t1, &ready()), Verdict::Wait);
        assert_eq!(g.step(t1 + Duration::from_secs(9), &ready()), Verdict::Wait);
        assert_eq!(
            g.step(t1 + Duration::from_secs(10), &ready()),
            Verdict::Bless
        );
        // once only
        assert_eq!(
            g.step(t1 + Duration::from_secs(11), &ready()),
            Verdict::Wait
        );
    }

    #[test]
    fn a_restart_during_the_settle_time_starts_it_again() {
        let t0 = Instant::now();
        let mut g = Gate::new(GateConfig::default(), t0);
        assert_eq!(g.step(t0, &ready()), Verdict::Wait);
        assert_eq!(
            g.step(t0 + Duration::from_secs(8), &waiting(&["web"])),
            Verdict::Wait
        );
        assert_eq!(g.step(t0 + Duration::from_secs(9), &ready()), Verdict::Wait);
        assert_eq!(
            g.step(t0 + Duration::from_secs(18), &ready()),
            Verdict::Wait
        );
        assert_eq!(
            g.step(t0 + Duration::from_secs(19), &ready()),
            Verdict::Bless
        );
    }

    #[test]
    fn a_failed_service_makes_the_boot_bad_at_once() {
        let t0 = Instant::now();
        let mut g = Gate::new(GateConfig::default(), t0);
        let h = Health {
            all_ready: false,
            failed: vec![
                ("web".into(), "crash loop: 5 restarts in 60s".into()),
                ("db".into(), "x".into()),
            ],
            waiting: vec![],
        };
        let Verdict::Bad(bad) = g.step(t0 + Duration::from_secs(1), &h) else {
            panic!("a failed service must make the boot bad");
        };
        assert_eq!(
            bad,
            BadBoot::ServiceFailed {
                service: "web".into(),
                why: "crash loop: 5 restarts in 60s".into(),
                others: 1,
            }
        );
        assert_eq!(
            bad.to_string(),
            "service web failed: crash loop: 5 restarts in 60s (and 1 more)"
        );
    }

    #[test]
    fn the_deadline_names_what_it_waited_for() {
        let t0 = Instant::now();
        let cfg = GateConfig {
            settle: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
        };
        let mut g = Gate::new(cfg, t0);
        assert_eq!(
            g.step(t0 + Duration::from_secs(59), &waiting(&["never"])),
            Verdict::Wait
        );
        let Verdict::Bad(bad) = g.step(t0 + Duration::from_secs(60), &waiting(&["never"])) else {
            panic!("the deadline must make the boot bad");
        };
        let why = bad.to_string();
        assert!(why.contains("within 60s (waiting for: never)"), "{why}");
        // Ready just before the deadline but not settled: still bad at the deadline.
        let mut g = Gate::new(cfg, t0);
        assert_eq!(
            g.step(t0 + Duration::from_secs(55), &ready()),
            Verdict::Wait
        );
        let Verdict::Bad(bad) = g.step(t0 + Duration::from_secs(60), &ready()) else {
            panic!("ready but not settled at the deadline must be bad");
        };
        assert!(
            bad.to_string().contains("(waiting for: the settle time)"),
            "{bad}"
        );
    }

    #[test]
    fn command_line_values_are_bounded() {
        let (c, p) = GateConfig::from_cmdline("sysctr.health_settle=3 sysctr.health_deadline=90");
        assert_eq!(c.settle, Duration::from_secs(3));
        assert_eq!(c.deadline, Duration::from_secs(90));
        assert!(p.is_empty());
        let (c, p) = GateConfig::from_cmdline(
            "sysctr.health_settle=18446744073709551615 sysctr.health_deadline=x",
        );
        assert_eq!(c, GateConfig::default());
        assert_eq!(
            p,
            [
                GateConfigError::BadValue {
                    word: "sysctr.health_settle=18446744073709551615".into(),
                    max: MAX_SETTLE,
                },
                GateConfigError::BadValue {
                    word: "sysctr.health_deadline=x".into(),
                    max: MAX_DEADLINE,
                },
            ]
        );
        assert!(p[1].to_string().starts_with("sysctr.health_deadline=x: "));
        let (c, p) = GateConfig::from_cmdline("sysctr.health_settle=100 sysctr.health_deadline=50");
        assert_eq!(c, GateConfig::default());
        assert!(
            p[0].to_string().contains("not shorter than the deadline"),
            "{p:?}"
        );
    }
}

//! One service's lifecycle as a pure state machine: [`Machine::step`] takes an [`Input`]
//! (the schedule says go, the container started or did not, a readiness check passed, the
//! process exited, a stop was requested, a timer fired) and the time, changes the state,
//! and returns the [`Effect`]s the supervisor must carry out (launch a container, send a
//! signal, arm a timer, clean up, announce a state). It never touches the system, so every
//! transition is unit-tested without root.
//!
//! ```text
//!            ┌──────────── Launch ◄──────────── (schedule: deps Ready / onboot turn)
//!            ▼
//! Pending → Starting ─Started→ Running ─CheckPassed→ Ready
//!    ▲         │ StartFailed      │ Exited            │ Exited
//!    │         ▼                  ▼                   ▼
//!    │    restart policy ◄──────────────────────────────  (AfterStop::Policy)
//!    │     │ delay 0     │ delay > 0        │ never / crash loop
//!    └─────┘             ▼                  ▼
//!                     Backoff ─Restart→   Failed  (until started by hand: Reset)
//!                       (Launch)
//! Running/Ready ─Stop→ Stopping ─Exited→ Exited (StayDown) | Starting (Start) | Failed (Fail)
//! Running ─ReadyTimeout→ Stopping (SIGKILL, then Failed)
//! ```
//!
//! A failed start goes through the same restart policy as a failed run, but is never
//! retried at once: its delay is at least the initial backoff.

pub use super::policy::{Check, Policy};
use super::restart::{Decision, Restarts, STABLE_AFTER};
use crate::log::Level;
use manifest::protocol::{ExitStatus, State};
use manifest::Kind;
use std::time::{Duration, Instant};

/// What happens when the current process exits after a stop request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// Not stopping: an exit goes through the restart policy.
    Policy,
    /// Stopped by request: stay down.
    StayDown,
    /// Restart requested: start again.
    Start,
    /// Killed for failing its readiness check: Failed, with the reason already recorded.
    Fail,
    /// Its manifest entry was replaced (an apply): back to Pending with a clean restart
    /// history, so the schedule starts it again once its dependencies are Ready.
    Pending,
}

/// The timers a service arms; each carries the run it was armed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// Start again after the backoff delay.
    Restart,
    /// Run the next readiness probe.
    ReadyPoll,
    /// Give up waiting for readiness.
    ReadyTimeout,
    /// The stop signal was not enough: SIGKILL.
    StopKill,
    /// The run lasted long enough that the backoff starts over.
    Stable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// The schedule (or an operator) says: start now.
    Launch,
    /// The container runs with this pid.
    Started { pid: i32 },
    /// The container could not be started.
    StartFailed { error: String },
    /// A readiness check passed.
    CheckPassed,
    /// A polled readiness check did not pass (yet).
    CheckPending,
    /// The main process was reaped.
    Exited { status: ExitStatus, oom: bool },
    /// Stop the process; `then` says what follows its exit.
    Stop { then: AfterStop },
    /// Started by hand after Exited/Failed: back to Pending, restart history cleared.
    Reset,
    /// Shutdown has begun: nothing starts any more, every exit stays down.
    Shutdown,
    /// A timer fired.
    Timer { timer: TimerKind, run: u64 },
    /// The start was not made: this turn of the event loop had spent its start budget.
    /// Back to Backoff, to start at the next turn; not counted as a restart.
    Deferred,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The service entered `state`: log it and tell event subscribers.
    State {
        state: State,
        detail: String,
    },
    /// Create and start the container for the current run; answer with
    /// [`Input::Started`] or [`Input::StartFailed`].
    Launch,
    Signal {
        pid: i32,
        signal: i32,
    },
    Arm {
        after: Duration,
        timer: TimerKind,
        run: u64,
    },
    /// Run the readiness probe once; answer with CheckPassed or CheckPending.
    Probe,
    /// Remove the run's container, cgroup and notify socket (`exited`: its init was reaped).
    Cleanup {
        exited: bool,
    },
    /// An onboot task finished; the next may run.
    OnbootDone {
        ok: bool,
    },
    Log {
        level: Level,
        text: String,
    },
}

#[derive(Debug, Clone)]
pub struct Machine {
    policy: Policy,
    state: State,
    pid: Option<i32>,
    /// Increments on every start; timers of an older run are ignored.
    run: u64,
    after_stop: AfterStop,
    started: Option<Instant>,
    restarts: Restarts,
    last_exit: Option<ExitStatus>,
    last_error: Option<String>,
    shutting_down: bool,
}

impl Machine {
    pub fn new(policy: Policy) -> Machine {
        Machine {
            policy,
            state: State::Pending,
            pid: None,
            run: 0,
            after_stop: AfterStop::Policy,
            started: None,
            restarts: Restarts::default(),
            last_exit: None,
            last_error: None,
            shutting_down: false,
        }
    }

    /// A machine that stays Failed with `error` (a manifest entry the loader rejected).
    pub fn failed(policy: Policy, error: String) -> Machine {
        let mut m = Machine::new(policy);
        m.state = State::Failed;
        m.last_error = Some(error);
        m
    }

    /// Takes a new policy (an applied entry replaced the old one); the run in progress, if
    /// any, keeps what was already armed for it.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    pub fn state(&self) -> State {
        self.state
    }
    pub fn pid(&self) -> Option<i32> {
        self.pid
    }
    pub fn run(&self) -> u64 {
        self.run
    }
    pub fn restarts(&self) -> u32 {
        self.restarts.total()
    }
    pub fn last_exit(&self) -> Option<ExitStatus> {
        self.last_exit
    }
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }
    /// Whether a stop signal has been sent and the exit is awaited.
    pub fn is_stopping(&self) -> bool {
        self.state == State::Stopping
    }

    pub fn step(&mut self, input: Input, now: Instant) -> Vec<Effect> {
        let mut fx = Vec::new();
        match input {
            Input::Launch
                if self.pid.is_none()
                    && matches!(
                        self.state,
                        State::Pending | State::Backoff | State::Exited | State::Failed
                    ) =>
            {
                self.launch(&mut fx)
            }
            Input::Started { pid } if self.state == State::Starting => {
                self.started(pid, now, &mut fx)
            }
            Input::StartFailed { error } if self.state == State::Starting => {
                self.start_failed(error, now, &mut fx)
            }
            Input::Deferred if self.state == State::Starting && self.pid.is_none() => {
                self.set(
                    State::Backoff,
                    "start deferred: this turn of the loop spent its start budget",
                    &mut fx,
                );
                fx.push(self.arm(Duration::ZERO, TimerKind::Restart));
            }
            Input::CheckPassed if self.state == State::Running => self.ready(now, &mut fx),
            Input::CheckPending if self.state == State::Running => {
                if let Check::Poll { interval } = self.policy.check {
                    fx.push(self.arm(interval, TimerKind::ReadyPoll));
                }
            }
            Input::Exited { status, oom } if self.pid.is_some() => {
                self.exited(status, oom, now, &mut fx)
            }
            Input::Stop { then } => self.stop(then, &mut fx),
            Input::Reset if matches!(self.state, State::Exited | State::Failed) => {
                self.restarts.reset();
                self.state = State::Pending;
            }
            Input::Shutdown => {
                self.shutting_down = true;
                self.after_stop = AfterStop::StayDown;
                if self.pid.is_none() && matches!(self.state, State::Pending | State::Backoff) {
                    self.state = State::Exited;
                }
            }
            Input::Timer { timer, run } if run == self.run => self.timer(timer, &mut fx),
            _ => {}
        }
        fx
    }

    fn set(&mut self, state: State, detail: impl Into<String>, fx: &mut Vec<Effect>) {
        self.state = state;
        fx.push(Effect::State {
            state,
            detail: detail.into(),
        });
    }

    fn arm(&self, after: Duration, timer: TimerKind) -> Effect {
        Effect::Arm {
            after,
            timer,
            run: self.run,
        }
    }

    fn launch(&mut self, fx: &mut Vec<Effect>) {
        if self.shutting_down {
            self.state = State::Exited;
            return;
        }
        self.run += 1;
        self.after_stop = AfterStop::Policy;
        self.set(State::Starting, "", fx);
        fx.push(Effect::Launch);
    }

    fn started(&mut self, pid: i32, now: Instant, fx: &mut Vec<Effect>) {
        self.pid = Some(pid);
        self.started = Some(now);
        self.last_error = None;
        if self.shutting_down {
            self.after_stop = AfterStop::StayDown;
        }
        self.set(State::Running, format!("pid {pid}"), fx);
        fx.push(self.arm(STABLE_AFTER, TimerKind::Stable));
        if self.policy.kind != Kind::Service {
            return;
        }
        match self.policy.check {
            Check::Started => self.ready(now, fx),
            Check::Notify => fx.push(self.arm(self.policy.ready_timeout, TimerKind::ReadyTimeout)),
            Check::Poll { .. } => {
                fx.push(self.arm(self.policy.ready_timeout, TimerKind::ReadyTimeout));
                fx.push(self.arm(Duration::ZERO, TimerKind::ReadyPoll));
            }
        }
    }

    fn start_failed(&mut self, error: String, now: Instant, fx: &mut Vec<Effect>) {
        fx.push(Effect::Cleanup { exited: false });
        fx.push(Effect::Log {
            level: Level::Error,
            text: format!("cannot start: {error}"),
        });
        self.last_error = Some(error.clone());
        if self.policy.kind == Kind::Onboot {
            self.set(State::Failed, error, fx);
            fx.push(Effect::OnbootDone { ok: false });
            return;
        }
        if self.shutting_down || !self.policy.restart.wants_restart(false) {
            self.set(State::Failed, error, fx);
            return;
        }
        let floor = self.policy.restart.backoff_initial;
        self.plan_restart(format!("cannot start: {error}"), now, floor, fx);
    }

    fn ready(&mut self, now: Instant, fx: &mut Vec<Effect>) {
        let ms = self
            .started
            .map(|t| now.saturating_duration_since(t).as_millis())
            .unwrap_or(0);
        let detail = format!("{} after {ms} ms", self.policy.check_name);
        self.set(State::Ready, detail, fx);
    }

    fn exited(&mut self, status: ExitStatus, oom: bool, now: Instant, fx: &mut Vec<Effect>) {
        let was = self.state;
        self.pid = None;
        self.last_exit = Some(status);
        let ran_for = self
            .started
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        fx.push(Effect::Cleanup { exited: true });
        let mut detail = format!("{status} after {} ms", ran_for.as_millis());
        if oom && status == ExitStatus::Signal(libc::SIGKILL) {
            detail.push_str(" (out of memory: killed by the OOM killer in its cgroup)");
        }
        if self.policy.kind == Kind::Onboot {
            let ok = status.success();
            if !ok {
                self.last_error = Some(detail.clone());
            }
            self.set(if ok { State::Exited } else { State::Failed }, detail, fx);
            fx.push(Effect::OnbootDone { ok });
            return;
        }
        match self.after_stop {
            AfterStop::StayDown => self.set(State::Exited, format!("stopped ({detail})"), fx),
            AfterStop::Fail => {
                let why = self.last_error.clone().unwrap_or_default();
                self.set(State::Failed, format!("{why} ({detail})"), fx);
            }
            AfterStop::Start => {
                self.state = State::Pending;
                self.launch(fx);
            }
            AfterStop::Pending => {
                self.restarts.reset();
                self.set(
                    State::Pending,
                    format!("stopped for its new entry ({detail})"),
                    fx,
                );
            }
            AfterStop::Policy => {
                if was == State::Running && self.policy.check != Check::Started {
                    detail.push_str(" before it became ready");
                }
                if self.policy.restart.wants_restart(status.success()) {
                    self.plan_restart(detail, now, Duration::ZERO, fx);
                } else {
                    if !status.success() {
                        self.last_error = Some(detail.clone());
                    }
                    let st = if status.success() {
                        State::Exited
                    } else {
                        State::Failed
                    };
                    self.set(st, detail, fx);
                }
            }
        }
    }

    fn plan_restart(
        &mut self,
        detail: String,
        now: Instant,
        floor: Duration,
        fx: &mut Vec<Effect>,
    ) {
        match self.restarts.next(&self.policy.restart, now, floor) {
            Decision::CrashLoop { restarts } => {
                let msg = format!(
                    "crash loop: {restarts} restarts within {} s, last {detail}; start it by hand",
                    self.policy.restart.crash_loop_window.as_secs()
                );
                self.last_error = Some(msg.clone());
                self.set(State::Failed, msg, fx);
            }
            Decision::Restart { delay } if delay.is_zero() => {
                self.set(State::Pending, format!("{detail}; restarting"), fx);
                self.launch(fx);
            }
            Decision::Restart { delay } => {
                let text = format!("{detail}; restart in {} ms", delay.as_millis());
                self.set(State::Backoff, text, fx);
                fx.push(self.arm(delay, TimerKind::Restart));
            }
        }
    }

    fn stop(&mut self, then: AfterStop, fx: &mut Vec<Effect>) {
        match (self.pid, self.state) {
            (Some(pid), state) => {
                self.after_stop = if self.shutting_down {
                    AfterStop::StayDown
                } else {
                    then
                };
                if state != State::Stopping {
                    fx.push(Effect::Signal {
                        pid,
                        signal: self.policy.stop_signal,
                    });
                    fx.push(self.arm(self.policy.stop_timeout, TimerKind::StopKill));
                    let detail = format!("sent {}", self.policy.stop_signal_name);
                    self.set(State::Stopping, detail, fx);
                }
            }
            (None, _) if then == AfterStop::Pending => {
                self.restarts.reset();
                if self.state != State::Pending {
                    self.set(State::Pending, "waiting to start with its new entry", fx);
                }
            }
            (None, State::Backoff | State::Pending) => {
                if then == AfterStop::Start {
                    self.state = State::Pending;
                    self.launch(fx);
                } else {
                    self.set(State::Exited, "stopped before it started", fx);
                }
            }
            (None, _) => {}
        }
    }

    fn timer(&mut self, timer: TimerKind, fx: &mut Vec<Effect>) {
        match timer {
            TimerKind::Restart if self.state == State::Backoff => {
                self.state = State::Pending;
                self.launch(fx);
            }
            TimerKind::ReadyPoll if self.state == State::Running => fx.push(Effect::Probe),
            TimerKind::ReadyTimeout if self.state == State::Running => {
                let msg = format!(
                    "not ready after {} s ({} check)",
                    self.policy.ready_timeout.as_secs(),
                    self.policy.check_name
                );
                fx.push(Effect::Log {
                    level: Level::Error,
                    text: format!("{msg}: killing it"),
                });
                self.last_error = Some(msg.clone());
                self.after_stop = AfterStop::Fail;
                self.set(State::Stopping, msg, fx);
                if let Some(pid) = self.pid {
                    fx.push(Effect::Signal {
                        pid,
                        signal: libc::SIGKILL,
                    });
                }
            }
            TimerKind::StopKill if self.state == State::Stopping => {
                if let Some(pid) = self.pid {
                    fx.push(Effect::Log {
                        level: Level::Warn,
                        text: "did not stop in time: SIGKILL".into(),
                    });
                    fx.push(Effect::Signal {
                        pid,
                        signal: libc::SIGKILL,
                    });
                }
            }
            TimerKind::Stable if self.pid.is_some() => self.restarts.stable(),
            _ => {}
        }
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;

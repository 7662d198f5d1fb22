//! The supervisor: owns every service and drives each one's [`machine::Machine`]. It feeds
//! the machines their inputs — the schedule's go (onboot tasks in order, then services
//! whose dependencies are Ready, see [`schedule`]), exits routed by pid from the reaper,
//! timers, readiness results, API requests — and carries out the effects they return
//! through [`effects::Effects`] (libcontainer, signals, cgroups) and the reactor (timers,
//! pipes, notify sockets).
//!
//! | module | owns |
//! |---|---|
//! | [`machine`] | one service's states and transitions (pure) |
//! | `policy` | what a machine needs from the manifest entry, in typed units |
//! | [`restart`] | restart policy, backoff, crash-loop limit (pure) |
//! | [`schedule`] | onboot queue, dependency gate, boot report (pure) |
//! | [`effects`] | the trait every system call goes through; the real one and a fake |
//! | `launch` | what a start creates: notify socket, spec, pipes, the container |
//! | `io` | the services' output pipes and notify datagrams |
//! | [`api`] | what the control server may ask, with its typed errors |
//! | `svc` | one service's record: its entry, its machine, its pipes, logs and timestamps |
//! | `stopping` | what shutdown needs: reverse-dependency stop, the final SIGKILL |

pub mod api;
mod applied;
#[cfg(test)]
mod applied_tests;
pub mod effects;
mod io;
mod launch;
pub mod machine;
mod policy;
pub mod restart;
pub mod schedule;
mod stopping;
mod svc;
#[cfg(test)]
mod tests;

use crate::logs::now_ms;
use crate::reactor::{Reactor, Timer};
use crate::runtime::Runtime;
use effects::Effects;
use machine::{Effect, Input};
use manifest::protocol::{Event, ExitStatus, LogEntry, State};
use manifest::{Kind, OnFailure, Readiness};
use schedule::{Gate, Onboot};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use api::ApiError;
pub use svc::Svc;

/// Microseconds since boot (CLOCK_BOOTTIME): the boot timeline and start latencies.
pub fn boot_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// Milliseconds since boot (CLOCK_BOOTTIME).
pub fn boot_ms() -> u64 {
    boot_us() / 1000
}

/// Who a pid that is not a service's main process belongs to.
#[derive(Debug, Clone, Copy)]
enum PidOwner {
    Exec { client: u64 },
    Probe { svc: usize, run: u64 },
}

/// What happened since the control server last looked: for its subscribers.
#[derive(Default)]
pub struct Outbox {
    pub events: Vec<Event>,
    pub logs: Vec<(usize, LogEntry)>,
    /// Exits of exec'd processes, by control client.
    pub exec_exits: Vec<(u64, ExitStatus)>,
}

pub struct Supervisor {
    services: Vec<Svc>,
    fx: Box<dyn Effects>,
    run_dir: PathBuf,
    onboot: Onboot,
    others: HashMap<i32, PidOwner>,
    out: Outbox,
    /// Set when an onboot task with `on_failure: halt` fails.
    fatal: Option<crate::fatal::Fatal>,
    shutting_down: bool,
    /// Something became Ready or finished: the schedule must look again.
    reschedule: bool,
    boot_reported: bool,
    /// Console lines for notify datagrams from outside a service's cgroup.
    notify_refusals: crate::ratelimit::RateLimit,
    /// Time spent starting containers since this turn of the event loop began
    /// ([`Supervisor::begin_turn`]), and how much it may spend before the rest waits for
    /// the next turn.
    turn_spent: Duration,
    turn_budget: Duration,
    /// Starts were left for the next turn: the loop must not sleep.
    deferred: bool,
    /// Where services' log files go (for services added by an apply).
    var_log_dir: Option<PathBuf>,
    /// PID 1's state on the persistent partition: the image store, writable roots.
    state_dir: Option<PathBuf>,
}

/// How long one turn of the event loop may spend starting containers (issue 16, finding
/// 4). A start is synchronous and may take up to the start timeout when it hangs; with N
/// such starts in one pass PID 1 would serve nothing (control socket, reaping, watchdog)
/// for N × the timeout. Past this budget the remaining starts, and the service timers due
/// (restarts after backoff, probes), wait for the next turn, after the loop has served
/// what is ready: at most one start timeout passes between two turns.
pub const TURN_BUDGET: Duration = Duration::from_secs(1);

impl Supervisor {
    pub fn new(
        loaded: manifest::Loaded,
        runtime: Runtime,
        run_dir: &Path,
        cgroup_prefix: &str,
        var_log_dir: Option<PathBuf>,
    ) -> Supervisor {
        let fx = Box::new(effects::Live::new(runtime, cgroup_prefix));
        Supervisor::with_effects(loaded, fx, run_dir, var_log_dir)
    }

    pub fn with_effects(
        loaded: manifest::Loaded,
        fx: Box<dyn Effects>,
        run_dir: &Path,
        var_log_dir: Option<PathBuf>,
    ) -> Supervisor {
        let mut services = Vec::new();
        for def in loaded.manifest.services {
            services.push(Svc::from_def(def, var_log_dir.as_deref()));
        }
        for rej in &loaded.rejected {
            services.push(Svc::rejected(rej, &loaded.path));
        }
        let onboot = Onboot::new(
            services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.kind == Kind::Onboot && s.def.is_some())
                .map(|(i, _)| i),
        );
        Supervisor {
            services,
            fx,
            run_dir: run_dir.to_path_buf(),
            onboot,
            others: HashMap::new(),
            out: Outbox::default(),
            fatal: None,
            shutting_down: false,
            reschedule: false,
            boot_reported: false,
            notify_refusals: crate::ratelimit::RateLimit::new(
                5,
                std::time::Duration::from_secs(10),
            ),
            turn_spent: Duration::ZERO,
            turn_budget: TURN_BUDGET,
            deferred: false,
            var_log_dir,
            state_dir: None,
        }
    }

    /// Where the image store and the writable roots' upper directories are.
    pub fn set_state_dir(&mut self, dir: Option<PathBuf>) {
        self.state_dir = dir;
    }

    /// Adds the applied set (from the state partition) at boot, after the image's
    /// manifest: the good entries as Pending services, the rejected ones as Failed.
    pub fn add_applied_at_boot(&mut self, joined: manifest::applied::Joined, file: &str) {
        for def in joined.services {
            let mut svc = Svc::from_def(def, self.var_log_dir.as_deref());
            svc.applied = true;
            self.services.push(svc);
        }
        for rej in &joined.rejected {
            let mut svc = Svc::rejected(rej, file);
            svc.applied = true;
            self.services.push(svc);
        }
    }

    /// A new turn of the event loop: its start budget begins now.
    pub fn begin_turn(&mut self) {
        self.turn_spent = Duration::ZERO;
    }

    /// Whether this turn has spent its start budget (on container starts: nothing else
    /// counts, so the shutdown loop, which starts nothing, is never held back).
    fn over_budget(&self) -> bool {
        self.turn_spent >= self.turn_budget
    }

    /// Counts a container start's time against this turn's budget.
    pub(super) fn spent_on_start(&mut self, took: Duration) {
        self.turn_spent = self.turn_spent.saturating_add(took);
    }

    /// Whether starts or timers were left for the next turn (the loop then polls at once).
    pub fn has_deferred(&self) -> bool {
        self.deferred
    }

    #[cfg(test)]
    pub fn set_turn_budget(&mut self, budget: Duration) {
        self.turn_budget = budget;
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.services
            .iter()
            .position(|s| s.name == name && !s.removed)
    }

    pub fn service(&self, i: usize) -> &Svc {
        &self.services[i]
    }

    /// Why the fatal path must be taken (an `on_failure: halt` onboot task failed), once.
    pub fn take_fatal(&mut self) -> Option<crate::fatal::Fatal> {
        self.fatal.take()
    }

    /// Events, log lines and exec exits since the last call.
    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.out)
    }

    /// Feeds one input to service `i`'s machine and carries out the effects, including the
    /// inputs those effects produce (a launch's outcome, a probe's result).
    fn step(&mut self, i: usize, input: Input, r: &mut Reactor) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            for effect in self.services[i].machine.step(input, Instant::now()) {
                if let Some(next) = self.apply(i, effect, r) {
                    inputs.push_back(next);
                }
            }
        }
    }

    fn apply(&mut self, i: usize, effect: Effect, r: &mut Reactor) -> Option<Input> {
        match effect {
            Effect::State { state, detail } => self.announce(i, state, detail),
            // Every start goes through here: from the schedule, a restart (also one without
            // backoff, straight from an exit or a failed start), an operator's start.
            Effect::Launch if self.over_budget() && !self.shutting_down => {
                return Some(Input::Deferred)
            }
            Effect::Launch => return Some(self.launch(i, r)),
            Effect::Signal { pid, signal } => self.fx.kill(pid, signal),
            Effect::Arm { after, timer, run } => r.after(
                after,
                Timer::Service {
                    svc: i,
                    run,
                    kind: timer,
                },
            ),
            Effect::Probe => return Some(self.probe(i)),
            Effect::Cleanup { exited } => self.cleanup_container(i, exited, r),
            Effect::OnbootDone { ok } => self.onboot_done(i, ok),
            Effect::Log { level, text } => {
                crate::log::write(level, &self.services[i].name, format_args!("{text}"))
            }
        }
        None
    }

    /// A state change: the console line and the event for subscribers.
    fn announce(&mut self, i: usize, state: State, detail: String) {
        let s = &mut self.services[i];
        match state {
            State::Starting => s.status_text = None,
            State::Ready => {
                s.ready_boot_ms = Some(boot_ms());
                self.reschedule = true;
            }
            State::Exited | State::Failed => self.reschedule = true,
            _ => {}
        }
        let sep = if detail.is_empty() { "" } else { ": " };
        crate::info!(&s.name, "{}{sep}{detail}", state.as_str());
        self.out.events.push(Event {
            ts_ms: now_ms(),
            service: s.name.clone(),
            state,
            detail,
        });
    }

    fn probe(&mut self, i: usize) -> Input {
        let s = &self.services[i];
        let (Some(pid), Some(def)) = (s.pid(), s.def.as_ref()) else {
            return Input::CheckPending;
        };
        let run = s.machine.run();
        let name = s.name.clone();
        let check = def.readiness.clone();
        let running = s.probe_pid.is_some();
        match crate::readiness::probe(self.fx.as_mut(), &name, pid, &check, running) {
            Ok(crate::readiness::Probe::Passed) => Input::CheckPassed,
            Ok(crate::readiness::Probe::Pending) => Input::CheckPending,
            Ok(crate::readiness::Probe::Spawned(p)) => {
                self.services[i].probe_pid = Some(p);
                self.others.insert(p, PidOwner::Probe { svc: i, run });
                Input::CheckPending
            }
            Err(e) => {
                crate::warn!(&name, "readiness probe: {e}");
                Input::CheckPending
            }
        }
    }

    fn onboot_done(&mut self, i: usize, ok: bool) {
        self.onboot.done(i);
        self.reschedule = true;
        let s = &self.services[i];
        if !ok && s.def.as_ref().map(|d| d.on_failure) == Some(OnFailure::Halt) {
            self.fatal = Some(crate::fatal::Fatal::OnbootFailed {
                task: s.name.clone(),
                error: s.machine.last_error().unwrap_or_default().to_string(),
            });
        }
    }

    /// Starts whatever can start now: the next onboot task, or every service whose
    /// dependencies are Ready. Call after any change.
    pub fn schedule(&mut self, r: &mut Reactor) {
        // A service that becomes Ready while this runs only sets the flag; the loop picks
        // up its dependents, so a long chain does not recurse through launch → schedule.
        loop {
            self.reschedule = false;
            self.schedule_once(r);
            if !self.reschedule {
                break;
            }
        }
    }

    /// Runs [`Supervisor::schedule`] if something changed since it last ran, or starts
    /// were left for this turn.
    pub fn schedule_if_needed(&mut self, r: &mut Reactor) {
        if self.reschedule || self.deferred {
            self.deferred = false;
            self.schedule(r);
        }
    }

    fn schedule_once(&mut self, r: &mut Reactor) {
        if self.fatal.is_some() || self.shutting_down {
            return; // the shutdown path is next or running; nothing more starts
        }
        // Onboot tasks one at a time, in order; one that fails to start finishes at once.
        loop {
            if self.onboot.launchable() && self.over_budget() {
                self.deferred = true;
                return;
            }
            let Some(i) = self.onboot.next() else { break };
            self.step(i, Input::Launch, r);
        }
        if !self.onboot.finished() {
            return;
        }
        for i in 0..self.services.len() {
            let s = &self.services[i];
            if s.state() != State::Pending || s.kind != Kind::Service || s.removed {
                continue;
            }
            let Some(def) = &s.def else { continue };
            let lookup = |name: &str| {
                self.find(name)
                    .map(|d| (self.services[d].kind, self.services[d].state()))
            };
            match schedule::gate(&def.depends_on, lookup) {
                Gate::Go if self.over_budget() => {
                    self.deferred = true;
                    break;
                }
                Gate::Go => {
                    self.step(i, Input::Launch, r);
                    // A container start takes PID 1 a while (tens of ms), and readiness
                    // timers wait meanwhile. The cheap checks run between starts, so a
                    // service whose dependency just became Ready starts next, not after
                    // the whole batch.
                    self.check_files_ready(r);
                    if self.reschedule {
                        break;
                    }
                }
                Gate::Wait(why) => self.services[i].status_text = Some(why),
            }
        }
        self.report_boot();
    }

    /// Marks Ready every running service whose `file` readiness check passes now.
    fn check_files_ready(&mut self, r: &mut Reactor) {
        for i in 0..self.services.len() {
            let s = &self.services[i];
            let (State::Running, Some(pid), Some(def)) = (s.state(), s.pid(), &s.def) else {
                continue;
            };
            if let Readiness::File { path, .. } = &def.readiness {
                if self.fx.path_exists_in(pid, path) {
                    self.step(i, Input::CheckPassed, r);
                }
            }
        }
    }

    /// Prints the boot marker once every service has settled (Ready, Failed or Exited).
    fn report_boot(&mut self) {
        if self.boot_reported || !self.onboot.finished() {
            return;
        }
        let all: Vec<(&str, Kind, State)> = self
            .services
            .iter()
            .filter(|s| !s.removed)
            .map(|s| (s.name.as_str(), s.kind, s.state()))
            .collect();
        if let Some(text) = schedule::boot_report(&all, boot_ms()) {
            self.boot_reported = true;
            crate::log::marker(&text);
        }
    }

    /// Routes one exit from the reaper. Returns false if no service or exec owned the pid.
    pub fn on_exit(&mut self, pid: i32, status: ExitStatus, r: &mut Reactor) -> bool {
        if let Some(owner) = self.others.remove(&pid) {
            match owner {
                PidOwner::Exec { client } => self.out.exec_exits.push((client, status)),
                PidOwner::Probe { svc, run } => {
                    self.services[svc].probe_pid = None;
                    if self.services[svc].machine.run() == run && status.success() {
                        self.step(svc, Input::CheckPassed, r);
                    }
                }
            }
            return true;
        }
        let Some(i) = self.services.iter().position(|s| s.pid() == Some(pid)) else {
            return false;
        };
        self.services[i].exited_boot_us = Some(boot_us());
        self.drain_pipes(i);
        let oom = self.fx.oom_kills(&self.services[i].name).unwrap_or(0) > 0;
        self.step(i, Input::Exited { status, oom }, r);
        self.schedule(r);
        true
    }

    pub fn on_timer(&mut self, t: Timer, r: &mut Reactor) {
        let Timer::Service { svc, run, kind } = t;
        if self.over_budget() && !self.shutting_down {
            // Due, but this turn's budget went on starts: first the loop serves what is
            // ready, then the next turn takes the timer.
            r.after(Duration::ZERO, t);
            self.deferred = true;
            return;
        }
        if svc < self.services.len() {
            self.step(svc, Input::Timer { timer: kind, run }, r);
            self.schedule_if_needed(r);
        }
    }

    /// Closes every service's log file (shutdown, before /var is unmounted).
    pub fn close_log_files(&mut self) {
        for s in &mut self.services {
            s.logs.close_file();
        }
    }
}

//! The supervisor: every service's state machine. It starts onboot tasks in manifest order,
//! then services as soon as everything they depend on is Ready; watches readiness; routes
//! exits from the reaper to restart policy, backoff and the crash-loop limit; and stops
//! services on request or at shutdown. Containers are created through [`crate::runtime`].
//!
//! ```text
//! Pending ─deps ready→ Starting ─container runs→ Running ─ready→ Ready
//!    ▲                    │ start error              │ exit        │ exit
//!    │                    ▼                          ▼             ▼
//!    └──── Backoff ◄── policy says restart ◄──── (exit routed by pid)
//!                         │ crash loop / never           Stopping → Exited
//!                         ▼
//!                       Failed (until started by hand)
//! ```

use crate::cgroups;
use crate::logs::{now_ms, LogBuffer};
use crate::reactor::{Reactor, Source, Timer};
use crate::runtime::{Runtime, Stdio};
use crate::spec;
use manifest::protocol::{Event, ExitStatus, LogEntry, ServiceStatus, State, Stream};
use manifest::{Kind, OnFailure, Readiness, RestartPolicy, Service};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A run that lasts this long resets the backoff to "restart at once".
const STABLE_AFTER: Duration = Duration::from_secs(10);

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

/// A pipe end being read for a service's output.
struct Pipe {
    token: u64,
    fd: OwnedFd,
    stream: Stream,
}

pub struct Svc {
    /// None for an entry the manifest loader rejected: it only shows as Failed.
    pub def: Option<Service>,
    pub name: String,
    pub kind: Kind,
    pub state: State,
    pub pid: Option<i32>,
    /// Increments on every start; timers and pipes from an older run are ignored.
    run: u64,
    started_at_ms: Option<u64>,
    started_boot_ms: Option<u64>,
    ready_boot_ms: Option<u64>,
    started_boot_us: Option<u64>,
    start_us: Option<u64>,
    exited_boot_us: Option<u64>,
    started_instant: Option<Instant>,
    pub restarts: u32,
    /// Start times of recent restarts, for the crash-loop limit.
    recent_restarts: VecDeque<Instant>,
    /// Restarts in a row without a stable run, for the backoff schedule.
    backoff_step: u32,
    pub last_exit: Option<ExitStatus>,
    pub last_error: Option<String>,
    status_text: Option<String>,
    pub logs: LogBuffer,
    pipes: Vec<Pipe>,
    notify: Option<(u64, UnixDatagram)>,
    /// A readiness probe process in flight.
    probe_pid: Option<i32>,
    /// What to do when the current process exits after a stop request.
    after_stop: AfterStop,
    pub spec: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    /// Not stopping: an exit goes through the restart policy.
    Policy,
    /// Stopped by request: stay down.
    StayDown,
    /// Restart requested: start again.
    Start,
    /// Killed for failing its readiness check: Failed, with the reason already recorded.
    Fail,
}

/// Who a pid that is not a service's main process belongs to.
#[derive(Debug, Clone, Copy)]
pub enum PidOwner {
    Exec { client: u64 },
    Probe { svc: usize, run: u64 },
}

/// What the control server asked for, or an error to report.
pub type ApiResult = Result<String, (manifest::protocol::ErrorKind, String)>;

pub struct Supervisor {
    pub services: Vec<Svc>,
    runtime: Runtime,
    cgroup_prefix: String,
    run_dir: PathBuf,
    /// Onboot tasks still to run, in order; services wait until it is empty.
    onboot_queue: VecDeque<usize>,
    onboot_running: Option<usize>,
    pub others: HashMap<i32, PidOwner>,
    /// Events and log lines for the control server's subscribers.
    pub events_out: Vec<Event>,
    pub logs_out: Vec<(usize, LogEntry)>,
    /// Exits of exec'd processes for the control server.
    pub exec_exits: Vec<(u64, ExitStatus)>,
    /// Order in which services were started, for stopping in reverse.
    start_order: Vec<usize>,
    /// Set when an onboot task with `on_failure: halt` fails.
    pub fatal: Option<String>,
    /// Set once shutdown has begun.
    shutting_down: bool,
    /// Something became Ready: dependents may start.
    reschedule: bool,
    boot_reported: bool,
}

impl Supervisor {
    pub fn new(
        loaded: manifest::Loaded,
        runtime: Runtime,
        run_dir: &Path,
        cgroup_prefix: &str,
        var_log_dir: Option<PathBuf>,
    ) -> Supervisor {
        let mut services = Vec::new();
        for def in loaded.manifest.services {
            let cap = def.log_buffer_bytes() as usize;
            let file = var_log_dir
                .as_ref()
                .map(|d| d.join(format!("{}.log", def.name)));
            services.push(Svc::new(
                def.name.clone(),
                def.kind,
                Some(def),
                LogBuffer::new(cap, file),
            ));
        }
        for rej in &loaded.rejected {
            let mut s = Svc::new(rej.name.clone(), rej.kind, None, LogBuffer::new(4096, None));
            s.state = State::Failed;
            s.last_error = Some(rej.describe(&loaded.path));
            crate::error!(&rej.name, "rejected: {}", rej.describe(&loaded.path));
            services.push(s);
        }
        let onboot_queue = services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.kind == Kind::Onboot && s.def.is_some())
            .map(|(i, _)| i)
            .collect();
        Supervisor {
            services,
            runtime,
            cgroup_prefix: cgroup_prefix.to_string(),
            run_dir: run_dir.to_path_buf(),
            onboot_queue,
            onboot_running: None,
            others: HashMap::new(),
            events_out: Vec::new(),
            logs_out: Vec::new(),
            exec_exits: Vec::new(),
            start_order: Vec::new(),
            fatal: None,
            shutting_down: false,
            reschedule: false,
            boot_reported: false,
        }
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name == name)
    }

    fn set_state(&mut self, i: usize, state: State, detail: impl Into<String>) {
        let detail = detail.into();
        let s = &mut self.services[i];
        s.state = state;
        crate::info!(
            &s.name,
            "{}{}{}",
            state.as_str(),
            if detail.is_empty() { "" } else { ": " },
            detail
        );
        self.events_out.push(Event {
            ts_ms: now_ms(),
            service: s.name.clone(),
            state,
            detail,
        });
    }

    /// Starts whatever can start now: the next onboot task, or every service whose
    /// dependencies are Ready. Call after any change.
    pub fn schedule(&mut self, r: &mut Reactor) {
        // A service that becomes Ready while this runs (readiness `started`) only sets the
        // flag; the loop picks up its dependents, so a long dependency chain does not
        // recurse through launch → mark_ready → schedule.
        loop {
            self.reschedule = false;
            self.schedule_once(r);
            if !self.reschedule {
                break;
            }
        }
    }

    /// Runs [`Supervisor::schedule`] if something became Ready since it last ran.
    pub fn schedule_if_needed(&mut self, r: &mut Reactor) {
        if self.reschedule {
            self.schedule(r);
        }
    }

    fn schedule_once(&mut self, r: &mut Reactor) {
        if self.fatal.is_some() || self.shutting_down {
            return; // the shutdown path is next or running; nothing more starts
        }
        // Onboot tasks one at a time, in order; one that fails to start finishes at once.
        while self.onboot_running.is_none() {
            let Some(i) = self.onboot_queue.pop_front() else {
                break;
            };
            self.onboot_running = Some(i);
            self.launch(i, r);
        }
        if self.onboot_running.is_some() {
            return;
        }
        for i in 0..self.services.len() {
            let s = &self.services[i];
            if s.state != State::Pending || s.kind != Kind::Service {
                continue;
            }
            let Some(def) = &s.def else { continue };
            let mut waiting = None;
            for dep in &def.depends_on {
                match self.find(dep).map(|d| &self.services[d]) {
                    Some(d) if d.state == State::Ready => {}
                    Some(d) if d.kind == Kind::Onboot && d.state == State::Exited => {}
                    Some(d) => waiting = Some(format!("waiting for {dep} ({})", d.state.as_str())),
                    None => waiting = Some(format!("waiting for {dep} (unknown)")),
                }
            }
            match waiting {
                None => {
                    self.launch(i, r);
                    // A container start takes PID 1 a while (tens of ms, more on a slow
                    // machine), and the readiness timers of the services started before it
                    // wait meanwhile. The cheap checks run between starts, so that a
                    // service whose dependency just became Ready starts next, not after
                    // the whole batch.
                    self.check_files_ready();
                    if self.reschedule {
                        break;
                    }
                }
                Some(why) => self.services[i].status_text = Some(why),
            }
        }
        self.report_boot();
    }

    /// Marks Ready every running service whose `file` readiness check passes now (one stat
    /// each; the other kinds wait for their timers).
    fn check_files_ready(&mut self) {
        for i in 0..self.services.len() {
            let s = &self.services[i];
            let (State::Running, Some(pid), Some(def)) = (s.state, s.pid, &s.def) else {
                continue;
            };
            if let Readiness::File { path, .. } = &def.readiness {
                if file_ready(pid, path) {
                    self.mark_ready(i);
                }
            }
        }
    }

    /// The health set now (every service and onboot task whose entry does not say
    /// `"health": false`; a rejected entry counts, as failed), for the trial-boot gate.
    pub fn health(&self) -> crate::health::Health {
        let mut h = crate::health::Health {
            all_ready: true,
            ..Default::default()
        };
        for s in &self.services {
            if s.def.as_ref().is_some_and(|d| !d.health) {
                continue;
            }
            let ok = match (s.kind, s.state) {
                (_, State::Failed) => {
                    let why = s.last_error.clone().unwrap_or_else(|| "failed".into());
                    h.failed.push((s.name.clone(), why));
                    false
                }
                (Kind::Service, State::Ready) => true,
                (Kind::Onboot, State::Exited) => s.last_exit.is_some_and(|e| e.success()),
                _ => false,
            };
            if !ok {
                h.all_ready = false;
                if s.state != State::Failed {
                    h.waiting.push(s.name.clone());
                }
            }
        }
        h
    }

    /// Prints the boot marker once every service has settled (Ready, Failed or Exited).
    fn report_boot(&mut self) {
        if self.boot_reported || !self.onboot_queue.is_empty() || self.onboot_running.is_some() {
            return;
        }
        let svcs: Vec<&Svc> = self
            .services
            .iter()
            .filter(|s| s.kind == Kind::Service)
            .collect();
        if svcs
            .iter()
            .any(|s| !matches!(s.state, State::Ready | State::Failed | State::Exited))
        {
            return;
        }
        self.boot_reported = true;
        let named = |state: State| -> Vec<&str> {
            svcs.iter()
                .filter(|s| s.state == state)
                .map(|s| s.name.as_str())
                .collect()
        };
        let (failed, exited) = (named(State::Failed), named(State::Exited));
        if failed.is_empty() && exited.is_empty() {
            crate::log::marker(&format!(
                "all services ready ({} services, {} ms since boot)",
                svcs.len(),
                boot_ms()
            ));
        } else {
            let mut text = format!(
                "boot complete: {} ready",
                svcs.len() - failed.len() - exited.len()
            );
            if !failed.is_empty() {
                text.push_str(&format!(", {} failed: {}", failed.len(), failed.join(", ")));
            }
            if !exited.is_empty() {
                text.push_str(&format!(", {} exited: {}", exited.len(), exited.join(", ")));
            }
            crate::log::marker(&format!("{text} ({} ms since boot)", boot_ms()));
        }
    }

    fn launch(&mut self, i: usize, r: &mut Reactor) {
        let Some(def) = self.services[i].def.clone() else {
            return;
        };
        self.services[i].run += 1;
        let run = self.services[i].run;
        self.services[i].status_text = None;
        self.services[i].after_stop = AfterStop::Policy;
        self.set_state(i, State::Starting, "");
        let t0 = boot_us();
        match self.create(i, &def, r) {
            Ok(pid) => {
                let t1 = boot_us();
                let s = &mut self.services[i];
                s.pid = Some(pid);
                s.started_boot_us = Some(t1);
                s.start_us = Some(t1 - t0);
                s.started_at_ms = Some(now_ms());
                s.started_boot_ms = Some(boot_ms());
                s.started_instant = Some(Instant::now());
                s.ready_boot_ms = None;
                s.last_error = None;
                if !self.start_order.contains(&i) {
                    self.start_order.push(i);
                }
                self.set_state(i, State::Running, format!("pid {pid}"));
                r.after(STABLE_AFTER, Timer::Stable { svc: i, run });
                if def.kind == Kind::Service {
                    match def.readiness {
                        Readiness::Started => self.mark_ready(i),
                        ref other => {
                            r.after(
                                Duration::from_secs(other.timeout_secs()),
                                Timer::ReadyTimeout { svc: i, run },
                            );
                            if !matches!(other, Readiness::Notify { .. }) {
                                r.after(Duration::ZERO, Timer::ReadyPoll { svc: i, run });
                            }
                        }
                    }
                }
            }
            Err(e) => {
                self.close_io(i, r);
                self.cleanup_container(i, false);
                let s = &mut self.services[i];
                s.last_error = Some(e.clone());
                crate::error!(&s.name, "cannot start: {e}");
                self.set_state(i, State::Failed, e);
                if def.kind == Kind::Onboot {
                    self.onboot_done(i, false);
                }
            }
        }
    }

    /// Creates the pipes, notify socket, spec and container; returns the pid.
    fn create(&mut self, i: usize, def: &Service, r: &mut Reactor) -> Result<i32, String> {
        if !Path::new(&def.root).is_dir() {
            return Err(format!(
                "image root {} does not exist or is not a directory",
                def.root
            ));
        }
        self.close_io(i, r);
        let notify_path = self
            .run_dir
            .join("notify")
            .join(format!("{}.sock", def.name));
        let notify_host = if matches!(def.readiness, Readiness::Notify { .. }) {
            let _ = std::fs::create_dir_all(notify_path.parent().unwrap_or(Path::new("/")));
            let _ = std::fs::remove_file(&notify_path);
            let sock = UnixDatagram::bind(&notify_path)
                .map_err(|e| format!("notify socket {}: {e}", notify_path.display()))?;
            sock.set_nonblocking(true).map_err(|e| e.to_string())?;
            let token = r
                .add(sock.as_fd(), Source::Notify { svc: i })
                .map_err(|e| e.to_string())?;
            self.services[i].notify = Some((token, sock));
            Some(notify_path.to_string_lossy().into_owned())
        } else {
            None
        };
        let ctx = spec::Context {
            cgroups_path: cgroups::spec_path(&self.cgroup_prefix, &def.name),
            notify_socket: notify_host.as_deref(),
            run_dir: &self.run_dir,
        };
        let spec = spec::generate(def, &ctx).map_err(|e| e.to_string())?;
        self.services[i].spec = serde_json::to_value(&spec).ok();
        let mut ends = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| format!("pipe: {e}"))?;
            nix::fcntl::fcntl(
                rd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(|e| format!("pipe: {e}"))?;
            let token = r
                .add(rd.as_fd(), Source::Pipe { svc: i, stream })
                .map_err(|e| e.to_string())?;
            self.services[i].pipes.push(Pipe {
                token,
                fd: rd,
                stream,
            });
            ends.push(wr);
        }
        let stdin = std::fs::File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
        let stderr = ends.pop().expect("two pipes");
        let stdout = ends.pop().expect("two pipes");
        let stdio = Stdio {
            stdin: stdin.into(),
            stdout,
            stderr,
        };
        // The write ends are handed to the container and closed here when `stdio` drops,
        // so the pipes report EOF once the service's processes are gone.
        self.runtime
            .create_and_start(&def.name, &spec, stdio)
            .map_err(|e| e.to_string())
    }

    fn mark_ready(&mut self, i: usize) {
        let s = &mut self.services[i];
        if !matches!(s.state, State::Running) {
            return;
        }
        s.ready_boot_ms = Some(boot_ms());
        let since = s
            .started_boot_ms
            .map(|t| boot_ms().saturating_sub(t))
            .unwrap_or(0);
        self.set_state(
            i,
            State::Ready,
            format!(
                "{} after {since} ms",
                self.services[i]
                    .def
                    .as_ref()
                    .map(|d| d.readiness.name())
                    .unwrap_or("started")
            ),
        );
        self.reschedule = true;
    }

    fn close_io(&mut self, i: usize, r: &mut Reactor) {
        let s = &mut self.services[i];
        for p in s.pipes.drain(..) {
            r.remove(p.token, &p.fd);
        }
        if let Some((token, sock)) = s.notify.take() {
            r.remove(token, &sock);
        }
    }

    /// Closes every service's log file (shutdown, before /var is unmounted).
    pub fn close_log_files(&mut self) {
        for s in &mut self.services {
            s.logs.close_file();
        }
    }

    /// Removes a run's container, its cgroup and its notify socket. After a failed start
    /// that takes libcontainer's delete, which kills what runs in it. After an `exited` run
    /// (its init reaped) whose cgroup is then empty, as a private pid namespace dies with
    /// its init, removing the cgroup and forgetting the state is all there is to do, which
    /// keeps restarts fast; processes left in the cgroup (a service in the host pid
    /// namespace) take the full delete too.
    fn cleanup_container(&mut self, i: usize, exited: bool) {
        let name = self.services[i].name.clone();
        if exited && cgroups::remove(&self.cgroup_prefix, &name) {
            self.runtime.forget(&name);
        } else {
            self.runtime.delete(&name);
            cgroups::remove(&self.cgroup_prefix, &name);
        }
        let _ = std::fs::remove_file(self.run_dir.join("notify").join(format!("{name}.sock")));
    }

    /// Routes one exit from the reaper. Returns false if no service or exec owned the pid.
    pub fn on_exit(&mut self, pid: i32, status: ExitStatus, r: &mut Reactor) -> bool {
        if let Some(owner) = self.others.remove(&pid) {
            match owner {
                PidOwner::Exec { client } => self.exec_exits.push((client, status)),
                PidOwner::Probe { svc, run } => {
                    self.services[svc].probe_pid = None;
                    if self.services[svc].run == run && status.success() {
                        self.mark_ready(svc);
                    }
                }
            }
            return true;
        }
        let Some(i) = self.services.iter().position(|s| s.pid == Some(pid)) else {
            return false;
        };
        let reaped = boot_us();
        self.drain_pipes(i);
        let s = &mut self.services[i];
        s.pid = None;
        s.last_exit = Some(status);
        s.exited_boot_us = Some(reaped);
        let ran_for = s.started_instant.map(|t| t.elapsed()).unwrap_or_default();
        let was = s.state;
        let after = s.after_stop;
        let oom = cgroups::oom_kills(&self.cgroup_prefix, &s.name).unwrap_or(0) > 0;
        self.cleanup_container(i, true);
        self.close_notify(i, r);
        let def = self.services[i]
            .def
            .clone()
            .expect("running services have a definition");
        let mut detail = format!("{status} after {} ms", ran_for.as_millis());
        if oom && status == ExitStatus::Signal(libc::SIGKILL) {
            detail.push_str(" (out of memory: killed by the OOM killer in its cgroup)");
        }
        if def.kind == Kind::Onboot {
            let ok = status.success();
            if !ok {
                self.services[i].last_error = Some(detail.clone());
            }
            self.set_state(i, if ok { State::Exited } else { State::Failed }, detail);
            self.onboot_done(i, ok);
            self.schedule(r);
            return true;
        }
        match after {
            AfterStop::StayDown => {
                self.set_state(i, State::Exited, format!("stopped ({detail})"));
            }
            AfterStop::Fail => {
                let why = self.services[i].last_error.clone().unwrap_or_default();
                self.set_state(i, State::Failed, format!("{why} ({detail})"));
            }
            AfterStop::Start => {
                self.services[i].state = State::Pending;
                self.launch(i, r);
            }
            AfterStop::Policy => {
                if was == State::Running && !matches!(def.readiness, Readiness::Started) {
                    detail.push_str(" before it became ready");
                }
                let restart = match def.restart.policy {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => !status.success(),
                    RestartPolicy::Never => false,
                };
                if !restart {
                    if !status.success() {
                        self.services[i].last_error = Some(detail.clone());
                    }
                    let st = if status.success() {
                        State::Exited
                    } else {
                        State::Failed
                    };
                    self.set_state(i, st, detail);
                } else {
                    self.plan_restart(i, &def, detail, r);
                }
            }
        }
        self.schedule(r);
        true
    }

    fn plan_restart(&mut self, i: usize, def: &Service, detail: String, r: &mut Reactor) {
        let now = Instant::now();
        let window = Duration::from_secs(def.restart.crash_loop_window_secs);
        let s = &mut self.services[i];
        while s
            .recent_restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            s.recent_restarts.pop_front();
        }
        if s.recent_restarts.len() as u32 >= def.restart.crash_loop_restarts {
            let msg = format!(
                "crash loop: {} restarts within {} s, last {detail}; start it by hand",
                s.recent_restarts.len(),
                def.restart.crash_loop_window_secs
            );
            s.last_error = Some(msg.clone());
            self.set_state(i, State::Failed, msg);
            return;
        }
        s.recent_restarts.push_back(now);
        s.restarts += 1;
        let delay = backoff_delay(
            s.backoff_step,
            def.restart.backoff_initial_ms,
            def.restart.backoff_max_ms,
        );
        s.backoff_step += 1;
        if delay.is_zero() {
            self.set_state(i, State::Pending, format!("{detail}; restarting"));
            self.launch(i, r);
        } else {
            let run = s.run;
            self.set_state(
                i,
                State::Backoff,
                format!("{detail}; restart in {} ms", delay.as_millis()),
            );
            r.after(delay, Timer::Restart { svc: i, run });
        }
    }

    fn onboot_done(&mut self, i: usize, ok: bool) {
        if self.onboot_running == Some(i) {
            self.onboot_running = None;
        }
        if !ok {
            let s = &self.services[i];
            if s.def.as_ref().map(|d| d.on_failure) == Some(OnFailure::Halt) {
                self.fatal = Some(format!(
                    "onboot task {} failed: {}",
                    s.name,
                    s.last_error.clone().unwrap_or_default()
                ));
            }
        }
    }

    fn close_notify(&mut self, i: usize, r: &mut Reactor) {
        if let Some((token, sock)) = self.services[i].notify.take() {
            r.remove(token, &sock);
        }
    }

    pub fn on_timer(&mut self, t: Timer, r: &mut Reactor) {
        match t {
            Timer::Restart { svc, run } => {
                if self.services[svc].run == run && self.services[svc].state == State::Backoff {
                    self.services[svc].state = State::Pending;
                    self.launch(svc, r);
                    self.schedule(r);
                }
            }
            Timer::ReadyPoll { svc, run } => {
                if self.services[svc].run == run && self.services[svc].state == State::Running {
                    self.probe(svc, run, r);
                }
            }
            Timer::ReadyTimeout { svc, run } => {
                let s = &self.services[svc];
                if s.run == run && s.state == State::Running {
                    let def = s.def.as_ref().expect("defined");
                    let msg = format!(
                        "not ready after {} s ({} check)",
                        def.readiness.timeout_secs(),
                        def.readiness.name()
                    );
                    crate::error!(&s.name, "{msg}: killing it");
                    let pid = s.pid;
                    self.services[svc].last_error = Some(msg.clone());
                    self.services[svc].after_stop = AfterStop::Fail;
                    self.set_state(svc, State::Stopping, msg);
                    if let Some(pid) = pid {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            Timer::StopKill { svc, run } => {
                let s = &self.services[svc];
                if s.run == run && s.state == State::Stopping {
                    if let Some(pid) = s.pid {
                        crate::warn!(&s.name, "did not stop in time: SIGKILL");
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
            Timer::Stable { svc, run } => {
                if self.services[svc].run == run && self.services[svc].pid.is_some() {
                    self.services[svc].backoff_step = 0;
                }
            }
        }
    }

    /// One readiness check; schedules the next if it did not pass.
    fn probe(&mut self, i: usize, run: u64, r: &mut Reactor) {
        let s = &self.services[i];
        let (Some(pid), Some(def)) = (s.pid, s.def.clone()) else {
            return;
        };
        let ready = match &def.readiness {
            Readiness::File { path, .. } => file_ready(pid, path),
            Readiness::Tcp { port, host, .. } => {
                crate::readiness::tcp_accepts(pid, host.as_deref().unwrap_or("127.0.0.1"), *port)
            }
            Readiness::Exec { command, .. } => {
                if s.probe_pid.is_none() {
                    match self.spawn_probe(i, command.clone()) {
                        Ok(p) => {
                            self.services[i].probe_pid = Some(p);
                            self.others.insert(p, PidOwner::Probe { svc: i, run });
                        }
                        Err(e) => crate::warn!(&def.name, "readiness probe: {e}"),
                    }
                }
                false
            }
            _ => return,
        };
        if ready {
            self.mark_ready(i);
        } else {
            r.after(
                Duration::from_millis(def.readiness.interval_ms()),
                Timer::ReadyPoll { svc: i, run },
            );
        }
    }

    fn spawn_probe(&mut self, i: usize, command: Vec<String>) -> Result<i32, String> {
        let null = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")
                .map(OwnedFd::from)
        };
        let io = |e: std::io::Error| e.to_string();
        let stdio = Stdio {
            stdin: null().map_err(io)?,
            stdout: null().map_err(io)?,
            stderr: null().map_err(io)?,
        };
        self.runtime
            .exec(&self.services[i].name, command, HashMap::new(), stdio)
            .map_err(|e| e.to_string())
    }

    /// Reads what is waiting on one of a service's pipes (bounded per call, for fairness).
    pub fn on_pipe(&mut self, i: usize, stream: Stream, r: &mut Reactor) {
        let s = &mut self.services[i];
        let Some(pos) = s.pipes.iter().position(|p| p.stream == stream) else {
            return;
        };
        let mut buf = [0u8; 16384];
        let mut budget = 4;
        loop {
            match nix::unistd::read(s.pipes[pos].fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    let p = s.pipes.remove(pos);
                    r.remove(p.token, &p.fd);
                    if let Some(e) = s.logs.close_stream(stream, now_ms()) {
                        self.logs_out.push((i, e));
                    }
                    return;
                }
                Ok(n) => {
                    for e in s.logs.ingest(stream, &buf[..n], now_ms()) {
                        self.logs_out.push((i, e));
                    }
                    budget -= 1;
                    if budget == 0 {
                        return;
                    }
                }
                Err(nix::Error::EAGAIN) => return,
                Err(nix::Error::EINTR) => {}
                Err(e) => {
                    crate::warn!(&s.name, "read {stream:?}: {e}");
                    let p = s.pipes.remove(pos);
                    r.remove(p.token, &p.fd);
                    return;
                }
            }
        }
    }

    /// Reads whatever output is left after the service exited, so its last words are kept.
    fn drain_pipes(&mut self, i: usize) {
        let s = &mut self.services[i];
        let mut buf = [0u8; 16384];
        for p in &s.pipes {
            for _ in 0..64 {
                match nix::unistd::read(p.fd.as_raw_fd(), &mut buf) {
                    Ok(n) if n > 0 => {
                        for e in s.logs.ingest(p.stream, &buf[..n], now_ms()) {
                            self.logs_out.push((i, e));
                        }
                    }
                    _ => break,
                }
            }
        }
    }

    /// sd_notify datagrams: READY=1 marks the service Ready, STATUS= is shown in ps.
    pub fn on_notify(&mut self, i: usize) {
        let mut buf = [0u8; 4096];
        let mut ready = false;
        let mut texts = Vec::new();
        if let Some((_, sock)) = &self.services[i].notify {
            while let Ok(n) = sock.recv(&mut buf) {
                texts.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        for text in texts {
            for line in text.lines() {
                if line == "READY=1" {
                    ready = true;
                } else if let Some(st) = line.strip_prefix("STATUS=") {
                    self.services[i].status_text = Some(st.to_string());
                }
            }
        }
        if ready {
            self.mark_ready(i);
        }
    }

    // ---- the in-process API the control server exposes ----

    pub fn status(&self, i: usize) -> ServiceStatus {
        let s = &self.services[i];
        let live = s.pid.is_some();
        ServiceStatus {
            name: s.name.clone(),
            kind: s.kind,
            state: s.state,
            ready: s.state == State::Ready,
            pid: s.pid,
            started_at_ms: s.started_at_ms,
            started_boot_ms: s.started_boot_ms,
            ready_boot_ms: s.ready_boot_ms,
            started_boot_us: s.started_boot_us,
            start_us: s.start_us,
            exited_boot_us: s.exited_boot_us,
            restarts: s.restarts,
            last_exit: s.last_exit,
            last_error: s.last_error.clone(),
            status_text: s.status_text.clone(),
            memory_bytes: if live {
                cgroups::memory_bytes(&self.cgroup_prefix, &s.name)
            } else {
                None
            },
            cpu_usec: if live {
                cgroups::cpu_usec(&self.cgroup_prefix, &s.name)
            } else {
                None
            },
        }
    }

    pub fn list(&self) -> Vec<ServiceStatus> {
        (0..self.services.len()).map(|i| self.status(i)).collect()
    }

    pub fn cgroup_path(&self, i: usize) -> String {
        cgroups::dir(&self.cgroup_prefix, &self.services[i].name, "memory")
            .display()
            .to_string()
    }

    pub fn bundle_path(&self, i: usize) -> String {
        self.runtime
            .bundle_dir(&self.services[i].name)
            .display()
            .to_string()
    }

    pub fn start(&mut self, i: usize, r: &mut Reactor) -> ApiResult {
        use manifest::protocol::ErrorKind::Conflict;
        let s = &mut self.services[i];
        if s.def.is_none() {
            return Err((
                Conflict,
                format!(
                    "{} was rejected by the manifest loader: {}",
                    s.name,
                    s.last_error.clone().unwrap_or_default()
                ),
            ));
        }
        match s.state {
            State::Exited | State::Failed => {
                s.recent_restarts.clear();
                s.backoff_step = 0;
                s.state = State::Pending;
                self.schedule(r);
                Ok(format!(
                    "{}: {}",
                    self.services[i].name,
                    self.services[i].state.as_str()
                ))
            }
            State::Backoff => {
                s.state = State::Pending;
                self.launch(i, r);
                Ok(format!("{} started", self.services[i].name))
            }
            st => Err((Conflict, format!("{} is already {}", s.name, st.as_str()))),
        }
    }

    /// Sends the stop signal and arms the SIGKILL timer; `then` says what follows the exit.
    fn stop_with(&mut self, i: usize, then: AfterStop, r: &mut Reactor) -> ApiResult {
        use manifest::protocol::ErrorKind::Conflict;
        let s = &mut self.services[i];
        let Some(def) = s.def.clone() else {
            return Err((Conflict, format!("{} is not running", s.name)));
        };
        match (s.pid, s.state) {
            (Some(pid), _) => {
                s.after_stop = then;
                if s.state != State::Stopping {
                    let sig = def.stop.signal.number();
                    let _ = kill(
                        Pid::from_raw(pid),
                        Signal::try_from(sig).unwrap_or(Signal::SIGTERM),
                    );
                    let run = s.run;
                    r.after(
                        Duration::from_secs(def.stop.timeout_secs),
                        Timer::StopKill { svc: i, run },
                    );
                    self.set_state(i, State::Stopping, format!("sent {}", def.stop.signal));
                }
                Ok(format!("{} stopping", def.name))
            }
            (None, State::Backoff | State::Pending) => {
                if then == AfterStop::Start {
                    s.state = State::Pending;
                    self.launch(i, r);
                    Ok(format!("{} started", def.name))
                } else {
                    self.set_state(i, State::Exited, "stopped before it started");
                    Ok(format!("{} stopped", def.name))
                }
            }
            (None, st) if then == AfterStop::Start => {
                let _ = st;
                self.start(i, r)
            }
            (None, st) => Err((
                Conflict,
                format!("{} is not running ({})", def.name, st.as_str()),
            )),
        }
    }

    pub fn stop(&mut self, i: usize, r: &mut Reactor) -> ApiResult {
        self.stop_with(i, AfterStop::StayDown, r)
    }

    pub fn restart(&mut self, i: usize, r: &mut Reactor) -> ApiResult {
        self.stop_with(i, AfterStop::Start, r)
    }

    /// Runs a process inside a running service; its exit is reported for `client`.
    pub fn exec(
        &mut self,
        i: usize,
        args: Vec<String>,
        env: Vec<String>,
        stdio: Stdio,
        client: u64,
    ) -> Result<i32, (manifest::protocol::ErrorKind, String)> {
        use manifest::protocol::ErrorKind::{Conflict, Failed};
        let s = &self.services[i];
        if s.pid.is_none() {
            return Err((
                Conflict,
                format!("{} is not running ({})", s.name, s.state.as_str()),
            ));
        }
        let env: HashMap<String, String> = env
            .iter()
            .filter_map(|e| {
                e.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let pid = self
            .runtime
            .exec(&s.name, args, env, stdio)
            .map_err(|e| (Failed, e.to_string()))?;
        self.others.insert(pid, PidOwner::Exec { client });
        Ok(pid)
    }

    /// Shutdown, step one: stop services in reverse start order, each with its own stop
    /// signal and timeout, then SIGKILL. Runs its own small loop over the reaper.
    pub fn stop_all(&mut self, r: &mut Reactor) {
        self.shutting_down = true;
        let mut order: Vec<usize> = self.start_order.iter().rev().copied().collect();
        for i in 0..self.services.len() {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        for i in order {
            let Some(pid) = self.services[i].pid else {
                // Nothing to stop, but keep it from starting again.
                if matches!(self.services[i].state, State::Backoff | State::Pending) {
                    self.services[i].state = State::Exited;
                }
                continue;
            };
            let def = self.services[i]
                .def
                .clone()
                .expect("running services have a definition");
            crate::info!(&def.name, "shutdown: sending {}", def.stop.signal);
            let _ = self.stop_with(i, AfterStop::StayDown, r);
            let deadline = Duration::from_secs(def.stop.timeout_secs);
            let status = crate::reaper::wait_for(pid, deadline).or_else(|| {
                crate::warn!(
                    &def.name,
                    "shutdown: no exit after {} s, SIGKILL",
                    def.stop.timeout_secs
                );
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                crate::reaper::wait_for(pid, Duration::from_secs(5))
            });
            match status {
                Some(st) => {
                    self.on_exit(pid, st, r);
                }
                None => crate::error!(&def.name, "shutdown: pid {pid} survived SIGKILL"),
            }
        }
    }
}

/// The `file` readiness check: the path exists inside the container's root.
fn file_ready(pid: i32, path: &str) -> bool {
    Path::new(&format!("/proc/{pid}/root{path}")).exists()
}

/// The backoff schedule: the first restart in a row is immediate, then `initial`,
/// doubling per restart up to `max`.
pub fn backoff_delay(step: u32, initial_ms: u64, max_ms: u64) -> Duration {
    if step == 0 {
        return Duration::ZERO;
    }
    let ms = initial_ms
        .saturating_mul(1u64 << (step - 1).min(32))
        .min(max_ms);
    Duration::from_millis(ms)
}

impl Svc {
    fn new(name: String, kind: Kind, def: Option<Service>, logs: LogBuffer) -> Svc {
        Svc {
            def,
            name,
            kind,
            state: State::Pending,
            pid: None,
            run: 0,
            started_at_ms: None,
            started_boot_ms: None,
            ready_boot_ms: None,
            started_boot_us: None,
            start_us: None,
            exited_boot_us: None,
            started_instant: None,
            restarts: 0,
            recent_restarts: VecDeque::new(),
            backoff_step: 0,
            last_exit: None,
            last_error: None,
            status_text: None,
            logs,
            pipes: Vec::new(),
            notify: None,
            probe_pid: None,
            after_stop: AfterStop::Policy,
            spec: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_schedule() {
        let d: Vec<u64> = (0..8)
            .map(|s| backoff_delay(s, 100, 1000).as_millis() as u64)
            .collect();
        assert_eq!(d, [0, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(
            backoff_delay(60, 100, 30_000),
            Duration::from_millis(30_000)
        );
    }
}

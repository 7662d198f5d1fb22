//! Measurement pieces shared by `cargo xtask bench` (on the host) and `bench-guest` (the
//! same measurements inside the QEMU guest): timing a plain fork+exec, timing an OCI
//! runtime's `run -d` of a bundle, and talking to PID 1's control socket.
//!
//! Everything here measures wall time with a monotonic clock, in microseconds, and leaves
//! the statistics to the caller.

use manifest::protocol::{
    read_frame, write_frame, Op, Request, Response, ServiceStatus, State, MAX_RESPONSE_BYTES,
};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn elapsed_us(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e6
}

/// Microseconds since boot (CLOCK_BOOTTIME), the clock of init's `started_boot_us`.
pub fn boot_us() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .expect("CLOCK_BOOTTIME is always readable");
    ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1000
}

/// A pause before every timed operation, so that deferred teardown of the previous one
/// (namespaces, RCU callbacks) does not land in its time. `SYSCTR_BENCH_SETTLE_MS`
/// overrides the default 30 ms.
pub fn settle() {
    let ms = std::env::var("SYSCTR_BENCH_SETTLE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    std::thread::sleep(Duration::from_millis(ms));
}

/// One plain fork+exec+wait of `path` (no shell, no spawn machinery in the child), in µs.
/// The caller must be single-threaded while this runs, which both users of this crate are.
pub fn fork_exec_wait(path: &Path, args: &[&str]) -> io::Result<f64> {
    let cstr =
        |b: &[u8]| CString::new(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e));
    let prog = cstr(path.as_os_str().as_bytes())?;
    let mut argv = vec![prog.clone()];
    for a in args {
        argv.push(cstr(a.as_bytes())?);
    }
    let t = Instant::now();
    // SAFETY: the process is single-threaded (see above) and the child only calls execv and
    // _exit, both async-signal-safe.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::execv(&prog, &argv);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(127) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None)?;
            let us = elapsed_us(t);
            if !matches!(st, nix::sys::wait::WaitStatus::Exited(_, 0)) {
                return Err(io::Error::other(format!(
                    "{} ended with {st:?}",
                    path.display()
                )));
            }
            Ok(us)
        }
    }
}

/// Runs a command to completion within `timeout` (killed after it): (success, wall µs).
/// Polls every 100 µs, which bounds the timing error.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> io::Result<(bool, f64)> {
    let t = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot start {cmd:?}: {e}")))?;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok((st.success(), elapsed_us(t)));
        }
        if t.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{cmd:?} did not finish within {timeout:?}"),
            ));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

pub use harness::procs::remove_cgroup_tree;

/// The first line a command prints (a version), or why it could not run.
pub fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_else(|e| format!("not available ({e})"))
}

/// An OCI runtime binary (crun, runc) running one bundle: `run -d`, then `delete -f`,
/// each timed per round.
pub struct Peer {
    pub rt: String,
    /// What the tables call it, e.g. "crun run -d".
    pub label: String,
    bundle: PathBuf,
    state: PathBuf,
    errfile: PathBuf,
    id: String,
    pub run: Vec<f64>,
    pub delete: Vec<f64>,
    /// Why it does not run (from the first failure); later rounds are skipped.
    pub error: Option<String>,
}

impl Peer {
    /// Writes `spec` as the bundle's config.json in `dir/bundle-<rt>`; the runtime's state
    /// goes to `dir/<rt>-state`.
    pub fn new(
        rt: &str,
        label: &str,
        spec: &serde_json::Value,
        dir: &Path,
        id: &str,
    ) -> io::Result<Peer> {
        let bundle = dir.join(format!("bundle-{rt}"));
        fs::create_dir_all(&bundle)?;
        let config = serde_json::to_vec_pretty(spec).map_err(io::Error::other)?;
        fs::write(bundle.join("config.json"), config)?;
        Ok(Peer {
            rt: rt.to_string(),
            label: label.to_string(),
            bundle,
            state: dir.join(format!("{rt}-state")),
            errfile: dir.join(format!("{rt}.err")),
            id: id.to_string(),
            run: Vec::new(),
            delete: Vec::new(),
            error: None,
        })
    }

    /// One settled, timed round; a failure is recorded, not returned.
    pub fn once(&mut self) {
        if self.error.is_some() {
            return;
        }
        if let Err(e) = self.round() {
            self.error = Some(if self.run.is_empty() {
                e
            } else {
                format!("round {} failed: {e}", self.run.len() + 1)
            });
        }
    }

    fn round(&mut self) -> Result<(), String> {
        let bundle = self.bundle.display().to_string();
        let id = self.id.clone();
        settle();
        let (ok, us, msg) = self.cmd(&["run", "-d", "--bundle", &bundle, &id])?;
        if !ok {
            let _ = self.cmd(&["delete", "-f", &id]);
            return Err(msg);
        }
        self.run.push(us);
        let (ok, us, msg) = self.cmd(&["delete", "-f", &id])?;
        if !ok {
            return Err(format!("delete failed: {msg}"));
        }
        self.delete.push(us);
        Ok(())
    }

    /// (success, wall µs, stderr). Stderr goes to a file, not a pipe: with `run -d` and no
    /// terminal the container inherits the runtime's stdio and would hold a pipe open.
    fn cmd(&self, args: &[&str]) -> Result<(bool, f64, String), String> {
        let err = fs::File::create(&self.errfile).map_err(|e| e.to_string())?;
        let mut c = Command::new(&self.rt);
        c.arg("--root")
            .arg(&self.state)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        let (ok, us) = run_bounded(&mut c, Duration::from_secs(30)).map_err(|e| e.to_string())?;
        let msg = fs::read_to_string(&self.errfile).unwrap_or_default();
        Ok((ok, us, msg.trim().to_string()))
    }
}

/// How often a waiting bench asks PID 1 for its status. Every figure is read from init's
/// own timestamps, so a slower poll costs no precision; a faster one would keep PID 1 busy
/// answering `ps` (4 ms per request in the TCG guest) while the thing measured happens.
pub const STATUS_POLL: Duration = Duration::from_millis(20);

/// A client of PID 1's control socket: one connection per request, as the CLI does.
pub struct Control {
    pub socket: PathBuf,
}

impl Control {
    pub fn new(socket: impl Into<PathBuf>) -> Control {
        Control {
            socket: socket.into(),
        }
    }

    pub fn call(&self, op: Op) -> Result<Response, String> {
        let what = format!("{op:?}");
        let mut s = UnixStream::connect(&self.socket)
            .map_err(|e| format!("connect {}: {e}", self.socket.display()))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        write_frame(&mut s, &Request::new(op)).map_err(|e| format!("{what}: {e}"))?;
        let body = read_frame(&mut s, MAX_RESPONSE_BYTES)
            .map_err(|e| format!("{what}: {e}"))?
            .ok_or_else(|| format!("{what}: init closed the connection"))?;
        let resp: Response =
            serde_json::from_slice(&body).map_err(|e| format!("{what}: bad reply: {e}"))?;
        match resp {
            Response::Error { kind, message } => Err(format!("{what}: {kind:?}: {message}")),
            r => Ok(r),
        }
    }

    pub fn ps(&self) -> Result<Vec<ServiceStatus>, String> {
        match self.call(Op::Ps {})? {
            Response::Services { services } => Ok(services),
            other => Err(format!("ps: unexpected reply {other:?}")),
        }
    }

    pub fn status(&self, name: &str) -> Result<ServiceStatus, String> {
        self.ps()?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| format!("no service {name}"))
    }

    /// The generated OCI spec of a service that has been started.
    pub fn spec(&self, name: &str) -> Result<serde_json::Value, String> {
        match self.call(Op::Inspect {
            service: name.into(),
        })? {
            Response::Inspect {
                spec: Some(spec), ..
            } => Ok(spec),
            other => Err(format!("inspect {name}: no spec in {other:?}")),
        }
    }

    /// Polls `ps` until `done` holds for the service, at most `timeout`.
    pub fn wait(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&ServiceStatus) -> bool,
    ) -> Result<ServiceStatus, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(name)?;
            if done(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!("{name}: still {:?} after {timeout:?}", s.state));
            }
            std::thread::sleep(STATUS_POLL);
        }
    }

    /// Stops a service and waits until its exit has been reaped.
    pub fn stop(&self, name: &str) -> Result<(), String> {
        self.call(Op::Stop {
            service: name.into(),
        })?;
        self.wait(name, Duration::from_secs(10), |s| {
            s.state == State::Exited && s.pid.is_none()
        })?;
        Ok(())
    }

    /// Starts a service; the reply comes once its container process runs.
    pub fn start(&self, name: &str) -> Result<(), String> {
        self.call(Op::Start {
            service: name.into(),
        })
        .map(drop)
    }
}

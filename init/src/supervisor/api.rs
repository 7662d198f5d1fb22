//! What the control server may ask of the supervisor — status, start, stop, restart, exec
//! — and [`ApiError`], the one list of everything a request can fail with, mapped here
//! (and only here) to the protocol's [`ErrorKind`]s.

use super::machine::{AfterStop, Input};
use super::{PidOwner, Supervisor};
use crate::bootlogs::BootLogError;
use crate::reactor::Reactor;
use crate::runtime::{RuntimeError, Stdio};
use manifest::protocol::{ErrorKind, ServiceStatus, State};
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error("protocol version {got} is not supported (init speaks {want})")]
    Version { got: u32, want: u32 },
    #[error("request of {len} bytes is larger than the {limit}-byte limit")]
    TooLarge { len: u32, limit: u32 },
    #[error("connection closed in the middle of a request frame")]
    Truncated,
    #[error("exec needs a command and exactly 3 file descriptors (stdin, stdout, stderr) passed with the request; got {fds} descriptors")]
    ExecStdio { fds: usize },
    #[error("exec: environment entry {entry:?} {why}")]
    ExecEnv { entry: String, why: &'static str },
    #[error("exec: {0}")]
    ExecRequest(String),
    #[error("{0}")]
    Refused(String),
    #[error("no service named {0:?}")]
    UnknownService(String),
    #[error("{name} was rejected by the manifest loader: {why}")]
    Rejected { name: String, why: String },
    #[error("{name} is already {state}")]
    Already { name: String, state: &'static str },
    #[error("{name} is not running ({state})")]
    NotRunning { name: String, state: &'static str },
    #[error("{name} is not running")]
    NeverRuns { name: String },
    #[error("cannot open /dev/kmsg: {0}")]
    Kmsg(#[source] std::io::Error),
    #[error("watch /dev/kmsg: {0}")]
    WatchKmsg(#[source] nix::Error),
    #[error(transparent)]
    Exec(RuntimeError),
    #[error(transparent)]
    BootLogs(#[from] crate::bootlogs::BootLogError),
    #[error("this system has no state partition for applied services (/var/lib/sysctr)")]
    NoStateDir,
    #[error("nothing applied; the request was refused:\n{0}")]
    ApplyInvalid(String),
    #[error("{0:?} is a service of the image's manifest; system services cannot be removed")]
    SystemService(String),
    #[error("nothing applied; the applied set in force is unchanged: {0}")]
    ApplyWrite(String),
    #[error("{0}")]
    ImageRequest(String),
    #[error("no image {0:?} in the store")]
    UnknownImage(String),
    #[error("image {image:?} is used by the applied service {service:?} (sysctr rm it first)")]
    ImageInUse { image: String, service: String },
    #[error("{0}")]
    ImageBusy(String),
    #[error("{0}")]
    ImageFailed(String),
}

impl ApiError {
    /// The protocol's error kind for this error: the one place the mapping is made.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::Malformed(_)
            | ApiError::Version { .. }
            | ApiError::Truncated
            | ApiError::ExecStdio { .. }
            | ApiError::ExecEnv { .. }
            | ApiError::ExecRequest(_)
            | ApiError::ApplyInvalid(_)
            | ApiError::ImageRequest(_) => ErrorKind::BadRequest,
            ApiError::TooLarge { .. } => ErrorKind::TooLarge,
            ApiError::Refused(_) => ErrorKind::PermissionDenied,
            ApiError::UnknownService(_) => ErrorKind::UnknownService,
            ApiError::Rejected { .. }
            | ApiError::Already { .. }
            | ApiError::NotRunning { .. }
            | ApiError::NeverRuns { .. }
            | ApiError::SystemService(_)
            | ApiError::ImageInUse { .. }
            | ApiError::ImageBusy(_) => ErrorKind::Conflict,
            ApiError::UnknownImage(_) => ErrorKind::UnknownService,
            ApiError::Kmsg(_)
            | ApiError::WatchKmsg(_)
            | ApiError::Exec(_)
            | ApiError::NoStateDir
            | ApiError::ApplyWrite(_)
            | ApiError::ImageFailed(_) => ErrorKind::Failed,
            ApiError::BootLogs(e) => match e {
                BootLogError::NoSuchBoot { .. } | BootLogError::BadName { .. } => {
                    ErrorKind::BadRequest
                }
                BootLogError::NoLog { .. } => ErrorKind::UnknownService,
                BootLogError::NotPersistent
                | BootLogError::Unsafe { .. }
                | BootLogError::Io { .. } => ErrorKind::Failed,
            },
        }
    }
}

/// A reply message, or why the request failed.
pub type ApiResult = Result<String, ApiError>;

impl Supervisor {
    pub fn lookup(&self, name: &str) -> Result<usize, ApiError> {
        self.find(name)
            .ok_or_else(|| ApiError::UnknownService(name.to_string()))
    }

    pub fn status(&self, i: usize) -> ServiceStatus {
        let s = &self.services[i];
        let m = &s.machine;
        let live = m.pid().is_some();
        ServiceStatus {
            name: s.name.clone(),
            kind: s.kind,
            state: m.state(),
            ready: m.state() == State::Ready,
            pid: m.pid(),
            started_at_ms: s.started_at_ms,
            started_boot_ms: s.started_boot_ms,
            ready_boot_ms: s.ready_boot_ms,
            started_boot_us: s.started_boot_us,
            start_us: s.start_us,
            exited_boot_us: s.exited_boot_us,
            restarts: m.restarts(),
            last_exit: m.last_exit(),
            last_error: m.last_error().map(str::to_string),
            status_text: s.status_text.clone(),
            memory_bytes: live.then(|| self.fx.memory_bytes(&s.name)).flatten(),
            cpu_usec: live.then(|| self.fx.cpu_usec(&s.name)).flatten(),
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
            // Applied services live on the state partition: going back to the other slot
            // would not change them, so they do not decide a trial boot.
            if s.removed || s.applied || s.def.as_ref().is_some_and(|d| !d.health) {
                continue;
            }
            let m = &s.machine;
            let ok = match (s.kind, m.state()) {
                (_, State::Failed) => {
                    let why = m.last_error().unwrap_or("failed").to_string();
                    h.failed.push((s.name.clone(), why));
                    false
                }
                (manifest::Kind::Service, State::Ready) => true,
                (manifest::Kind::Onboot, State::Exited) => {
                    m.last_exit().is_some_and(|e| e.success())
                }
                _ => false,
            };
            if !ok {
                h.all_ready = false;
                if m.state() != State::Failed {
                    h.waiting.push(s.name.clone());
                }
            }
        }
        h
    }

    pub fn list(&self) -> Vec<ServiceStatus> {
        (0..self.services.len())
            .filter(|&i| !self.services[i].removed)
            .map(|i| self.status(i))
            .collect()
    }

    pub fn cgroup_dir(&self, i: usize) -> String {
        self.fx
            .cgroup_dir(&self.services[i].name)
            .display()
            .to_string()
    }

    pub fn bundle_path(&self, i: usize) -> String {
        self.fx
            .bundle_dir(&self.services[i].name)
            .display()
            .to_string()
    }

    pub fn start(&mut self, i: usize, r: &mut Reactor) -> ApiResult {
        let s = &self.services[i];
        let name = s.name.clone();
        if s.def.is_none() {
            let why = s.machine.last_error().unwrap_or_default().to_string();
            return Err(ApiError::Rejected { name, why });
        }
        match s.state() {
            State::Exited | State::Failed => {
                self.step(i, Input::Reset, r);
                self.schedule(r);
                Ok(format!("{name}: {}", self.services[i].state().as_str()))
            }
            State::Backoff => {
                self.step(i, Input::Launch, r);
                self.schedule_if_needed(r);
                Ok(format!("{name} started"))
            }
            st => Err(ApiError::Already {
                name,
                state: st.as_str(),
            }),
        }
    }

    /// Sends the stop signal (the machine arms the SIGKILL timer); `then` says what follows.
    fn stop_with(&mut self, i: usize, then: AfterStop, r: &mut Reactor) -> ApiResult {
        let s = &self.services[i];
        let name = s.name.clone();
        if s.def.is_none() {
            return Err(ApiError::NeverRuns { name });
        }
        match (s.pid(), s.state()) {
            (Some(_), _) => {
                self.step(i, Input::Stop { then }, r);
                Ok(format!("{name} stopping"))
            }
            (None, State::Backoff | State::Pending) => {
                self.step(i, Input::Stop { then }, r);
                self.schedule_if_needed(r);
                Ok(if then == AfterStop::Start {
                    format!("{name} started")
                } else {
                    format!("{name} stopped")
                })
            }
            (None, _) if then == AfterStop::Start => self.start(i, r),
            (None, st) => Err(ApiError::NotRunning {
                name,
                state: st.as_str(),
            }),
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
    ) -> Result<i32, ApiError> {
        let s = &self.services[i];
        if s.pid().is_none() {
            return Err(ApiError::NotRunning {
                name: s.name.clone(),
                state: s.state().as_str(),
            });
        }
        let env = exec_env(&env)?;
        let name = s.name.clone();
        let pid = self
            .fx
            .exec(&name, args, env, stdio)
            .map_err(ApiError::Exec)?;
        self.others.insert(pid, PidOwner::Exec { client });
        Ok(pid)
    }
}

/// `KEY=VALUE` entries of an exec request, checked: a NUL byte or an empty key would only
/// fail later, inside the forked child.
fn exec_env(env: &[String]) -> Result<HashMap<String, String>, ApiError> {
    let bad = |entry: &String, why| ApiError::ExecEnv {
        entry: entry.clone(),
        why,
    };
    let mut out = HashMap::new();
    for entry in env {
        let Some((k, v)) = entry.split_once('=') else {
            return Err(bad(entry, "has no '='"));
        };
        if k.is_empty() {
            return Err(bad(entry, "has an empty name"));
        }
        if entry.contains('\0') {
            return Err(bad(entry, "contains a NUL byte"));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_env_is_checked() {
        let ok = exec_env(&["A=b".into(), "C=".into()]).unwrap();
        assert_eq!(ok.get("A").map(String::as_str), Some("b"));
        for bad in ["novalue", "=x", "A=b\0c"] {
            let e = exec_env(&[bad.to_string()]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadRequest, "{bad:?}: {e}");
        }
    }

    #[test]
    fn error_kinds() {
        assert_eq!(
            ApiError::UnknownService("x".into()).kind(),
            ErrorKind::UnknownService
        );
        assert_eq!(
            ApiError::TooLarge { len: 1, limit: 0 }.kind(),
            ErrorKind::TooLarge
        );
        assert_eq!(
            ApiError::Refused("no".into()).kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            ApiError::NotRunning {
                name: "a".into(),
                state: "exited"
            }
            .to_string(),
            "a is not running (exited)"
        );
    }
}

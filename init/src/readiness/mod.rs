//! Readiness: when a running service counts as Ready, so its dependents may start. Every
//! check lives here — `file` (a path inside the container), `tcp` (a port accepts, in the
//! service's network namespace), `exec` (a probe command exits 0), and `notify` (a READY=1
//! datagram on the service's own socket, accepted only from a process in its cgroup) —
//! together with the network-namespace helpers they need. The state machine
//! ([`crate::supervisor`]) decides when to check; this module only answers.

mod netns;
pub mod notify;

pub use netns::{loopback_up, tcp_accepts};

use crate::supervisor::effects::Effects;
use manifest::Readiness;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::Path;

/// What one look at a polled check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Passed,
    /// Not yet; look again after the interval.
    Pending,
    /// An exec probe was started with this pid; its exit (through the reaper) decides.
    Spawned(i32),
}

/// The `file` check: the path exists inside the container's root (seen through
/// /proc/<pid>/root, so the container's mounts count).
pub fn file_ready(pid: i32, path: &str) -> bool {
    Path::new(&format!("/proc/{pid}/root{path}")).exists()
}

/// Looks once at a polled check of service `name` whose init is `pid`. An exec probe
/// already in flight (`probe_running`) is not started twice.
pub fn probe(
    fx: &mut dyn Effects,
    name: &str,
    pid: i32,
    check: &Readiness,
    probe_running: bool,
) -> Result<Probe, String> {
    let passed = match check {
        Readiness::File { path, .. } => fx.path_exists_in(pid, path),
        Readiness::Tcp { port, host, .. } => {
            fx.tcp_accepts(pid, host.as_deref().unwrap_or("127.0.0.1"), *port)
        }
        Readiness::Exec { command, .. } => {
            if probe_running {
                return Ok(Probe::Pending);
            }
            return spawn_exec_probe(fx, name, command.clone()).map(Probe::Spawned);
        }
        Readiness::Started | Readiness::Notify { .. } => return Ok(Probe::Pending),
    };
    Ok(if passed {
        Probe::Passed
    } else {
        Probe::Pending
    })
}

/// Starts an `exec` probe inside the container, with /dev/null for its stdio.
fn spawn_exec_probe(fx: &mut dyn Effects, name: &str, command: Vec<String>) -> Result<i32, String> {
    let null = || -> Result<OwnedFd, String> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map(OwnedFd::from)
            .map_err(|e| format!("/dev/null: {e}"))
    };
    let stdio = crate::runtime::Stdio {
        stdin: null()?,
        stdout: null()?,
        stderr: null()?,
    };
    fx.exec(name, command, HashMap::new(), stdio)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::effects::{Call, Recording};

    #[test]
    fn probes_answer_through_the_effects() {
        let mut fx = Recording::default();
        fx.paths_in.borrow_mut().insert("/run/ready".into());
        let file = |path: &str| Readiness::File {
            path: path.into(),
            interval_ms: None,
            timeout_secs: None,
        };
        assert_eq!(
            probe(&mut fx, "s", 1, &file("/run/ready"), false),
            Ok(Probe::Passed)
        );
        assert_eq!(
            probe(&mut fx, "s", 1, &file("/nope"), false),
            Ok(Probe::Pending)
        );
        let tcp = Readiness::Tcp {
            port: 80,
            host: None,
            interval_ms: None,
            timeout_secs: None,
        };
        assert_eq!(probe(&mut fx, "s", 1, &tcp, false), Ok(Probe::Pending));
        let exec = Readiness::Exec {
            command: vec!["/bin/true".into()],
            interval_ms: None,
            timeout_secs: None,
        };
        assert!(matches!(
            probe(&mut fx, "s", 1, &exec, false),
            Ok(Probe::Spawned(_))
        ));
        assert_eq!(
            probe(&mut fx, "s", 1, &exec, true),
            Ok(Probe::Pending),
            "one exec probe at a time"
        );
        assert_eq!(
            fx.calls.borrow().as_slice(),
            [Call::Exec("s".into(), vec!["/bin/true".into()])]
        );
    }
}

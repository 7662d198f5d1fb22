//! The one reaper: the only place in PID 1 that calls `waitpid`. Every exit — of a service,
//! an exec'd process, a probe, a boot helper or an orphan re-parented to us — is collected
//! here and handed to its owner by pid. Nothing else waits (no `Command::wait`), so no two
//! waiters can race for the same child.

use manifest::protocol::ExitStatus;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

thread_local! {
    /// Exits collected but not yet handed to the event loop (e.g. while a boot helper ran).
    static PENDING: RefCell<VecDeque<(i32, ExitStatus)>> = const { RefCell::new(VecDeque::new()) };
}

/// Reaps every child that has exited, until none is left; queues them for [`take`].
/// `__WALL` also collects children created with a non-SIGCHLD exit signal.
pub fn reap() -> usize {
    let mut n = 0;
    loop {
        match waitpid(
            Pid::from_raw(-1),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
        ) {
            Ok(WaitStatus::Exited(pid, code)) => {
                push(pid.as_raw(), ExitStatus::Code(code));
                n += 1;
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                push(pid.as_raw(), ExitStatus::Signal(sig as i32));
                n += 1;
            }
            Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return n,
            Ok(_) => {} // stopped/continued: not an exit, keep draining
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                crate::warn!("reaper", "waitpid failed: {e}");
                return n;
            }
        }
    }
}

fn push(pid: i32, status: ExitStatus) {
    PENDING.with(|p| p.borrow_mut().push_back((pid, status)));
}

/// Takes every exit collected so far, oldest first.
pub fn take() -> Vec<(i32, ExitStatus)> {
    PENDING.with(|p| p.borrow_mut().drain(..).collect())
}

/// Waits (polling the reaper) until `pid` exits or `timeout` passes. Other exits stay queued
/// for the event loop. Used only before the event loop runs and during shutdown.
pub fn wait_for(pid: i32, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        reap();
        let found = PENDING.with(|p| {
            let mut p = p.borrow_mut();
            let i = p.iter().position(|(q, _)| *q == pid)?;
            p.remove(i).map(|(_, s)| s)
        });
        if found.is_some() {
            return found;
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs a helper program to completion through the reaper, killing it after `timeout`.
pub fn run_helper(
    cmd: &mut std::process::Command,
    timeout: Duration,
) -> Result<ExitStatus, String> {
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let pid = child.id() as i32;
    // The Child handle is dropped without waiting: the reaper owns the exit.
    drop(child);
    match wait_for(pid, timeout) {
        Some(s) => Ok(s),
        None => {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            wait_for(pid, Duration::from_secs(5));
            Err(format!(
                "{:?} did not finish within {timeout:?}",
                cmd.get_program()
            ))
        }
    }
}

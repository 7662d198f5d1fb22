//! The one way out: orderly shutdown for reboot, poweroff and halt, and the same path for
//! the fatal cases (a required boot step failed, an `on_failure: halt` task failed, a
//! panic). Services stop in parallel, each as soon as every service that depends on it
//! has exited, with its own stop signal and timeout; the whole step is bounded by the
//! longest stop timeout, and the services' output keeps being read meanwhile. Then every
//! remaining process gets SIGTERM and SIGKILL, filesystems are synced and unmounted, and
//! reboot(2) ends it. PID 1 never returns from here.
//!
//! In test mode as the init of a pid namespace, reboot(2) ends the namespace (its init is
//! killed with SIGHUP for restart, SIGINT for power-off/halt), which is what tests assert.
//! As a plain subreaper it only signals its own descendants and exits.

use crate::config::PowerAction;
use crate::reactor::{Reactor, Source};
use crate::supervisor::Supervisor;
use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// Stops everything and reboots/powers off/halts. `pid1` says whether reboot(2) is ours
/// to call (the machine's init or a pid namespace's init).
pub struct Plan {
    pub action: PowerAction,
    /// A fatal path (not a requested power action): a subreaper exits non-zero.
    pub fatal: bool,
    /// reboot(2) is ours to call (the machine's init or a pid namespace's init).
    pub pid1: bool,
    /// Unmount the machine's filesystems (not in test mode).
    pub unmount: bool,
    /// The services' cgroup subtree, removed once everything is dead.
    pub cgroup_prefix: String,
    /// Test mode: mounts made below the run directory, to undo on the host.
    pub test_mounts: Vec<std::path::PathBuf>,
}

pub fn run(plan: Plan, reason: &str, sup: Option<&mut Supervisor>, r: Option<&mut Reactor>) -> ! {
    let Plan {
        action,
        fatal,
        pid1,
        unmount,
        cgroup_prefix,
        test_mounts,
    } = plan;
    crate::info!("shutdown", "{action:?}: {reason}");
    let mut sup = sup;
    if let (Some(sup), Some(r)) = (sup.as_deref_mut(), r) {
        stop_services(sup, r);
    }
    kill_everything(pid1);
    // The services' log files are on /var: open, they would keep it from unmounting, and
    // the state partition would need its journal replayed on the next boot.
    if let Some(sup) = sup {
        sup.close_log_files();
    }
    crate::log::close_file();
    crate::cgroups::remove_prefix(&cgroup_prefix);
    for m in &test_mounts {
        let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
    }
    nix::unistd::sync();
    if unmount {
        crate::mounts::unmount_all();
        nix::unistd::sync();
    }
    finish(action, pid1, fatal)
}

/// How long the services killed at the overall bound get to be reaped.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// Longest sleep of the stop loop between looks at the reaper.
const STOP_TICK: Duration = Duration::from_millis(10);

/// Stops every service: in parallel by reverse dependency order, within the longest stop
/// timeout (each service's own timeout ends in SIGKILL; whatever is still alive at the
/// overall bound gets SIGKILL too), reading their pipes meanwhile so their last words are
/// kept and no writer blocks on a full pipe. The event loop's signalfd and control clients
/// are gone by now (dropped with the loop); exits are collected by polling the reaper.
pub fn stop_services(sup: &mut Supervisor, r: &mut Reactor) {
    sup.begin_shutdown(r);
    let bound = sup.longest_stop_timeout();
    let start = Instant::now();
    let mut killed = false;
    loop {
        sup.stop_unblocked(r);
        if !sup.any_alive() {
            break;
        }
        let waited = start.elapsed();
        if !killed && waited >= bound {
            sup.kill_remaining(waited);
            killed = true;
        }
        if waited >= bound.saturating_add(KILL_GRACE) {
            crate::error!(
                "shutdown",
                "services still alive after SIGKILL: {}",
                sup.alive_names().join(", ")
            );
            break;
        }
        let (ready, timers) = r.wait(STOP_TICK);
        for (_, source, _) in ready {
            match source {
                Source::Pipe { svc, stream } => sup.on_pipe(svc, stream, r),
                Source::Notify { svc } => sup.on_notify(svc, r),
                _ => {}
            }
        }
        for t in timers {
            sup.on_timer(t, r);
        }
        crate::reaper::reap();
        for (pid, status) in crate::reaper::take() {
            if !sup.on_exit(pid, status, r) {
                crate::debug!("shutdown", "reaped {pid}: {status}");
            }
        }
    }
    crate::info!(
        "shutdown",
        "services stopped in {} ms",
        start.elapsed().as_millis()
    );
}

/// SIGTERM to every remaining process, up to 2 s to exit, then SIGKILL; reaps them all.
pub fn kill_everything(pid1: bool) {
    let signal_all = |sig: Signal| {
        if pid1 {
            // kill(-1) reaches every process but PID 1 itself.
            let _ = kill(Pid::from_raw(-1), sig);
        } else {
            for pid in descendants(std::process::id() as i32) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    };
    signal_all(Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        crate::reaper::reap();
        if !has_children() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    signal_all(Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && has_children() {
        crate::reaper::reap();
        std::thread::sleep(Duration::from_millis(5));
    }
    crate::reaper::reap();
    for (pid, status) in crate::reaper::take() {
        crate::debug!("shutdown", "reaped {pid}: {status}");
    }
}

fn has_children() -> bool {
    // A child that is a zombie still counts until reaped; waitid with WNOWAIT would tell,
    // but a scan of /proc is simpler and equally bounded.
    !descendants(std::process::id() as i32).is_empty()
}

/// Every process below `root` in the process tree, from /proc.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut parent = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The field after the command (which may contain spaces) is the state, then ppid.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let Some(ppid) = after
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i32>().ok())
            else {
                continue;
            };
            parent.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn finish(action: PowerAction, pid1: bool, fatal: bool) -> ! {
    crate::log::marker(&format!(
        "reached shutdown: {}",
        match action {
            PowerAction::Reboot => "reboot",
            PowerAction::Poweroff => "poweroff",
            PowerAction::Halt => "halt",
        }
    ));
    if pid1 {
        let mode = match action {
            PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
            PowerAction::Poweroff => RebootMode::RB_POWER_OFF,
            PowerAction::Halt => RebootMode::RB_HALT_SYSTEM,
        };
        let err = reboot(mode).err();
        crate::error!("shutdown", "reboot(2) failed: {err:?}; waiting forever");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    std::process::exit(i32::from(fatal))
}

/// The last resort when the orderly path itself panicked: no services, no cleanup beyond
/// killing and syncing.
pub fn emergency(action: PowerAction, pid1: bool) -> ! {
    crate::log::marker("emergency shutdown");
    if pid1 {
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    }
    nix::unistd::sync();
    finish(action, pid1, true)
}

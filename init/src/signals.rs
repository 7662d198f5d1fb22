//! Signals reach PID 1 only through one signalfd read by the event loop: every signal is
//! blocked except the fault signals (a fault must still kill or be caught, not hang), and
//! Ctrl-Alt-Del is turned into SIGINT instead of an immediate kernel reboot.
//!
//! | signal            | action                 |
//! |-------------------|------------------------|
//! | SIGCHLD           | reap, route exits      |
//! | SIGINT (Ctrl-Alt-Del), SIGTERM | reboot    |
//! | SIGUSR2, SIGPWR   | poweroff               |
//! | SIGUSR1           | halt                   |

use crate::config::PowerAction;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Signals left unblocked: synchronous faults are delivered to the faulting thread and
/// cannot be read from a signalfd.
const FAULTS: &[Signal] = &[
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGABRT,
    Signal::SIGTRAP,
    Signal::SIGSYS,
];

pub fn blocked_set() -> SigSet {
    let mut set = SigSet::all();
    for s in FAULTS {
        set.remove(*s);
    }
    set
}

/// Blocks the signals and opens the signalfd. Must run before any child is started.
pub fn install(pid1: bool) -> nix::Result<SignalFd> {
    let set = blocked_set();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
    if pid1 {
        // Ctrl-Alt-Del now sends SIGINT to PID 1 instead of rebooting on the spot.
        if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
            crate::warn!("signals", "cannot disable Ctrl-Alt-Del: {e}");
        }
    }
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
}

/// What a signal asks PID 1 to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Reap,
    Power(PowerAction),
    Ignore,
}

pub fn action_for(signo: i32) -> Action {
    match Signal::try_from(signo) {
        Ok(Signal::SIGCHLD) => Action::Reap,
        Ok(Signal::SIGINT) | Ok(Signal::SIGTERM) => Action::Power(PowerAction::Reboot),
        Ok(Signal::SIGUSR2) | Ok(Signal::SIGPWR) => Action::Power(PowerAction::Poweroff),
        Ok(Signal::SIGUSR1) => Action::Power(PowerAction::Halt),
        _ => Action::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_table() {
        assert_eq!(action_for(libc::SIGCHLD), Action::Reap);
        assert_eq!(action_for(libc::SIGINT), Action::Power(PowerAction::Reboot));
        assert_eq!(
            action_for(libc::SIGTERM),
            Action::Power(PowerAction::Reboot)
        );
        assert_eq!(
            action_for(libc::SIGUSR2),
            Action::Power(PowerAction::Poweroff)
        );
        assert_eq!(
            action_for(libc::SIGPWR),
            Action::Power(PowerAction::Poweroff)
        );
        assert_eq!(action_for(libc::SIGUSR1), Action::Power(PowerAction::Halt));
        assert_eq!(action_for(libc::SIGHUP), Action::Ignore);
        assert!(!blocked_set().contains(Signal::SIGSEGV));
        assert!(blocked_set().contains(Signal::SIGTERM));
    }
}

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
//!
//! The power signals are honoured only from the kernel: Ctrl-Alt-Del and the ACPI power
//! button arrive with `si_code == SI_KERNEL`, and a sender outside PID 1's pid namespace
//! (an ancestor namespace: the host of a test run) shows as pid 0. From a process of the
//! machine — `kill -TERM 1` in a shell — they are logged and ignored: an authorized
//! control request (`sysctr reboot`) is the way to ask. As a plain subreaper (test mode,
//! not PID 1) every sender is honoured, as for any process.

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
    /// A power signal from a process PID 1 does not take orders from: `pid` sent it.
    Refused {
        action: PowerAction,
        pid: u32,
    },
    Ignore,
}

/// `si_code` of a signal the kernel generated itself (`kill_cad_pid`, the ACPI button).
const SI_KERNEL: i32 = 0x80;

/// Who sent a signal, from its signalfd record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    pub code: i32,
    pub pid: u32,
}

impl Sender {
    pub fn of(info: &libc::signalfd_siginfo) -> Sender {
        Sender {
            code: info.ssi_code,
            pid: info.ssi_pid,
        }
    }

    /// The kernel, or a process outside PID 1's pid namespace (which sees it as pid 0).
    fn is_kernel_or_outside(self) -> bool {
        self.code == SI_KERNEL || self.pid == 0
    }
}

/// What `signo` from `from` asks; `pid1` says whether this init is PID 1 of its pid
/// namespace (otherwise a subreaper, which obeys anyone who may signal it).
pub fn action_for(signo: i32, from: Sender, pid1: bool) -> Action {
    let power = match Signal::try_from(signo) {
        Ok(Signal::SIGCHLD) => return Action::Reap,
        Ok(Signal::SIGINT) | Ok(Signal::SIGTERM) => PowerAction::Reboot,
        Ok(Signal::SIGUSR2) | Ok(Signal::SIGPWR) => PowerAction::Poweroff,
        Ok(Signal::SIGUSR1) => PowerAction::Halt,
        _ => return Action::Ignore,
    };
    if !pid1 || from.is_kernel_or_outside() {
        Action::Power(power)
    } else {
        Action::Refused {
            action: power,
            pid: from.pid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KERNEL: Sender = Sender {
        code: SI_KERNEL,
        pid: 0,
    };
    /// `kill(1, sig)` from pid 42 of the machine: SI_USER.
    const USER: Sender = Sender { code: 0, pid: 42 };

    #[test]
    fn signal_table() {
        let a = |sig| action_for(sig, KERNEL, true);
        assert_eq!(a(libc::SIGCHLD), Action::Reap);
        assert_eq!(a(libc::SIGINT), Action::Power(PowerAction::Reboot));
        assert_eq!(a(libc::SIGTERM), Action::Power(PowerAction::Reboot));
        assert_eq!(a(libc::SIGUSR2), Action::Power(PowerAction::Poweroff));
        assert_eq!(a(libc::SIGPWR), Action::Power(PowerAction::Poweroff));
        assert_eq!(a(libc::SIGUSR1), Action::Power(PowerAction::Halt));
        assert_eq!(a(libc::SIGHUP), Action::Ignore);
        assert!(!blocked_set().contains(Signal::SIGSEGV));
        assert!(blocked_set().contains(Signal::SIGTERM));
    }

    #[test]
    fn power_signals_from_a_process_of_the_machine_are_refused() {
        for (sig, action) in [
            (libc::SIGTERM, PowerAction::Reboot),
            (libc::SIGINT, PowerAction::Reboot),
            (libc::SIGUSR1, PowerAction::Halt),
            (libc::SIGUSR2, PowerAction::Poweroff),
            (libc::SIGPWR, PowerAction::Poweroff),
        ] {
            assert_eq!(
                action_for(sig, USER, true),
                Action::Refused { action, pid: 42 }
            );
            // sigqueue(3) is no better than kill(2).
            let queued = Sender { code: -1, pid: 42 };
            assert_eq!(
                action_for(sig, queued, true),
                Action::Refused { action, pid: 42 }
            );
            // From an ancestor pid namespace (pid 0) or as a plain subreaper: obeyed.
            let outside = Sender { code: 0, pid: 0 };
            assert_eq!(action_for(sig, outside, true), Action::Power(action));
            assert_eq!(action_for(sig, USER, false), Action::Power(action));
        }
        assert_eq!(action_for(libc::SIGCHLD, USER, true), Action::Reap);
    }
}

//! The few system calls that have no safe wrapper in nix/rustix. This is the only module
//! where `unsafe` is allowed; every block says why it is sound.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// Brings a network interface up (`ip link set NAME up`), used for loopback at boot.
pub fn interface_up(name: &str) -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own; the socket is open.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Takes ownership of a descriptor received with SCM_RIGHTS.
pub fn own_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel just installed this descriptor in our table for us; nothing else
    // refers to it, so owning (and eventually closing) it is correct.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Puts every signal back to its default action and unblocks all of them. Runs in a
/// container's init process just before exec: PID 1 blocks every signal (they arrive
/// through its signalfd) and Rust ignores SIGPIPE, and both would otherwise be inherited
/// by the service across exec.
pub fn reset_signals_for_exec() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if sig == Signal::SIGKILL || sig == Signal::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no handler code, so no handler can observe
        // inconsistent state.
        let _ = unsafe { sigaction(sig, &dfl) };
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&SigSet::empty()),
        None,
    );
}

/// For a process started on a terminal (`sysctr exec -t`): a new session with that terminal
/// as its controlling tty, so shells get job control and Ctrl-C reaches the foreground job.
/// A no-op when standard input is not a terminal.
pub fn take_controlling_tty() {
    if !nix::unistd::isatty(0).unwrap_or(false) {
        return;
    }
    let _ = nix::unistd::setsid();
    // SAFETY: TIOCSCTTY takes an integer argument and touches no memory of ours.
    unsafe {
        libc::ioctl(0, libc::TIOCSCTTY, 0);
    }
}

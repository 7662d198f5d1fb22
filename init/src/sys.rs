//! The few system calls that have no safe wrapper in nix/rustix. This is the only module
//! where `unsafe` is allowed; every block says why it is sound.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// Takes ownership of a descriptor the kernel just gave this process (received with
/// SCM_RIGHTS, or returned by a nix call that hands back a raw one).
pub fn own_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel just installed this descriptor in our table for us; nothing else
    // refers to it, so owning (and eventually closing) it is correct.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Opens the directory `name` (relative to `at`, or the cwd/absolute without it) without
/// following a symlink in its last component: ELOOP or ENOTDIR when it is not a directory.
pub fn open_dir_nofollow(
    at: Option<std::os::fd::BorrowedFd<'_>>,
    name: &std::path::Path,
) -> nix::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
    let fd = nix::fcntl::openat(
        at.map(|f| f.as_raw_fd()),
        name,
        flags,
        nix::sys::stat::Mode::empty(),
    )?;
    // nix 0.29 returns the new descriptor raw: it is ours to own.
    Ok(own_received_fd(fd))
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

extern "C" fn on_alarm(_: libc::c_int) {
    // Nothing to do: the point is that the blocked system call returns EINTR.
}

/// Installs the SIGALRM handler used by [`StartDeadline`]. SIGALRM stays blocked (and so
/// goes to the signalfd, which ignores it) except while a deadline is armed.
pub fn install_alarm_handler() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_alarm),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler is async-signal-safe (it does nothing). No SA_RESTART, so a
    // blocking call interrupted by the alarm fails with EINTR instead of resuming.
    if let Err(e) = unsafe { sigaction(Signal::SIGALRM, &act) } {
        crate::warn!(
            "signals",
            "cannot install the SIGALRM handler: {e}; container starts are unbounded"
        );
    }
}

/// Bounds a blocking call into libcontainer: while armed, SIGALRM is unblocked and a timer
/// fires after the deadline, interrupting whatever system call PID 1 is blocked in (waiting
/// for a hung container process, typically). Dropping it disarms the timer and blocks
/// SIGALRM again.
pub struct StartDeadline;

fn set_timer(d: std::time::Duration) {
    // A deadline beyond what time_t holds would wrap negative and disarm the timer.
    let secs = d.as_secs().min(i32::MAX as u64);
    let tv = libc::timeval {
        tv_sec: secs as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    let it = libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: 0,
            tv_usec: 0,
        },
        it_value: tv,
    };
    // SAFETY: setitimer reads the itimerval we own; a null old-value pointer is allowed.
    unsafe {
        libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut());
    }
}

impl StartDeadline {
    pub fn arm(d: std::time::Duration) -> StartDeadline {
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGALRM);
        set_timer(d);
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_UNBLOCK,
            Some(&set),
            None,
        );
        StartDeadline
    }
}

impl Drop for StartDeadline {
    fn drop(&mut self) {
        set_timer(std::time::Duration::ZERO);
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGALRM);
        let _ = nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&set),
            None,
        );
    }
}

/// SO_PEERGROUPS (Linux 4.13): the asm-generic value, which x86, arm, riscv, powerpc and
/// s390 use; sparc numbers its socket options differently.
#[cfg(not(target_arch = "sparc64"))]
const SO_PEERGROUPS: libc::c_int = 59;
#[cfg(target_arch = "sparc64")]
const SO_PEERGROUPS: libc::c_int = 0x003d;

/// The supplementary groups of a Unix socket's peer, as the kernel recorded them when it
/// connected (SO_PEERGROUPS): no /proc lookup, so no race with the peer's exit or exec.
pub fn peer_groups(sock: std::os::fd::BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is `len` bytes we own; the kernel writes at most that many and
        // stores the length it wrote (or, with ERANGE, the length it needs) in `len`.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let count = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(count);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && count > groups.len() && count <= 65536 {
            groups.resize(count, 0);
            continue;
        }
        return Err(err);
    }
}

/// PID 1's own stderr (the console), kept for a forked child's last words: by the time a
/// child can panic, libcontainer has pointed its fd 2 at the service's log pipe.
static PID1_STDERR: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

/// Marks this process as PID 1 itself, for [`is_forked_child`]: it becomes a child
/// subreaper, an attribute fork(2) and clone(2) never pass on. (For the PID 1 of a pid
/// namespace the attribute changes nothing: it already adopts every orphan.) Also keeps a
/// close-on-exec copy of its stderr for [`exit_forked_child`]. Call it first thing in
/// `main`.
pub fn mark_main_process() {
    let _ = nix::sys::prctl::set_child_subreaper(true);
    if let Ok(fd) = nix::fcntl::fcntl(2, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)) {
        PID1_STDERR.store(fd, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Whether this code runs in a process libcontainer forked from PID 1 (a container's init
/// before it execs, its intermediate process) rather than in PID 1. Such a child shares
/// PID 1's memory image and stack, so a panic unwinding in it would otherwise reach `main`
/// and run PID 1's shutdown path — killing every process it can see — in the child.
pub fn is_forked_child() -> bool {
    !nix::sys::prctl::get_child_subreaper().unwrap_or(true)
}

/// Ends a forked child after a panic: one line on PID 1's stderr (the console), then
/// `_exit`, which runs no destructors and no atexit handlers of the PID 1 image it
/// inherited. Its parent (PID 1, inside libcontainer) sees the exit at once instead of
/// waiting for the start deadline.
pub fn exit_forked_child(message: &str) -> ! {
    let line = format!(
        "sysctr: ERROR [panic] a process forked from PID 1 panicked (pid {}): {message}\n",
        std::process::id()
    );
    let fd = PID1_STDERR.load(std::sync::atomic::Ordering::Relaxed);
    let fd = if fd >= 0 { fd } else { 2 };
    // SAFETY: the descriptor is PID 1's stderr copy (or fd 2), open until exec; it is only
    // borrowed for this one write.
    let out = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let _ = nix::unistd::write(out, line.as_bytes());
    // SAFETY: _exit ends the process at once; nothing of ours runs after it.
    unsafe { libc::_exit(127) }
}

/// Installs a seccomp filter on the calling thread (seccomp(2), SECCOMP_SET_MODE_FILTER);
/// the caller has set no_new_privs (or holds CAP_SYS_ADMIN).
pub fn install_seccomp_filter(insns: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(insns.len())
        .map_err(|_| io::Error::other(format!("a filter of {} instructions", insns.len())))?;
    let prog = libc::sock_fprog {
        len,
        filter: insns.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `insns`, alive and unchanged for the call; the kernel copies
    // and checks the program and only reads the memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Hands the heap's free pages back to the kernel (glibc's malloc_trim): after a burst of
/// allocations that are all freed again, such as libseccomp's while it compiles a filter
/// (about 1 MiB that would otherwise stay in PID 1's RSS).
pub fn release_free_heap() {
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Why a file or directory PID 1 trusts is not one it may trust: None when it belongs to
/// PID 1's uid and nobody else may write it.
pub fn not_pid1s_own(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Some(format!("belongs to uid {}, not PID 1", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "writable by others (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    None
}

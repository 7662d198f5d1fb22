//! Runs inside a test container: tries to create namespaces the ways a program can, and
//! prints one line per attempt, `NAME ok` or `NAME errno N`. The host tests read the
//! lines; busybox's `unshare` covers only unshare(2), not clone(2) or clone3(2).

fn clone_with(flags: u64) -> Result<(), i32> {
    // A fork-like clone (no new stack); the child exits at once.
    // SAFETY: with a null stack the child runs on a copy of this stack, like fork, and
    // calls only _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags | libc::SIGCHLD as u64,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        -1 => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
        0 => unsafe { libc::_exit(0) },
        child => {
            let mut status = 0;
            // SAFETY: waits for the child just created.
            unsafe { libc::waitpid(child as i32, &mut status, 0) };
            Ok(())
        }
    }
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

fn clone3_with(flags: u64) -> Result<(), i32> {
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: clone3 reads the argument struct we own; the child only calls _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match pid {
        -1 => Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0)),
        0 => unsafe { libc::_exit(0) },
        child => {
            let mut status = 0;
            // SAFETY: waits for the child just created.
            unsafe { libc::waitpid(child as i32, &mut status, 0) };
            Ok(())
        }
    }
}

fn report(name: &str, r: Result<(), i32>) {
    match r {
        Ok(()) => println!("{name} ok"),
        Err(e) => println!("{name} errno {e}"),
    }
}

fn main() {
    let flags: &[(&str, i32)] = &[
        ("newuser", libc::CLONE_NEWUSER),
        ("newnet", libc::CLONE_NEWNET),
        ("newuser+newnet", libc::CLONE_NEWUSER | libc::CLONE_NEWNET),
        ("newns", libc::CLONE_NEWNS),
        ("newpid", libc::CLONE_NEWPID),
        ("newipc", libc::CLONE_NEWIPC),
        ("newuts", libc::CLONE_NEWUTS),
        ("newcgroup", libc::CLONE_NEWCGROUP),
    ];
    report("clone-plain", clone_with(0));
    for (name, f) in flags {
        report(&format!("clone-{name}"), clone_with(*f as u64));
    }
    report("clone3-plain", clone3_with(0));
    report("clone3-newuser", clone3_with(libc::CLONE_NEWUSER as u64));
    for (name, f) in flags {
        // SAFETY: unshare takes flags only.
        let r = unsafe { libc::unshare(*f) };
        let r = if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        };
        report(&format!("unshare-{name}"), r);
    }
}

//! The seccomp profile of a container that is not `privileged`: an allow-list in the
//! manner of the default profiles of Docker and containerd. Everything not listed fails
//! with EPERM; calls that only a capability makes useful are allowed when the service has
//! that capability; `clone` may not create namespaces (so a service cannot make itself
//! a user namespace and gain every capability inside it) and `clone3`, whose flags sit in
//! memory a filter cannot read, fails with ENOSYS, which C libraries answer by falling
//! back to `clone`. `docs/manifest.md` lists the refused classes.

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use std::collections::HashSet;

use caps::Capability;

/// System calls every container may make: files, memory, processes and threads, signals,
/// time (reading it), sockets, IPC, polling, and the namespace-local bits of system state.
const ALLOWED: &[&str] = &[
    // files and directories
    "access",
    "faccessat",
    "faccessat2",
    "chdir",
    "fchdir",
    "getcwd",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "chown32",
    "fchown",
    "fchown32",
    "fchownat",
    "lchown",
    "lchown32",
    "close",
    "close_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fsync",
    "flock",
    "fstat",
    "fstat64",
    "fstatat64",
    "newfstatat",
    "fstatfs",
    "fstatfs64",
    "statfs",
    "statfs64",
    "ftruncate",
    "ftruncate64",
    "truncate",
    "truncate64",
    "getdents",
    "getdents64",
    "link",
    "linkat",
    "lseek",
    "_llseek",
    "lstat",
    "lstat64",
    "stat",
    "stat64",
    "statx",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "open",
    "openat",
    "openat2",
    "name_to_handle_at",
    "pipe",
    "pipe2",
    "read",
    "readv",
    "pread64",
    "preadv",
    "preadv2",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "readahead",
    "readlink",
    "readlinkat",
    "rename",
    "renameat",
    "renameat2",
    "rmdir",
    "symlink",
    "symlinkat",
    "unlink",
    "unlinkat",
    "umask",
    "utime",
    "utimes",
    "utimensat",
    "utimensat_time64",
    "futimesat",
    "sync",
    "syncfs",
    "sync_file_range",
    "copy_file_range",
    "sendfile",
    "sendfile64",
    "splice",
    "tee",
    "vmsplice",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "fanotify_mark",
    "ioctl",
    "memfd_create",
    "memfd_secret",
    // memory
    "brk",
    "mmap",
    "mmap2",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "mincore",
    "msync",
    "mlock",
    "mlock2",
    "mlockall",
    "munlock",
    "munlockall",
    "remap_file_pages",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "membarrier",
    "map_shadow_stack",
    // processes, threads, credentials
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "fork",
    "vfork",
    "wait4",
    "waitid",
    "waitpid",
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "setpgid",
    "getpgrp",
    "getsid",
    "setsid",
    "getuid",
    "getuid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getegid",
    "getegid32",
    "getresuid",
    "getresuid32",
    "getresgid",
    "getresgid32",
    "getgroups",
    "getgroups32",
    "setuid",
    "setuid32",
    "setgid",
    "setgid32",
    "setreuid",
    "setreuid32",
    "setregid",
    "setregid32",
    "setresuid",
    "setresuid32",
    "setresgid",
    "setresgid32",
    "setfsuid",
    "setfsuid32",
    "setfsgid",
    "setfsgid32",
    "setgroups",
    "setgroups32",
    "capget",
    "capset",
    "prctl",
    "arch_prctl",
    "set_tid_address",
    "set_thread_area",
    "get_thread_area",
    "set_robust_list",
    "get_robust_list",
    "futex",
    "futex_time64",
    "futex_waitv",
    "futex_wake",
    "futex_wait",
    "futex_requeue",
    "rseq",
    "getrlimit",
    "ugetrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "getpriority",
    "setpriority",
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_getattr",
    "sched_setattr",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "ioprio_get",
    "ioprio_set",
    "getcpu",
    "pidfd_open",
    "pidfd_send_signal",
    "process_mrelease",
    "seccomp",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "restart_syscall",
    "modify_ldt",
    // signals
    "kill",
    "tkill",
    "tgkill",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigreturn",
    "rt_sigpending",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "pause",
    "alarm",
    // time (reading it; setting it needs CAP_SYS_TIME)
    "time",
    "gettimeofday",
    "clock_gettime",
    "clock_gettime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "nanosleep",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    // polling and events
    "poll",
    "ppoll",
    "ppoll_time64",
    "select",
    "_newselect",
    "pselect6",
    "pselect6_time64",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_wait",
    "epoll_wait_old",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    // sockets
    "socket",
    "socketpair",
    "socketcall",
    "bind",
    "connect",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "shutdown",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "recv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "recvmmsg_time64",
    // System V and POSIX IPC (private ipc namespace)
    "ipc",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "semctl",
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_notify",
    "mq_getsetattr",
    // asynchronous I/O (io_uring is left out, as Docker does: a large kernel surface)
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    // system information and namespace-local state
    "uname",
    "sysinfo",
    "getrandom",
    "sethostname",
    "setdomainname",
];

/// Calls allowed only with a capability, because they act beyond the container or because
/// the capability is what makes them useful.
const WITH_CAPABILITY: &[(Capability, &[&str])] = &[
    (
        Capability::CAP_SYS_ADMIN,
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "move_mount",
            "mount_setattr",
            "unshare",
            "setns",
            "clone3",
            "quotactl",
            "quotactl_fd",
            "fanotify_init",
            "lookup_dcookie",
            "bpf",
            "perf_event_open",
        ],
    ),
    (Capability::CAP_BPF, &["bpf"]),
    (Capability::CAP_PERFMON, &["perf_event_open"]),
    (Capability::CAP_SYS_BOOT, &["reboot"]),
    (Capability::CAP_SYS_CHROOT, &["chroot"]),
    (
        Capability::CAP_SYS_MODULE,
        &["init_module", "finit_module", "delete_module"],
    ),
    (Capability::CAP_SYS_PACCT, &["acct"]),
    (
        Capability::CAP_SYS_PTRACE,
        &[
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
        ],
    ),
    (Capability::CAP_SYS_RAWIO, &["iopl", "ioperm"]),
    (
        Capability::CAP_SYS_TIME,
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    ),
    (Capability::CAP_SYS_TTY_CONFIG, &["vhangup"]),
    (
        Capability::CAP_SYS_NICE,
        &[
            "get_mempolicy",
            "set_mempolicy",
            "set_mempolicy_home_node",
            "mbind",
            "move_pages",
            "migrate_pages",
        ],
    ),
    (Capability::CAP_SYSLOG, &["syslog"]),
    (Capability::CAP_DAC_READ_SEARCH, &["open_by_handle_at"]),
];

/// The `clone` flags that create namespaces: CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS,
/// CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET (and CLONE_NEWTIME, 0x80, which
/// only `unshare` and `clone3` accept).
pub const NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// `personality` values allowed: the default, the 32-bit mode of x86 (PER_LINUX32) and
/// "give me my personality" (0xffffffff), the ones Docker allows.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn allow(names: &[&str]) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(LinuxSeccompAction::ScmpActAllow);
    s
}

/// The profile for a service holding `caps`.
pub fn profile(caps: &HashSet<Capability>) -> Result<LinuxSeccomp, oci_spec::OciSpecError> {
    let mut syscalls = vec![allow(ALLOWED)];
    let mut granted: Vec<&str> = Vec::new();
    for (cap, names) in WITH_CAPABILITY {
        if caps.contains(cap) {
            for n in names.iter().copied() {
                if !granted.contains(&n) {
                    granted.push(n);
                }
            }
        }
    }
    if !granted.is_empty() {
        syscalls.push(allow(&granted));
    }
    if caps.contains(&Capability::CAP_SYS_ADMIN) {
        syscalls.push(allow(&["clone"]));
    } else {
        // libcontainer 0.7 reads a masked comparison as `(arg & valueTwo) == value` (runc
        // reads `value` as the mask): allowed when no namespace flag is set.
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(0u64)
                    .value_two(NAMESPACE_FLAGS)
                    .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                    .build()?])
                .build()?,
        );
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["clone3".to_string()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::ENOSYS as u32)
                .build()?,
        );
    }
    for p in PERSONALITIES {
        syscalls.push(
            LinuxSyscallBuilder::default()
                .names(vec!["personality".to_string()])
                .action(LinuxSeccompAction::ScmpActAllow)
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(0usize)
                    .value(*p)
                    .op(LinuxSeccompOperator::ScmpCmpEq)
                    .build()?])
                .build()?,
        );
    }
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::EPERM as u32)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(syscalls)
        .build()
}

/// Whether the profile lets `name` through unconditionally: listed in an allow rule without
/// argument conditions.
#[cfg(test)]
pub fn allows(profile: &LinuxSeccomp, name: &str) -> bool {
    profile.syscalls().iter().flatten().any(|s| {
        s.action() == LinuxSeccompAction::ScmpActAllow
            && s.args().is_none()
            && s.names().iter().any(|n| n == name)
    })
}

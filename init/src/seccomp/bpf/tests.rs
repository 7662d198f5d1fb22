use super::*;
use crate::seccomp::profile;
use oci_spec::runtime::{LinuxSeccompBuilder, LinuxSyscallBuilder};
use std::collections::HashSet;

fn default_profile() -> LinuxSeccomp {
    profile(&HashSet::new()).unwrap()
}

#[test]
fn the_services_profile_compiles() {
    let p = compile(&default_profile()).expect("compile");
    // An allow-list of some 350 syscalls for three architectures.
    assert!(p.instructions().len() > 300, "{p:?}");
    // The last instruction returns: every path through a seccomp program ends in a RET.
    let last = p.instructions().last().unwrap();
    assert_eq!(last.code & 0x07, 0x06, "BPF_RET class");
}

#[test]
fn what_is_left_to_libcontainer_is_named() {
    let with = |b: LinuxSeccompBuilder| b.build().unwrap();
    let notify = with(
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .syscalls(vec![LinuxSyscallBuilder::default()
                .names(vec!["mkdir".to_string()])
                .action(LinuxSeccompAction::ScmpActNotify)
                .build()
                .unwrap()]),
    );
    assert!(compile(&notify).unwrap_err().contains("notify"));
    let arm = with(
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .architectures(vec![Arch::ScmpArchAarch64]),
    );
    assert!(compile(&arm).unwrap_err().contains("architecture"));
    let flags = with(
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .flags(vec![
                oci_spec::runtime::LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            ]),
    );
    assert!(compile(&flags).unwrap_err().contains("flags"));
    // A rule with the default action and a name this libseccomp does not know are left
    // out, as libcontainer does: the rest still compiles.
    let odd = with(
        LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActErrno)
            .syscalls(vec![
                LinuxSyscallBuilder::default()
                    .names(vec!["getpid".to_string(), "no_such_syscall_42".to_string()])
                    .action(LinuxSeccompAction::ScmpActAllow)
                    .build()
                    .unwrap(),
                LinuxSyscallBuilder::default()
                    .names(vec!["mkdir".to_string()])
                    .action(LinuxSeccompAction::ScmpActErrno)
                    .build()
                    .unwrap(),
            ]),
    );
    assert!(compile(&odd).is_ok());
}

/// The compiled program, installed in a child process, does what the profile says: plain
/// processes and everyday calls pass, new namespaces are EPERM, clone3 is ENOSYS (so libc
/// falls back to clone, whose flags the filter can see).
#[test]
#[allow(unsafe_code)]
fn the_installed_program_enforces_the_profile() {
    let p = compile(&default_profile()).unwrap();
    // SAFETY: the child only makes raw system calls and _exits (no allocation, no locks).
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let errno = || std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            // SAFETY: plain system calls on no memory of ours but `prog` in install.
            let code = unsafe {
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                    10
                } else if p.install().is_err() {
                    11
                } else if libc::getpid() <= 0 {
                    12
                } else if libc::unshare(libc::CLONE_NEWUSER) != -1 || errno() != libc::EPERM {
                    13
                } else if libc::unshare(libc::CLONE_NEWNET) != -1 || errno() != libc::EPERM {
                    14
                } else if libc::syscall(libc::SYS_clone3, 0usize, 0usize) != -1
                    || errno() != libc::ENOSYS
                {
                    15
                } else {
                    0
                }
            };
            unsafe { libc::_exit(code) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let st = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(
                st,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "10 no_new_privs, 11 install, 12 getpid, 13 userns not EPERM, 14 netns not \
                 EPERM, 15 clone3 not ENOSYS"
            );
        }
    }
}

//! The seccomp profile of a container that is not `privileged`: an allow-list in the
//! manner of the default profiles of Docker and containerd. Everything not listed fails
//! with EPERM; calls that only a capability makes useful are allowed when the service has
//! that capability; `clone` may not create namespaces (so a service cannot make itself
//! a user namespace and gain every capability inside it) and `clone3`, whose flags sit in
//! memory a filter cannot read, fails with ENOSYS, which C libraries answer by falling
//! back to `clone`. `docs/manifest.md` lists the refused classes.
//!
//! The lists are in `seccomp/table.rs`; this file turns them into the OCI profile.

pub mod bpf;
pub mod precompiled;
mod table;

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscall, LinuxSyscallBuilder,
};
use std::collections::HashSet;

use caps::Capability;
pub use table::NAMESPACE_FLAGS;
use table::{ALLOWED, PERSONALITIES, WITH_CAPABILITY};

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

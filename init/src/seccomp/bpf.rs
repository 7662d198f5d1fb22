//! A service's seccomp profile compiled to its BPF program once, in PID 1.
//!
//! libcontainer compiles the spec's `linux.seccomp` with libseccomp in every container's
//! init process, after the fork: resolving some 350 syscall names for three architectures
//! and generating the program took 10.5 of the 27 ms a create+start costs on the host
//! (`cargo xtask bench --only start`, with and without the profile). PID 1 compiles each
//! distinct profile once instead; the container's process installs the program with one
//! seccomp(2) call as the last step before it execs the service (runtime.rs), where
//! libcontainer would have loaded it too (after no_new_privs and the capability drop).
//!
//! The translation follows the OCI runtime spec as libcontainer and runc read it: the
//! default errno is EPERM, a rule with the default action is redundant and left out, a
//! syscall this libseccomp cannot name is skipped, `SCMP_CMP_MASKED_EQ` compares
//! `(arg & valueTwo) == value`, and conditions on the same argument become separate rules.
//! What it does not translate (other architectures, filter flags, notify, a spec without
//! no_new_privileges) is left to libcontainer, which then compiles as before.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

/// The most instructions a classic-BPF program may have (the kernel's BPF_MAXINSNS).
pub const MAX_INSTRUCTIONS: usize = 4096;
/// The instruction class of a return.
const BPF_RET: u16 = 0x06;

/// A compiled filter: the classic-BPF instructions seccomp(2) takes.
#[derive(Clone)]
pub struct Program(Arc<Vec<libc::sock_filter>>);

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Program({} instructions)", self.0.len())
    }
}

impl Program {
    pub fn instructions(&self) -> &[libc::sock_filter] {
        &self.0
    }

    /// The program as seccomp(2) reads it (and libseccomp exports it): 8 bytes per
    /// instruction, in this machine's byte order.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * 8);
        for i in self.0.iter() {
            out.extend_from_slice(&i.code.to_ne_bytes());
            out.extend_from_slice(&[i.jt, i.jf]);
            out.extend_from_slice(&i.k.to_ne_bytes());
        }
        out
    }

    /// The program in `raw` ([`Program::to_bytes`]'s form). Err says why it is not one the
    /// kernel would take: empty, not whole instructions, over the kernel's 4096
    /// instructions, or not ending in a return (every path through a seccomp program must).
    pub fn from_bytes(raw: &[u8]) -> Result<Program, String> {
        if raw.is_empty() || !raw.len().is_multiple_of(8) {
            return Err(format!(
                "{} bytes is not a whole number of instructions",
                raw.len()
            ));
        }
        if raw.len() / 8 > MAX_INSTRUCTIONS {
            return Err(format!(
                "{} instructions, more than the kernel's {MAX_INSTRUCTIONS}",
                raw.len() / 8
            ));
        }
        let insns: Vec<libc::sock_filter> = raw
            .chunks_exact(8)
            .map(|c| libc::sock_filter {
                code: u16::from_ne_bytes([c[0], c[1]]),
                jt: c[2],
                jf: c[3],
                k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        if insns.last().is_some_and(|i| i.code & 0x07 != BPF_RET) {
            return Err("the last instruction is not a return".into());
        }
        Ok(Program(Arc::new(insns)))
    }

    /// Installs the filter on the calling thread (no_new_privs must be set).
    pub fn install(&self) -> std::io::Result<()> {
        crate::sys::install_seccomp_filter(&self.0)
    }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, String> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            let e = errno.unwrap_or(libc::EPERM as u32);
            ScmpAction::Errno(i32::try_from(e).map_err(|_| format!("errno {e} out of range"))?)
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActTrace => {
            let e = errno.unwrap_or(libc::EPERM as u32);
            ScmpAction::Trace(
                u16::try_from(e).map_err(|_| format!("trace value {e} out of range"))?,
            )
        }
        LinuxSeccompAction::ScmpActNotify => return Err("the notify action".into()),
    })
}

fn arch(a: Arch) -> Result<ScmpArch, String> {
    match a {
        Arch::ScmpArchNative => Ok(ScmpArch::Native),
        Arch::ScmpArchX86_64 => Ok(ScmpArch::X8664),
        Arch::ScmpArchX86 => Ok(ScmpArch::X86),
        Arch::ScmpArchX32 => Ok(ScmpArch::X32),
        other => Err(format!("architecture {other:?}")),
    }
}

fn op(o: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

/// Compiles `profile`; Err names what this translation leaves to libcontainer.
pub fn compile(profile: &LinuxSeccomp) -> Result<Program, String> {
    if profile.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err("filter flags".into());
    }
    fn lib(what: &str) -> impl Fn(libseccomp::error::SeccompError) -> String + '_ {
        move |e| format!("{what}: {e}")
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(lib("new filter"))?;
    // no_new_privs is the spec's business (libcontainer sets it before the exec).
    ctx.set_ctl_nnp(false)
        .map_err(lib("no_new_privs attribute"))?;
    for a in profile.architectures().iter().flatten() {
        ctx.add_arch(arch(*a)?).map_err(lib("add architecture"))?;
    }
    for rule in profile.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        for name in rule.names() {
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            let conds: Vec<ScmpArgCompare> = rule
                .args()
                .iter()
                .flatten()
                .map(|c| {
                    ScmpArgCompare::new(c.index() as u32, op(c.op(), c.value_two()), c.value())
                })
                .collect();
            let mut seen = std::collections::HashSet::new();
            let same_arg_twice = rule
                .args()
                .iter()
                .flatten()
                .any(|c| !seen.insert(c.index()));
            let add = if conds.is_empty() {
                ctx.add_rule(act, sc).map(|_| ())
            } else if same_arg_twice {
                conds.iter().try_for_each(|c| {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map(|_| ())
                })
            } else {
                ctx.add_rule_conditional(act, sc, &conds).map(|_| ())
            };
            add.map_err(|e| format!("rule for {name}: {e}"))?;
        }
    }
    // libseccomp 2.5 exports to a file descriptor only.
    let mut mem = memfd().map_err(|e| format!("memfd for the program: {e}"))?;
    ctx.export_bpf(&mem).map_err(lib("export"))?;
    let mut raw = Vec::new();
    mem.seek(SeekFrom::Start(0))
        .and_then(|_| mem.read_to_end(&mut raw))
        .map_err(|e| format!("read the program back: {e}"))?;
    Program::from_bytes(&raw).map_err(|why| format!("exported program: {why}"))
}

fn memfd() -> nix::Result<std::fs::File> {
    let fd = nix::sys::memfd::memfd_create(
        c"sysctr-seccomp",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    Ok(std::fs::File::from(fd))
}

#[cfg(test)]
mod tests;

//! A service's device allow-list on cgroup v2. On v1 the `devices` controller holds it and
//! libcontainer writes it; v2 has no such controller: for every mknod, open for reading or
//! writing of a device node the kernel asks a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached
//! to the cgroup. libcontainer builds that program only with its `cgroupsv2_devices` feature
//! (libbpf, a C library with libelf and zlib, all linked into the static PID 1), so PID 1 builds
//! it itself, as crun does: a few compare-and-jump instructions per rule of the spec's
//! `linux.resources.devices`, loaded once per distinct rule set and attached to each
//! container's cgroup after libcontainer has created it and before the service runs.
//!
//! Semantics are the OCI spec's (and runc's): the last rule that matches a request decides;
//! no match denies. A rule matches when its type is `a` or the device's, its major and minor
//! are unset, -1 or the device's, and its access covers every access asked for.

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// One eBPF instruction (`struct bpf_insn`): opcode, dst register in the low nibble and src in
/// the high one, offset, immediate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

// Opcodes (linux/bpf_common.h, linux/bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU32_AND_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const ALU32_RSH_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const ALU64_MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const ALU64_MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// struct bpf_cgroup_dev_ctx: access_type (type in the low 16 bits, access in the high 16),
// major, minor.
const DEV_BLOCK: i32 = 1; // BPF_DEVCG_DEV_BLOCK
const DEV_CHAR: i32 = 2; // BPF_DEVCG_DEV_CHAR
const ACC_MKNOD: i32 = 1; // BPF_DEVCG_ACC_MKNOD
const ACC_READ: i32 = 2; // BPF_DEVCG_ACC_READ
const ACC_WRITE: i32 = 4; // BPF_DEVCG_ACC_WRITE
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

// Registers: r1 the context on entry, then a scratch; r2 type, r3 access, r4 major, r5 minor.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

/// The program for `rules`, or None when it would allow every device (a privileged service:
/// nothing to attach).
pub fn program(rules: &[LinuxDeviceCgroup]) -> Option<Vec<Insn>> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    let header = p.len();
    // The last matching rule decides, so the rules are tried from the last one; the first
    // match returns.
    for rule in rules.iter().rev() {
        let kind = match rule.typ() {
            None | Some(LinuxDeviceType::A) => None,
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(DEV_CHAR),
            Some(LinuxDeviceType::B) => Some(DEV_BLOCK),
            // A FIFO is not a device to the device cgroup: the rule never matches.
            Some(LinuxDeviceType::P) => continue,
        };
        let access = access_bits(rule.access().as_deref());
        if access == 0 {
            continue;
        }
        let number = |n: Option<i64>| n.filter(|&n| n >= 0).map(|n| n as i32);
        let mut block = Vec::new();
        let mut jumps = Vec::new();
        if let Some(kind) = kind {
            jumps.push(block.len());
            block.push(insn(JNE_K, 2, 0, 0, kind));
        }
        if access != ACC_ALL {
            // r1 = access & rule's; skip the rule unless that is all of the access asked.
            block.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
            block.push(insn(ALU32_AND_K, 1, 0, 0, access));
            jumps.push(block.len());
            block.push(insn(JNE_X, 1, 3, 0, 0));
        }
        if let Some(major) = number(rule.major()) {
            jumps.push(block.len());
            block.push(insn(JNE_K, 4, 0, 0, major));
        }
        if let Some(minor) = number(rule.minor()) {
            jumps.push(block.len());
            block.push(insn(JNE_K, 5, 0, 0, minor));
        }
        let unconditional = jumps.is_empty();
        if unconditional && rule.allow() && p.len() == header {
            return None;
        }
        block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow())));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for j in jumps {
            // To the first instruction after this rule's block.
            block[j].off = (len - 1 - j) as i16;
        }
        p.extend(block);
        if unconditional {
            // Every request ends here; the verifier refuses instructions it cannot reach.
            return Some(p);
        }
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    Some(p)
}

/// `"rwm"` (or unset: all three) as the context's access bits; an unknown letter adds nothing.
fn access_bits(access: Option<&str>) -> i32 {
    access.map_or(ACC_ALL, |a| {
        a.chars().fold(0, |bits, c| {
            bits | match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => 0,
            }
        })
    })
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The head of `union bpf_attr` for BPF_PROG_LOAD, up to `expected_attach_type`.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The head of `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<libc::c_long> {
    #[allow(unsafe_code)]
    // SAFETY: `attr` is a fully initialised `#[repr(C)]` head of `union bpf_attr` for `cmd`,
    // its size passed along; the kernel reads at most that many bytes.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads `insns` as a cgroup device program; a program the verifier refuses is reported
/// with the verifier's last line.
pub fn load(insns: &[Insn]) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 4096];
    let mut attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 0,
        log_size: 0,
        log_buf: 0,
        kern_version: 0,
        prog_flags: 0,
        prog_name: *b"sysctr_devices\0\0",
        prog_ifindex: 0,
        expected_attach_type: BPF_CGROUP_DEVICE,
    };
    let fd = match bpf(BPF_PROG_LOAD, &attr) {
        Ok(fd) => fd,
        Err(e)
            if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::EACCES) =>
        {
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let again = bpf(BPF_PROG_LOAD, &attr);
            let text = String::from_utf8_lossy(&log);
            let last = text
                .trim_end_matches('\0')
                .trim()
                .lines()
                .last()
                .unwrap_or("");
            match again {
                Ok(fd) => fd,
                Err(_) => return Err(io::Error::new(e.kind(), format!("{e}; verifier: {last}"))),
            }
        }
        Err(e) => return Err(e),
    };
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    #[allow(unsafe_code)]
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Ok(fd)
}

/// Attaches the loaded program `prog` to the cgroup directory `dir`.
pub fn attach(prog: &OwnedFd, dir: &Path) -> io::Result<()> {
    let cgroup = std::fs::File::open(dir)?;
    let attr = ProgAttach {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &attr).map(drop)
}

/// Why a container could not get its device allow-list; the start fails rather than run the
/// service without one.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("device allow-list: load the cgroup device program: {0}")]
    Load(#[source] io::Error),
    #[error("device allow-list: attach it to {dir}: {source}")]
    Attach {
        dir: String,
        #[source]
        source: io::Error,
    },
}

/// The programs loaded so far, by rule set (its JSON text): a handful of distinct ones among
/// the services, each loaded once; one program serves every cgroup it is attached to.
#[derive(Default)]
pub struct Programs {
    loaded: std::cell::RefCell<HashMap<String, Option<std::rc::Rc<OwnedFd>>>>,
}

impl Programs {
    /// Attaches the program for `rules` to the cgroup directory `dir`. Returns false when
    /// the rules allow every device (nothing attached).
    pub fn apply(&self, rules: &[LinuxDeviceCgroup], dir: &Path) -> Result<bool, DeviceError> {
        let key = serde_json::to_string(rules).unwrap_or_default();
        let known = self.loaded.borrow().get(&key).cloned();
        let prog = match known {
            Some(p) => p,
            None => {
                let p = match program(rules) {
                    Some(insns) => Some(std::rc::Rc::new(load(&insns).map_err(DeviceError::Load)?)),
                    None => None,
                };
                self.loaded.borrow_mut().insert(key, p.clone());
                p
            }
        };
        let Some(prog) = prog else {
            return Ok(false);
        };
        attach(&prog, dir).map_err(|source| DeviceError::Attach {
            dir: dir.display().to_string(),
            source,
        })?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests;

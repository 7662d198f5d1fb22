use super::*;
use oci_spec::runtime::LinuxDeviceCgroupBuilder;

fn rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: i64,
    minor: i64,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(allow)
        .access(access);
    if let Some(t) = typ {
        b = b.typ(t);
    }
    if major >= 0 {
        b = b.major(major);
    }
    if minor >= 0 {
        b = b.minor(minor);
    }
    b.build().unwrap()
}

/// What runtime's spec gives an ordinary service: deny all, the standard character devices,
/// then one block device of its own (read only).
fn service_rules() -> Vec<LinuxDeviceCgroup> {
    use LinuxDeviceType::{B, C};
    vec![
        rule(false, None, -1, -1, "rwm"),
        rule(true, Some(C), 1, 3, "rwm"),
        rule(true, Some(C), 1, 5, "rwm"),
        rule(true, Some(C), 136, -1, "rwm"),
        rule(true, Some(B), 8, 0, "r"),
    ]
}

/// Runs the program the way the kernel would for one request (only the opcodes `program`
/// emits), so the rules' meaning is checked without a kernel.
fn run(p: &[Insn], kind: i32, access: i32, major: u32, minor: u32) -> u64 {
    let mut r = [0u64; 11];
    let ctx = [((access as u32) << 16) | kind as u32, major, minor];
    let mut pc = 0usize;
    loop {
        let i = p[pc];
        let (dst, src) = ((i.regs & 0x0f) as usize, (i.regs >> 4) as usize);
        pc += 1;
        match i.code {
            LDX_MEM_W => {
                assert_eq!(src, 1, "loads only from the context");
                r[dst] = u64::from(ctx[i.off as usize / 4]);
            }
            ALU32_AND_K => r[dst] = u64::from((r[dst] as u32) & i.imm as u32),
            ALU32_RSH_K => r[dst] = u64::from((r[dst] as u32) >> i.imm),
            ALU64_MOV_X => r[dst] = r[src],
            ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
            JNE_K if r[dst] != i.imm as i64 as u64 => pc = (pc as isize + i.off as isize) as usize,
            JNE_X if r[dst] != r[src] => pc = (pc as isize + i.off as isize) as usize,
            JNE_K | JNE_X => {}
            EXIT => return r[0],
            c => panic!("unexpected opcode {c:#x}"),
        }
    }
}

#[test]
fn the_last_matching_rule_decides_and_no_match_denies() {
    let p = program(&service_rules()).unwrap();
    let allowed = |kind, access, major, minor| run(&p, kind, access, major, minor) == 1;
    // the standard character devices, every access
    assert!(allowed(DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3));
    assert!(allowed(DEV_CHAR, ACC_MKNOD, 1, 5));
    assert!(allowed(DEV_CHAR, ACC_READ, 136, 7), "any pts minor");
    // not listed: denied by the first rule
    assert!(!allowed(DEV_CHAR, ACC_READ, 1, 1), "/dev/mem");
    assert!(!allowed(DEV_CHAR, ACC_READ, 1, 11), "/dev/kmsg");
    assert!(
        !allowed(DEV_BLOCK, ACC_READ, 1, 3),
        "same numbers, other type"
    );
    // the service's own block device: read only
    assert!(allowed(DEV_BLOCK, ACC_READ, 8, 0));
    assert!(!allowed(DEV_BLOCK, ACC_WRITE, 8, 0));
    assert!(
        !allowed(DEV_BLOCK, ACC_READ | ACC_WRITE, 8, 0),
        "all of the access asked"
    );
    assert!(!allowed(DEV_BLOCK, ACC_MKNOD, 8, 0));
    assert!(!allowed(DEV_BLOCK, ACC_READ, 8, 1), "another partition");
}

#[test]
fn a_later_deny_overrides_an_earlier_allow() {
    use LinuxDeviceType::C;
    let rules = vec![
        rule(false, None, -1, -1, "rwm"),
        rule(true, Some(C), 1, -1, "rwm"),
        rule(false, Some(C), 1, 1, "w"),
    ];
    let p = program(&rules).unwrap();
    assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 1), 1);
    assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 1), 0);
    assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 5), 1);
    assert_eq!(run(&p, DEV_CHAR, ACC_READ, 2, 0), 0);
}

#[test]
fn allow_all_needs_no_program_and_a_catch_all_ends_it() {
    use LinuxDeviceType::C;
    // privileged: allow everything first, then the usual allows: nothing to attach
    let mut privileged = service_rules();
    privileged[0] = rule(true, None, -1, -1, "rwm");
    privileged.rotate_left(1);
    assert!(program(&privileged).is_none());
    // a deny-all after allows: everything denied, and nothing unreachable follows it
    let rules = vec![
        rule(true, Some(C), 1, 3, "rwm"),
        rule(false, Some(LinuxDeviceType::A), -1, -1, "rwm"),
    ];
    let p = program(&rules).unwrap();
    assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 0);
    assert_eq!(p.last().unwrap().code, EXIT);
    assert_eq!(
        p.len(),
        6 + 2,
        "the earlier rule is not emitted after a catch-all"
    );
}

#[test]
fn fifo_rules_and_empty_access_never_match() {
    use LinuxDeviceType::{C, P};
    let rules = vec![
        rule(true, Some(P), 1, 3, "rwm"),
        rule(true, Some(C), 1, 3, ""),
    ];
    let p = program(&rules).unwrap();
    assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 0);
}

/// The kernel's verifier takes the program, and attached to a real cgroup v2 directory it
/// lets a process in that cgroup open an allowed device and refuses the others.
#[test]
fn the_kernel_enforces_the_program_on_a_cgroup() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (bpf(2), mounting cgroup2)");
        return;
    }
    let p = program(&service_rules()).unwrap();
    let prog = load(&p).expect("the verifier refuses the program");
    let mnt = tempfile::tempdir().unwrap();
    // Its own mount of the v2 hierarchy, wherever the host mounts it (or not at all).
    nix::mount::mount(
        Some("cgroup2"),
        mnt.path(),
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount cgroup2");
    let dir = mnt
        .path()
        .join(format!("sysctr-devices-test-{}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    attach(&prog, &dir).expect("attach");
    let procs = dir.join("cgroup.procs");
    let nodes = tempfile::tempdir().unwrap();
    let script = format!(
        "echo $$ > {procs} || exit 9
         : < /dev/zero && echo zero-ok
         (: < /dev/kmsg) 2>/dev/null || echo kmsg-refused
         mknod {nodes}/blk b 7 0 2>/dev/null || echo mknod-refused",
        procs = procs.display(),
        nodes = nodes.path().display()
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir(&dir);
    let _ = nix::mount::umount2(mnt.path(), nix::mount::MntFlags::MNT_DETACH);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        ["zero-ok", "kmsg-refused", "mknod-refused"]
    );
}

#[test]
fn a_program_the_verifier_refuses_is_reported_with_its_reason() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (bpf(2))");
        return;
    }
    // no exit: falls off the end
    let bad = [insn(ALU64_MOV_K, 0, 0, 0, 1)];
    let e = load(&bad).unwrap_err().to_string();
    assert!(e.contains("verifier:"), "{e}");
}

#[test]
fn a_cgroup_it_cannot_attach_to_is_named() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (bpf(2))");
        return;
    }
    let programs = Programs::default();
    let gone = tempfile::tempdir().unwrap().path().join("no-such-cgroup");
    let e = programs
        .apply(&service_rules(), &gone)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!(
            "device allow-list: attach it to {}: ",
            gone.display()
        )),
        "{e}"
    );
    // allow-all: nothing to attach, so no error even there
    let all = [rule(true, None, -1, -1, "rwm")];
    assert!(!programs.apply(&all, &gone).unwrap());
}

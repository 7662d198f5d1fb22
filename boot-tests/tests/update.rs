//! Signed A/B updates end to end on the UEFI path (issue 12): the real bundle streamed over
//! ssh into the inactive slot, the trial boot, the health gate, and the rollback of a bad
//! update with no hand on the machine, a hung PID 1 reset by the watchdog, bundles refused
//! before one byte is written, and an offline update from a second disk. `cargo xtask
//! boot-test` builds the bundles (the test image as 0.2.0; a 0.3.0 with a crash-looping
//! service in its health set; a 0.4.0 whose PID 1 hangs on its trial boot; one signed by an
//! untrusted key, one for another appliance, and the factory 0.1.0 again, a downgrade once
//! 0.2.0 runs) and sets SYSCTR_BUNDLE_GOOD / _BAD / _HANG / _UNTRUSTED / _INCOMPATIBLE /
//! _DOWNGRADE.

use std::path::PathBuf;
use std::time::Duration;
use sysctr_boot_tests::*;

fn bundle(var: &str) -> PathBuf {
    let p = PathBuf::from(std::env::var_os(var).unwrap_or_else(|| {
        panic!("{var} is not set: run the boot tests with `cargo xtask boot-test`")
    }));
    assert!(p.exists(), "{var}={} does not exist", p.display());
    p
}

fn version(vm: &Vm) -> serde_json::Value {
    let out = vm.ssh("sysctr version --json");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn status(vm: &Vm) -> serde_json::Value {
    let out = vm.ssh("sysctr update status --json");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn slot_state(st: &serde_json::Value, slot: &str) -> String {
    st["slots"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["slot"] == slot))
        .map(|s| s["state"].as_str().unwrap_or("?").to_string())
        .unwrap_or_else(|| format!("no slot {slot} in {st}"))
}

/// A digest of each slot partition's bytes (a, b), to prove a refused bundle wrote nothing.
/// FNV-1a: a cheap stand-in for a hash that needs no extra crate.
fn slots_digest(disk: &std::path::Path) -> [u64; 2] {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).unwrap();
    [rootfs::disk::ROOT_A_START, rootfs::disk::ROOT_B_START].map(|start| {
        let mut buf = vec![0u8; rootfs::disk::ROOT_SIZE as usize];
        f.seek(SeekFrom::Start(start)).unwrap();
        f.read_exact(&mut buf).unwrap();
        buf.iter().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ *b as u64).wrapping_mul(0x100000001b3)
        })
    })
}

/// `sysctr update --reboot -` of `bundle`, which must install `version`. The reboot may close
/// the ssh connection before ssh has its exit status (255), so success is read from what the
/// CLI printed.
fn install_and_reboot(vm: &Vm, bundle: &std::path::Path, version: &str) {
    let (code, out, err) =
        vm.ssh_input("sysctr update --reboot -", bundle, Duration::from_secs(600));
    let said = format!("installed {version} into slot");
    assert!(
        code == Some(0) || (code == Some(255) && out.contains(&said)),
        "{} not installed ({code:?}): {out}\n{err}\n{}",
        bundle.display(),
        vm.tail(40)
    );
    assert!(out.contains(&said), "{out}\n{err}");
}

/// `sysctr update -` of `bundle` must fail naming why (`expect`), and write neither slot.
fn refused(vm: &Vm, disk: &std::path::Path, bundle: &std::path::Path, expect: &str) {
    let before = slots_digest(disk);
    let (code, out, err) = vm.ssh_input("sysctr update -", bundle, Duration::from_secs(300));
    assert_ne!(
        code,
        Some(0),
        "{} was accepted: {out}{err}",
        bundle.display()
    );
    assert!(
        err.contains(expect),
        "{}: the refusal does not say {expect:?}: {err}",
        bundle.display()
    );
    assert_eq!(
        before,
        slots_digest(disk),
        "{} was refused but a slot changed",
        bundle.display()
    );
}

#[test]
fn update_refused_good_then_bad_rolls_back() {
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("update", &image);
    let good = bundle("SYSCTR_BUNDLE_GOOD");
    let bad = bundle("SYSCTR_BUNDLE_BAD");
    let before = slots_digest(&scratch.disk);

    // v1 on slot A, blessed.
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_for("blessed the boot entry", BOOT_TIMEOUT);
    vm.wait_ssh(BOOT_TIMEOUT);
    assert_eq!(version(&vm)["boot"]["slot"], "a");

    // Refused before one byte is written: each says why, and both slots stay as they were.
    refused(
        &vm,
        &scratch.disk,
        &bundle("SYSCTR_BUNDLE_UNTRUSTED"),
        "which is not trusted here",
    );
    refused(
        &vm,
        &scratch.disk,
        &bundle("SYSCTR_BUNDLE_INCOMPATIBLE"),
        "bundle is for \"another-appliance\", this system is",
    );
    assert_ne!(slot_state(&status(&vm), "b"), "trial");

    // Refused: one flipped byte in the root payload, found while it streams into the
    // inactive slot. Clear message, the active slot untouched, nothing bootable made of it.
    let active_before = slots_digest(&scratch.disk)[0];
    let tampered = scratch.dir.join("tampered.bundle");
    let mut bytes = std::fs::read(&good).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&tampered, &bytes).unwrap();
    let (code, out, err) = vm.ssh_input("sysctr update -", &tampered, Duration::from_secs(300));
    assert_ne!(code, Some(0), "a tampered bundle was accepted: {out}{err}");
    assert!(
        err.contains("sha256") || err.contains("dm-verity") || err.contains("not zero"),
        "unclear refusal: {err}"
    );
    assert_ne!(slot_state(&status(&vm), "b"), "trial");
    assert_eq!(
        active_before,
        slots_digest(&scratch.disk)[0],
        "the active slot a changed"
    );

    // Good update into slot B, streamed over ssh.
    let (code, out, err) = vm.ssh_input("sysctr update -", &good, Duration::from_secs(600));
    assert_eq!(
        code,
        Some(0),
        "update failed: {out}\n{err}\n{}",
        vm.tail(40)
    );
    let st = status(&vm);
    assert_eq!(slot_state(&st, "b"), "trial", "{st}");
    assert_eq!(slot_state(&st, "a"), "good", "{st}");
    let _ = vm.ssh_raw("sysctr reboot", Duration::from_secs(20));
    vm.wait_for_count("sysctr.slot=b", 1, BOOT_TIMEOUT);
    vm.wait_for_count("blessed the boot entry", 2, BOOT_TIMEOUT);
    vm.wait_ssh(BOOT_TIMEOUT);
    let v = version(&vm);
    assert_eq!(v["boot"]["slot"], "b", "{v}");
    assert_eq!(v["boot"]["os_version"], "0.2.0", "{v}");
    let st = status(&vm);
    assert_eq!(slot_state(&st, "b"), "good", "{st}");
    // Back to the factory 0.1.0: a downgrade, refused before a byte is written.
    refused(
        &vm,
        &scratch.disk,
        &bundle("SYSCTR_BUNDLE_DOWNGRADE"),
        "bundle version 0.1.0 is older than the running 0.2.0",
    );

    // A bad update goes back into slot A; its trial boot fails the health gate and the
    // machine comes back to slot B (0.2.0) by itself, saying why.
    install_and_reboot(&vm, &bad, "0.3.0");
    vm.wait_for("trial boot failed the health gate", BOOT_TIMEOUT);
    vm.wait_for_count("blessed the boot entry", 2, BOOT_TIMEOUT);
    // back on B: wait for the third boot's ssh
    vm.wait_for_count("sysctr.slot=b", 2, BOOT_TIMEOUT);
    vm.wait_ssh(BOOT_TIMEOUT);
    let v = version(&vm);
    assert_eq!(v["boot"]["slot"], "b", "{v}");
    assert_eq!(v["boot"]["os_version"], "0.2.0", "{v}");
    let why = v["boot"]["previous_failure"].as_str().unwrap_or("");
    assert!(why.contains("slot a") && why.contains("unhealthy"), "{v}");
    let st = status(&vm);
    assert_eq!(slot_state(&st, "a"), "bad", "{st}");

    let _ = vm.ssh_raw("sysctr poweroff", Duration::from_secs(20));
    vm.wait_exit(Duration::from_secs(120));
    drop(vm);
    assert_ne!(
        before,
        slots_digest(&scratch.disk),
        "the slots never changed"
    );
}

/// A hang: 0.4.0's PID 1 stops on its trial boot (the `hang-in-trial` test hook) with a 10 s
/// watchdog armed. The hardware resets the machine; after the entry's three tries
/// systemd-boot boots slot A (0.1.0) again, with no hand on the machine.
#[test]
fn hung_trial_boot_is_reset_by_the_watchdog() {
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("hang", &image);
    let hang = bundle("SYSCTR_BUNDLE_HANG");
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_for("blessed the boot entry", BOOT_TIMEOUT);
    vm.wait_ssh(BOOT_TIMEOUT);
    assert_eq!(version(&vm)["boot"]["slot"], "a");

    const HOOK: &str = "test hook hang-in-trial: PID 1 hangs here";
    // The kernel prints its command line twice per boot.
    let a_lines = vm.serial().matches("sysctr.slot=a").count();
    install_and_reboot(&vm, &hang, "0.4.0");
    for n in 1..=3 {
        vm.wait_for_count(HOOK, n, BOOT_TIMEOUT);
        if n == 1 {
            assert!(
                vm.serial().contains("/dev/watchdog armed, timeout 10s"),
                "the hung trial boot had no 10 s watchdog\n{}",
                vm.tail(60)
            );
        }
    }
    vm.wait_for_count("sysctr.slot=a", a_lines + 1, BOOT_TIMEOUT);
    vm.wait_ssh(BOOT_TIMEOUT);
    assert_eq!(
        vm.serial().matches(HOOK).count(),
        3,
        "the hung entry was not tried exactly three times\n{}",
        vm.tail(60)
    );
    let v = version(&vm);
    assert_eq!(v["boot"]["slot"], "a", "{v}");
    assert_eq!(v["boot"]["os_version"], "0.1.0", "{v}");
    let st = status(&vm);
    assert_eq!(slot_state(&st, "b"), "bad", "{st}");
    assert_eq!(slot_state(&st, "a"), "good", "{st}");
}

/// A FAT disk image holding `bundle` as `sysctr-update/<name>`: the USB stick of an
/// appliance with no network.
fn update_stick(dir: &std::path::Path, bundle: &std::path::Path, name: &str) -> PathBuf {
    use std::process::Command;
    let stick = dir.join("stick.img");
    let size = std::fs::metadata(bundle).unwrap().len() + (8 << 20);
    std::fs::File::create(&stick)
        .and_then(|f| f.set_len(size))
        .unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(out.status.success(), "{cmd:?}: {out:?}");
    };
    run(Command::new("mkfs.vfat")
        .args(["-n", "SYSCTRUPD"])
        .arg(&stick));
    run(Command::new("mmd")
        .arg("-i")
        .arg(&stick)
        .arg("::sysctr-update"));
    run(Command::new("mcopy")
        .arg("-i")
        .arg(&stick)
        .arg(bundle)
        .arg(format!("::sysctr-update/{name}")));
    stick
}

/// Offline: a bundle on a second disk is installed once the factory boot is blessed, the
/// machine reboots into it, and on the new system the same bundle is not installed again.
#[test]
fn offline_update_from_a_second_disk() {
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("offline", &image);
    let stick = update_stick(&scratch.dir, &bundle("SYSCTR_BUNDLE_GOOD"), "os.bundle");
    let opts = BootOptions {
        extra_disks: vec![stick],
        ..BootOptions::default()
    };
    let mut vm = Vm::boot(&image, &scratch, &opts);
    vm.wait_for("blessed the boot entry", BOOT_TIMEOUT);
    vm.wait_for("installed 0.2.0 into slot b", BOOT_TIMEOUT);
    vm.wait_for("sysctr.slot=b", BOOT_TIMEOUT);
    vm.wait_for_count("blessed the boot entry", 2, BOOT_TIMEOUT);
    vm.wait_for("bundle version 0.2.0 is the running version", BOOT_TIMEOUT);
    vm.wait_ssh(BOOT_TIMEOUT);
    let v = version(&vm);
    assert_eq!(v["boot"]["slot"], "b", "{v}");
    assert_eq!(v["boot"]["os_version"], "0.2.0", "{v}");
    let st = status(&vm);
    assert_eq!(slot_state(&st, "b"), "good", "{st}");
    assert_eq!(slot_state(&st, "a"), "good", "{st}");
    let serial = vm.serial();
    assert_eq!(
        serial.matches("installed 0.2.0 into slot").count(),
        1,
        "the stick's bundle was installed more than once\n{}",
        vm.tail(60)
    );
    assert!(
        serial.contains("(vfat) /sysctr-update/os.bundle: bundle version 0.2.0"),
        "the skip does not say where the bundle is\n{}",
        vm.tail(60)
    );
}

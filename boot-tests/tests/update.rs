//! Signed A/B updates end to end on the UEFI path (issue 12): the real bundle streamed over
//! ssh into the inactive slot, the trial boot, the health gate, and the rollback of a bad
//! update with no hand on the machine. `cargo xtask boot-test` builds the bundles (the test
//! image as 0.2.0, and a 0.3.0 with a crash-looping service in its health set) and sets
//! SYSCTR_BUNDLE_GOOD / SYSCTR_BUNDLE_BAD.

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

/// The slot partitions' bytes, to prove a refused bundle wrote nothing.
fn slots_digest(disk: &std::path::Path) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(disk).unwrap();
    let mut buf = vec![0u8; (rootfs::disk::ROOT_B_START + rootfs::disk::ROOT_SIZE) as usize];
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_exact(&mut buf).unwrap();
    // ESP + both slots; a cheap stand-in for a hash that needs no extra crate.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in &buf[rootfs::disk::ROOT_A_START as usize..] {
        h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
    }
    h.to_le_bytes().to_vec()
}

#[test]
fn update_good_then_bad_rolls_back() {
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

    // Refused: one flipped byte in the root payload. Clear message, nothing written.
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
    // Nothing bootable was made of it.
    assert_ne!(slot_state(&status(&vm), "b"), "trial");

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

    // A bad update goes back into slot A; its trial boot fails the health gate and the
    // machine comes back to slot B (0.2.0) by itself, saying why.
    let (code, out, err) = vm.ssh_input("sysctr update --reboot -", &bad, Duration::from_secs(600));
    assert_eq!(code, Some(0), "bad bundle not installed: {out}\n{err}");
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

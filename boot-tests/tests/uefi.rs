//! The disk as a real machine boots it: OVMF → systemd-boot on the ESP → slot A's UKI, with
//! boot counting; PC devices (NVMe, e1000e); the boot config on the ESP; and the direct-kernel
//! development path. Run with `cargo xtask boot-test`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use sysctr_boot_tests::*;

/// `mtools` image spec of the ESP inside a whole-disk image.
fn esp(disk: &Path) -> String {
    format!("{}@@{}", disk.display(), rootfs::disk::ESP_START)
}

/// The file names in a directory of the ESP of `disk` (mdir -b prints full paths).
fn esp_ls(disk: &Path, dir: &str) -> Vec<String> {
    let out = Command::new("mdir")
        .args(["-b", "-i", &esp(disk), &format!("::{dir}")])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .expect("mdir (apt-get install mtools)");
    assert!(
        out.status.success(),
        "mdir {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(str::to_lowercase)
        .filter(|l| !l.is_empty())
        .collect();
    v.sort();
    v
}

/// Copies `src` onto the ESP of `disk` as `dest`.
fn esp_put(disk: &Path, src: &Path, dest: &str) {
    let st = Command::new("mcopy")
        .args(["-o", "-i", &esp(disk)])
        .arg(src)
        .arg(format!("::{dest}"))
        .env("MTOOLS_SKIP_CHECK", "1")
        .status()
        .expect("mcopy (apt-get install mtools)");
    assert!(st.success(), "mcopy {dest}");
}

fn esp_mkdir(disk: &Path, dir: &str) {
    let _ = Command::new("mmd")
        .args(["-i", &esp(disk), &format!("::{dir}")])
        .env("MTOOLS_SKIP_CHECK", "1")
        .status();
}

/// A UKI that says it is slot B's, with slot A's command line changed by `edit`.
fn slot_b_uki(image: &ImagePaths, scratch: &Scratch, edit: impl Fn(&str) -> String) -> PathBuf {
    use rootfs::disk::{make_uki, os_release, Slot};
    let dir = image.kernel.parent().unwrap();
    let cmdline = std::fs::read_to_string(dir.join("cmdline")).unwrap();
    let line = edit(cmdline.trim()).replace("sysctr.slot=a", "sysctr.slot=b");
    let uki = scratch.dir.join("slot-b.efi");
    make_uki(
        &image.kernel,
        Some(&dir.join(harness::qemu::INITRD_FILE)),
        &line,
        &os_release("sysctr", "99.0.0", Slot::B),
        &uki,
    )
    .expect("assemble a slot-B UKI");
    uki
}

fn version_json(vm: &Vm) -> serde_json::Value {
    let out = vm.ssh("sysctr version --json");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("version --json: {e}: {out}"))
}

fn poweroff(vm: &mut Vm) {
    let _ = vm.ssh_raw("sysctr poweroff", Duration::from_secs(20));
    let status = vm.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "QEMU exit {status}\n{}", vm.tail(40));
    assert!(vm.serial().contains(REACHED_SHUTDOWN), "{}", vm.tail(40));
}

/// OVMF + virtio: the factory entry `sysctr-g1-a+3.efi` is counted down by systemd-boot on the
/// first attempt, blessed once every service is Ready, and `sysctr version` says so.
#[test]
fn uefi_boot_counts_then_blesses_the_entry() {
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("uefi-bless", &image);
    assert_eq!(
        esp_ls(&scratch.disk, "/EFI/Linux"),
        vec!["sysctr-g1-a+3.efi".to_string()]
    );
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_for("sysctr-g1-a+2-1.efi", BOOT_TIMEOUT);
    vm.wait_for(BOOT_COMPLETE, BOOT_TIMEOUT);
    vm.wait_for("blessed the boot entry", Duration::from_secs(30));
    vm.wait_ssh(BOOT_TIMEOUT);
    let v = version_json(&vm);
    let boot = &v["boot"];
    assert_eq!(boot["slot"], "a", "{v}");
    assert_eq!(boot["uefi"], true, "{v}");
    assert_eq!(boot["blessed"], true, "{v}");
    assert_eq!(boot["entry"], "sysctr-g1-a.efi", "{v}");
    assert!(
        boot["loader"]
            .as_str()
            .unwrap_or("")
            .contains("systemd-boot"),
        "{v}"
    );
    let text = vm.ssh("sysctr version");
    assert!(text.contains("slot a, UEFI"), "{text}");
    poweroff(&mut vm);
    drop(vm);
    assert_eq!(
        esp_ls(&scratch.disk, "/EFI/Linux"),
        vec!["sysctr-g1-a.efi".to_string()]
    );
    // A blessed entry is no longer counted: the next boot says so.
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_for("entry not boot-counted", BOOT_TIMEOUT);
    vm.wait_for(BOOT_COMPLETE, BOOT_TIMEOUT);
}

/// A PC's devices instead of virtio: the disk on NVMe, an Intel e1000e NIC (DHCP, ssh).
#[test]
fn uefi_nvme_disk_and_e1000e_nic() {
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("uefi-nvme", &image);
    let opts = BootOptions {
        disk_bus: DiskBus::Nvme,
        nic: Nic::E1000e,
        ..Default::default()
    };
    let mut vm = Vm::boot(&image, &scratch, &opts);
    vm.wait_ssh(BOOT_TIMEOUT);
    vm.wait_ps("every system service Ready", BOOT_TIMEOUT, system_ready);
    let addr = vm.ssh("ip -4 addr show");
    assert!(
        addr.contains("10.0.2.15"),
        "no DHCP address on e1000e: {addr}"
    );
    let dmesg = vm.ssh("sysctr dmesg");
    assert!(dmesg.contains("nvme0n1"), "root not on NVMe:\n{dmesg}");
    assert!(dmesg.contains("e1000e"), "no e1000e:\n{dmesg}");
    assert!(
        vm.serial().contains("/var on /dev/nvme0n1p4 (persistent)"),
        "{}",
        vm.tail(60)
    );
    poweroff(&mut vm);
}

/// The development path: QEMU's -kernel with the same command line, no firmware.
#[test]
fn direct_kernel_boot() {
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("direct", &image);
    let opts = BootOptions {
        direct_kernel: true,
        ..Default::default()
    };
    let mut vm = Vm::boot(&image, &scratch, &opts);
    vm.wait_ssh(BOOT_TIMEOUT);
    vm.wait_ps("every system service Ready", BOOT_TIMEOUT, system_ready);
    let v = version_json(&vm);
    assert_eq!(v["boot"]["slot"], "a", "{v}");
    assert_eq!(v["boot"]["uefi"], false, "{v}");
    assert!(v["boot"]["entry"].is_null(), "{v}");
    poweroff(&mut vm);
}

/// The boot config a person edits on the stick's FAT partition: hostname and ssh key come
/// from `sysctr/config.json` on the ESP (no fw_cfg at all). A malformed one is named on the
/// console with its field, and boot goes on with the other sources.
#[test]
fn boot_config_from_the_esp() {
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("esp-config", &image);
    let cfg = scratch.dir.join("config.json");
    std::fs::write(
        &cfg,
        serde_json::json!({
            "hostname": "from-esp",
            "authorized_keys": [scratch.public_key()],
            "network": { "mode": "dhcp" },
        })
        .to_string(),
    )
    .unwrap();
    esp_mkdir(&scratch.disk, "/sysctr");
    esp_put(&scratch.disk, &cfg, "/sysctr/config.json");
    let opts = BootOptions {
        fw_cfg: false,
        ..Default::default()
    };
    let mut vm = Vm::boot(&image, &scratch, &opts);
    vm.wait_for("from ESP sysctr/config.json", BOOT_TIMEOUT);
    vm.wait_ssh(BOOT_TIMEOUT);
    assert_eq!(vm.ssh("hostname").trim(), "from-esp");
    poweroff(&mut vm);
    drop(vm);

    // Malformed: a wrong type. fw_cfg still brings the key and hostname.
    std::fs::write(&cfg, r#"{"hostname": 42}"#).unwrap();
    esp_put(&scratch.disk, &cfg, "/sysctr/config.json");
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_for("field hostname: invalid type", BOOT_TIMEOUT);
    vm.wait_ssh(BOOT_TIMEOUT);
    assert_eq!(vm.ssh("hostname").trim(), "boottest");
    let serial = vm.serial();
    assert!(
        serial.contains("sysctr/config.json"),
        "the error does not name the file\n{}",
        vm.tail(60)
    );
}

/// A counted entry whose boots never reach "all ready" falls back to the next entry once its
/// counter is used up: a UKI for the empty slot B, sorted first (generation 2, 2 tries),
/// fails twice (PID 1 finds no root and takes its fatal path, a reboot), then systemd-boot
/// boots slot A.
#[test]
fn exhausted_entry_falls_back_to_the_other_slot() {
    use rootfs::disk::Slot;
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("uefi-fallback", &image);
    // Slot B's partition (empty) as the root: no verified root for PID 1 to mount.
    let uki = slot_b_uki(&image, &scratch, |line| {
        line.replace(Slot::A.part_guid(), Slot::B.part_guid())
    });
    esp_put(&scratch.disk, &uki, "/EFI/Linux/sysctr-g2-b+2.efi");
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_for("sysctr.slot=a", Duration::from_secs(600));
    vm.wait_for(BOOT_COMPLETE, BOOT_TIMEOUT);
    let serial = vm.serial();
    let tries_b = serial
        .lines()
        .filter(|l| l.contains("Kernel command line:") && l.contains("sysctr.slot=b"))
        .count();
    assert_eq!(
        tries_b,
        2,
        "slot B should have been tried exactly twice\n{}",
        vm.tail(80)
    );
    vm.wait_for("blessed the boot entry", Duration::from_secs(30));
    vm.wait_ssh(BOOT_TIMEOUT);
    assert_eq!(version_json(&vm)["boot"]["slot"], "a");
    poweroff(&mut vm);
    drop(vm);
    assert_eq!(
        esp_ls(&scratch.disk, "/EFI/Linux"),
        vec![
            "sysctr-g1-a.efi".to_string(),
            "sysctr-g2-b+0-2.efi".to_string()
        ]
    );
}

/// A state partition whose primary superblock is damaged is not "blank": init must not
/// format it (issue 16, finding 16). /var falls back to tmpfs with a loud message, and the
/// data is still there for e2fsck from a backup superblock.
#[test]
fn damaged_state_partition_is_never_formatted() {
    use std::io::{Seek, SeekFrom, Write};
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("damaged-state", &image);
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_ssh(BOOT_TIMEOUT);
    vm.ssh("echo precious-$((6*7)) > /var/lib/ssh/keep-me && sync");
    poweroff(&mut vm);
    drop(vm);
    // Zero the primary superblock (1024..2048 of the state partition).
    let mut disk = std::fs::OpenOptions::new()
        .write(true)
        .open(&scratch.disk)
        .unwrap();
    disk.seek(SeekFrom::Start(rootfs::disk::STATE_START + 1024))
        .unwrap();
    disk.write_all(&[0u8; 1024]).unwrap();
    drop(disk);
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_for("is not blank: NOT formatting", BOOT_TIMEOUT);
    vm.wait_ssh(BOOT_TIMEOUT);
    poweroff(&mut vm);
    drop(vm);
    // The data is recoverable: e2fsck from the backup superblock, then read the file.
    let part = scratch.state_partition();
    let fsck = Command::new("e2fsck")
        .args(["-fy", "-b", "8193", "-B", "1024"])
        .arg(&part)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.code().unwrap_or(8) < 4,
        "e2fsck could not repair: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let cat = Command::new("debugfs")
        .args(["-R", "cat /lib/sysctr/ssh/keep-me"])
        .arg(&part)
        .output()
        .expect("debugfs");
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout).trim(),
        "precious-42",
        "{}",
        String::from_utf8_lossy(&cat.stderr)
    );
}

/// A state partition with a fixable inconsistency (a wrong link count, the filesystem marked
/// not clean, as after a crash) is repaired by PID 1's `e2fsck -p` before /var is mounted,
/// and boot goes on with /var persistent and the data intact. A clean one is mounted without
/// running e2fsck, unless the kernel refuses it (a group descriptor failing its checksum
/// under a clean superblock): then e2fsck -p repairs it and the mount is tried again.
#[test]
fn fixable_state_damage_is_repaired_before_mounting() {
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("fsck-state", &image);
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_ssh(BOOT_TIMEOUT);
    vm.ssh("echo precious-$((6*7)) > /var/lib/ssh/keep-me && sync");
    poweroff(&mut vm);
    drop(vm);
    let part = scratch.state_partition();
    let debugfs = |part: &std::path::Path, req: &str| {
        let out = Command::new("debugfs")
            .args(["-w", "-R", req])
            .arg(part)
            .output()
            .expect("debugfs");
        assert!(
            out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("error"),
            "debugfs {req}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Boots the damaged partition, waits for PID 1's lines in order, checks the data.
    let boot_expecting = |part: &std::path::Path, lines: &[&str]| {
        scratch.put_state_partition(part);
        let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
        for line in lines {
            vm.wait_for(line, BOOT_TIMEOUT);
        }
        vm.wait_for("(persistent)", BOOT_TIMEOUT);
        vm.wait_ssh(BOOT_TIMEOUT);
        assert_eq!(vm.ssh("cat /var/lib/ssh/keep-me").trim(), "precious-42");
        poweroff(&mut vm);
    };
    debugfs(&part, "sif /lib/sysctr/ssh/keep-me links_count 7");
    debugfs(&part, "ssv state 0");
    boot_expecting(
        &part,
        &[
            "e2fsck -p, as it was not cleanly unmounted",
            "ref count is 7, should be 1",
            "e2fsck repaired",
        ],
    );
    // What PID 1 left is consistent, as a forced full check on the host says.
    let part = scratch.state_partition();
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&part)
        .output()
        .expect("e2fsck");
    assert_eq!(
        fsck.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // Clean, but group 0's descriptor fails its checksum: the kernel refuses the mount.
    debugfs(&part, "set_bg 0 checksum 0");
    boot_expecting(&part, &["clean by its superblock", "running e2fsck -p on"]);
}

/// The health gate: a trial entry (here slot B's UKI booting the same root with a manifest
/// whose health-set service crash-loops) is marked bad as soon as that service fails, and the
/// machine reboots into slot A by itself; the reason is kept on the state partition and
/// shown by `sysctr version --json` on the good slot.
#[test]
fn unhealthy_trial_boot_rolls_back_by_itself() {
    let image = ImagePaths::from_env();
    let scratch = Scratch::new("uefi-gate", &image);
    let uki = slot_b_uki(&image, &scratch, |line| {
        format!("{line} sysctr.manifest=/etc/sysctr/manifest-unhealthy.json")
    });
    esp_put(&scratch.disk, &uki, "/EFI/Linux/sysctr-g2-b+3.efi");
    let mut vm = Vm::boot(&image, &scratch, &BootOptions::default());
    vm.wait_for("trial boot failed the health gate", BOOT_TIMEOUT);
    vm.wait_for("rebooting into the other slot", Duration::from_secs(30));
    // The second boot is slot A's.
    vm.wait_for_count("sysctr.slot=a", 1, BOOT_TIMEOUT);
    vm.wait_for("blessed the boot entry", BOOT_TIMEOUT);
    vm.wait_ssh(BOOT_TIMEOUT);
    let v = version_json(&vm);
    assert_eq!(v["boot"]["slot"], "a", "{v}");
    let why = v["boot"]["previous_failure"].as_str().unwrap_or("");
    assert!(
        why.contains("slot b") && why.contains("service unhealthy failed"),
        "{v}"
    );
    poweroff(&mut vm);
    drop(vm);
    let entries = esp_ls(&scratch.disk, "/EFI/Linux");
    assert_eq!(
        entries,
        vec![
            "sysctr-g1-a.efi".to_string(),
            "sysctr-g2-b+0-1.efi".to_string()
        ],
        "slot B marked bad after one try, slot A blessed"
    );
}

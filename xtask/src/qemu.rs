//! `cargo xtask run`: build the development image and boot it in QEMU on the serial console,
//! with the state disk attached, ssh forwarded to a loopback port and the boot config
//! (hostname, ssh keys, network) passed through fw_cfg. Also `cargo xtask boot-test`, which
//! builds the image with the test services and runs the QEMU boot tests against it.

use crate::image::{self, ROOT_SIZE, ROOT_START};
use crate::util::{ensure_debian_packages, run, workspace_root};
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const QEMU_PACKAGES: &[&str] = &["qemu-system-x86", "openssh-client"];

/// The kernel command line when the image has no `cmdline` file next to its kernel: the root
/// partition mounted directly, without dm-verity (plus `--append`).
pub const BASE_CMDLINE: &str = "console=ttyS0 root=/dev/vda1 rootfstype=squashfs ro";

/// The command line an image was built for (`cmdline` next to its kernel: the dm-verity
/// root), or [`BASE_CMDLINE`].
pub fn image_cmdline(kernel: &Path) -> String {
    fs::read_to_string(kernel.with_file_name("cmdline"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| BASE_CMDLINE.to_string())
}

struct RunOptions {
    memory: String,
    cpus: String,
    kvm: bool,
    append: String,
    manifest: Option<PathBuf>,
    ssh_port: u16,
    authorized_keys: Option<PathBuf>,
    dev: bool,
    fresh: bool,
}

fn usage() -> &'static str {
    "options:
  --memory MB              guest memory (default 512)
  --cpus N                 guest CPUs (default 2)
  --kvm                    use KVM instead of TCG
  --append ARGS            extra kernel command line (e.g. sysctr.log=debug)
  --manifest FILE          boot this manifest instead of the assembled one
  --ssh-port N             host loopback port forwarded to the guest's ssh (default 2222)
  --authorized-keys FILE   ssh public keys for the boot config (default ~/.ssh/*.pub)
  --prod                   production image: getty on the console, no auto-login
  --fresh                  reset the state partition (build/run/disk.img)"
}

fn parse(args: &[String]) -> Result<RunOptions> {
    let mut o = RunOptions {
        memory: "512".into(),
        cpus: "2".into(),
        kvm: false,
        append: String::new(),
        manifest: None,
        ssh_port: 2222,
        authorized_keys: None,
        dev: true,
        fresh: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value\n{}", usage()))
        };
        match a.as_str() {
            "--memory" => o.memory = val()?,
            "--cpus" => o.cpus = val()?,
            "--kvm" => o.kvm = true,
            "--append" => o.append = val()?,
            "--manifest" => o.manifest = Some(PathBuf::from(val()?)),
            "--ssh-port" => o.ssh_port = val()?.parse().context("--ssh-port")?,
            "--authorized-keys" => o.authorized_keys = Some(PathBuf::from(val()?)),
            "--prod" => o.dev = false,
            "--fresh" => o.fresh = true,
            "-h" | "--help" => {
                println!("usage: cargo xtask run [options]\n{}", usage());
                std::process::exit(0);
            }
            other => bail!("run: unknown option {other:?}\n{}", usage()),
        }
    }
    Ok(o)
}

/// The boot config JSON handed to init through fw_cfg.
pub fn boot_config(hostname: &str, keys: &[String]) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "hostname": hostname,
        "authorized_keys": keys,
        "network": { "mode": "dhcp" },
    }))
    .expect("static JSON")
}

/// Public keys from a file (one per line), or from ~/.ssh/*.pub when none is given.
fn read_keys(file: Option<&Path>) -> Result<Vec<String>> {
    let files: Vec<PathBuf> = match file {
        Some(f) => vec![f.to_path_buf()],
        None => {
            let dir = PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".ssh");
            let mut v: Vec<PathBuf> = fs::read_dir(&dir)
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.extension().is_some_and(|e| e == "pub"))
                        .collect()
                })
                .unwrap_or_default();
            v.sort();
            v
        }
    };
    let mut keys = Vec::new();
    for f in files {
        let text =
            fs::read_to_string(&f).with_context(|| format!("cannot read {}", f.display()))?;
        keys.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from),
        );
    }
    Ok(keys)
}

/// The QEMU command line for a kernel, disk and boot config. Serial console on stdio.
#[allow(clippy::too_many_arguments)]
pub fn qemu_command(
    kernel: &Path,
    disk: &Path,
    bootconfig: &Path,
    ssh_port: u16,
    memory: &str,
    cpus: &str,
    kvm: bool,
    append: &str,
) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-m", memory, "-smp", cpus]);
    if kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg"]);
    }
    let mut line = image_cmdline(kernel);
    if !append.is_empty() {
        line.push(' ');
        line.push_str(append);
    }
    cmd.arg("-kernel")
        .arg(kernel)
        .arg("-append")
        .arg(line)
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            disk.display()
        ))
        .args(["-netdev"])
        .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"))
        .args(["-device", "virtio-net-pci,netdev=n0"])
        .args(["-device", "virtio-rng-pci"])
        .arg("-fw_cfg")
        .arg(format!(
            "name=opt/sysctr/config,file={}",
            bootconfig.display()
        ));
    cmd
}

/// `cargo xtask run`.
pub fn command(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    ensure_debian_packages(QEMU_PACKAGES)?;
    let opts = image::Options {
        dev: o.dev,
        manifest: match &o.manifest {
            Some(m) => {
                Some(fs::canonicalize(m).with_context(|| format!("--manifest {}", m.display()))?)
            }
            None => None,
        },
        ..Default::default()
    };
    let img = image::build(&opts)?;
    let run_dir = workspace_root().join("build").join("run");
    fs::create_dir_all(&run_dir)?;
    let disk = run_dir.join("disk.img");
    refresh_disk(&disk, &img.disk, o.fresh)?;
    let keys = read_keys(o.authorized_keys.as_deref())?;
    let bootconfig = run_dir.join("bootconfig.json");
    fs::write(&bootconfig, boot_config("sysctr", &keys))?;

    eprintln!();
    eprintln!(
        "xtask: booting {} (QEMU, {})",
        img.disk.display(),
        if o.kvm { "KVM" } else { "TCG" }
    );
    eprintln!("xtask:   serial console here; Ctrl-A X quits QEMU, Ctrl-A C toggles the monitor");
    eprintln!("xtask:   (monitor: `system_powerdown` presses the power button)");
    if keys.is_empty() {
        eprintln!(
            "xtask:   no ssh keys (pass --authorized-keys FILE or create ~/.ssh/id_ed25519.pub)"
        );
    } else {
        eprintln!(
            "xtask:   ssh: ssh -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1",
            o.ssh_port
        );
    }
    eprintln!(
        "xtask:   state partition persists in {} (--fresh resets it)",
        disk.display()
    );
    let mut cmd = qemu_command(
        &img.kernel,
        &disk,
        &bootconfig,
        o.ssh_port,
        &o.memory,
        &o.cpus,
        o.kvm,
        &o.append,
    );
    cmd.arg("-nographic");
    let err = cmd.exec();
    bail!("cannot exec qemu-system-x86_64: {err}")
}

/// Keeps the run disk's state partition across runs: the freshly built root partition is
/// written into the existing disk; a missing or differently sized disk is replaced.
fn refresh_disk(run_disk: &Path, built: &Path, fresh: bool) -> Result<()> {
    let same_layout = fs::metadata(run_disk)
        .map(|m| m.len() == fs::metadata(built).map(|b| b.len()).unwrap_or(0))
        .unwrap_or(false);
    if fresh || !same_layout {
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(built)
            .arg(run_disk))?;
        return Ok(());
    }
    // The whole root partition (squashfs and its verity tree) from the freshly built disk.
    use std::io::{Read, Seek, SeekFrom};
    let mut src = fs::File::open(built)?;
    src.seek(SeekFrom::Start(ROOT_START))?;
    let mut root = vec![0u8; ROOT_SIZE as usize];
    src.read_exact(&mut root)?;
    image::write_bytes_at(run_disk, ROOT_START, &root)
}

/// `cargo xtask boot-test [cargo test args]`: builds the production image plus the test
/// services, and the development image, and runs `boot-tests/` against them (SYSCTR_KERNEL,
/// SYSCTR_DISK; SYSCTR_DEV_KERNEL, SYSCTR_DEV_DISK).
pub fn boot_test(args: &[String]) -> Result<()> {
    ensure_debian_packages(QEMU_PACKAGES)?;
    let root = workspace_root();
    let opts = image::Options {
        dev: false,
        extra_services: vec![root.join("boot-tests/test-services.json")],
        out: Some(root.join("build").join("image-test")),
        ..Default::default()
    };
    let img = image::build(&opts)?;
    let dev = image::build(&image::Options {
        dev: true,
        out: Some(root.join("build").join("image-test-dev")),
        ..Default::default()
    })?;
    run(Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["test", "-p", "sysctr-boot-tests", "--"])
        .args(["--test-threads", "1"])
        .args(args)
        .env("SYSCTR_KERNEL", &img.kernel)
        .env("SYSCTR_DISK", &img.disk)
        .env("SYSCTR_ROOTFS", &img.root_squashfs)
        .env("SYSCTR_DEV_KERNEL", &dev.kernel)
        .env("SYSCTR_DEV_DISK", &dev.disk))
}

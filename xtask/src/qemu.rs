//! `cargo xtask run`: build the development image and boot it in QEMU on the serial console,
//! with the state disk attached, ssh forwarded to a loopback port and the boot config
//! (hostname, ssh keys, network) passed through fw_cfg. Also `cargo xtask boot-test`, which
//! builds the image with the test services and runs the QEMU boot tests against it.

use crate::image::{self, Slot, ROOT_SIZE};
use crate::util::{ensure_debian_packages, run, workspace_root};
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const QEMU_PACKAGES: &[&str] = &["qemu-system-x86", "openssh-client", "ovmf"];

/// Debian's OVMF: the UEFI firmware (read-only) and the template of its variable store, copied
/// per VM (systemd-boot and init keep state there).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// How a VM boots.
pub enum BootPath {
    /// As a real machine: OVMF → systemd-boot on the ESP → the slot's UKI. `vars` is this
    /// VM's copy of the UEFI variable store.
    Uefi { vars: PathBuf },
    /// Development shortcut: QEMU loads the kernel itself with this command line.
    Direct { kernel: PathBuf, cmdline: String },
}

/// The disk's bus: virtio (QEMU's fast path) or what PCs have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Nvme,
    Ahci,
}

/// The NIC model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nic {
    Virtio,
    E1000e,
}

impl DiskBus {
    pub fn parse(s: &str) -> Result<DiskBus> {
        Ok(match s {
            "virtio" => DiskBus::Virtio,
            "nvme" => DiskBus::Nvme,
            "ahci" | "sata" => DiskBus::Ahci,
            other => bail!("unknown disk bus {other:?} (virtio, nvme, ahci)"),
        })
    }
}

impl Nic {
    pub fn parse(s: &str) -> Result<Nic> {
        Ok(match s {
            "virtio" => Nic::Virtio,
            "e1000e" => Nic::E1000e,
            other => bail!("unknown NIC {other:?} (virtio, e1000e)"),
        })
    }
}

/// A fresh copy of OVMF's variable store for one VM.
pub fn fresh_vars(path: &Path) -> Result<()> {
    fs::copy(OVMF_VARS, path)
        .with_context(|| format!("cannot copy {OVMF_VARS} (apt-get install ovmf)"))?;
    Ok(())
}

/// The kernel command line when the image has no `cmdline` file next to its kernel: the root
/// partition mounted directly, without dm-verity (plus `--append`).
pub const BASE_CMDLINE: &str =
    "console=ttyS0 root=PARTUUID=53595343-5452-4000-8000-000000000001 rootfstype=squashfs ro";

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
    appliance: Option<PathBuf>,
    manifest: Option<PathBuf>,
    ssh_port: u16,
    /// `--forward HOST:GUEST`: loopback port forwards besides ssh's.
    forwards: Vec<(u16, u16)>,
    authorized_keys: Option<PathBuf>,
    dev: bool,
    fresh: bool,
    direct_kernel: bool,
    bus: DiskBus,
    nic: Nic,
}

fn usage() -> &'static str {
    "options:
  --memory MB              guest memory (default 512)
  --cpus N                 guest CPUs (default 2)
  --kvm                    use KVM instead of TCG
  --append ARGS            extra kernel command line (e.g. sysctr.log=debug)
  --appliance FILE         build the image from this appliance file (docs/appliance.md)
  --manifest FILE          boot this manifest instead of the assembled one
  --ssh-port N             host loopback port forwarded to the guest's ssh (default 2222)
  --forward HOST:GUEST     also forward host loopback port HOST to guest port GUEST (tcp)
  --authorized-keys FILE   ssh public keys for the boot config (default ~/.ssh/*.pub)
  --prod                   production image: getty on the console, no auto-login
  --fresh                  reset the state partition (build/run/disk.img)
  --direct-kernel          QEMU loads the kernel itself (-kernel), skipping OVMF and
                           systemd-boot: the fast development path
  --disk-bus BUS           virtio (default), nvme or ahci
  --nic NIC                virtio (default) or e1000e"
}

fn parse(args: &[String]) -> Result<RunOptions> {
    let mut o = RunOptions {
        memory: "512".into(),
        cpus: "2".into(),
        kvm: false,
        append: String::new(),
        appliance: None,
        manifest: None,
        ssh_port: 2222,
        forwards: Vec::new(),
        authorized_keys: None,
        dev: true,
        fresh: false,
        direct_kernel: false,
        bus: DiskBus::Virtio,
        nic: Nic::Virtio,
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
            "--appliance" => o.appliance = Some(PathBuf::from(val()?)),
            "--manifest" => o.manifest = Some(PathBuf::from(val()?)),
            "--ssh-port" => o.ssh_port = val()?.parse().context("--ssh-port")?,
            "--forward" => {
                let v = val()?;
                let pair = v
                    .split_once(':')
                    .and_then(|(h, g)| Some((h.parse().ok()?, g.parse().ok()?)))
                    .with_context(|| format!("--forward {v:?}: expected HOST:GUEST ports"))?;
                o.forwards.push(pair);
            }
            "--authorized-keys" => o.authorized_keys = Some(PathBuf::from(val()?)),
            "--prod" => o.dev = false,
            "--fresh" => o.fresh = true,
            "--direct-kernel" => o.direct_kernel = true,
            "--disk-bus" => o.bus = DiskBus::parse(&val()?)?,
            "--nic" => o.nic = Nic::parse(&val()?)?,
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

/// The QEMU command line for a boot path, disk and boot config. The caller picks the
/// console (`-nographic`, or `-serial` to a file).
#[allow(clippy::too_many_arguments)]
pub fn qemu_command(
    boot: &BootPath,
    disk: &Path,
    bootconfig: Option<&Path>,
    ssh_port: u16,
    memory: &str,
    cpus: &str,
    kvm: bool,
    bus: DiskBus,
    nic: Nic,
) -> Command {
    qemu_command_with(
        boot,
        disk,
        bootconfig,
        ssh_port,
        &[],
        memory,
        cpus,
        kvm,
        bus,
        nic,
    )
}

/// [`qemu_command`] with more loopback port forwards, `(host port, guest port)`.
#[allow(clippy::too_many_arguments)]
pub fn qemu_command_with(
    boot: &BootPath,
    disk: &Path,
    bootconfig: Option<&Path>,
    ssh_port: u16,
    forwards: &[(u16, u16)],
    memory: &str,
    cpus: &str,
    kvm: bool,
    bus: DiskBus,
    nic: Nic,
) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-machine", "q35", "-m", memory, "-smp", cpus]);
    if kvm {
        cmd.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        cmd.args(["-accel", "tcg"]);
    }
    match boot {
        BootPath::Uefi { vars } => {
            cmd.arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"
                ))
                .arg("-drive")
                .arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
        }
        BootPath::Direct { kernel, cmdline } => {
            cmd.arg("-kernel").arg(kernel).arg("-append").arg(cmdline);
        }
    }
    let drive = format!(
        "file={},format=raw,if=none,id=d0,cache=unsafe",
        disk.display()
    );
    cmd.arg("-drive").arg(drive);
    let dev = match bus {
        DiskBus::Virtio => "virtio-blk-pci,drive=d0",
        DiskBus::Nvme => "nvme,drive=d0,serial=sysctr0",
        DiskBus::Ahci => "ide-hd,drive=d0,bus=ide.0",
    };
    // The firmware boots the disk first; with -kernel, QEMU's own loader takes bootindex 0.
    let dev = match boot {
        BootPath::Uefi { .. } => format!("{dev},bootindex=0"),
        BootPath::Direct { .. } => dev.to_string(),
    };
    cmd.arg("-device").arg(dev);
    let mut netdev = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22");
    for (host, guest) in forwards {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
    }
    cmd.args(["-netdev"]).arg(netdev);
    match nic {
        Nic::Virtio => cmd.args(["-device", "virtio-net-pci,netdev=n0"]),
        Nic::E1000e => cmd.args(["-device", "e1000e,netdev=n0"]),
    };
    // virtio-rng for first-boot entropy; the i6300esb watchdog PID 1 arms during a trial boot.
    cmd.args(["-device", "virtio-rng-pci", "-device", "i6300esb"]);
    if let Some(cfg) = bootconfig {
        cmd.arg("-fw_cfg")
            .arg(format!("name=opt/sysctr/config,file={}", cfg.display()));
    }
    cmd
}

/// `cargo xtask run`.
pub fn command(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    ensure_debian_packages(QEMU_PACKAGES)?;
    let opts = image::Options {
        dev: o.dev,
        appliance: match &o.appliance {
            Some(a) => {
                Some(fs::canonicalize(a).with_context(|| format!("--appliance {}", a.display()))?)
            }
            None => None,
        },
        manifest: match &o.manifest {
            Some(m) => {
                Some(fs::canonicalize(m).with_context(|| format!("--manifest {}", m.display()))?)
            }
            None => None,
        },
        // Under UEFI the command line is inside the UKI: --append goes into the image.
        cmdline_extra: if o.direct_kernel {
            String::new()
        } else {
            o.append.clone()
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
        "xtask: booting {} (QEMU, {}, {})",
        img.disk.display(),
        if o.kvm { "KVM" } else { "TCG" },
        if o.direct_kernel {
            "direct kernel"
        } else {
            "OVMF + systemd-boot"
        }
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
    let boot = if o.direct_kernel {
        let mut cmdline = image_cmdline(&img.kernel);
        if !o.append.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&o.append);
        }
        BootPath::Direct {
            kernel: img.kernel.clone(),
            cmdline,
        }
    } else {
        // The variable store persists with the disk (boot entries, LoaderEntryDefault).
        let vars = run_dir.join("OVMF_VARS.fd");
        if o.fresh || !vars.exists() {
            fresh_vars(&vars)?;
        }
        BootPath::Uefi { vars }
    };
    for (host, guest) in &o.forwards {
        eprintln!("xtask:   port forward: 127.0.0.1:{host} -> guest :{guest}");
    }
    let mut cmd = qemu_command_with(
        &boot,
        &disk,
        Some(&bootconfig),
        o.ssh_port,
        &o.forwards,
        &o.memory,
        &o.cpus,
        o.kvm,
        o.bus,
        o.nic,
    );
    cmd.arg("-nographic");
    let err = cmd.exec();
    bail!("cannot exec qemu-system-x86_64: {err}")
}

/// Keeps the run disk's state partition across runs: the freshly built ESP and root slots
/// are written into the existing disk; a missing or differently sized disk is replaced.
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
    // Everything before the state partition: GPT, ESP, root A, root B.
    use std::io::Read;
    let end = Slot::B.start() + ROOT_SIZE;
    let mut head = vec![0u8; end as usize];
    fs::File::open(built)?.read_exact(&mut head)?;
    image::write_bytes_at(run_disk, 0, &head)
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
        // `sysctr.manifest=/etc/sysctr/manifest-unhealthy.json`: the health gate's bad boot.
        alt_manifests: vec![(
            "unhealthy".into(),
            root.join("boot-tests/unhealthy-services.json"),
        )],
        out: Some(root.join("build").join("image-test")),
        ..Default::default()
    };
    let img = image::build(&opts)?;
    let dev = image::build(&image::Options {
        dev: true,
        out: Some(root.join("build").join("image-test-dev")),
        ..Default::default()
    })?;
    // Updates for the test image: a good 0.2.0, and a 0.3.0 whose manifest has a crash-looping
    // service in the health set (the rollback).
    let bundles = root.join("build").join("bundles-test");
    fs::create_dir_all(&bundles)?;
    let mut bundle_env = Vec::new();
    for (version, extra, var) in [
        ("0.2.0", None, "SYSCTR_BUNDLE_GOOD"),
        (
            "0.3.0",
            Some(root.join("boot-tests/unhealthy-services.json")),
            "SYSCTR_BUNDLE_BAD",
        ),
    ] {
        let mut o = image::Options {
            version: Some(version.into()),
            out: Some(root.join("build").join(format!("image-test-{version}"))),
            ..opts.clone()
        };
        if let Some(extra) = extra {
            // The unhealthy service is in the manifest itself: no alternative one.
            o.extra_services.push(extra);
            o.alt_manifests.clear();
        }
        let up = image::build(&o)?;
        let out = bundles.join(format!("{version}.bundle"));
        crate::bundle::from_image(version, up.kernel.parent().expect("image dir"), &out)?;
        bundle_env.push((var, out));
    }
    run(Command::new(env!("CARGO"))
        .envs(bundle_env)
        .current_dir(&root)
        .args(["test", "-p", "sysctr-boot-tests", "--"])
        .args(["--test-threads", "1"])
        .args(args)
        .env("SYSCTR_KERNEL", &img.kernel)
        .env("SYSCTR_DISK", &img.disk)
        .env("SYSCTR_ROOTFS", &img.root_squashfs)
        .env("SYSCTR_DEV_KERNEL", &dev.kernel)
        .env("SYSCTR_DEV_DISK", &dev.disk)
        .env("SYSCTR_OVMF_CODE", OVMF_CODE)
        .env("SYSCTR_OVMF_VARS", OVMF_VARS))
}

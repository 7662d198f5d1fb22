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

pub use harness::qemu::{
    free_port, BootPath, DiskBus, Machine, Nic, BASE_CMDLINE, OVMF_CODE, OVMF_VARS, QEMU_PACKAGES,
};

/// A fresh copy of OVMF's variable store for one VM.
pub fn fresh_vars(path: &Path) -> Result<()> {
    Ok(harness::qemu::fresh_vars(path)?)
}

/// The command line an image was built for (`cmdline` next to its kernel: the dm-verity
/// root), or [`BASE_CMDLINE`].
pub fn image_cmdline(kernel: &Path) -> String {
    harness::qemu::image_cmdline(kernel).unwrap_or_else(|_| BASE_CMDLINE.to_string())
}

/// `cargo xtask run`'s options.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Guest memory in MiB.
    #[arg(long, value_name = "MB", default_value_t = 512)]
    memory: u32,
    /// Guest CPUs.
    #[arg(long, value_name = "N", default_value_t = 2)]
    cpus: u32,
    /// Use KVM instead of TCG.
    #[arg(long)]
    kvm: bool,
    /// Extra kernel command line (e.g. sysctr.log=debug); under UEFI it is built into the UKI.
    #[arg(long, value_name = "ARGS", default_value = "")]
    append: String,
    /// Build the image from this appliance file (docs/appliance.md).
    #[arg(long, value_name = "FILE")]
    appliance: Option<PathBuf>,
    /// Boot this manifest instead of the assembled one.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Host loopback port forwarded to the guest's ssh.
    #[arg(long = "ssh-port", value_name = "N", default_value_t = 2222)]
    ssh_port: u16,
    /// Also forward host loopback port HOST to guest port GUEST (tcp; repeatable).
    #[arg(long = "forward", value_name = "HOST:GUEST", value_parser = parse_forward)]
    forwards: Vec<(u16, u16)>,
    /// ssh public keys for the boot config (default ~/.ssh/*.pub).
    #[arg(long = "authorized-keys", value_name = "FILE")]
    authorized_keys: Option<PathBuf>,
    /// Production image: getty on the console, no auto-login.
    #[arg(long)]
    prod: bool,
    /// Reset the state partition (build/run/disk.img) and the UEFI variables.
    #[arg(long)]
    fresh: bool,
    /// QEMU loads the kernel itself (-kernel), skipping OVMF and systemd-boot: the fast
    /// development path.
    #[arg(long = "direct-kernel")]
    direct_kernel: bool,
    /// The disk's bus: virtio, nvme or ahci.
    #[arg(long = "disk-bus", value_name = "BUS", default_value = "virtio")]
    bus: DiskBus,
    /// The NIC: virtio or e1000e.
    #[arg(long, value_name = "NIC", default_value = "virtio")]
    nic: Nic,
}

fn parse_forward(v: &str) -> Result<(u16, u16), String> {
    v.split_once(':')
        .and_then(|(h, g)| Some((h.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| format!("{v:?}: expected HOST:GUEST ports"))
}

/// `cargo xtask boot-test`'s options.
#[derive(clap::Args, Debug)]
pub struct BootTestArgs {
    /// Passed on to `cargo test -p sysctr-boot-tests --`: a test name filter, --ignored,
    /// --nocapture, …
    #[arg(
        value_name = "CARGO_TEST_ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub cargo_test_args: Vec<String>,
}

/// The boot config JSON handed to init through fw_cfg (DHCP networking).
pub fn boot_config(hostname: &str, keys: &[String]) -> String {
    harness::qemu::boot_config(hostname, keys, serde_json::json!({ "mode": "dhcp" }))
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

/// `cargo xtask run`.
pub fn command(o: &RunArgs) -> Result<()> {
    ensure_debian_packages(QEMU_PACKAGES)?;
    let opts = image::Options {
        dev: !o.prod,
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
        BootPath::direct(&img.kernel, &image_cmdline(&img.kernel), &o.append)
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
    let machine = Machine {
        bootconfig: Some(bootconfig),
        forwards: o.forwards.clone(),
        memory_mib: o.memory,
        cpus: o.cpus,
        kvm: o.kvm,
        bus: o.bus,
        nic: o.nic,
        ..Machine::new(boot, &disk, o.ssh_port)
    };
    let mut cmd = machine.command();
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
/// services, the development image and the OCI appliance (`appliance_test`), and runs
/// `boot-tests/` against them (SYSCTR_KERNEL, SYSCTR_DISK; SYSCTR_DEV_KERNEL,
/// SYSCTR_DEV_DISK; SYSCTR_APPLIANCE_KERNEL, SYSCTR_APPLIANCE_DISK).
pub fn boot_test(args: &[String]) -> Result<()> {
    boot_test_with(args, &[])
}

/// `cargo xtask powercut --runs N [--seed S]`.
#[derive(clap::Args, Debug)]
pub struct PowercutArgs {
    /// How many power cuts (odd runs during an install, even runs during the trial boot).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,
    /// Seed of the random cut moments (printed by every run), to replay a sequence.
    #[arg(long)]
    pub seed: Option<u64>,
    /// VMs cut side by side, each on its own disk (TCG: one per free core; the other boot
    /// tests run one VM at a time).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub jobs: u64,
}

/// The boot tests' power-cut test with `--runs` cuts, its table written to bench/RESULTS.md.
pub fn powercut(a: &PowercutArgs) -> Result<()> {
    let table = workspace_root().join("bench").join("RESULTS.md");
    let mut env = vec![
        ("SYSCTR_POWERCUT_RUNS", a.runs.to_string()),
        ("SYSCTR_POWERCUT_JOBS", a.jobs.to_string()),
        ("SYSCTR_POWERCUT_TABLE", table.display().to_string()),
    ];
    if let Some(s) = a.seed {
        env.push(("SYSCTR_POWERCUT_SEED", s.to_string()));
    }
    boot_test_with(
        &[
            "--exact".into(),
            "power_cut_during_install_and_trial".into(),
            "--nocapture".into(),
        ],
        &env,
    )
}

fn boot_test_with(args: &[String], env: &[(&str, String)]) -> Result<()> {
    ensure_debian_packages(QEMU_PACKAGES)?;
    ensure_debian_packages(&["dosfstools", "mtools"])?;
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
    let appliance = crate::appliance_test::build()?;
    // Updates for the test image: a good 0.2.0; a 0.3.0 whose manifest has a crash-looping
    // service in the health set (the rollback); a 0.4.0 whose PID 1 hangs on its trial boot
    // (the `hang-in-trial` test hook, with a 10 s watchdog: the hardware reset).
    let bundles = root.join("build").join("bundles-test");
    fs::create_dir_all(&bundles)?;
    let mut bundle_env = Vec::new();
    let mut good_dir = None;
    for (version, extra, hang, var) in [
        ("0.2.0", None, false, "SYSCTR_BUNDLE_GOOD"),
        (
            "0.3.0",
            Some(root.join("boot-tests/unhealthy-services.json")),
            false,
            "SYSCTR_BUNDLE_BAD",
        ),
        ("0.4.0", None, true, "SYSCTR_BUNDLE_HANG"),
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
        if hang {
            o.test_hook = Some("hang-in-trial".into());
            o.cmdline_extra = "sysctr.watchdog=10".into();
        }
        let up = image::build(&o)?;
        let dir = up.kernel.parent().expect("image dir").to_path_buf();
        let out = bundles.join(format!("{version}.bundle"));
        crate::bundle::from_image(version, &dir, &out)?;
        bundle_env.push((var, out));
        if version == "0.2.0" {
            good_dir = Some(dir);
        }
    }
    // Bundles every installer must refuse before it writes a byte: signed with a key the
    // image does not trust, for another appliance, and the factory 0.1.0 again (older than
    // the 0.2.0 the test runs by then).
    let good_dir = good_dir.expect("the good image was built");
    let untrusted = bundles.join("untrusted.key");
    write_untrusted_key(&untrusted)?;
    let image_dir = img.kernel.parent().expect("image dir");
    for (name, from, version, key, compatible, var) in [
        (
            "untrusted-key",
            good_dir.as_path(),
            "0.2.0",
            Some(untrusted.as_path()),
            None,
            "SYSCTR_BUNDLE_UNTRUSTED",
        ),
        (
            "other-compatible",
            good_dir.as_path(),
            "0.2.0",
            None,
            Some("another-appliance"),
            "SYSCTR_BUNDLE_INCOMPATIBLE",
        ),
        (
            "downgrade",
            image_dir,
            "0.1.0",
            None,
            None,
            "SYSCTR_BUNDLE_DOWNGRADE",
        ),
    ] {
        let out = bundles.join(format!("{name}.bundle"));
        crate::bundle::from_image_with(version, from, &out, key, compatible)?;
        bundle_env.push((var, out));
    }
    run(Command::new(env!("CARGO"))
        .envs(bundle_env)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(&root)
        .args(["test", "-p", "sysctr-boot-tests", "--"])
        .args(["--test-threads", "1"])
        .args(args)
        .env("SYSCTR_KERNEL", &img.kernel)
        .env("SYSCTR_DISK", &img.disk)
        .env("SYSCTR_ROOTFS", &img.root_squashfs)
        .env("SYSCTR_DEV_KERNEL", &dev.kernel)
        .env("SYSCTR_DEV_DISK", &dev.disk)
        .env("SYSCTR_APPLIANCE_KERNEL", &appliance.kernel)
        .env("SYSCTR_APPLIANCE_DISK", &appliance.disk)
        .env("SYSCTR_OVMF_CODE", OVMF_CODE)
        .env("SYSCTR_OVMF_VARS", OVMF_VARS))
}

/// A fresh minisign key pair no image trusts (the secret key at `path`, unencrypted): the
/// boot tests' bundle with a valid signature by the wrong key.
fn write_untrusted_key(path: &Path) -> Result<()> {
    let kp = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| anyhow::anyhow!("generate a minisign key pair: {e}"))?;
    let text = kp
        .sk
        .to_box(Some("sysctr boot tests: an untrusted key"))
        .map_err(|e| anyhow::anyhow!("encode the secret key: {e}"))?
        .to_string();
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

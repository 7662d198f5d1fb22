//! Building the OS image from an appliance file (`examples/default.appliance.json` unless
//! `--appliance FILE`): the OS root is assembled by the image builder's library
//! (`rootfs::assemble`: init, sysctr, the manifest, every container root from its recipe or
//! OCI image), packed read-only as squashfs with its dm-verity tree, and put on a GPT disk
//! with the ESP and the state partition (`rootfs::disk`). `rootfs/README.md` explains the
//! layout and the choice of squashfs, `docs/appliance.md` the appliance file.
//!
//! Same inputs give a byte-identical disk: every timestamp is SOURCE_DATE_EPOCH, ownership
//! is root, xattrs are dropped, and the filesystem and partition UUIDs are fixed.

mod host;
mod release;

use crate::build;
use crate::kernel;
use crate::util::{ensure_debian_packages, run, workspace_root};
use anyhow::{Context, Result};
use host::BuildHost;
use release::{install_update_keys, write_release};
use rootfs::appliance;
use rootfs::assemble::{copy_file, make_writable};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Host tools the image build runs, and the packages files are taken from.
pub const IMAGE_PACKAGES: &[&str] = &[
    "busybox-static",
    "squashfs-tools",
    "e2fsprogs",
    // /sbin/e2fsck in the OS root: PID 1 checks the state partition before mounting it.
    "e2fsck-static",
    "gdisk",
    "dropbear-bin",
    "cryptsetup-bin",
];

/// The static e2fsck of Debian's e2fsck-static, installed as /sbin/e2fsck.
const E2FSCK_STATIC: &str = "/sbin/e2fsck.static";

/// The appliance file `cargo xtask image` builds without `--appliance`.
pub fn default_appliance() -> PathBuf {
    workspace_root().join("examples/default.appliance.json")
}

/// The default image's system containers, in manifest order (the onboot task first).
pub fn default_containers() -> Result<Vec<String>> {
    Ok(appliance::load(&default_appliance())?.system_containers)
}

/// Fixed timestamp for every file when SOURCE_DATE_EPOCH is not set (2024-01-01).
const DEFAULT_EPOCH: u64 = 1_704_067_200;

/// The disk layout (ESP, root slots A and B, state) lives in the image builder's library.
pub use rootfs::disk::{write_bytes_at, Slot, ROOT_SIZE};

#[derive(Debug, Default, Clone)]
pub struct Options {
    /// The appliance file (default: [`default_appliance`]).
    pub appliance: Option<PathBuf>,
    /// Development image: auto-login root shell on the console (console/service.dev.json).
    pub dev: bool,
    /// Use this manifest instead of the one assembled from `system-containers/`.
    pub manifest: Option<PathBuf>,
    /// Append these services (a manifest file) to the assembled one: test layers.
    pub extra_services: Vec<PathBuf>,
    /// More container directories, laid out like `system-containers/<name>/` (service.json
    /// and rootfs.json): the benchmark layer.
    pub extra_containers: Vec<PathBuf>,
    /// Alternative manifests for `sysctr.manifest=`: `(name, services file)` writes
    /// `/etc/sysctr/manifest-<name>.json`, the assembled manifest plus those services.
    pub alt_manifests: Vec<(String, PathBuf)>,
    /// Output directory (default `build/image` or `build/image-dev`).
    pub out: Option<PathBuf>,
    /// Also write `disk.img.xz` (the download artefact; `cargo xtask image` does).
    pub compress: bool,
    /// Extra kernel command line built into the UKI (after the slot's own).
    pub cmdline_extra: String,
    /// The image's version instead of the appliance's (`--version`): an update to build.
    pub version: Option<String>,
    /// Public keys the image trusts for update bundles (`--update-key FILE`); default the
    /// repository's test-only key, with a warning.
    pub update_keys: Vec<PathBuf>,
    /// A fault for the boot tests, written into `release.json` (`test_hook`, docs/update.md):
    /// set only by `cargo xtask boot-test`, never by a command-line option.
    pub test_hook: Option<String>,
}

pub struct Image {
    /// The kernel (bzImage with its EFI stub), for `--direct-kernel` boots.
    pub kernel: PathBuf,
    /// The initramfs beside it (`initrd.img`: PID 1 as `/init`), also inside the UKIs.
    pub initrd: PathBuf,
    /// The whole disk: ESP + root A + root B (empty) + state.
    pub disk: PathBuf,
    /// The root squashfs alone (padded to whole verity blocks).
    pub root_squashfs: PathBuf,
    /// Slot A's contents as written to its partition: squashfs + dm-verity tree.
    pub root_slot: PathBuf,
    /// Slot A's Unified Kernel Image (also on the ESP, boot-counted).
    pub uki: PathBuf,
    /// Slot A's dm-verity root hash and where its tree starts.
    pub verity: rootfs::disk::VerityRoot,
}

pub fn epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_EPOCH)
}

/// `cargo xtask image`'s options.
#[derive(clap::Args, Debug, Default)]
pub struct ImageArgs {
    /// Development image: auto-login root shell on the console.
    #[arg(long)]
    dev: bool,
    /// The image's version instead of the appliance's (an update to build).
    #[arg(long, value_name = "V", value_parser = parse_version)]
    version: Option<String>,
    /// A public key the image trusts for update bundles (repeatable; default the
    /// repository's test-only key, with a warning).
    #[arg(long = "update-key", value_name = "FILE")]
    update_keys: Vec<PathBuf>,
    /// Build the image from this appliance file (docs/appliance.md; default
    /// examples/default.appliance.json).
    #[arg(long, value_name = "FILE")]
    appliance: Option<PathBuf>,
    /// Use this manifest instead of the one assembled from the appliance.
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// Append the services of this manifest file to the assembled one (repeatable).
    #[arg(long = "extra-services", value_name = "FILE")]
    extra_services: Vec<PathBuf>,
    /// One more container directory, laid out like system-containers/NAME/ (repeatable).
    #[arg(long = "extra-container", value_name = "DIR")]
    extra_containers: Vec<PathBuf>,
    /// Output directory (default build/image or build/image-dev).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

fn parse_version(v: &str) -> Result<String, String> {
    manifest::bundle::check_version(v)
        .map(|()| v.to_string())
        .map_err(|e| e.to_string())
}

/// An input path as given on the command line, made absolute (it must exist).
fn input(flag: &str, path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).with_context(|| format!("{flag} {}", path.display()))
}

impl ImageArgs {
    /// The build options these arguments ask for (input paths checked and made absolute).
    pub fn options(&self) -> Result<Options> {
        let all = |flag: &str, paths: &[PathBuf]| -> Result<Vec<PathBuf>> {
            paths.iter().map(|p| input(flag, p)).collect()
        };
        Ok(Options {
            dev: self.dev,
            version: self.version.clone(),
            update_keys: all("--update-key", &self.update_keys)?,
            appliance: self
                .appliance
                .as_deref()
                .map(|p| input("--appliance", p))
                .transpose()?,
            manifest: self
                .manifest
                .as_deref()
                .map(|p| input("--manifest", p))
                .transpose()?,
            extra_services: all("--extra-services", &self.extra_services)?,
            extra_containers: all("--extra-container", &self.extra_containers)?,
            out: match &self.out {
                Some(o) => Some(std::env::current_dir()?.join(o)),
                None => None,
            },
            ..Default::default()
        })
    }
}

/// `cargo xtask image`: builds everything and prints the size table and the paths.
pub fn command(args: &ImageArgs) -> Result<()> {
    let mut opts = args.options()?;
    opts.compress = true;
    let image = build(&opts)?;
    println!("kernel: {}", image.kernel.display());
    println!("uki:    {}", image.uki.display());
    println!("disk:   {}", image.disk.display());
    // kernel + PID 1's initramfs + one root slot (squashfs + verity tree), the size budget
    let total = fs::metadata(&image.kernel)?.len()
        + fs::metadata(&image.initrd)?.len()
        + fs::metadata(&image.root_slot)?.len();
    println!("kernel + one slot: {total} bytes");
    Ok(())
}

pub fn build(opts: &Options) -> Result<Image> {
    ensure_debian_packages(IMAGE_PACKAGES)?;
    ensure_debian_packages(rootfs::disk::DISK_PACKAGES)?;
    let root_dir = workspace_root();
    let appliance_file = opts.appliance.clone().unwrap_or_else(default_appliance);
    let mut appliance = appliance::load(&appliance_file)?;
    if let Some(v) = &opts.version {
        appliance.version = v.clone();
    }
    let out = match (&opts.out, &opts.appliance) {
        (Some(out), _) => out.clone(),
        // The default image keeps the paths the boot tests and benchmarks read.
        (None, None) => root_dir
            .join("build")
            .join(if opts.dev { "image-dev" } else { "image" }),
        (None, Some(_)) => {
            let dir = appliance.output_dir();
            if opts.dev {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                dir.with_file_name(format!("{name}-dev"))
            } else {
                dir
            }
        }
    };
    fs::create_dir_all(&out)?;
    let kernel_src = kernel::build_with(&appliance.kernel_fragments())?;
    let bins = build::static_binaries()?;
    eprintln!(
        "xtask: image: assembling the root filesystem of {} in {}",
        appliance_file.display(),
        out.display()
    );

    let stage = out.join("root");
    if stage.exists() {
        make_writable(&stage)?;
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    fs::create_dir_all(&stage)?;
    let mut sizes: Vec<(String, u64)> = Vec::new();
    sizes.push(("kernel".into(), fs::metadata(&kernel_src)?.len()));
    sizes.push(("init".into(), fs::metadata(&bins.init)?.len()));
    sizes.push(("sysctr".into(), fs::metadata(&bins.sysctr)?.len()));
    let assembled = rootfs::assemble::assemble(
        &appliance,
        &rootfs::assemble::Options {
            dev: opts.dev,
            manifest: opts.manifest.clone(),
            extra_services: opts.extra_services.clone(),
            extra_containers: opts.extra_containers.clone(),
            alt_manifests: opts.alt_manifests.clone(),
        },
        &bins.sysctr,
        &BuildHost { bins: &bins },
        &stage,
    )?;
    sizes.extend(assembled.sizes);
    eprintln!(
        "xtask: image: {} files identical across container roots hard-linked ({} bytes)",
        assembled.dedup.files_linked, assembled.dedup.bytes_saved
    );

    // What the image is (checked against update bundles) and whom it trusts to sign them.
    write_release(
        &stage,
        &appliance.name,
        &appliance.version,
        &appliance.compatible,
        opts.test_hook.as_deref(),
    )?;
    install_update_keys(&stage, &opts.update_keys)?;
    // PID 1's `e2fsck -p` of the state partition before it mounts /var. Debian's static
    // build: the OS root has no shared libraries, and the dynamic e2fsck would bring libc
    // and four e2fsprogs libraries (about 3 MB against 1.9 MB, 0.7 MB compressed).
    copy_file(
        Path::new(E2FSCK_STATIC),
        &stage.join("sbin/e2fsck"),
        Some(0o755),
    )
    .with_context(|| format!("{E2FSCK_STATIC} (Debian package e2fsck-static)"))?;
    sizes.push(("e2fsck".into(), fs::metadata(E2FSCK_STATIC)?.len()));
    sizes.push((
        "seccomp programs".into(),
        precompile_seccomp(&bins.init, &stage)?,
    ));

    // Read-only root.
    let squash = out.join("root.squashfs");
    let _ = fs::remove_file(&squash);
    let epoch = epoch().to_string();
    eprintln!("xtask: image: mksquashfs (xz)");
    run(Command::new("mksquashfs")
        .arg(&stage)
        .arg(&squash)
        .args([
            "-comp",
            "xz",
            "-Xbcj",
            "x86",
            // 256 KiB blocks: a page fault in a binary, or the read of a small file (packed
            // into a fragment block of this size), decompresses one block. Chosen when PID 1
            // itself paged in from this root (kernel runs init → main(): ~435 → ~330 ms
            // under TCG, 6 boots each) for 3.5% more image (6.24 → 6.46 MB) than 1 MiB;
            // PID 1 is in the initramfs now, the services' binaries and files still are
            // here (rootfs/README.md).
            "-b",
            "256K",
            "-noappend",
            "-no-progress",
        ])
        .args([
            "-all-root",
            "-no-xattrs",
            "-all-time",
            &epoch,
            "-mkfs-time",
            &epoch,
        ])
        .stdout(std::process::Stdio::null()))?;
    let squash_len = fs::metadata(&squash)?.len();

    // Slot A: the squashfs and its dm-verity tree, as written to the partition.
    let slot = Slot::A;
    let root_slot = out.join("root-a.img");
    fs::copy(&squash, &root_slot)?;
    let verity = rootfs::disk::append_verity(&root_slot)?;
    let slot_len = fs::metadata(&root_slot)?.len();
    // The bench and the boot tests read the two halves separately.
    let slot_bytes = fs::read(&root_slot)?;
    fs::write(&squash, &slot_bytes[..verity.data_bytes as usize])?;
    fs::write(
        out.join("root.verity"),
        &slot_bytes[verity.data_bytes as usize..],
    )?;
    let tree_len = slot_len - verity.data_bytes;
    // The appliance's extra command line, then the caller's (`cargo xtask run --append`).
    let extra: Vec<&str> = [
        appliance.kernel.cmdline.as_str(),
        opts.cmdline_extra.as_str(),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect();
    let cmdline = verity.cmdline(slot, &extra.join(" "));

    // The UKI: kernel + PID 1's initramfs + slot A's command line (with its root hash) +
    // os-release.
    let kernel = out.join("bzImage");
    copy_file(&kernel_src, &kernel, Some(0o644))?;
    fs::write(out.join("cmdline"), format!("{cmdline}\n"))?;
    let initrd = out.join(harness::qemu::INITRD_FILE);
    let initrd_len = rootfs::initramfs::make(&bins.init, &out, self::epoch(), &initrd)?;
    sizes.push(("initramfs (init, xz)".into(), initrd_len));
    let uki = out.join("uki-a.efi");
    rootfs::disk::make_uki(
        &kernel,
        Some(&initrd),
        &cmdline,
        &rootfs::disk::os_release(&appliance.name, &appliance.version, slot),
        &uki,
    )?;
    // The same root in slot B boots from slot B's UKI: an update bundle carries both, and
    // the installer writes the one for the slot it fills.
    rootfs::disk::make_uki(
        &kernel,
        Some(&initrd),
        &verity.cmdline(Slot::B, &extra.join(" ")),
        &rootfs::disk::os_release(&appliance.name, &appliance.version, Slot::B),
        &out.join("uki-b.efi"),
    )?;

    // The ESP: systemd-boot as the removable-media loader, its config, slot A's UKI with
    // BOOT_TRIES tries, and the boot config a person may edit.
    let loader_conf = out.join("loader.conf");
    fs::write(&loader_conf, rootfs::disk::LOADER_CONF)?;
    let esp_readme = out.join("esp-readme.txt");
    fs::write(&esp_readme, ESP_README)?;
    let mut esp_files = vec![
        rootfs::disk::EspFile {
            dest: "/EFI/BOOT/BOOTX64.EFI".into(),
            src: rootfs::disk::SYSTEMD_BOOT.into(),
        },
        rootfs::disk::EspFile {
            dest: "/loader/loader.conf".into(),
            src: loader_conf.clone(),
        },
        rootfs::disk::EspFile {
            dest: format!(
                "/EFI/Linux/{}",
                slot.uki_name(
                    rootfs::disk::FIRST_GENERATION,
                    Some(rootfs::disk::BOOT_TRIES)
                )
            ),
            src: uki.clone(),
        },
        rootfs::disk::EspFile {
            dest: "/sysctr/README.txt".into(),
            src: esp_readme.clone(),
        },
    ];
    // The appliance's default boot config, where a person would put their own.
    let esp_config = out.join("esp-config.json");
    let _ = fs::remove_file(&esp_config);
    if let Some(cfg) = &appliance.boot_config {
        fs::write(&esp_config, serde_json::to_string_pretty(cfg)? + "\n")?;
        esp_files.push(rootfs::disk::EspFile {
            dest: "/sysctr/config.json".into(),
            src: esp_config.clone(),
        });
    }
    let esp = out.join("esp.fat");
    rootfs::disk::make_esp(&esp, rootfs::disk::ESP_SIZE, &esp_files, self::epoch())?;

    let state = out.join("state.ext4");
    rootfs::disk::make_state_fs(&state, self::epoch())?;
    let disk = out.join("disk.img");
    rootfs::disk::make_disk(&disk, &esp, &root_slot, &state)?;
    for f in [&state, &esp, &loader_conf, &esp_readme, &esp_config] {
        let _ = fs::remove_file(f);
    }
    let compressed = if opts.compress {
        eprintln!("xtask: image: xz disk.img");
        Some(rootfs::disk::compress(&disk)?)
    } else {
        None
    };

    let uki_len = fs::metadata(&uki)?.len();
    println!("{:<22} {:>12}", "component", "bytes");
    for (name, size) in &sizes {
        println!("{name:<22} {size:>12}");
    }
    println!(
        "{:<22} {:>12}   (all of the above but the kernel, squashfs xz, deduplicated)",
        "root.squashfs", squash_len
    );
    println!("{:<22} {:>12}", "root.verity", tree_len);
    println!(
        "{:<22} {:>12}   (kernel + initramfs + command line + os-release)",
        "uki-a.efi", uki_len
    );
    println!(
        "{:<22} {:>12}   (UKI + squashfs + verity tree: what an update writes)",
        "slot A",
        uki_len + slot_len
    );
    if let Some(xz) = &compressed {
        println!(
            "{:<22} {:>12}   (whole disk, {} bytes raw)",
            "disk.img.xz",
            fs::metadata(xz)?.len(),
            rootfs::disk::DISK_SIZE
        );
    }
    eprintln!("xtask: image: kernel command line: {cmdline}");
    Ok(Image {
        kernel,
        initrd,
        disk,
        root_squashfs: squash,
        root_slot,
        uki,
        verity,
    })
}

/// `/sysctr/README.txt` on the ESP: what a person writing the image to a stick may edit.
const ESP_README: &str = "\
sysctr boot configuration
=========================

Put a file named config.json in this folder to configure the machine at boot. Every field
is optional; the full format is in rootfs/README.md of the sysctr sources. Example:

{ \"hostname\": \"edge1\",
  \"authorized_keys\": [\"ssh-ed25519 AAAA... you@host\"],
  \"network\": { \"mode\": \"dhcp\" } }

A malformed file is reported on the console at boot, naming the field, and the machine
boots with the other sources (QEMU fw_cfg, kernel command line) and defaults.
";

/// The seccomp programs of the services of every manifest in the stage, compiled by the
/// init binary being installed (`init --seccomp-precompile`, init/src/seccomp/precompiled.rs)
/// into etc/sysctr/seccomp/: PID 1 loads them instead of compiling each distinct profile at
/// its first start during boot. Returns their total size.
fn precompile_seccomp(init: &Path, stage: &Path) -> Result<u64> {
    let etc = stage.join("etc/sysctr");
    let mut manifests: Vec<PathBuf> = fs::read_dir(&etc)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("manifest") && name.ends_with(".json")
        })
        .collect();
    manifests.sort();
    run(Command::new(init)
        .arg("--seccomp-precompile")
        .args(&manifests))?;
    let dir = etc.join("seccomp");
    if !dir.exists() {
        return Ok(0); // every service privileged: no profile
    }
    rootfs::assemble::tree_size(&dir)
}

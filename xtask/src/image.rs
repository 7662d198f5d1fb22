//! Building the OS image: the root filesystem (init, sysctr, the manifest and every system
//! container's root filesystem from its recipe in `system-containers/<name>/rootfs.json`),
//! packed read-only as squashfs, and a GPT disk image holding it next to an empty ext4
//! state partition. `rootfs/README.md` explains the layout and the choice of squashfs.
//!
//! Same inputs give a byte-identical disk: every timestamp is SOURCE_DATE_EPOCH, ownership
//! is root, xattrs are dropped, and the filesystem and partition UUIDs are fixed.

use crate::build::{self, Binaries};
use crate::kernel;
use crate::util::{ensure_debian_packages, run, workspace_root};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// Host tools the image build runs, and the packages files are taken from.
pub const IMAGE_PACKAGES: &[&str] = &[
    "busybox-static",
    "squashfs-tools",
    "e2fsprogs",
    "gdisk",
    "dropbear-bin",
    "cryptsetup-bin",
];

/// The system containers, in manifest order (the onboot task first).
pub const CONTAINERS: &[&str] = &["prepare", "logging", "network", "ssh", "time", "console"];

/// Fixed timestamp for every file when SOURCE_DATE_EPOCH is not set (2024-01-01).
const DEFAULT_EPOCH: u64 = 1_704_067_200;

/// The disk layout (ESP, root slots A and B, state) lives in the image builder's library.
pub use rootfs::disk::{write_bytes_at, Slot, ROOT_SIZE};

#[derive(Debug, Default, Clone)]
pub struct Options {
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
}

pub struct Image {
    /// The kernel (bzImage with its EFI stub), for `--direct-kernel` boots.
    pub kernel: PathBuf,
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

/// A container's root filesystem recipe (`rootfs.json`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Recipe {
    /// busybox applets, each a symlink /bin/<applet> → /bin/busybox (from busybox-static).
    #[serde(default)]
    busybox: Vec<String>,
    #[serde(default)]
    files: Vec<FileEntry>,
    /// Directories to create (mount points for the service's mounts are added automatically).
    #[serde(default)]
    dirs: Vec<String>,
    /// path → target.
    #[serde(default)]
    symlinks: BTreeMap<String, String>,
    /// path → contents; overrides the defaults (/etc/passwd, /etc/group, …).
    #[serde(default)]
    text: BTreeMap<String, String>,
    /// Debian packages that must be installed on the build host (files are copied from it).
    #[serde(default)]
    host_packages: Vec<String>,
    /// Debian packages fetched with `apt-get download` and unpacked in a cache, not installed.
    #[serde(default)]
    download_packages: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    /// Where it goes inside the container.
    dest: String,
    /// A file on the build host.
    #[serde(default)]
    host: Option<String>,
    /// With `src`: a file inside a downloaded package.
    #[serde(default)]
    package: Option<String>,
    #[serde(default)]
    src: Option<String>,
    /// A file next to the recipe.
    #[serde(default)]
    local: Option<String>,
    /// A static binary built from this workspace: `sysctr` (the CLI) or `bench-guest`.
    #[serde(default)]
    built: Option<String>,
    /// Also copy the shared libraries it needs (from `ldd`) and the dynamic loader.
    #[serde(default)]
    libs: bool,
    /// Octal mode; default: the source's mode.
    #[serde(default)]
    mode: Option<String>,
}

/// Files every container root gets unless its recipe's `text` overrides them.
const DEFAULT_TEXT: &[(&str, &str)] = &[
    ("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
    ("/etc/group", "root:x:0:\n"),
    ("/etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
    ("/etc/shells", "/bin/sh\n/bin/ash\n"),
];

/// Mount points and standard directories every container root has: the rootfs is read-only
/// squashfs, so the runtime cannot create them at start.
const DEFAULT_DIRS: &[&str] = &[
    "/bin",
    "/dev",
    "/etc",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",
    "/usr/bin",
    "/usr/sbin",
    "/var",
];

pub fn epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_EPOCH)
}

pub fn parse_options(args: &[String]) -> Result<Options> {
    let mut opts = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dev" => opts.dev = true,
            "--manifest" => opts.manifest = Some(next_path(&mut it, a)?),
            "--extra-services" => opts.extra_services.push(next_path(&mut it, a)?),
            "--extra-container" => opts.extra_containers.push(next_path(&mut it, a)?),
            "--out" => {
                let v = it.next().context("--out needs a value")?;
                opts.out = Some(std::env::current_dir()?.join(v));
            }
            "-h" | "--help" => {
                println!("usage: cargo xtask image [--dev] [--manifest FILE] [--extra-services FILE]... [--extra-container DIR]... [--out DIR]");
                std::process::exit(0);
            }
            other => bail!("image: unknown option {other:?} (--dev, --manifest FILE, --extra-services FILE, --extra-container DIR, --out DIR)"),
        }
    }
    Ok(opts)
}

fn next_path<'a>(it: &mut impl Iterator<Item = &'a String>, flag: &str) -> Result<PathBuf> {
    let v = it.next().with_context(|| format!("{flag} needs a value"))?;
    fs::canonicalize(v).with_context(|| format!("{flag} {v}"))
}

/// `cargo xtask image`: builds everything and prints the size table and the paths.
pub fn command(args: &[String]) -> Result<()> {
    let mut opts = parse_options(args)?;
    opts.compress = true;
    let image = build(&opts)?;
    println!("kernel: {}", image.kernel.display());
    println!("uki:    {}", image.uki.display());
    println!("disk:   {}", image.disk.display());
    // kernel + one root slot (squashfs + verity tree), the size budget of the issue
    let total = fs::metadata(&image.kernel)?.len() + fs::metadata(&image.root_slot)?.len();
    println!("kernel + one slot: {total} bytes");
    Ok(())
}

pub fn build(opts: &Options) -> Result<Image> {
    ensure_debian_packages(IMAGE_PACKAGES)?;
    ensure_debian_packages(rootfs::disk::DISK_PACKAGES)?;
    let root_dir = workspace_root();
    let out = opts.out.clone().unwrap_or_else(|| {
        root_dir
            .join("build")
            .join(if opts.dev { "image-dev" } else { "image" })
    });
    fs::create_dir_all(&out)?;
    let kernel_src = kernel::build()?;
    let bins = build::static_binaries()?;
    eprintln!(
        "xtask: image: assembling the root filesystem in {}",
        out.display()
    );

    let stage = out.join("root");
    if stage.exists() {
        make_writable(&stage)?;
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    fs::create_dir_all(&stage)?;
    let mut sizes: Vec<(String, u64)> = Vec::new();

    // The OS root.
    for d in [
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "var",
        "etc/sysctr",
        "root",
        "containers",
        "sbin",
        "usr/bin",
        "bin",
    ] {
        mkdir(&stage.join(d))?;
    }
    copy_file(&bins.init, &stage.join("sbin/init"), Some(0o755))?;
    copy_file(&bins.sysctr, &stage.join("usr/bin/sysctr"), Some(0o755))?;
    write_text(&stage.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    write_text(&stage.join("etc/group"), "root:x:0:\n")?;
    write_text(&stage.join("etc/hosts"), "127.0.0.1\tlocalhost\n")?;
    write_text(&stage.join("etc/hostname"), "sysctr\n")?;
    symlink("/run/sysctr/net/resolv.conf", stage.join("etc/resolv.conf"))?;
    sizes.push(("kernel".into(), fs::metadata(&kernel_src)?.len()));
    sizes.push(("init".into(), fs::metadata(&bins.init)?.len()));
    sizes.push(("sysctr".into(), fs::metadata(&bins.sysctr)?.len()));

    // The containers and their manifest entries.
    let mut services: Vec<Value> = Vec::new();
    let mut dirs: Vec<PathBuf> = CONTAINERS
        .iter()
        .map(|name| root_dir.join("system-containers").join(name))
        .collect();
    dirs.extend(opts.extra_containers.iter().cloned());
    let mut names = Vec::new();
    for dir in &dirs {
        let service_file = if opts.dev && dir.join("service.dev.json").exists() {
            dir.join("service.dev.json")
        } else {
            dir.join("service.json")
        };
        let service: Value = read_json(&service_file)?;
        let name = service["name"]
            .as_str()
            .with_context(|| format!("{}: no name", service_file.display()))?
            .to_string();
        let croot = stage.join("containers").join(&name).join("rootfs");
        assemble_container(dir, &croot, &service, &bins)?;
        sizes.push((format!("container {name}"), tree_size(&croot)?));
        services.push(service);
        names.push(name);
    }
    let (linked, saved) = link_identical_files(&stage.join("containers"))?;
    eprintln!(
        "xtask: image: {linked} files identical across container roots hard-linked ({saved} bytes)"
    );
    let manifest_text = match &opts.manifest {
        Some(path) => fs::read_to_string(path)?,
        None => {
            for extra in &opts.extra_services {
                services.extend(services_in(extra)?);
            }
            let m =
                serde_json::json!({ "version": manifest::MANIFEST_VERSION, "services": services });
            serde_json::to_string_pretty(&m)? + "\n"
        }
    };
    let manifest_path = stage.join("etc/sysctr/manifest.json");
    write_text(&manifest_path, &manifest_text)?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    check_manifest(&manifest_path, &stage, &names)?;
    for (alt, extra) in &opts.alt_manifests {
        let mut m: Value = serde_json::from_str(&manifest_text)?;
        m["services"]
            .as_array_mut()
            .context("manifest without services")?
            .extend(services_in(extra)?);
        let path = stage.join(format!("etc/sysctr/manifest-{alt}.json"));
        write_text(&path, &(serde_json::to_string_pretty(&m)? + "\n"))?;
        check_manifest(&path, &stage, &names)?;
    }

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
            "-b",
            "1M",
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
    let cmdline = verity.cmdline(slot, &opts.cmdline_extra);

    // The UKI: kernel + slot A's command line (with its root hash) + os-release.
    let kernel = out.join("bzImage");
    copy_file(&kernel_src, &kernel, Some(0o644))?;
    fs::write(out.join("cmdline"), format!("{cmdline}\n"))?;
    let uki = out.join("uki-a.efi");
    let version = env!("CARGO_PKG_VERSION");
    rootfs::disk::make_uki(
        &kernel,
        &cmdline,
        &rootfs::disk::os_release("sysctr", version, slot),
        &uki,
    )?;

    // The ESP: systemd-boot as the removable-media loader, its config, slot A's UKI with
    // BOOT_TRIES tries, and the boot config a person may edit.
    let loader_conf = out.join("loader.conf");
    fs::write(&loader_conf, rootfs::disk::LOADER_CONF)?;
    let esp_readme = out.join("esp-readme.txt");
    fs::write(&esp_readme, ESP_README)?;
    let esp_files = vec![
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
    let esp = out.join("esp.fat");
    rootfs::disk::make_esp(&esp, rootfs::disk::ESP_SIZE, &esp_files, self::epoch())?;

    let state = out.join("state.ext4");
    rootfs::disk::make_state_fs(&state, self::epoch())?;
    let disk = out.join("disk.img");
    rootfs::disk::make_disk(&disk, &esp, &root_slot, &state)?;
    for f in [&state, &esp, &loader_conf, &esp_readme] {
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
        "{:<22} {:>12}   (kernel + command line + os-release)",
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

fn check_manifest(path: &Path, stage: &Path, check: &[&str]) -> Result<()> {
    let loaded = manifest::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !loaded.rejected.is_empty() {
        let lines: Vec<String> = loaded
            .rejected
            .iter()
            .map(|r| format!("{}: {}", r.name, r.describe("manifest.json")))
            .collect();
        bail!("manifest has invalid services:\n  {}", lines.join("\n  "));
    }
    let mut problems = Vec::new();
    for svc in &loaded.manifest.services {
        if !check.contains(&svc.name.as_str()) {
            continue;
        }
        let root = stage.join(svc.root.trim_start_matches('/'));
        if !root.is_dir() {
            problems.push(format!(
                "{}: root {} is not in the image",
                svc.name, svc.root
            ));
            continue;
        }
        if let Some(prog) = svc.args.first() {
            if resolve_in(&root, prog).is_none() {
                problems.push(format!(
                    "{}: program {prog} is not in {}",
                    svc.name, svc.root
                ));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "manifest does not match the image:\n  {}",
            problems.join("\n  ")
        );
    }
    eprintln!(
        "xtask: image: manifest valid ({} services)",
        loaded.manifest.services.len()
    );
    Ok(())
}

/// Follows `path` inside `root` as the container would see it (absolute symlinks stay inside).
fn resolve_in(root: &Path, path: &str) -> Option<PathBuf> {
    let mut cur = PathBuf::from("/");
    let mut pending: Vec<String> = path.split('/').rev().map(String::from).collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => continue,
            ".." => {
                cur.pop();
                continue;
            }
            _ => {}
        }
        let next = cur.join(&part);
        let host = root.join(next.strip_prefix("/").ok()?);
        let meta = fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = fs::read_link(&host).ok()?;
            let t = target.to_string_lossy().into_owned();
            if t.starts_with('/') {
                cur = PathBuf::from("/");
            }
            pending.extend(t.split('/').rev().map(String::from));
        } else {
            cur = next;
        }
    }
    Some(root.join(cur.strip_prefix("/").ok()?))
}

fn assemble_container(dir: &Path, croot: &Path, service: &Value, bins: &Binaries) -> Result<()> {
    let recipe_path = dir.join("rootfs.json");
    let text = fs::read_to_string(&recipe_path)
        .with_context(|| format!("cannot read {}", recipe_path.display()))?;
    let recipe: Recipe = serde_json::from_str(&text)
        .with_context(|| format!("{}: bad recipe", recipe_path.display()))?;
    let hp: Vec<&str> = recipe.host_packages.iter().map(String::as_str).collect();
    ensure_debian_packages(&hp)?;

    for d in DEFAULT_DIRS
        .iter()
        .copied()
        .chain(recipe.dirs.iter().map(String::as_str))
    {
        mkdir(&inside(croot, d)?)?;
    }
    // Mount points of the service's own mounts.
    for m in service["mounts"].as_array().into_iter().flatten() {
        if let Some(dest) = m["destination"].as_str() {
            mkdir(&inside(croot, dest)?)?;
        }
    }
    let mut texts: BTreeMap<String, String> = DEFAULT_TEXT
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    texts.extend(recipe.text.clone());
    for (path, body) in &texts {
        write_text(&inside(croot, path)?, body)?;
    }
    if !recipe.busybox.is_empty() {
        copy_file(
            Path::new("/bin/busybox"),
            &croot.join("bin/busybox"),
            Some(0o755),
        )?;
        for applet in &recipe.busybox {
            let link = croot.join("bin").join(applet);
            if !link.exists() {
                symlink("busybox", &link)?;
            }
        }
    }
    let mut debs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for p in &recipe.download_packages {
        debs.insert(p.clone(), downloaded_package(p)?);
    }
    for f in &recipe.files {
        let src: PathBuf = if let Some(name) = &f.built {
            bins.built(name)
                .with_context(|| format!("{}: no built binary {name}", recipe_path.display()))?
                .to_path_buf()
        } else if let Some(h) = &f.host {
            PathBuf::from(h)
        } else if let (Some(p), Some(s)) = (&f.package, &f.src) {
            debs.get(p)
                .with_context(|| {
                    format!(
                        "{}: package {p} not in download_packages",
                        recipe_path.display()
                    )
                })?
                .join(s.trim_start_matches('/'))
        } else if let Some(l) = &f.local {
            dir.join(l)
        } else {
            bail!("{}: file {} has no source", recipe_path.display(), f.dest);
        };
        let mode = match &f.mode {
            Some(m) => Some(u32::from_str_radix(m, 8).with_context(|| format!("bad mode {m}"))?),
            None => None,
        };
        copy_file(&src, &inside(croot, &f.dest)?, mode)?;
        if f.libs {
            for lib in shared_libraries(&src)? {
                let dest = inside(croot, &lib.to_string_lossy())?;
                if !dest.exists() {
                    copy_file(&lib, &dest, Some(0o755))?;
                }
            }
        }
    }
    for (path, target) in &recipe.symlinks {
        let link = inside(croot, path)?;
        if let Some(parent) = link.parent() {
            mkdir(parent)?;
        }
        symlink(target, &link)?;
    }
    Ok(())
}

/// The shared libraries and loader of a dynamic ELF, as absolute host paths (from `ldd`).
fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next().unwrap_or(""),
            None => line.split_whitespace().next().unwrap_or(""),
        };
        if line.contains("not found") {
            bail!(
                "{}: library missing on the build host: {line}",
                bin.display()
            );
        }
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// `apt-get download` a package into the cache and unpack it (not installed on the host).
fn downloaded_package(name: &str) -> Result<PathBuf> {
    let cache = kernel::cache_dir()
        .parent()
        .expect("cache has a parent")
        .join("debs")
        .join(name);
    let root = cache.join("root");
    if cache.join(".unpacked").exists() {
        return Ok(root);
    }
    eprintln!("xtask: image: fetching Debian package {name}");
    let _ = fs::remove_dir_all(&cache);
    fs::create_dir_all(&cache)?;
    if Command::new("apt-get")
        .arg("download")
        .arg(name)
        .current_dir(&cache)
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        run(Command::new("apt-get")
            .arg("download")
            .arg(name)
            .current_dir(&cache))?;
    }
    let deb = fs::read_dir(&cache)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .with_context(|| format!("apt-get download {name} left no .deb"))?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root))?;
    fs::write(cache.join(".unpacked"), "")?;
    Ok(root)
}

/// `path` (absolute, as seen in the container) under `root`, refusing `..`.
fn inside(root: &Path, path: &str) -> Result<PathBuf> {
    let rel = Path::new(path);
    if !rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("path {path:?} must be absolute without ..");
    }
    Ok(root.join(rel.strip_prefix("/")?))
}

fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    let _ = fs::remove_file(path);
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

fn copy_file(src: &Path, dest: &Path, mode: Option<u32>) -> Result<()> {
    if let Some(parent) = dest.parent() {
        mkdir(parent)?;
    }
    let _ = fs::remove_file(dest);
    fs::copy(src, dest)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    let mode = match mode {
        Some(m) => m,
        None => {
            let m = fs::metadata(src)?.permissions().mode();
            if m & 0o111 != 0 {
                0o755
            } else {
                0o644
            }
        }
    };
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn make_writable(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755))?;
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// Apparent size of the regular files in a tree (symlinks and directories not counted).
/// The `"services"` list of a file of extra services (a manifest fragment).
fn services_in(file: &Path) -> Result<Vec<Value>> {
    let mut v: Value = read_json(file)?;
    match v.get_mut("services").map(Value::take) {
        Some(Value::Array(list)) => Ok(list),
        _ => bail!("{}: no \"services\" list", file.display()),
    }
}

/// Hard-links regular files with the same content and mode across the container roots (each
/// root has its own busybox, libc, …). mksquashfs already stores their data once; as one
/// inode they also share one page cache in the running system, so the second container to
/// run busybox does not read and decompress it again. Returns (files linked, bytes saved).
fn link_identical_files(dir: &Path) -> Result<(usize, u64)> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let ft = e.file_type()?;
            if ft.is_dir() {
                walk(&e.path(), out)?;
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let mut seen: BTreeMap<(u32, Vec<u8>), PathBuf> = BTreeMap::new();
    let (mut linked, mut saved) = (0, 0);
    for path in files {
        let mode = fs::metadata(&path)?.permissions().mode();
        let content = fs::read(&path)?;
        let len = content.len() as u64;
        match seen.entry((mode, content)) {
            std::collections::btree_map::Entry::Occupied(first) => {
                let first = first.get();
                fs::remove_file(&path)?;
                fs::hard_link(first, &path).with_context(|| {
                    format!("hard-link {} to {}", path.display(), first.display())
                })?;
                linked += 1;
                saved += len;
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert(path);
            }
        }
    }
    Ok((linked, saved))
}

fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            total += tree_size(&entry.path())?;
        } else if ft.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

fn read_json(path: &Path) -> Result<Value> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

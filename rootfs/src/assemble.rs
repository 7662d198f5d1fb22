//! Assembling the OS root from an appliance: the root's own files (init, the CLI, /etc),
//! every container root — system containers and recipe services from their `rootfs.json`,
//! image services by OCI import — the manifest, checked with the same code PID 1 uses plus a
//! check that each program is in its root, and the appliance's extra files. Packing the root
//! (squashfs, verity, UKI, disk) is `disk`'s; `cargo xtask image` calls both.
//!
//! A recipe (`rootfs.json`, documented in rootfs/README.md) builds a root from the build
//! host's own files: busybox applets, host files with their shared libraries, files of
//! Debian packages fetched with `apt-get download`, files next to the recipe, and this
//! workspace's static binaries.

mod files;

pub use files::{copy_file, make_writable, mkdir, tree_size, write_text};
use files::{inside, read_json, services_in};

use crate::appliance::{self, Appliance, PlannedContainer, PlannedSource};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What the recipes need from the build host, so the assembly is testable without it.
pub trait Host {
    /// Makes sure these Debian packages are installed (recipes copy host files from them).
    fn ensure_packages(&self, names: &[&str]) -> Result<()>;
    /// The unpacked contents of a Debian package fetched with `apt-get download`.
    fn downloaded_package(&self, name: &str) -> Result<PathBuf>;
    /// A static binary built from this workspace, by the name a recipe gives it
    /// (`"built": "sysctr"`, `"bench-guest"`).
    fn built(&self, name: &str) -> Option<PathBuf>;
}

#[derive(Debug, Default, Clone)]
pub struct Options {
    /// Development image: system containers' `service.dev.json` where they have one.
    pub dev: bool,
    /// Use this manifest instead of the one assembled from the appliance.
    pub manifest: Option<PathBuf>,
    /// Append these services (a manifest file) to the assembled manifest: test layers.
    pub extra_services: Vec<PathBuf>,
    /// More container directories laid out like `system-containers/<name>/`.
    pub extra_containers: Vec<PathBuf>,
    /// `(name, services file)`: writes `/etc/sysctr/manifest-<name>.json`, the assembled
    /// manifest plus those services.
    pub alt_manifests: Vec<(String, PathBuf)>,
}

/// What was assembled.
#[derive(Debug)]
pub struct Assembled {
    /// Apparent size of each container root (`container NAME`).
    pub sizes: Vec<(String, u64)>,
    pub dedup: crate::oci::dedup::Deduplicated,
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

/// Mount points and standard directories every recipe root has: the rootfs is read-only
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

/// The directories of the OS root itself.
const OS_DIRS: &[&str] = &[
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
];

/// Assembles the OS root of `appliance` in `stage` (which must be empty): `sysctr` is the
/// static CLI to install as /usr/bin/sysctr. PID 1 is not in the root: it is the UKI's
/// initramfs ([`crate::initramfs`]).
pub fn assemble(
    appliance: &Appliance,
    opts: &Options,
    sysctr: &Path,
    host: &dyn Host,
    stage: &Path,
) -> Result<Assembled> {
    for d in OS_DIRS {
        mkdir(&stage.join(d))?;
    }
    copy_file(sysctr, &stage.join("usr/bin/sysctr"), Some(0o755))?;
    write_text(&stage.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    write_text(&stage.join("etc/group"), "root:x:0:\n")?;
    write_text(&stage.join("etc/hosts"), "127.0.0.1\tlocalhost\n")?;
    write_text(&stage.join("etc/hostname"), "sysctr\n")?;
    symlink("/run/sysctr/net/resolv.conf", stage.join("etc/resolv.conf"))?;

    // The containers: the appliance's, then the extra ones (test and benchmark layers).
    let mut plan = appliance.plan(opts.dev)?;
    for dir in &opts.extra_containers {
        let file = match dir.join("service.dev.json") {
            f if opts.dev && f.is_file() => f,
            _ => dir.join("service.json"),
        };
        let entry: Map<String, Value> = serde_json::from_value(read_json(&file)?)
            .with_context(|| format!("{}: not an object", file.display()))?;
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .with_context(|| format!("{}: no name", file.display()))?
            .to_string();
        plan.push(PlannedContainer {
            name,
            source: PlannedSource::System(dir.clone()),
            entry,
        });
    }
    let containers = stage.join("containers");
    for c in &plan {
        let dir = match &c.source {
            PlannedSource::System(d) | PlannedSource::Recipe(d) => d,
            PlannedSource::Image(_) => continue,
        };
        let croot = containers.join(&c.name).join("rootfs");
        assemble_container(dir, &croot, &Value::Object(c.entry.clone()), host)?;
    }
    // Image roots are imported, their entries completed from the image configs, and
    // identical files across all container roots hard-linked.
    let done = appliance::import_images(appliance, &plan, &containers)?;
    for (name, imported) in &done.imported {
        for w in &imported.warnings {
            eprintln!("rootfs: service {name}: {w}");
        }
    }
    let mut sizes = Vec::new();
    for c in &plan {
        let croot = containers.join(&c.name).join("rootfs");
        sizes.push((format!("container {}", c.name), tree_size(&croot)?));
    }

    let mut services = done.services;
    let manifest_text = match &opts.manifest {
        Some(path) => {
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?
        }
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
    // Image services' programs were checked with their PATH by the import.
    let names: Vec<&str> = plan
        .iter()
        .filter(|c| !matches!(c.source, PlannedSource::Image(_)))
        .map(|c| c.name.as_str())
        .collect();
    check_manifest(&manifest_path, stage, &names)?;
    for (alt, extra) in &opts.alt_manifests {
        let mut m: Value = serde_json::from_str(&manifest_text)?;
        m["services"]
            .as_array_mut()
            .context("manifest without services")?
            .extend(services_in(extra)?);
        let path = stage.join(format!("etc/sysctr/manifest-{alt}.json"));
        write_text(&path, &(serde_json::to_string_pretty(&m)? + "\n"))?;
        check_manifest(&path, stage, &names)?;
    }

    // The appliance's extra files.
    for f in &appliance.files {
        let dest = inside(stage, &f.dest)?;
        let mode = match &f.mode {
            Some(m) => Some(u32::from_str_radix(m, 8).with_context(|| format!("bad mode {m}"))?),
            None => None,
        };
        match (&f.src, &f.text) {
            (Some(src), _) => copy_file(&appliance.base().join(src), &dest, mode)?,
            (None, Some(text)) => {
                write_text(&dest, text)?;
                if let Some(m) = mode {
                    fs::set_permissions(&dest, fs::Permissions::from_mode(m))?;
                }
            }
            (None, None) => bail!(
                "{}: file {} has no source",
                appliance.path.display(),
                f.dest
            ),
        }
    }
    Ok(Assembled {
        sizes,
        dedup: done.dedup,
    })
}

/// Validates the manifest (the same code PID 1 uses) and checks that each of the `check`ed
/// services' roots and programs exist in the stage. (Services from `--extra-services` are
/// not checked for presence: the bad-input boot test ships broken ones on purpose.)
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
            if crate::oci::config::resolve_in_root(&root, prog).is_none_or(|p| !p.exists()) {
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
        "rootfs: manifest valid ({} services)",
        loaded.manifest.services.len()
    );
    Ok(())
}

fn assemble_container(dir: &Path, croot: &Path, service: &Value, host: &dyn Host) -> Result<()> {
    let recipe_path = dir.join("rootfs.json");
    let text = fs::read_to_string(&recipe_path)
        .with_context(|| format!("cannot read {}", recipe_path.display()))?;
    let recipe: Recipe = serde_json::from_str(&text)
        .with_context(|| format!("{}: bad recipe", recipe_path.display()))?;
    let hp: Vec<&str> = recipe.host_packages.iter().map(String::as_str).collect();
    host.ensure_packages(&hp)?;

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
        debs.insert(p.clone(), host.downloaded_package(p)?);
    }
    for f in &recipe.files {
        let src: PathBuf = if let Some(name) = &f.built {
            host.built(name)
                .with_context(|| format!("{}: no built binary {name}", recipe_path.display()))?
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

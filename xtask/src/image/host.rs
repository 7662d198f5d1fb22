//! The build machine as the image's recipes see it ([`rootfs::assemble::Host`]): Debian
//! packages installed or downloaded and unpacked, and the static binaries just built.

use crate::build::Binaries;
use crate::kernel;
use crate::util::{ensure_debian_packages, run};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The build machine as the recipes see it: Debian packages, downloaded packages, and the
/// static binaries just built.
pub(super) struct BuildHost<'a> {
    pub bins: &'a Binaries,
}

impl rootfs::assemble::Host for BuildHost<'_> {
    fn ensure_packages(&self, names: &[&str]) -> Result<()> {
        ensure_debian_packages(names)
    }

    fn downloaded_package(&self, name: &str) -> Result<PathBuf> {
        downloaded_package(name)
    }

    fn built(&self, name: &str) -> Option<PathBuf> {
        self.bins.built(name).map(Path::to_path_buf)
    }
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

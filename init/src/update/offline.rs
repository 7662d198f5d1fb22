//! Offline updates: a bundle on an attached disk or USB stick, installed at boot.
//!
//! The convention (docs/update.md, "Offline updates"): a FAT or ext4 filesystem, on a whole
//! disk or on a partition of any disk but the boot disk, with a directory `sysctr-update/`
//! at its root holding the bundle as `*.bundle` (when there are several, the last by name).
//! The update helper looks for it in its own mount namespace and mounts it read-only, nosuid,
//! nodev, noexec; the mount goes away with the helper.
//!
//! A bundle is not installed again: one that is not newer than the running system, or whose
//! version is already in the inactive slot (whatever that slot's state, so a bad update left
//! on a stick is not retried after its rollback), is skipped and nothing is recorded.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// The directory on an update disk.
pub const DIR: &str = "sysctr-update";
/// Where the helper mounts a candidate disk, inside its own mount namespace.
pub const MOUNT_POINT: &str = "/run/sysctr/update-offline";
/// Filesystems an update disk may have, tried in this order.
const FILESYSTEMS: &[(&str, &str)] = &[("vfat", "shortname=mixed"), ("ext4", "noload")];

/// Block devices that may hold an update: every disk and partition in `sys_block`
/// (`/sys/class/block`) except the boot disk (the one holding `esp_device`) and its
/// partitions, and except loop, ram, zram, device-mapper and optical devices. Sorted by name.
pub fn candidates(sys_block: &Path, esp_device: &Path) -> Vec<String> {
    let esp_name = esp_device
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let boot_disk = disk_of(sys_block, &esp_name);
    let mut names: Vec<String> = fs::read_dir(sys_block)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| {
        !["loop", "ram", "zram", "dm-", "sr", "md"]
            .iter()
            .any(|p| n.starts_with(p))
            && disk_of(sys_block, n) != boot_disk
    });
    names.sort();
    names
}

/// The disk a block device belongs to: its parent directory in sysfs for a partition, the
/// device itself for a disk.
fn disk_of(sys_block: &Path, name: &str) -> String {
    let entry = sys_block.join(name);
    if entry.join("partition").exists() {
        if let Some(parent) = fs::canonicalize(&entry)
            .ok()
            .and_then(|p| p.parent().and_then(|d| d.file_name()).map(|n| n.to_owned()))
        {
            return parent.to_string_lossy().into_owned();
        }
    }
    name.to_string()
}

/// The bundle in a mounted update disk's [`DIR`]: the last `*.bundle` by name.
pub fn bundle_in(root: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(root.join(DIR))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "bundle") && p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// Mounts each candidate in turn (read-only) on [`MOUNT_POINT`] and returns the first bundle
/// found, open, with a description of where it is. The mount stays (the helper's namespace
/// ends with it). Needs the helper's private mount namespace and its privileges.
pub fn find(esp_device: &Path) -> Result<Option<(String, File)>, String> {
    use nix::mount::{mount, umount, MsFlags};
    fs::create_dir_all(MOUNT_POINT).map_err(|e| format!("create {MOUNT_POINT}: {e}"))?;
    for name in candidates(Path::new("/sys/class/block"), esp_device) {
        let dev = Path::new("/dev").join(&name);
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        let Some(fstype) = FILESYSTEMS.iter().find_map(|(fs, data)| {
            mount(Some(&dev), MOUNT_POINT, Some(*fs), flags, Some(*data))
                .ok()
                .map(|_| *fs)
        }) else {
            continue;
        };
        if let Some(path) = bundle_in(Path::new(MOUNT_POINT)) {
            let file = File::open(&path)
                .map_err(|e| format!("open {} on {}: {e}", path.display(), dev.display()))?;
            let rel = path.strip_prefix(MOUNT_POINT).unwrap_or(&path);
            return Ok(Some((
                format!("{} ({fstype}) /{}", dev.display(), rel.display()),
                file,
            )));
        }
        let _ = umount(MOUNT_POINT);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake /sys/class/block: links into a devices tree, partitions inside their disk.
    fn sysfs(dir: &Path, disks: &[(&str, &[&str])]) -> PathBuf {
        let devices = dir.join("devices");
        let class = dir.join("class");
        fs::create_dir_all(&class).unwrap();
        for (disk, parts) in disks {
            let d = devices.join(disk);
            fs::create_dir_all(&d).unwrap();
            symlink(&d, class.join(disk)).unwrap();
            for p in *parts {
                let pd = d.join(p);
                fs::create_dir_all(&pd).unwrap();
                fs::write(pd.join("partition"), "1").unwrap();
                symlink(&pd, class.join(p)).unwrap();
            }
        }
        class
    }

    #[test]
    fn the_boot_disk_and_virtual_devices_are_never_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let class = sysfs(
            dir.path(),
            &[
                ("vda", &["vda1", "vda2", "vda3", "vda4"]),
                ("vdb", &[]),
                ("sda", &["sda1"]),
                ("loop0", &[]),
                ("dm-0", &[]),
                ("sr0", &[]),
            ],
        );
        assert_eq!(
            candidates(&class, Path::new("/dev/vda1")),
            ["sda", "sda1", "vdb"]
        );
        // Booted from the stick's bus instead: the other disk is the candidate.
        assert_eq!(
            candidates(&class, Path::new("/dev/sda1")),
            ["vda", "vda1", "vda2", "vda3", "vda4", "vdb"]
        );
    }

    #[test]
    fn the_last_bundle_by_name_in_the_directory_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(bundle_in(dir.path()), None, "no sysctr-update/ at all");
        let d = dir.path().join(DIR);
        fs::create_dir(&d).unwrap();
        fs::write(d.join("notes.txt"), "x").unwrap();
        fs::create_dir(d.join("dir.bundle")).unwrap();
        assert_eq!(bundle_in(dir.path()), None, "no *.bundle file");
        fs::write(d.join("os-1.2.bundle"), "x").unwrap();
        fs::write(d.join("os-1.3.bundle"), "x").unwrap();
        assert_eq!(bundle_in(dir.path()), Some(d.join("os-1.3.bundle")));
    }
}

//! Filesystem mounts PID 1 makes: the early API filesystems, the persistent state
//! partition on /var, a writable /etc over the read-only image, and unmounting at shutdown.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The label (GPT partition name or ext4 volume label) of the persistent state partition.
pub const STATE_LABEL: &str = "SYSCTR_STATE";

/// Filesystem type used by fault injection in test mode: the kernel has no such type, so
/// mount(2) fails with ENODEV through the real error path.
pub const INJECTED_BAD_FSTYPE: &str = "sysctr-injected-failure";

#[derive(Debug, thiserror::Error)]
#[error("mount {fstype} on {target}: {source}")]
pub struct MountError {
    pub target: String,
    pub fstype: String,
    #[source]
    pub source: nix::Error,
}

/// Mounts `fstype` at `target` (creating the directory when it can). An already-mounted
/// target (EBUSY, e.g. devtmpfs auto-mounted by the kernel) counts as success.
pub fn mount_fs(
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    let _ = fs::create_dir_all(target);
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) => Ok(()),
        Err(nix::Error::EBUSY) if fstype != INJECTED_BAD_FSTYPE => Ok(()),
        Err(source) => Err(MountError {
            target: target.display().to_string(),
            fstype: fstype.to_string(),
            source,
        }),
    }
}

/// A block device that holds the state partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDevice {
    pub dev: PathBuf,
    /// Whether it already carries an ext4 filesystem (else it is blank and needs formatting).
    pub formatted: bool,
}

/// Finds the state partition: a GPT partition named SYSCTR_STATE, or any block device whose
/// ext4 label is SYSCTR_STATE. `sys_block` is /sys/class/block, `dev` is /dev.
pub fn find_state_device(sys_block: &Path, dev: &Path) -> Option<StateDevice> {
    let mut entries: Vec<_> = fs::read_dir(sys_block).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    let mut by_label = None;
    for e in entries {
        let uevent = fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
        let mut devname = None;
        let mut partname = None;
        for line in uevent.lines() {
            if let Some(v) = line.strip_prefix("DEVNAME=") {
                devname = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("PARTNAME=") {
                partname = Some(v.to_string());
            }
        }
        let Some(devname) = devname else { continue };
        let path = dev.join(&devname);
        let label = ext4_label(&path);
        if partname.as_deref() == Some(STATE_LABEL) {
            return Some(StateDevice {
                formatted: label.is_some(),
                dev: path,
            });
        }
        if label.as_deref() == Some(STATE_LABEL) && by_label.is_none() {
            by_label = Some(StateDevice {
                dev: path,
                formatted: true,
            });
        }
    }
    by_label
}

/// The block device whose GPT partition name is `name` (`PARTNAME=` in its sysfs uevent), the
/// first by kernel name when several disks carry one.
pub fn find_partition(sys_block: &Path, dev: &Path, name: &str) -> Option<PathBuf> {
    let mut entries: Vec<_> = fs::read_dir(sys_block).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    entries.into_iter().find_map(|e| {
        let uevent = fs::read_to_string(e.path().join("uevent")).ok()?;
        let mut devname = None;
        let mut found = false;
        for line in uevent.lines() {
            if let Some(v) = line.strip_prefix("DEVNAME=") {
                devname = Some(v.to_string());
            } else if line.strip_prefix("PARTNAME=") == Some(name) {
                found = true;
            }
        }
        if found {
            devname.map(|d| dev.join(d))
        } else {
            None
        }
    })
}

/// Where the image puts e2fsck (a static build: the OS root has no shared libraries).
pub const E2FSCK: &str = "/sbin/e2fsck";

/// What `e2fsck -p` (preen: repair what is safe without asking) said about the state
/// partition, from its exit code (a bit mask, e2fsck(8)), and so what PID 1 does with /var.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsckVerdict {
    /// No errors: mount.
    Clean,
    /// Errors found and corrected (1, or 2 "reboot": only a mounted root needs that): mount.
    Repaired,
    /// Errors left that preen mode may not fix without losing data (4): do NOT mount it
    /// read-write; an operator runs `e2fsck -fy` (or restores) first.
    Uncorrected,
    /// e2fsck itself could not do its work (8 operational error, 16 usage, 32 cancelled,
    /// 128 library error): the filesystem was not judged; mount it, with a warning (the
    /// kernel's ext4 still refuses a superblock it cannot use).
    NotChecked,
}

impl FsckVerdict {
    pub fn from_exit_code(code: i32) -> FsckVerdict {
        if code & 4 != 0 {
            FsckVerdict::Uncorrected
        } else if code & !3 != 0 {
            FsckVerdict::NotChecked
        } else if code != 0 {
            FsckVerdict::Repaired
        } else {
            FsckVerdict::Clean
        }
    }
}

/// Whether the device holds only zeros where a filesystem keeps its metadata: the first
/// 16 MiB (superblock, group descriptors and, for small ext4, the first backup superblock at
/// 8 MiB), and the last MiB. Only such a partition may be formatted: one whose primary
/// superblock is damaged still has its data and its backups, for e2fsck.
pub fn is_blank(dev: &Path) -> io::Result<bool> {
    const HEAD: u64 = 16 << 20;
    const TAIL: u64 = 1 << 20;
    let mut f = fs::File::open(dev)?;
    let len = f.seek(SeekFrom::End(0))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut check = |f: &mut fs::File, from: u64, to: u64| -> io::Result<bool> {
        f.seek(SeekFrom::Start(from))?;
        let mut at = from;
        while at < to {
            let n = (to - at).min(buf.len() as u64) as usize;
            f.read_exact(&mut buf[..n])?;
            if buf[..n].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += n as u64;
        }
        Ok(true)
    };
    let head_end = HEAD.min(len);
    Ok(check(&mut f, 0, head_end)? && check(&mut f, len.saturating_sub(TAIL).max(head_end), len)?)
}

/// The volume label of an ext2/3/4 filesystem on `dev`, or None if it has none.
/// Superblock at 1024; magic 0xEF53 at offset 0x38, label (16 bytes) at 0x78.
pub fn ext4_label(dev: &Path) -> Option<String> {
    let mut f = fs::File::open(dev).ok()?;
    let mut sb = [0u8; 0x88];
    f.seek(SeekFrom::Start(1024)).ok()?;
    f.read_exact(&mut sb).ok()?;
    if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
        return None;
    }
    let raw = &sb[0x78..0x88];
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    Some(String::from_utf8_lossy(&raw[..end]).into_owned())
}

/// Every mount point under PID 1's mount namespace, deepest last (mountinfo order).
pub fn mount_points() -> io::Result<Vec<PathBuf>> {
    let text = fs::read_to_string("/proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .collect())
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything but the API filesystems PID 1 still needs, deepest first; what
/// cannot be unmounted (busy) is remounted read-only so the data on it is consistent.
pub fn unmount_all() {
    let keep = ["/", "/proc", "/sys", "/dev", "/dev/console"];
    let Ok(points) = mount_points() else { return };
    for p in points.iter().rev() {
        let s = p.to_string_lossy();
        if keep.contains(&s.as_ref()) {
            continue;
        }
        if umount2(p, MntFlags::empty()).is_ok() {
            continue;
        }
        // Still busy: read-only first (that writes back and closes the journal, so the
        // filesystem is clean even if the detach below leaves it mounted until power-off).
        crate::warn!(
            "shutdown",
            "{s} is busy; remounting it read-only and detaching it"
        );
        let _ = mount(
            None::<&str>,
            p,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        );
        let _ = umount2(p, MntFlags::MNT_DETACH);
    }
    // The root is read-only already; make sure of it.
    let _ = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_in_mountinfo() {
        assert_eq!(unescape_octal("/mnt/with\\040space"), "/mnt/with space");
        assert_eq!(unescape_octal("/plain"), "/plain");
    }

    #[test]
    fn finds_state_partition_by_partname_and_label() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let dev = dir.path().join("dev");
        fs::create_dir_all(sys.join("vda1")).unwrap();
        fs::create_dir_all(sys.join("vda2")).unwrap();
        fs::create_dir_all(&dev).unwrap();
        fs::write(sys.join("vda1/uevent"), "DEVNAME=vda1\nPARTN=1\n").unwrap();
        fs::write(
            sys.join("vda2/uevent"),
            "DEVNAME=vda2\nPARTNAME=SYSCTR_STATE\n",
        )
        .unwrap();
        fs::write(dev.join("vda1"), vec![0u8; 4096]).unwrap();
        // a blank partition: found by name, not formatted
        fs::write(dev.join("vda2"), vec![0u8; 4096]).unwrap();
        let found = find_state_device(&sys, &dev).unwrap();
        assert_eq!(
            found,
            StateDevice {
                dev: dev.join("vda2"),
                formatted: false
            }
        );
        // an ext4 superblock with the label
        let mut img = vec![0u8; 4096];
        img[1024 + 0x38] = 0x53;
        img[1024 + 0x39] = 0xEF;
        img[1024 + 0x78..1024 + 0x78 + STATE_LABEL.len()].copy_from_slice(STATE_LABEL.as_bytes());
        fs::write(dev.join("vda2"), &img).unwrap();
        assert_eq!(ext4_label(&dev.join("vda2")).as_deref(), Some(STATE_LABEL));
        assert!(find_state_device(&sys, &dev).unwrap().formatted);
        // found by label alone when no partition carries the name
        fs::write(sys.join("vda2/uevent"), "DEVNAME=vda2\n").unwrap();
        assert_eq!(find_state_device(&sys, &dev).unwrap().dev, dev.join("vda2"));
        fs::write(dev.join("vda2"), vec![0u8; 4096]).unwrap();
        assert_eq!(find_state_device(&sys, &dev), None);
    }

    #[test]
    fn finds_a_partition_by_gpt_name() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        for (d, ev) in [
            ("nvme0n1", "DEVNAME=nvme0n1\nDEVTYPE=disk\n"),
            (
                "nvme0n1p1",
                "DEVNAME=nvme0n1p1\nPARTN=1\nPARTNAME=SYSCTR_ESP\n",
            ),
            (
                "nvme0n1p4",
                "DEVNAME=nvme0n1p4\nPARTN=4\nPARTNAME=SYSCTR_STATE\n",
            ),
        ] {
            fs::create_dir_all(sys.join(d)).unwrap();
            fs::write(sys.join(d).join("uevent"), ev).unwrap();
        }
        let dev = Path::new("/dev");
        assert_eq!(
            find_partition(&sys, dev, "SYSCTR_ESP"),
            Some(PathBuf::from("/dev/nvme0n1p1"))
        );
        // a name that is only a prefix of another does not match
        assert_eq!(find_partition(&sys, dev, "SYSCTR"), None);
    }

    #[test]
    fn fsck_exit_codes_decide_whether_var_is_mounted() {
        use FsckVerdict::*;
        assert_eq!(FsckVerdict::from_exit_code(0), Clean);
        assert_eq!(FsckVerdict::from_exit_code(1), Repaired);
        assert_eq!(FsckVerdict::from_exit_code(2), Repaired);
        assert_eq!(FsckVerdict::from_exit_code(3), Repaired);
        // uncorrected errors win over every other bit
        for code in [4, 5, 6, 12, 36, 132] {
            assert_eq!(FsckVerdict::from_exit_code(code), Uncorrected, "{code}");
        }
        for code in [8, 9, 16, 32, 128, 131] {
            assert_eq!(FsckVerdict::from_exit_code(code), NotChecked, "{code}");
        }
        // a negative code (killed by a signal, as the caller maps it) is not "clean"
        assert_eq!(FsckVerdict::from_exit_code(-1), Uncorrected);
    }

    #[test]
    fn blank_means_all_zeros_in_the_metadata_areas() {
        let dir = tempfile::tempdir().unwrap();
        let dev = dir.path().join("part");
        fs::write(&dev, vec![0u8; 20 << 20]).unwrap();
        assert!(is_blank(&dev).unwrap());
        // a damaged primary superblock but a backup at 8 MiB: not blank
        let mut img = vec![0u8; 20 << 20];
        img[(8 << 20) + 1024 + 0x38] = 0x53;
        fs::write(&dev, &img).unwrap();
        assert!(!is_blank(&dev).unwrap());
        // data in the last MiB
        let mut img = vec![0u8; 20 << 20];
        img[(20 << 20) - 10] = 1;
        fs::write(&dev, &img).unwrap();
        assert!(!is_blank(&dev).unwrap());
        // a tiny device
        fs::write(&dev, vec![0u8; 4096]).unwrap();
        assert!(is_blank(&dev).unwrap());
    }
}

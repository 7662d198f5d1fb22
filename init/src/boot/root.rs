//! PID 1 started from the UKI's initramfs: the slot's verified root mounted and made `/`.
//!
//! The image's UKI carries PID 1's binary as the initramfs' only file, `/init`
//! (rootfs/src/initramfs.rs). The kernel unpacks it while it probes devices and then starts a
//! binary that is already in memory, instead of one paged in from the xz root block by
//! block (the kernel running init → init's `main()` took 0.4–0.8 s under TCG). PID 1 then
//! does what the kernel's own root mount did: it reads `root=`, `rootfstype=`, `rootflags=`
//! and `ro`/`rw` from the command line, waits (bounded) for the device — dm-init has
//! created the dm-verity device before the kernel ran /init — and mounts it on /sysroot.
//! The initramfs is then made read-only and the root moved onto `/` (switch_root's
//! `MS_MOVE` and `chroot`). The initramfs stays under the new root, reachable by no path:
//! its one file is PID 1's running binary, on a read-only filesystem, which the helpers
//! start again through /proc/self/exe (invariant 8).
//!
//! A root the kernel mounted itself (no initramfs) is left as it is.

use super::{Ctx, StepError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
use std::path::Path;
use std::time::{Duration, Instant};

/// Where the new root is mounted before it is moved onto `/`.
const SYSROOT: &str = "/sysroot";
/// How long PID 1 waits for the root device to appear (the kernel's `rootwait` has no bound).
const ROOT_WAIT: Duration = Duration::from_secs(10);

/// What the command line says about the root.
#[derive(Debug, PartialEq, Eq)]
pub struct RootSpec {
    pub device: String,
    pub fstype: String,
    pub flags: Option<String>,
    pub read_only: bool,
}

/// The kernel's command line split into words as the kernel splits it: on blanks, except
/// inside double quotes (`dm-mod.create="a b"` is one word, its quotes removed).
pub fn words(cmdline: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in cmdline.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            c => {
                word.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(word);
    }
    out
}

impl RootSpec {
    /// `root=`, `rootfstype=`, `rootflags=`, `ro`/`rw` (the last one given wins; read-only
    /// unless `rw`, as the image's root always is). `root=` is required and must be a /dev
    /// path: PID 1 has no udev to resolve `PARTUUID=`/`LABEL=` names (the image names its
    /// dm-verity device, /dev/dm-0).
    pub fn from_cmdline(cmdline: &str) -> Result<RootSpec, String> {
        let mut device = None;
        let mut fstype = None;
        let mut flags = None;
        let mut read_only = true;
        for w in words(cmdline) {
            match w.split_once('=') {
                Some(("root", v)) => device = Some(v.to_string()),
                Some(("rootfstype", v)) => fstype = Some(v.to_string()),
                Some(("rootflags", v)) => flags = Some(v.to_string()),
                None if w == "ro" => read_only = true,
                None if w == "rw" => read_only = false,
                _ => {}
            }
        }
        let device = device.ok_or("the kernel command line has no root=")?;
        if !device.starts_with("/dev/") {
            return Err(format!(
                "root={device}: PID 1 mounts the root from the initramfs and takes a /dev path only (it has no udev to resolve names)"
            ));
        }
        let fstype = fstype.ok_or_else(|| {
            format!("root={device} without rootfstype=: PID 1 does not guess the filesystem")
        })?;
        Ok(RootSpec {
            device,
            fstype,
            flags,
            read_only,
        })
    }
}

/// ramfs' statfs magic (linux/magic.h; neither libc nor nix names it).
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// Whether `/` is the kernel's initramfs (rootfs is ramfs, or tmpfs when no `root=` is given).
fn on_initramfs() -> bool {
    statfs("/").is_ok_and(|s| {
        let t = s.filesystem_type();
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    })
}

fn io(what: impl Into<String>) -> impl FnOnce(nix::Error) -> StepError {
    let what = what.into();
    move |e| StepError::Io {
        what,
        source: e.into(),
    }
}

/// The boot step: on the initramfs, mount the root and move onto it; otherwise nothing.
pub fn switch(_: &mut Ctx) -> Result<(), StepError> {
    if !on_initramfs() {
        return Ok(());
    }
    let started = Instant::now();
    for dir in ["/proc", "/dev", SYSROOT] {
        let _ = std::fs::create_dir(dir);
    }
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(io("mount /proc on the initramfs"))?;
    let spec = std::fs::read_to_string("/proc/cmdline")
        .map_err(|source| StepError::Io {
            what: "/proc/cmdline".into(),
            source,
        })
        .and_then(|c| RootSpec::from_cmdline(&c).map_err(StepError::Other));
    let spec = match spec {
        Ok(s) => s,
        Err(e) => {
            let _ = umount2("/proc", MntFlags::MNT_DETACH);
            return Err(e);
        }
    };
    if let Err(e) = mount(
        Some("devtmpfs"),
        "/dev",
        Some("devtmpfs"),
        MsFlags::MS_NOSUID,
        None::<&str>,
    ) {
        let _ = umount2("/proc", MntFlags::MNT_DETACH);
        return Err(io("mount /dev on the initramfs")(e));
    }
    // This step's lines reach kmsg too; the descriptors stay good after /dev goes.
    crate::log::open_sinks(true);
    let moved = mount_root(&spec).and_then(|()| {
        // Nothing may write PID 1's binary once it is out of sight (invariant 8).
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(io("remount the initramfs read-only"))?;
        // Logged while /proc is there: the log reads the console level from it.
        crate::info!(
            "root",
            "{} ({}, {}) is / (PID 1 started from the initramfs; mounted in {} ms)",
            spec.device,
            spec.fstype,
            if spec.read_only {
                "read-only"
            } else {
                "read-write"
            },
            started.elapsed().as_millis()
        );
        Ok(())
    });
    let _ = umount2("/dev", MntFlags::MNT_DETACH);
    let _ = umount2("/proc", MntFlags::MNT_DETACH);
    moved?;
    std::env::set_current_dir(SYSROOT).map_err(|source| StepError::Io {
        what: format!("chdir {SYSROOT}"),
        source,
    })?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(io(format!("move {SYSROOT} onto /")))?;
    nix::unistd::chroot(".").map_err(io("chroot into the new root"))?;
    std::env::set_current_dir("/").map_err(|source| StepError::Io {
        what: "chdir /".into(),
        source,
    })
}

/// Waits for the root device (at most [`ROOT_WAIT`]) and mounts it on /sysroot.
fn mount_root(spec: &RootSpec) -> Result<(), StepError> {
    let deadline = Instant::now() + ROOT_WAIT;
    while !Path::new(&spec.device).exists() {
        if Instant::now() >= deadline {
            return Err(StepError::Other(format!(
                "root={}: no such device after {} s (is the slot's partition there, and its dm-verity table on the command line?)",
                spec.device,
                ROOT_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut flags = MsFlags::empty();
    if spec.read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(
        Some(spec.device.as_str()),
        SYSROOT,
        Some(spec.fstype.as_str()),
        flags,
        spec.flags.as_deref(),
    )
    .map_err(io(format!(
        "mount root={} ({}) on {SYSROOT}",
        spec.device, spec.fstype
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMAGE: &str = "console=tty0 console=ttyS0 panic=5 sysctr.slot=a dm-mod.waitfor=PARTUUID=53595343-5452-4000-8000-000000000001 dm-mod.create=\"sysctr-root,,,ro,0 12656 verity 1 PARTUUID=x PARTUUID=x 4096 4096 1582 1582 sha256 86a9 7379\" root=/dev/dm-0 rootfstype=squashfs ro";

    #[test]
    fn the_image_command_line_names_its_verity_root() {
        let spec = RootSpec::from_cmdline(IMAGE).unwrap();
        assert_eq!(
            spec,
            RootSpec {
                device: "/dev/dm-0".into(),
                fstype: "squashfs".into(),
                flags: None,
                read_only: true,
            }
        );
    }

    #[test]
    fn quoted_words_stay_whole_and_lose_their_quotes() {
        let w = words("a dm=\"x root=/dev/evil y\" b");
        assert_eq!(w, ["a", "dm=x root=/dev/evil y", "b"]);
        // A root= inside another word's quoted value is not the root.
        let spec = RootSpec::from_cmdline(
            "dm=\"root=/dev/evil\" root=/dev/vda2 rootfstype=ext4 rootflags=noatime rw",
        )
        .unwrap();
        assert_eq!(spec.device, "/dev/vda2");
        assert_eq!(spec.flags.as_deref(), Some("noatime"));
        assert!(!spec.read_only);
    }

    #[test]
    fn a_root_pid1_cannot_mount_is_refused_with_the_reason() {
        let err = RootSpec::from_cmdline("console=ttyS0").unwrap_err();
        assert!(err.contains("no root="), "{err}");
        let err = RootSpec::from_cmdline("root=PARTUUID=1234 rootfstype=ext4").unwrap_err();
        assert!(
            err.contains("root=PARTUUID=1234") && err.contains("/dev path"),
            "{err}"
        );
        let err = RootSpec::from_cmdline("root=/dev/vda2").unwrap_err();
        assert!(err.contains("rootfstype="), "{err}");
    }
}

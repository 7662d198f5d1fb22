//! Early boot as a list of named steps. A required step that fails takes the fatal path
//! (orderly shutdown, then reboot or halt); an optional one logs a warning and boot goes
//! on. Every log line names its step.
//!
//! This file holds the step types and the two sequences (machine and test mode); the
//! longer steps live in `boot/`: `root.rs` (the slot's root mounted when PID 1 starts from
//! the initramfs), `var.rs` (the state partition: check, format, mount), `preen.rs`
//! (whether it needs `e2fsck -p`) and `etc.rs` (boot config, writable /etc, hostname).

mod etc;
mod preen;
mod root;
mod var;

use crate::config::Config;
use crate::mounts::{mount_fs, MountError, INJECTED_BAD_FSTYPE};
use etc::{mount_etc, read_bootconfig, set_hostname};
use nix::mount::MsFlags;
use std::path::Path;
use var::mount_var;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Other(String),
}

/// What boot found out, for the later stages.
#[derive(Debug, Default)]
pub struct Facts {
    /// /var is on the persistent state partition.
    pub var_persistent: bool,
}

pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub facts: Facts,
    /// The step being run, for fault injection and messages.
    pub step: &'static str,
}

impl Ctx<'_> {
    /// The filesystem type to mount for `step`: the real one, or an impossible one when the
    /// test harness injects a failure into that step.
    fn fstype<'f>(&self, real: &'f str) -> &'f str {
        if self.cfg.test_mode && self.cfg.fail_step.as_deref() == Some(self.step) {
            INJECTED_BAD_FSTYPE
        } else {
            real
        }
    }

    fn mount(
        &self,
        fstype: &str,
        target: impl AsRef<Path>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<(), StepError> {
        let source = fstype;
        Ok(mount_fs(
            source,
            target.as_ref(),
            self.fstype(fstype),
            flags,
            data,
        )?)
    }
}

pub struct Step {
    pub name: &'static str,
    pub required: bool,
    pub run: fn(&mut Ctx) -> Result<(), StepError>,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// /proc, first in both modes (in test mode it shows the new pid namespace).
const MOUNT_PROC: Step = Step {
    name: "mount-proc",
    required: true,
    run: |c| c.mount("proc", "/proc", NOSUID_NODEV_NOEXEC, None),
};

/// The steps of a real boot, in order.
pub fn machine_steps() -> Vec<Step> {
    vec![
        Step {
            // Started from the UKI's initramfs: the slot's root becomes `/` first.
            name: "root",
            required: true,
            run: root::switch,
        },
        MOUNT_PROC,
        Step {
            name: "mount-sys",
            required: true,
            run: |c| c.mount("sysfs", "/sys", NOSUID_NODEV_NOEXEC, None),
        },
        Step {
            // systemd-boot's variables (which entry booted, its boot counter); only on UEFI.
            name: "mount-efivarfs",
            required: false,
            run: |c| {
                if !Path::new("/sys/firmware/efi").exists() {
                    return Ok(());
                }
                c.mount(
                    "efivarfs",
                    crate::bootslot::EFIVARS,
                    NOSUID_NODEV_NOEXEC,
                    None,
                )
            },
        },
        Step {
            name: "mount-dev",
            required: true,
            run: |c| c.mount("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
        },
        Step {
            name: "open-log",
            required: false,
            run: |_| {
                crate::log::open_sinks(true);
                Ok(())
            },
        },
        Step {
            // The kernel rate-limits writes to /dev/kmsg (10 lines per 5 s per open file)
            // unless told otherwise; init's own log would lose lines during every boot.
            name: "kmsg-unlimited",
            required: false,
            run: |_| {
                let path = "/proc/sys/kernel/printk_devkmsg";
                std::fs::write(path, "on\n").map_err(|source| StepError::Io {
                    what: format!("write {path}"),
                    source,
                })?;
                crate::log::kmsg_unlimited();
                Ok(())
            },
        },
        Step {
            name: "mount-devpts",
            required: true,
            run: |c| {
                c.mount(
                    "devpts",
                    "/dev/pts",
                    MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                    Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
                )
            },
        },
        Step {
            name: "mount-devshm",
            required: false,
            run: |c| {
                c.mount(
                    "tmpfs",
                    "/dev/shm",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("mode=1777"),
                )
            },
        },
        Step {
            name: "mount-run",
            required: true,
            run: |c| {
                c.mount(
                    "tmpfs",
                    "/run",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("mode=0755"),
                )
            },
        },
        Step {
            name: "mount-tmp",
            required: false,
            run: |c| {
                c.mount(
                    "tmpfs",
                    "/tmp",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("mode=1777"),
                )
            },
        },
        Step {
            name: "mount-cgroup2",
            required: true,
            // favordynmods (Linux 6.0+) keeps the cgroup rwsem's RCU sync warm: without it
            // every container start waits out an RCU grace period when its first process
            // joins its cgroup (measured: about -29% create+start in the guest). Older
            // kernels reject the option; they get plain nsdelegate.
            run: |c| {
                c.mount(
                    "cgroup2",
                    "/sys/fs/cgroup",
                    NOSUID_NODEV_NOEXEC,
                    Some("nsdelegate,favordynmods"),
                )
                .or_else(|_| {
                    c.mount(
                        "cgroup2",
                        "/sys/fs/cgroup",
                        NOSUID_NODEV_NOEXEC,
                        Some("nsdelegate"),
                    )
                })
            },
        },
        Step {
            name: "cgroup-controllers",
            required: false,
            run: |c| {
                crate::cgroups::setup_v2(Path::new("/sys/fs/cgroup"), &c.cfg.cgroup_prefix)
                    .map_err(|e| StepError::Other(e.to_string()))
            },
        },
        Step {
            name: "bootconfig",
            required: false,
            run: |_| read_bootconfig(),
        },
        Step {
            name: "mount-var",
            required: false,
            run: mount_var,
        },
        Step {
            name: "mount-etc",
            required: false,
            run: mount_etc,
        },
        Step {
            name: "hostname",
            required: false,
            run: |_| set_hostname(),
        },
        Step {
            name: "loopback",
            required: false,
            run: |_| {
                crate::sys::interface_up("lo").map_err(|source| StepError::Io {
                    what: "bring up lo".into(),
                    source,
                })
            },
        },
    ]
}

/// The steps in test mode: a fresh /proc for our pid namespace, the run directory (left
/// on the host's filesystem so the test's CLI can reach the control socket) and a tmpfs
/// below it; the host's other mounts are left alone.
pub fn test_steps() -> Vec<Step> {
    vec![
        MOUNT_PROC,
        Step {
            name: "run-dir",
            required: true,
            run: |c| {
                std::fs::create_dir_all(&c.cfg.run_dir).map_err(|source| StepError::Io {
                    what: format!("create {}", c.cfg.run_dir.display()),
                    source,
                })
            },
        },
        Step {
            name: "mount-tmp",
            required: false,
            run: |c| {
                let d = c.cfg.run_dir.join("tmp");
                c.mount(
                    "tmpfs",
                    &d,
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    Some("mode=1777"),
                )
            },
        },
    ]
}

/// Runs the steps in order. Returns the name and error of the first failed required step.
pub fn run(steps: &[Step], ctx: &mut Ctx) -> Result<(), (String, StepError)> {
    for step in steps {
        crate::debug!(step.name, "start");
        ctx.step = step.name;
        match (step.run)(ctx) {
            Ok(()) => crate::debug!(step.name, "done"),
            Err(e) if step.required => {
                crate::error!(step.name, "required step failed: {e}");
                return Err((step.name.to_string(), e));
            }
            Err(e) => crate::warn!(step.name, "optional step failed, boot goes on: {e}"),
        }
    }
    Ok(())
}

//! Early boot as a list of named steps. A required step that fails takes the fatal path
//! (orderly shutdown, then reboot or halt); an optional one logs a warning and boot goes
//! on. Every log line names its step.

use crate::config::Config;
use crate::mounts::{self, mount_fs, MountError, INJECTED_BAD_FSTYPE};
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

const BOOTCONFIG_DIR: &str = "/run/sysctr/bootconfig";

/// Merges the boot config sources (see [`crate::bootconfig`]) and writes the result out. A
/// malformed source is reported on the console, naming file and field, and skipped.
fn read_bootconfig() -> Result<(), StepError> {
    use crate::bootconfig::{self, BootConfig, ESP_CONFIG};
    let mut cfg = BootConfig::default();
    let mut used = Vec::new();
    let esp = crate::bootslot::with_esp(false, |esp| {
        bootconfig::read(&esp.join(ESP_CONFIG)).map_err(|e| e.to_string())
    });
    match esp {
        Ok(Some(c)) => {
            cfg.merge(c);
            used.push("ESP sysctr/config.json");
        }
        Ok(None) => {}
        Err(e) => crate::error!("bootconfig", "{e}; this source is ignored"),
    }
    match bootconfig::read(Path::new(bootconfig::FW_CFG_PATH)) {
        Ok(Some(c)) => {
            cfg.merge(c);
            used.push("fw_cfg");
        }
        Ok(None) => {}
        Err(e) => crate::error!("bootconfig", "{e}; this source is ignored"),
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match BootConfig::from_cmdline(&cmdline) {
        Ok(c) if c != BootConfig::default() => {
            cfg.merge(c);
            used.push("kernel command line");
        }
        Ok(_) => {}
        Err(e) => crate::error!("bootconfig", "{e}; this source is ignored"),
    }
    crate::info!(
        "bootconfig",
        "from {}",
        if used.is_empty() {
            "defaults only".to_string()
        } else {
            used.join(" + ")
        }
    );
    bootconfig::write_out(&cfg, Path::new(BOOTCONFIG_DIR))
        .map_err(|e| StepError::Other(e.to_string()))
}

fn mount_var(c: &mut Ctx) -> Result<(), StepError> {
    let tmpfs = |c: &Ctx| {
        c.mount(
            "tmpfs",
            "/var",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
    };
    let Some(state) = mounts::find_state_device(Path::new("/sys/class/block"), Path::new("/dev"))
    else {
        crate::info!(
            "mount-var",
            "no {} partition: /var is tmpfs, nothing persists",
            mounts::STATE_LABEL
        );
        return tmpfs(c);
    };
    if !state.formatted {
        // No ext4 superblock where one belongs. Format only a partition of zeros: anything
        // else may be a damaged filesystem whose data e2fsck can still recover from a backup
        // superblock (issue 16, finding 16).
        match mounts::is_blank(&state.dev) {
            Ok(true) => {}
            Ok(false) => {
                tmpfs(c)?;
                return Err(StepError::Other(format!(
                    "{} has no readable ext4 superblock but is not blank: NOT formatting it \
                     (its data may be recoverable: e2fsck -b 8193 {}); /var is tmpfs, nothing \
                     persists this boot",
                    state.dev.display(),
                    state.dev.display()
                )));
            }
            Err(e) => {
                tmpfs(c)?;
                return Err(StepError::Other(format!(
                    "cannot read {} to check it is blank: {e}; not formatting; /var is tmpfs",
                    state.dev.display()
                )));
            }
        }
        crate::info!(
            "mount-var",
            "{} is blank: formatting ext4",
            state.dev.display()
        );
        let mkfs = PathBuf::from("/sbin/mke2fs");
        let res = crate::reaper::run_helper(
            std::process::Command::new(&mkfs)
                .args(["-q", "-t", "ext4", "-L", mounts::STATE_LABEL])
                .arg(&state.dev),
            Duration::from_secs(120),
        );
        match res {
            Ok(s) if s.success() => {}
            other => {
                tmpfs(c)?;
                return Err(StepError::Other(format!(
                    "cannot format {}: {other:?}; /var is tmpfs",
                    state.dev.display()
                )));
            }
        }
    }
    if state.formatted {
        if let Err(e) = check_state_fs(&state.dev) {
            tmpfs(c)?;
            return Err(e);
        }
    }
    let dev = state.dev.to_string_lossy().into_owned();
    let res = mount_fs(
        &dev,
        Path::new("/var"),
        c.fstype("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None,
    );
    match res {
        Ok(()) => {
            c.facts.var_persistent = true;
            crate::info!("mount-var", "/var on {} (persistent)", dev);
            for d in ["/var/log/sysctr", "/var/lib/sysctr"] {
                let _ = std::fs::create_dir_all(d);
            }
            Ok(())
        }
        Err(e) => {
            tmpfs(c)?;
            Err(StepError::Other(format!("{e}; /var is tmpfs")))
        }
    }
}

/// Longest `e2fsck -p` of the state partition: a check killed midway leaves it unmounted.
const FSCK_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// `e2fsck -p` of the state partition before it is mounted: an unclean or damaged
/// filesystem is repaired where preen mode may do it safely; one with errors left is not
/// mounted (the Err names the device and what to run). e2fsck's own lines go to init's log.
fn check_state_fs(dev: &Path) -> Result<(), StepError> {
    let e2fsck = Path::new(mounts::E2FSCK);
    if !e2fsck.exists() {
        crate::warn!(
            "mount-var",
            "{} is not in the image: {} is mounted unchecked",
            e2fsck.display(),
            dev.display()
        );
        return Ok(());
    }
    let out_path = Path::new("/run/sysctr/e2fsck.out");
    let _ = std::fs::create_dir_all("/run/sysctr");
    let out = std::fs::File::create(out_path).map_err(|source| StepError::Io {
        what: format!("create {}", out_path.display()),
        source,
    })?;
    let err = out.try_clone().map_err(|source| StepError::Io {
        what: format!("dup {}", out_path.display()),
        source,
    })?;
    let res = crate::reaper::run_helper(
        std::process::Command::new(e2fsck)
            .arg("-p")
            .arg(dev)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err),
        FSCK_TIMEOUT,
    );
    let said = std::fs::read_to_string(out_path).unwrap_or_default();
    let _ = std::fs::remove_file(out_path);
    for line in said.lines().filter(|l| !l.trim().is_empty()) {
        crate::info!("mount-var", "e2fsck: {}", line.trim_end());
    }
    let code = match res {
        Ok(manifest::protocol::ExitStatus::Code(c)) => c,
        Ok(manifest::protocol::ExitStatus::Signal(sig)) => {
            crate::error!("mount-var", "e2fsck was killed by signal {sig}");
            -1
        }
        Err(e) => {
            crate::error!("mount-var", "{e}");
            -1
        }
    };
    match mounts::FsckVerdict::from_exit_code(code) {
        mounts::FsckVerdict::Clean => {
            crate::info!("mount-var", "e2fsck: {} is clean", dev.display());
            Ok(())
        }
        mounts::FsckVerdict::Repaired => {
            crate::warn!(
                "mount-var",
                "e2fsck repaired {} (exit {code}); mounting it",
                dev.display()
            );
            Ok(())
        }
        mounts::FsckVerdict::NotChecked => {
            crate::warn!(
                "mount-var",
                "e2fsck could not check {} (exit {code}); mounting it unchecked",
                dev.display()
            );
            Ok(())
        }
        mounts::FsckVerdict::Uncorrected => Err(StepError::Other(format!(
            "e2fsck -p left errors on {dev} (exit {code}): NOT mounting it; repair it with \
             `e2fsck -fy {dev}` from a rescue system; /var is tmpfs, nothing persists this boot",
            dev = dev.display()
        ))),
    }
}

/// /etc becomes writable (hostname, resolv.conf) as an overlay on the read-only copy.
fn mount_etc(c: &mut Ctx) -> Result<(), StepError> {
    let base = Path::new("/run/sysctr/etc");
    for d in ["upper", "work"] {
        std::fs::create_dir_all(base.join(d)).map_err(|source| StepError::Io {
            what: format!("create {}", base.join(d).display()),
            source,
        })?;
    }
    c.mount(
        "overlay",
        "/etc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("lowerdir=/etc,upperdir=/run/sysctr/etc/upper,workdir=/run/sysctr/etc/work"),
    )
}

fn set_hostname() -> Result<(), StepError> {
    let name = std::fs::read_to_string(Path::new(BOOTCONFIG_DIR).join("hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "sysctr".to_string());
    nix::unistd::sethostname(&name)
        .map_err(|e| StepError::Other(format!("sethostname {name}: {e}")))?;
    crate::info!("hostname", "{name}");
    Ok(())
}

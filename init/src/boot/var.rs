//! The `mount-var` step: /var on the persistent state partition (checked with `e2fsck -p`,
//! formatted only when blank), or tmpfs when there is none or it cannot be used safely.

use super::{Ctx, StepError};
use crate::mounts::{self, mount_fs};
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub(super) fn mount_var(c: &mut Ctx) -> Result<(), StepError> {
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
    // A filesystem mkfs just made needs no check; one that was there gets `e2fsck -p`
    // unless its superblock shows e2fsck would find it clean (boot/preen.rs).
    let mut checked = !state.formatted;
    if state.formatted {
        match super::preen::needs_check(&state.dev, crate::logs::now_ms() / 1000) {
            Ok(None) => crate::info!(
                "mount-var",
                "{}: clean by its superblock, as e2fsck -p would find it; not running e2fsck",
                state.dev.display()
            ),
            Ok(Some(why)) => {
                crate::info!("mount-var", "{}: e2fsck -p, as {why}", state.dev.display());
                checked = true;
            }
            Err(e) => {
                crate::warn!(
                    "mount-var",
                    "cannot read the superblock of {}: {e}; e2fsck -p decides",
                    state.dev.display()
                );
                checked = true;
            }
        }
        if checked {
            if let Err(e) = check_state_fs(&state.dev) {
                tmpfs(c)?;
                return Err(e);
            }
        }
    }
    let dev = state.dev.to_string_lossy().into_owned();
    let mount = |c: &Ctx| {
        mount_fs(
            &dev,
            Path::new("/var"),
            c.fstype("ext4"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None,
        )
    };
    let mut res = mount(c);
    if let (Err(e), false) = (&res, checked) {
        // A clean-looking superblock over damage the kernel refuses (group descriptors that
        // fail their checksums, say): what e2fsck -p would have repaired before the mount.
        crate::warn!(
            "mount-var",
            "{e}; running e2fsck -p on {} and mounting again",
            state.dev.display()
        );
        if let Err(e) = check_state_fs(&state.dev) {
            tmpfs(c)?;
            return Err(e);
        }
        res = mount(c);
    }
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

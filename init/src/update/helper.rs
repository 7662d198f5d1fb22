//! The update helper process itself (`init --update-helper …`): parses its command
//! line, reads the image's identity and the trusted keys, mounts the ESP in a mount namespace
//! of its own, opens the slot device, drops privileges and runs [`super::install`], printing
//! one JSON [`Line`] per step. PID 1's side of it is in [`super::run`].

use super::run::{read_release, HelperArgs, Line, HELPER_ESP, RELEASE_FILE};
use super::{keys, Policy, Target, UpdateError};
use manifest::protocol::ErrorKind;
use manifest::protocol_update::{Progress, Slot};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

fn emit(out: &mut impl Write, line: &Line) {
    if let Ok(text) = serde_json::to_string(line) {
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
}

fn kind_of(e: &UpdateError) -> ErrorKind {
    match e {
        UpdateError::Io { .. } => ErrorKind::Failed,
        _ => ErrorKind::BadRequest,
    }
}

/// The helper process's `main`: returns its exit code (0 installed, 1 refused or failed).
pub fn helper_main(args: &[String]) -> i32 {
    let mut out = std::io::stdout();
    let fail = |out: &mut std::io::Stdout, kind: ErrorKind, message: String| {
        emit(out, &Line::Error { kind, message });
        1
    };
    let a = match HelperArgs::parse(args) {
        Ok(a) => a,
        Err(e) => return fail(&mut out, ErrorKind::BadRequest, e),
    };
    // PID 1 blocks most signals and reads them from a signalfd; the helper takes defaults.
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
    let release = match read_release(Path::new(RELEASE_FILE)) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                &mut out,
                ErrorKind::Failed,
                format!("this image does not say what it is ({e}): cannot check a bundle"),
            )
        }
    };
    let keys = match keys::load(Path::new(keys::KEYS_DIR)) {
        Ok(k) => k,
        Err(e) => return fail(&mut out, ErrorKind::Failed, e.to_string()),
    };
    if let Err(e) = private_esp(&a.esp_device) {
        return fail(&mut out, ErrorKind::Failed, e);
    }
    let mut device = match File::options().read(true).write(true).open(&a.device) {
        Ok(f) => f,
        Err(e) => {
            return fail(
                &mut out,
                ErrorKind::Failed,
                format!("open slot {} device {}: {e}", a.slot, a.device.display()),
            )
        }
    };
    // An update disk is found and opened while the helper may still mount.
    let offline = if a.offline {
        match super::offline::find(&a.esp_device) {
            Ok(Some(found)) => Some(found),
            Ok(None) => {
                let message = format!(
                    "no update disk (a FAT or ext4 filesystem with {}/*.bundle)",
                    super::offline::DIR
                );
                emit(&mut out, &Line::Skipped { message });
                return 0;
            }
            Err(e) => return fail(&mut out, ErrorKind::Failed, e),
        }
    } else {
        None
    };
    if let Err(e) = drop_privileges() {
        return fail(&mut out, ErrorKind::Failed, e);
    }
    let policy = Policy {
        compatible: release.compatible,
        current_version: release.version,
        allow_downgrade: a.allow_downgrade,
    };
    use std::os::fd::AsFd;
    let mut bundle = match offline {
        Some((source, mut file)) => {
            match offline_news(&mut file, &keys, &policy, a.slot) {
                Ok(()) => {}
                Err(Refusal::Skip(why)) => {
                    let message = format!("{source}: {why}");
                    emit(&mut out, &Line::Skipped { message });
                    return 0;
                }
                Err(Refusal::Error(e)) => {
                    return fail(&mut out, kind_of(&e), format!("{source}: {e}"))
                }
            }
            file
        }
        None => match std::io::stdin().as_fd().try_clone_to_owned() {
            Ok(fd) => File::from(fd),
            Err(e) => {
                return fail(
                    &mut out,
                    ErrorKind::Failed,
                    format!("no bundle on stdin: {e}"),
                )
            }
        },
    };
    let target = Target {
        slot: a.slot,
        device: &mut device,
        esp: Path::new(HELPER_ESP),
    };
    let mut progress = |p: Progress| emit(&mut std::io::stdout(), &Line::Progress(p));
    match super::install(&mut bundle, target, &keys, &policy, &mut progress) {
        Ok(installed) => {
            nix::unistd::sync();
            emit(&mut out, &Line::Installed(installed));
            0
        }
        Err(e) => fail(&mut out, kind_of(&e), e.to_string()),
    }
}

enum Refusal {
    /// Not news: not newer than the running system, or already in the inactive slot.
    Skip(String),
    Error(UpdateError),
}

/// Whether an update disk's bundle is news: its header verified (signature, `compatible`),
/// newer than the running system and not already in `slot`. Leaves the file at its start.
fn offline_news(
    file: &mut File,
    keys: &[manifest::bundle::signature::TrustedKey],
    policy: &Policy,
    slot: Slot,
) -> Result<(), Refusal> {
    let verified = match super::verify_header(file, keys, policy) {
        Ok(v) => v,
        Err(e @ (UpdateError::SameVersion { .. } | UpdateError::Downgrade { .. })) => {
            return Err(Refusal::Skip(format!("{e}: not installed")))
        }
        Err(e) => return Err(Refusal::Error(e)),
    };
    let version = verified.manifest.version;
    let slots = super::esp::slot_status(Path::new(HELPER_ESP)).map_err(Refusal::Error)?;
    if let Some(s) = slots
        .iter()
        .find(|s| s.slot == slot && s.version.as_deref() == Some(version.as_str()))
    {
        return Err(Refusal::Skip(format!(
            "{version} is already installed in slot {slot} ({:?}): not installed again",
            s.state
        )));
    }
    use std::io::Seek;
    file.rewind()
        .map_err(|e| Refusal::Error(super::io_err("rewind", Path::new("bundle"))(e)))
}

/// A mount namespace of the helper's own, with the ESP mounted on [`HELPER_ESP`], owned by
/// uid/gid 65534 so the helper can still write it after dropping privileges.
fn private_esp(dev: &Path) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("unshare the mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("make mounts private: {e}"))?;
    fs::create_dir_all(HELPER_ESP).map_err(|e| format!("create {HELPER_ESP}: {e}"))?;
    mount(
        Some(dev),
        HELPER_ESP,
        Some("vfat"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("uid=65534,gid=65534,umask=0077,shortname=mixed,flush"),
    )
    .map_err(|e| format!("mount the ESP {} on {HELPER_ESP}: {e}", dev.display()))
}

/// uid/gid 65534, no supplementary groups, no capabilities, no_new_privs.
fn drop_privileges() -> Result<(), String> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    let nobody_g = Gid::from_raw(65534);
    let nobody_u = Uid::from_raw(65534);
    setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    setresgid(nobody_g, nobody_g, nobody_g).map_err(|e| format!("setresgid: {e}"))?;
    setresuid(nobody_u, nobody_u, nobody_u).map_err(|e| format!("setresuid: {e}"))?;
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Inheritable,
        caps::CapSet::Ambient,
    ] {
        let _ = caps::clear(None, set);
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))
}

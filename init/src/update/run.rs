//! Running an install outside PID 1's event loop (invariant 11): PID 1 starts a helper — its
//! own binary (/proc/self/exe: the UKI's read-only initramfs), `init --update-helper …` —
//! with the bundle as stdin and a pipe as stdout, and goes on supervising. The helper ([`super::helper`]):
//!
//! 1. gets a mount namespace of its own and mounts the ESP there, owned by `nobody`;
//! 2. opens the inactive slot's block device (and nothing else) and reads the trusted keys;
//! 3. drops to uid/gid 65534 with no capabilities and `no_new_privs`, so from here it can
//!    write only through the device it holds and the ESP — never the active slot;
//! 4. runs [`super::install`], printing one JSON line per step on stdout
//!    (`{"progress":…}`, then `{"installed":…}` or `{"error":…}`).
//!
//! PID 1 reads those lines without blocking once per loop turn ([`Runner::poll`]), forwards
//! progress to the client that asked, and learns of the helper's end from the reaper by pid.

use manifest::protocol::ErrorKind;
use manifest::protocol_update::{Installed, LastUpdate, Progress, Slot, UpdateResult};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// The flag that makes the init binary an update helper.
pub const HELPER_FLAG: &str = "--update-helper";
/// Where the helper mounts the ESP, inside its own mount namespace.
pub(super) const HELPER_ESP: &str = "/run/sysctr/update-esp";
/// The last install's result, on the state partition.
pub const LAST_FILE: &str = "/var/lib/sysctr/update/last.json";
/// What the image says about itself (name, version, compatible), written by the build.
pub const RELEASE_FILE: &str = "/etc/sysctr/release.json";
/// Bounds on the helper's output PID 1 keeps (invariant 12).
const MAX_LINE: usize = 64 * 1024;

/// One line of the helper's stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Progress(Progress),
    Installed(Installed),
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// An offline update found nothing to install (no update disk, or a bundle already
    /// installed): nothing is recorded.
    Skipped {
        message: String,
    },
}

/// The client id of the install PID 1 starts itself for an offline update disk.
pub const OFFLINE_CLIENT: u64 = u64::MAX;

/// The image's own identity (`/etc/sysctr/release.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub name: String,
    pub version: String,
    pub compatible: String,
    /// A fault the boot tests inject (docs/update.md, "Test hooks"). Only the boot tests'
    /// images carry it (`cargo xtask boot-test` builds them); every other build leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_hook: Option<String>,
}

/// The test hook that makes PID 1 hang on a trial boot, right after it armed the watchdog.
pub const HOOK_HANG_IN_TRIAL: &str = "hang-in-trial";

pub fn read_release(path: &Path) -> Result<Release, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The helper's command line, as PID 1 builds it and the helper parses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperArgs {
    pub slot: Slot,
    pub device: PathBuf,
    pub esp_device: PathBuf,
    pub allow_downgrade: bool,
    /// Look for the bundle on an update disk ([`super::offline`]) instead of stdin.
    pub offline: bool,
}

impl HelperArgs {
    pub fn to_args(&self) -> Vec<String> {
        let mut v = vec![
            HELPER_FLAG.to_string(),
            "--slot".into(),
            self.slot.as_str().into(),
            "--device".into(),
            self.device.display().to_string(),
            "--esp".into(),
            self.esp_device.display().to_string(),
        ];
        if self.allow_downgrade {
            v.push("--allow-downgrade".into());
        }
        if self.offline {
            v.push("--offline".into());
        }
        v
    }

    pub fn parse(args: &[String]) -> Result<HelperArgs, String> {
        let mut slot = None;
        let mut device = None;
        let mut esp = None;
        let mut allow_downgrade = false;
        let mut offline = false;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
            match a.as_str() {
                HELPER_FLAG => {}
                "--slot" => {
                    slot = Some(match val()?.as_str() {
                        "a" => Slot::A,
                        "b" => Slot::B,
                        other => return Err(format!("--slot {other}: a or b")),
                    })
                }
                "--device" => device = Some(PathBuf::from(val()?)),
                "--esp" => esp = Some(PathBuf::from(val()?)),
                "--allow-downgrade" => allow_downgrade = true,
                "--offline" => offline = true,
                other => return Err(format!("unknown helper argument {other:?}")),
            }
        }
        Ok(HelperArgs {
            slot: slot.ok_or("--slot missing")?,
            device: device.ok_or("--device missing")?,
            esp_device: esp.ok_or("--esp missing")?,
            allow_downgrade,
            offline,
        })
    }
}

/// PID 1's side: at most one install at a time.
#[derive(Default)]
pub struct Runner {
    running: Option<Running>,
}

struct Running {
    pid: i32,
    /// The control client waiting for progress and the result.
    client: u64,
    output: crate::helper_proc::Helper,
    pending: Vec<u8>,
    reboot: bool,
    result: Option<Line>,
    version: Option<String>,
}

/// What [`Runner::poll`] and [`Runner::exited`] hand back to the control server.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    Progress {
        client: u64,
        progress: Progress,
    },
    Finished {
        client: u64,
        result: Result<Installed, (ErrorKind, String)>,
        reboot: bool,
    },
    /// An offline update had nothing to install.
    Skipped {
        message: String,
    },
}

impl Runner {
    pub fn busy(&self) -> bool {
        self.running.is_some()
    }

    pub fn pid(&self) -> Option<i32> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// Starts the helper on `bundle` for the slot that is not `booted`.
    pub fn start(
        &mut self,
        client: u64,
        bundle: OwnedFd,
        booted: Slot,
        allow_downgrade: bool,
        reboot: bool,
    ) -> Result<String, (ErrorKind, String)> {
        self.spawn(client, Some(bundle), booted, allow_downgrade, reboot)
    }

    /// Starts the helper looking for an update disk ([`super::offline`]); it reboots into
    /// what it installed.
    pub fn start_offline(&mut self, booted: Slot) -> Result<String, (ErrorKind, String)> {
        self.spawn(OFFLINE_CLIENT, None, booted, false, true)
    }

    fn spawn(
        &mut self,
        client: u64,
        bundle: Option<OwnedFd>,
        booted: Slot,
        allow_downgrade: bool,
        reboot: bool,
    ) -> Result<String, (ErrorKind, String)> {
        if self.running.is_some() {
            return Err((
                ErrorKind::Conflict,
                "an update is already being installed".into(),
            ));
        }
        let target = booted.other();
        let part = match target {
            Slot::A => "SYSCTR_ROOT_A",
            Slot::B => "SYSCTR_ROOT_B",
        };
        let find = |name: &str| {
            crate::mounts::find_partition(Path::new("/sys/class/block"), Path::new("/dev"), name)
                .ok_or((
                    ErrorKind::Failed,
                    format!("no {name} partition on this machine"),
                ))
        };
        let device = find(part)?;
        let esp_device = find(crate::bootslot::ESP_PARTNAME)?;
        let args = HelperArgs {
            slot: target,
            device: device.clone(),
            esp_device,
            allow_downgrade,
            offline: bundle.is_none(),
        };
        let helper = crate::helper_proc::spawn("update", args.to_args(), bundle)
            .map_err(|e| (ErrorKind::Failed, e.to_string()))?;
        let pid = helper.pid;
        self.running = Some(Running {
            pid,
            client,
            output: helper,
            pending: Vec::new(),
            reboot,
            result: None,
            version: None,
        });
        Ok(format!(
            "{} slot {target} ({}), helper pid {pid}",
            if client == OFFLINE_CLIENT {
                "looking for an update disk to install into"
            } else {
                "installing into"
            },
            device.display()
        ))
    }

    /// Reads what the helper printed so far (never blocks).
    pub fn poll(&mut self) -> Vec<Event> {
        let Some(r) = self.running.as_mut() else {
            return Vec::new();
        };
        let pending = &mut r.pending;
        r.output.read_available(|chunk| {
            pending.extend_from_slice(chunk);
            if pending.len() > MAX_LINE * 4 {
                pending.clear();
            }
        });
        let mut events = Vec::new();
        while let Some(i) = r.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = r.pending.drain(..=i).collect();
            match serde_json::from_slice::<Line>(&line) {
                Ok(Line::Progress(p)) => events.push(Event::Progress {
                    client: r.client,
                    progress: p,
                }),
                Ok(other) => {
                    if let Line::Installed(i) = &other {
                        r.version = Some(i.version.clone());
                    }
                    r.result = Some(other);
                }
                Err(_) => {}
            }
        }
        events
    }

    /// The reaper saw `pid` exit: if it is the helper, the install is over.
    pub fn exited(&mut self, pid: i32, status: &str) -> Option<Event> {
        if self.pid() != Some(pid) {
            return None;
        }
        let mut events = self.poll();
        let r = self.running.take()?;
        let _ = events.drain(..);
        if let Some(Line::Skipped { message }) = r.result {
            return Some(Event::Skipped { message });
        }
        let result = match r.result {
            Some(Line::Installed(i)) => Ok(i),
            Some(Line::Error { kind, message }) => Err((kind, message)),
            _ => Err((
                ErrorKind::Failed,
                format!("the update helper ended ({status}) without a result"),
            )),
        };
        let last = LastUpdate {
            version: r.version.clone(),
            slot: result.as_ref().ok().map(|i| i.slot),
            result: match &result {
                Ok(_) => UpdateResult::Installed,
                Err((ErrorKind::BadRequest, _)) => UpdateResult::Refused,
                Err(_) => UpdateResult::Failed,
            },
            reason: result.as_ref().err().map(|(_, m)| m.clone()),
            at_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        if let Err(e) = write_last(Path::new(LAST_FILE), &last) {
            crate::warn!("update", "cannot record the result: {e}");
        }
        Some(Event::Finished {
            client: r.client,
            result,
            reboot: r.reboot,
        })
    }
}

/// Writes the last result atomically (write, fsync, rename).
pub fn write_last(path: &Path, last: &LastUpdate) -> Result<(), String> {
    let dir = path.parent().ok_or("no parent")?;
    fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(last).map_err(|e| e.to_string())?;
    let mut f = File::create(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    f.write_all(&text)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path).map_err(|e| format!("rename {}: {e}", path.display()))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn read_last(path: &Path) -> Option<LastUpdate> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_arguments_round_trip_and_refuse_junk() {
        let a = HelperArgs {
            slot: Slot::B,
            device: "/dev/nvme0n1p3".into(),
            esp_device: "/dev/nvme0n1p1".into(),
            allow_downgrade: true,
            offline: false,
        };
        assert_eq!(HelperArgs::parse(&a.to_args()).unwrap(), a);
        let offline = HelperArgs {
            offline: true,
            allow_downgrade: false,
            ..a.clone()
        };
        assert_eq!(HelperArgs::parse(&offline.to_args()).unwrap(), offline);
        assert!(HelperArgs::parse(&["--slot".into(), "c".into()]).is_err());
        assert!(HelperArgs::parse(&["--device".into()]).is_err());
        assert!(HelperArgs::parse(&["--bogus".into()])
            .unwrap_err()
            .contains("--bogus"));
        assert!(HelperArgs::parse(&[HELPER_FLAG.into()])
            .unwrap_err()
            .contains("--slot"));
    }

    #[test]
    fn last_result_is_written_atomically_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("update/last.json");
        let last = LastUpdate {
            version: Some("2.0.0".into()),
            slot: Some(Slot::B),
            result: UpdateResult::Refused,
            reason: Some("bad signature".into()),
            at_ms: 5,
        };
        write_last(&path, &last).unwrap();
        assert_eq!(read_last(&path), Some(last));
        assert!(!path.with_extension("tmp").exists());
        fs::write(&path, b"{").unwrap();
        assert_eq!(read_last(&path), None);
    }

    #[test]
    fn output_lines_parse() {
        let l = Line::Error {
            kind: ErrorKind::BadRequest,
            message: "x".into(),
        };
        let text = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), l);
        let s = Line::Skipped {
            message: "no update disk".into(),
        };
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Line>(&text).unwrap(), s);
    }
}

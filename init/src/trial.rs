//! A trial boot's end, as the event loop sees it: the health gate's verdict recorded in the
//! boot history, a good entry blessed on the ESP, a bad one marked and left for the other
//! slot, and the boot tests' hook that hangs a trial boot on purpose.

use crate::config::PowerAction;
use crate::{bootslot, control, error, info, update, warn};

/// A trial boot of a boot-test image whose release.json names a test hook. `hang-in-trial`
/// stops PID 1 for good with the watchdog armed: the hardware must reset the machine and the
/// boot counter must take it back to the previous slot (boot-tests/tests/update.rs).
pub fn test_hook_in_trial() {
    let hook = match update::run::read_release(std::path::Path::new(update::run::RELEASE_FILE)) {
        Ok(r) => r.test_hook,
        Err(_) => None,
    };
    match hook.as_deref() {
        None => {}
        Some(update::run::HOOK_HANG_IN_TRIAL) => {
            error!(
                "test",
                "test hook {}: PID 1 hangs here, the watchdog must reset the machine",
                update::run::HOOK_HANG_IN_TRIAL
            );
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Some(other) => warn!(
            "test",
            "{}: unknown test hook {other:?} ignored (known: {})",
            update::run::RELEASE_FILE,
            update::run::HOOK_HANG_IN_TRIAL
        ),
    }
}

/// The boot history on the state partition (health-gate verdicts).
pub const BOOT_HISTORY: &str = "/var/lib/sysctr/boot";

/// The health gate found the trial boot bad: the entry is marked as having no tries left and
/// the machine reboots into the other slot. Without another good entry it stays up, degraded.
pub fn bad_boot(
    boot_info: &mut Option<manifest::protocol::BootInfo>,
    control: Option<&mut control::ControlServer>,
    why: &str,
) -> Option<PowerAction> {
    let b = boot_info.as_mut()?;
    error!("health", "trial boot failed the health gate: {why}");
    b.health = Some(format!("bad: {why}"));
    if let Err(e) = bootslot::record(std::path::Path::new(BOOT_HISTORY), b, "bad", why) {
        warn!("health", "cannot record the verdict: {e}");
    }
    let res = bootslot::mark_bad(b);
    if let Some(c) = control {
        c.boot = Some(b.clone());
    }
    match res {
        Ok(what) => {
            error!(
                "health",
                "marked the boot entry bad ({what}); rebooting into the other slot"
            );
            Some(PowerAction::Reboot)
        }
        Err(e) => {
            error!(
                "health",
                "cannot fall back ({e}); staying up on this slot, degraded"
            );
            None
        }
    }
}

/// Once the health gate passes, a boot-counted entry is blessed (its counter removed from its
/// file name on the ESP), so systemd-boot keeps choosing it. Tried once per boot.
pub fn bless_once(
    boot_info: &mut Option<manifest::protocol::BootInfo>,
    control: Option<&mut control::ControlServer>,
) {
    let Some(b) = boot_info.as_mut() else { return };
    if b.boot_count_path.is_none() {
        return;
    }
    match bootslot::bless(b) {
        Ok(Some(what)) => {
            info!("boot", "blessed the boot entry: {what}");
            b.health = Some("blessed: every service Ready and settled".into());
            if let Err(e) = bootslot::record(std::path::Path::new(BOOT_HISTORY), b, "blessed", "") {
                warn!("health", "cannot record the verdict: {e}");
            }
        }
        Ok(None) => {}
        Err(e) => {
            error!("boot", "cannot bless the boot entry: {e}");
            // Not again this boot: the loader's counter decides next time.
            b.boot_count_path = None;
        }
    }
    if let Some(c) = control {
        c.boot = Some(b.clone());
    }
}

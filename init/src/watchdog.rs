//! The hardware watchdog: PID 1 opens `/dev/watchdog` (i6300esb in QEMU, iTCO_wdt on Intel
//! chipsets, …), sets its timeout and writes to it on every turn of the event loop (at
//! least once a second). If the kernel or PID 1 hangs — during a trial boot or ever after —
//! the hardware resets the machine; on a trial boot systemd-boot's counter then picks the
//! previous slot. The timeout is above every bound the loop can be held for (a container
//! start is cut off at `sysctr.start_timeout`, 30 s by default).
//!
//! At shutdown the watchdog is disarmed with the magic close ('V'), so a long orderly stop
//! is not cut short; the shutdown path has its own bounds.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::Duration;

pub const DEVICE: &str = "/dev/watchdog";
/// Default timeout; `sysctr.watchdog=SECS` (0 = leave it closed) overrides it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

static DOG: Mutex<Option<File>> = Mutex::new(None);

nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);

/// `sysctr.watchdog=SECS` from the command line; None means the default.
pub fn timeout_from_cmdline(cmdline: &str) -> Result<Duration, String> {
    match cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sysctr.watchdog="))
    {
        None => Ok(DEFAULT_TIMEOUT),
        Some(v) => match v.parse::<u64>() {
            Ok(s) if Duration::from_secs(s) <= MAX_TIMEOUT && (s == 0 || s >= 10) => {
                Ok(Duration::from_secs(s))
            }
            _ => Err(format!(
                "sysctr.watchdog={v}: expected 0 (off) or 10..{} seconds; using {}s",
                MAX_TIMEOUT.as_secs(),
                DEFAULT_TIMEOUT.as_secs()
            )),
        },
    }
}

/// Opens and arms the watchdog. Returns what was done, or why not (no device is not an error:
/// many machines have none).
pub fn arm(timeout: Duration) -> Result<String, String> {
    if timeout.is_zero() {
        return Ok("off (sysctr.watchdog=0)".into());
    }
    let f = match File::options().write(true).open(DEVICE) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(format!("no {DEVICE}: hangs are not caught by hardware"))
        }
        Err(e) => return Err(format!("open {DEVICE}: {e}")),
    };
    let mut secs = timeout.as_secs() as libc::c_int;
    // SAFETY: WDIOC_SETTIMEOUT reads and writes one c_int through the pointer we pass.
    #[allow(unsafe_code)]
    let set = unsafe { wdioc_settimeout(f.as_raw_fd(), &mut secs) };
    let msg = match set {
        Ok(_) => format!("{DEVICE} armed, timeout {secs}s"),
        Err(e) => format!(
            "{DEVICE} armed with its default timeout (cannot set {}s: {e})",
            timeout.as_secs()
        ),
    };
    *DOG.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    pet();
    Ok(msg)
}

/// Tells the watchdog PID 1 is alive.
pub fn pet() {
    if let Some(f) = DOG.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        let _ = f.write_all(b"1");
    }
}

/// Magic close: 'V' then close stops the timer (drivers built without NOWAYOUT).
pub fn disarm() {
    if let Some(mut f) = DOG.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = f.write_all(b"V");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_is_bounded() {
        assert_eq!(timeout_from_cmdline("ro").unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(
            timeout_from_cmdline("sysctr.watchdog=0").unwrap(),
            Duration::ZERO
        );
        assert_eq!(
            timeout_from_cmdline("sysctr.watchdog=90").unwrap(),
            Duration::from_secs(90)
        );
        for bad in ["5", "601", "x", "18446744073709551616"] {
            assert!(timeout_from_cmdline(&format!("sysctr.watchdog={bad}")).is_err());
        }
    }
}

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

#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error(
        "sysctr.watchdog={value}: expected 0 (off) or 10..{} seconds; using {}s",
        MAX_TIMEOUT.as_secs(),
        DEFAULT_TIMEOUT.as_secs()
    )]
    BadTimeout { value: String },
    #[error("cannot open {device}: {source}")]
    Open {
        device: &'static str,
        source: std::io::Error,
    },
}

/// What [`arm`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Armed {
    /// `sysctr.watchdog=0`.
    Off,
    /// No watchdog device: many machines have none.
    NoDevice,
    /// Armed with the timeout asked for.
    Timeout(Duration),
    /// Armed, but the driver refused the timeout asked for and keeps its own.
    DriverDefault { wanted: Duration, why: nix::Error },
}

impl std::fmt::Display for Armed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Armed::Off => write!(f, "off (sysctr.watchdog=0)"),
            Armed::NoDevice => write!(f, "no {DEVICE}: hangs are not caught by hardware"),
            Armed::Timeout(t) => write!(f, "{DEVICE} armed, timeout {}s", t.as_secs()),
            Armed::DriverDefault { wanted, why } => write!(
                f,
                "{DEVICE} armed with its default timeout (cannot set {}s: {why})",
                wanted.as_secs()
            ),
        }
    }
}

/// `sysctr.watchdog=SECS` from the command line; absent means [`DEFAULT_TIMEOUT`]. A bad
/// value is an error, and the caller arms with [`DEFAULT_TIMEOUT`] (as the error says).
pub fn timeout_from_cmdline(cmdline: &str) -> Result<Duration, WatchdogError> {
    match cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("sysctr.watchdog="))
    {
        None => Ok(DEFAULT_TIMEOUT),
        Some(v) => match v.parse::<u64>() {
            Ok(s) if Duration::from_secs(s) <= MAX_TIMEOUT && (s == 0 || s >= 10) => {
                Ok(Duration::from_secs(s))
            }
            _ => Err(WatchdogError::BadTimeout {
                value: v.to_string(),
            }),
        },
    }
}

/// Opens and arms the watchdog. Returns what was done; no device is not an error.
pub fn arm(timeout: Duration) -> Result<Armed, WatchdogError> {
    if timeout.is_zero() {
        return Ok(Armed::Off);
    }
    let f = match File::options().write(true).open(DEVICE) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Armed::NoDevice),
        Err(source) => {
            return Err(WatchdogError::Open {
                device: DEVICE,
                source,
            })
        }
    };
    let mut secs = timeout.as_secs() as libc::c_int;
    // SAFETY: WDIOC_SETTIMEOUT reads and writes one c_int through the pointer we pass.
    #[allow(unsafe_code)]
    let set = unsafe { wdioc_settimeout(f.as_raw_fd(), &mut secs) };
    let armed = match set {
        Ok(_) => Armed::Timeout(Duration::from_secs(secs.max(0) as u64)),
        Err(why) => Armed::DriverDefault {
            wanted: timeout,
            why,
        },
    };
    *DOG.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    pet();
    Ok(armed)
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
            let e = timeout_from_cmdline(&format!("sysctr.watchdog={bad}")).unwrap_err();
            assert!(
                matches!(&e, WatchdogError::BadTimeout { value } if value == bad),
                "{e:?}"
            );
            assert!(
                e.to_string()
                    .starts_with(&format!("sysctr.watchdog={bad}: ")),
                "{e}"
            );
        }
    }
}

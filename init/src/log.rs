//! PID 1's own log: every line goes to the console and to /dev/kmsg (so it survives in the
//! kernel ring buffer and reaches `dmesg`), tagged with the boot step or subsystem that
//! wrote it. The level comes from the kernel command line (`sysctr.log=debug`).
//!
//! Once /dev/kmsg takes every line (boot step `kmsg-unlimited`), a line the kernel itself
//! prints on the console (its level is below the console log level) is not written to the
//! console a second time: the console shows it once, with the kernel's timestamp.
//!
//! Once /var is on the state partition, every line also goes to this boot's `init.log`
//! there ([`open_file`], see `bootlogs`); the lines written before that are held in memory
//! (up to [`EARLY_BYTES`]) and written first.
//!
//! Writes are best-effort and never block for long: the console is opened non-blocking,
//! and a failed write is dropped rather than allowed to stall the event loop.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 3,
    Warn = 4,
    Info = 6,
    Debug = 7,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s {
            "error" => Some(Level::Error),
            "warn" | "warning" => Some(Level::Warn),
            "info" => Some(Level::Info),
            "debug" => Some(Level::Debug),
            _ => None,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
        }
    }
}

struct Sinks {
    level: Level,
    console: Option<File>,
    kmsg: Option<File>,
    /// /dev/kmsg is not rate-limited, so a line written there is not lost.
    kmsg_unlimited: bool,
    /// In test mode the log also goes to stderr, which the test harness captures.
    stderr: bool,
    /// This boot's `init.log` on the state partition.
    file: Option<crate::logs::RotatingFile>,
    /// Lines written before the file is open (None once it is, or once there is none).
    early: Option<Vec<String>>,
    early_bytes: usize,
}

/// How much of the log before /var is mounted is held for `init.log`.
pub const EARLY_BYTES: usize = 256 << 10;

thread_local! {
    static SINKS: RefCell<Sinks> = const { RefCell::new(Sinks { level: Level::Info, console: None, kmsg: None, kmsg_unlimited: false, stderr: true, file: None, early: Some(Vec::new()), early_bytes: 0 }) };
}

/// A line as `init.log` stores it: `<ts_ms> <stdout|stderr> LEVEL [scope] message`, the
/// format of the services' log files (warnings and errors count as stderr).
fn file_line(level: Level, line: &str) -> String {
    let stream = if level <= Level::Warn {
        "stderr"
    } else {
        "stdout"
    };
    let text = line.strip_prefix("sysctr: ").unwrap_or(line);
    format!("{} {stream} {text}", crate::logs::now_ms())
}

/// From now on every line also goes to `path` (this boot's `init.log`), the early ones
/// first.
pub fn open_file(path: std::path::PathBuf) {
    let early = SINKS.with(|s| {
        let mut s = s.borrow_mut();
        s.early_bytes = 0;
        s.early.take().unwrap_or_default()
    });
    // Opened outside the borrow: a refusal is logged, which borrows the sinks again.
    let mut f = crate::logs::RotatingFile::new(path);
    for l in &early {
        f.write_line(l);
    }
    SINKS.with(|s| s.borrow_mut().file = Some(f));
}

/// There is no `init.log` this boot: forget the early lines.
pub fn no_file() {
    SINKS.with(|s| {
        let mut s = s.borrow_mut();
        s.early = None;
        s.early_bytes = 0;
    });
}

/// Syncs and closes `init.log` (at shutdown, before /var is unmounted).
pub fn close_file() {
    let f = SINKS.with(|s| s.borrow_mut().file.take());
    if let Some(mut f) = f {
        f.sync();
    }
}

/// Opens /dev/console and /dev/kmsg. Called again after /dev is mounted, since at the very
/// first instruction they may not exist yet (until then lines go to stderr, which the
/// kernel connects to the console for PID 1).
pub fn open_sinks(use_devices: bool) {
    let open = |p: &str| {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(p)
            .ok()
    };
    SINKS.with(|s| {
        let mut s = s.borrow_mut();
        if use_devices {
            s.console = open("/dev/console");
            s.kmsg = open("/dev/kmsg");
            s.stderr = s.console.is_none();
        }
    });
}

/// /dev/kmsg now takes every line (`kernel.printk_devkmsg = on`).
pub fn kmsg_unlimited() {
    SINKS.with(|s| s.borrow_mut().kmsg_unlimited = true);
}

/// Whether the kernel prints a kmsg record of this syslog level on the console itself: the
/// level is below the console log level (the first field of /proc/sys/kernel/printk,
/// which `quiet`, `loglevel=` and `klogd -c` change).
fn kernel_echoes(level: u8) -> bool {
    std::fs::read_to_string("/proc/sys/kernel/printk")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u8>().ok())
        .is_some_and(|console_level| level < console_level)
}

/// Writes one line to the sinks: kmsg with the syslog `priority` in front, the console
/// unless the kernel echoes that record there itself, and stderr in test mode.
fn emit(s: &mut Sinks, priority: u8, line: &str) {
    let mut echoed = false;
    if let Some(k) = s.kmsg.as_mut() {
        // kmsg takes one record per write, with the syslog priority in front.
        let written = k
            .write_all(format!("<{priority}>{line}").as_bytes())
            .is_ok();
        echoed = written && s.kmsg_unlimited && kernel_echoes(priority);
    }
    if let Some(c) = s.console.as_mut() {
        if !echoed {
            write_console(c, line.as_bytes());
        }
    }
    if s.stderr {
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
}

pub fn set_level(level: Level) {
    SINKS.with(|s| s.borrow_mut().level = level);
}

pub fn enabled(level: Level) -> bool {
    SINKS.with(|s| level <= s.borrow().level)
}

pub fn write(level: Level, scope: &str, msg: std::fmt::Arguments<'_>) {
    SINKS.with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return; // re-entered from a panic while logging: drop the line
        };
        if level > s.level {
            return;
        }
        let line = format!("sysctr: {} [{}] {}\n", level.tag(), scope, msg);
        emit(&mut s, level as u8, &line);
        if s.file.is_some() || s.early.is_some() {
            let stored = file_line(level, &line);
            if let Some(f) = s.file.as_mut() {
                f.write_line(&stored);
            } else if s.early_bytes + stored.len() <= EARLY_BYTES {
                s.early_bytes += stored.len();
                if let Some(e) = s.early.as_mut() {
                    e.push(stored);
                }
            }
        }
    });
}

/// How long one line may wait for a busy console (a serial port drains ~11 KB/s).
const CONSOLE_BUDGET: std::time::Duration = std::time::Duration::from_millis(250);

/// Writes a line to the non-blocking console, waiting for it to drain when its buffer is
/// full, but never longer than [`CONSOLE_BUDGET`]: a stuck console loses lines rather than
/// stalling PID 1.
fn write_console(c: &mut File, mut buf: &[u8]) {
    use std::os::fd::AsFd;
    let now = std::time::Instant::now();
    let deadline = now.checked_add(CONSOLE_BUDGET).unwrap_or(now);
    while !buf.is_empty() {
        match c.write(buf) {
            Ok(0) => return,
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return;
                }
                let mut fds = [nix::poll::PollFd::new(
                    c.as_fd(),
                    nix::poll::PollFlags::POLLOUT,
                )];
                let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
                let _ = nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms));
            }
            Err(_) => return,
        }
    }
}

#[macro_export]
macro_rules! error { ($scope:expr, $($a:tt)*) => { $crate::log::write($crate::log::Level::Error, $scope, format_args!($($a)*)) } }
#[macro_export]
macro_rules! warn { ($scope:expr, $($a:tt)*) => { $crate::log::write($crate::log::Level::Warn, $scope, format_args!($($a)*)) } }
#[macro_export]
macro_rules! info { ($scope:expr, $($a:tt)*) => { $crate::log::write($crate::log::Level::Info, $scope, format_args!($($a)*)) } }
#[macro_export]
macro_rules! debug { ($scope:expr, $($a:tt)*) => { if $crate::log::enabled($crate::log::Level::Debug) { $crate::log::write($crate::log::Level::Debug, $scope, format_args!($($a)*)) } } }

/// A line for humans and boot tests, on the console exactly as given after `sysctr: `
/// (and in the kernel log), independent of the log level.
pub fn marker(text: &str) {
    SINKS.with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else {
            return;
        };
        emit(&mut s, 5, &format!("sysctr: {text}\n"));
    });
}

//! Logs kept per boot on the state partition, so that a reboot does not lose them (issue
//! 16, finding 17): `/var/log/sysctr/boots/<seq>/` holds `boot.json` (the kernel's boot id,
//! when it started), `services/<name>.log` (each service's lines, rotated as
//! [`crate::logs::RotatingFile`] does) and `init.log` (PID 1's own lines). `seq` counts up
//! from 1 on this partition; the [`KEEP_BOOTS`] newest boots are kept, older ones removed
//! when a boot starts. `sysctr logs --boot -1` and `--list-boots` read them back through
//! the control socket.
//!
//! Everything here is PID 1's own: the directories are opened without following symlinks
//! and must belong to PID 1, so a file planted on the partition cannot redirect a read or
//! a removal elsewhere.

use manifest::protocol::{LogEntry, PastBoot, Stream};
use std::fs;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How many boots' logs are kept (this one included).
pub const KEEP_BOOTS: usize = 10;
/// At most this many bytes and lines of one log are answered for one request (the newest
/// ones): the answer is queued whole, and even a log of escaped control characters (6
/// bytes each in JSON) stays below the control server's queue limit.
pub const MAX_READ_BYTES: u64 = 1 << 20;
pub const MAX_LINES: usize = 20_000;
/// The sub-directory of a boot's directory that holds the services' log files.
pub const SERVICES_DIR: &str = "services";
/// PID 1's own log file in a boot's directory.
pub const INIT_LOG: &str = "init.log";

#[derive(Debug, thiserror::Error)]
pub enum BootLogError {
    #[error("no logs are kept across boots: /var is not on the state partition this boot")]
    NotPersistent,
    #[error("boot {boot} is not kept: --boot takes 0 (this boot) down to {oldest}")]
    NoSuchBoot { boot: i64, oldest: i64 },
    #[error("{name:?} is not a service name (no '/', not '.' or '..', 1 to 255 bytes)")]
    BadName { name: String },
    #[error("boot {boot} has no log of {what}")]
    NoLog { boot: i64, what: String },
    #[error("{path}: {why}")]
    Unsafe { path: String, why: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BootLogError + '_ {
    move |source| BootLogError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Checks that `path` is a real directory of PID 1's (not a symlink, owned by our uid, not
/// writable by others).
fn check_own_dir(path: &Path) -> Result<(), BootLogError> {
    let meta = fs::symlink_metadata(path).map_err(io_err(path))?;
    let bad = |why: String| BootLogError::Unsafe {
        path: path.display().to_string(),
        why,
    };
    if !meta.file_type().is_dir() {
        return Err(bad("not a directory (a symlink is refused)".into()));
    }
    match crate::sys::not_pid1s_own(&meta) {
        Some(why) => Err(bad(why)),
        None => Ok(()),
    }
}

fn mkdir(path: &Path) -> Result<(), BootLogError> {
    match fs::DirBuilder::new().mode(0o750).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// The boots kept under `boots`, as (seq, directory), oldest first. Entries that are not
/// PID 1's directories with a decimal name are ignored.
fn kept(boots: &Path) -> Result<Vec<(u64, PathBuf)>, BootLogError> {
    check_own_dir(boots)?;
    let mut v = Vec::new();
    for e in fs::read_dir(boots).map_err(io_err(boots))?.flatten() {
        let name = e.file_name();
        let Some(seq) = name
            .to_str()
            .filter(|n| !n.is_empty() && n.len() <= 19 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if check_own_dir(&e.path()).is_ok() {
            v.push((seq, e.path()));
        }
    }
    v.sort();
    Ok(v)
}

/// Starts this boot's directory under `log_root` (`/var/log/sysctr`): the next number,
/// `boot.json`, the services' directory; removes the oldest boots beyond [`KEEP_BOOTS`].
/// Returns the new boot's directory.
pub fn start(log_root: &Path, boot_id: &str, now_ms: u64) -> Result<PathBuf, BootLogError> {
    mkdir(log_root)?;
    check_own_dir(log_root)?;
    let boots = log_root.join("boots");
    mkdir(&boots)?;
    let old = kept(&boots)?;
    let seq = old.last().map_or(1, |(s, _)| s.saturating_add(1));
    let dir = boots.join(seq.to_string());
    mkdir(&dir)?;
    check_own_dir(&dir)?;
    mkdir(&dir.join(SERVICES_DIR))?;
    let info = serde_json::json!({ "seq": seq, "boot_id": boot_id, "started_ms": now_ms });
    let file = dir.join("boot.json");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&file)
        .and_then(|mut f| {
            use std::io::Write;
            // Not fsynced: a journal commit on the boot's path for a record the listing
            // does without (a boot whose boot.json a power cut emptied is listed by number).
            f.write_all(format!("{info}\n").as_bytes())
        })
        .map_err(io_err(&file))?;
    let excess = (old.len() + 1).saturating_sub(KEEP_BOOTS);
    for (_, d) in old.iter().take(excess) {
        // remove_dir_all does not follow symlinks inside the tree.
        if let Err(e) = fs::remove_dir_all(d) {
            crate::warn!(
                "logs",
                "cannot remove the old boot log {}: {e}",
                d.display()
            );
        }
    }
    Ok(dir)
}

/// The kept boots, oldest first, with `index` counted back from the newest (0).
pub fn list(log_root: &Path) -> Result<Vec<PastBoot>, BootLogError> {
    let boots = kept(&log_root.join("boots"))?;
    let n = boots.len() as i64;
    Ok(boots
        .into_iter()
        .enumerate()
        .map(|(i, (seq, dir))| {
            let info: serde_json::Value = fs::read(dir.join("boot.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let mut services: Vec<String> = fs::read_dir(dir.join(SERVICES_DIR))
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| {
                            e.file_name()
                                .to_str()?
                                .strip_suffix(".log")
                                .map(str::to_string)
                        })
                        .collect()
                })
                .unwrap_or_default();
            services.sort();
            PastBoot {
                index: i as i64 - (n - 1),
                seq,
                boot_id: info["boot_id"].as_str().unwrap_or("").to_string(),
                started_ms: info["started_ms"].as_u64().unwrap_or(0),
                services,
            }
        })
        .collect())
}

/// A service name as a file name: what the manifest allows, checked again because a past
/// boot may be asked about a service this manifest no longer has.
fn check_name(name: &str) -> Result<(), BootLogError> {
    if name.is_empty()
        || name.len() > 255
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
    {
        return Err(BootLogError::BadName { name: name.into() });
    }
    Ok(())
}

/// Opens a log file of PID 1's without following a symlink, as a plain file.
fn open_log(path: &Path) -> Result<Option<fs::File>, BootLogError> {
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => {
            let meta = f.metadata().map_err(io_err(path))?;
            if !meta.file_type().is_file() {
                return Err(BootLogError::Unsafe {
                    path: path.display().to_string(),
                    why: "not a plain file".into(),
                });
            }
            Ok(Some(f))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => Err(BootLogError::Unsafe {
            path: path.display().to_string(),
            why: "a symlink is refused".into(),
        }),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Parses one stored line, `<ts_ms> <stream> <text>`; a line torn by a power cut is kept
/// as it is, with time 0.
pub fn parse_line(line: &str) -> LogEntry {
    let mut parts = line.splitn(3, ' ');
    let parsed = (|| {
        let ts_ms = parts.next()?.parse::<u64>().ok()?;
        let stream = match parts.next()? {
            "stdout" => Stream::Stdout,
            "stderr" => Stream::Stderr,
            "kernel" => Stream::Kernel,
            _ => return None,
        };
        Some(LogEntry {
            ts_ms,
            stream,
            line: parts.next().unwrap_or("").to_string(),
        })
    })();
    parsed.unwrap_or_else(|| LogEntry {
        ts_ms: 0,
        stream: Stream::Stdout,
        line: line.to_string(),
    })
}

/// The lines of the log `base` (`name.log`) and its rotated files (`name.log.N` … `.1`),
/// oldest first, reading at most [`MAX_READ_BYTES`] of the newest. `None` if there is no
/// such log at all.
fn read_rotated(base: &Path) -> Result<Option<Vec<LogEntry>>, BootLogError> {
    let mut files = Vec::new();
    for i in 0..=crate::logs::ROTATE_KEEP {
        let p = if i == 0 {
            base.to_path_buf()
        } else {
            PathBuf::from(format!("{}.{i}", base.display()))
        };
        if let Some(f) = open_log(&p)? {
            files.push((p, f));
        }
    }
    if files.is_empty() {
        return Ok(None);
    }
    // Newest first, within the byte budget.
    let mut budget = MAX_READ_BYTES;
    let mut chunks: Vec<String> = Vec::new();
    for (p, mut f) in files {
        if budget == 0 {
            break;
        }
        let len = f.metadata().map_err(io_err(&p))?.len();
        let take = len.min(budget);
        let cut = take < len;
        f.seek(SeekFrom::Start(len - take)).map_err(io_err(&p))?;
        let mut buf = Vec::with_capacity(take as usize);
        f.take(take).read_to_end(&mut buf).map_err(io_err(&p))?;
        budget -= take;
        let mut text = String::from_utf8_lossy(&buf).into_owned();
        if cut {
            // The first line was cut by the budget: drop its tail end.
            text = text
                .split_once('\n')
                .map_or(String::new(), |(_, r)| r.into());
        }
        chunks.push(text);
    }
    let mut out = Vec::new();
    for text in chunks.iter().rev() {
        out.extend(text.lines().filter(|l| !l.is_empty()).map(parse_line));
    }
    Ok(Some(out))
}

/// The lines of boot `boot` (0 this one, -1 the previous, …): service `service`'s, or PID
/// 1's own when `service` is None; the last `lines` only, if given.
pub fn read(
    log_root: &Path,
    boot: i64,
    service: Option<&str>,
    lines: Option<usize>,
) -> Result<Vec<LogEntry>, BootLogError> {
    if let Some(name) = service {
        check_name(name)?;
    }
    let boots = kept(&log_root.join("boots"))?;
    let oldest = 1 - boots.len() as i64;
    let Some((_, dir)) = (boot <= 0 && boot >= oldest)
        .then(|| boots.get((boots.len() as i64 - 1 + boot) as usize))
        .flatten()
    else {
        return Err(BootLogError::NoSuchBoot {
            boot,
            oldest: oldest.min(0),
        });
    };
    let (base, what) = match service {
        Some(name) => (
            dir.join(SERVICES_DIR).join(format!("{name}.log")),
            format!("service {name}"),
        ),
        None => (dir.join(INIT_LOG), "PID 1".to_string()),
    };
    let mut entries = read_rotated(&base)?.ok_or(BootLogError::NoLog { boot, what })?;
    let keep = lines.unwrap_or(MAX_LINES).min(MAX_LINES);
    let skip = entries.len().saturating_sub(keep);
    entries.drain(..skip);
    Ok(entries)
}

/// This boot's id from the kernel, or "" where it cannot be read.
pub fn kernel_boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;

//! Service logs: each container's stdout and stderr arrive on pipes, are split into lines,
//! timestamped and tagged, and kept in a bounded per-service ring buffer (oldest lines go
//! first). When /var is persistent they are also appended to `/var/log/sysctr/<name>.log`,
//! rotated by size. Pipes are read non-blocking from the event loop, so a service that floods
//! its output costs CPU but never blocks init or another service.

use manifest::protocol::{LogEntry, Stream};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A single line longer than this is cut into pieces.
pub const MAX_LINE: usize = 16 * 1024;
/// Persistent log file size before rotation, and how many old files are kept.
pub const ROTATE_BYTES: u64 = 4 << 20;
pub const ROTATE_KEEP: usize = 3;

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An append-only log file rotated by size: `name.log`, `name.log.1`, … `name.log.N`.
///
/// The directory must be PID 1's: a real directory (not a symlink) owned by PID 1's user
/// and writable by nobody else. Files are opened and renamed relative to that directory's
/// descriptor with `O_NOFOLLOW`, and must be plain files with one link, so nothing planted
/// there makes PID 1 append to another file. A rotated file is fsynced before it is
/// renamed, and the directory after, so a power cut loses at most the unsynced tail.
pub struct RotatingFile {
    path: PathBuf,
    dir: Option<OwnedFd>,
    file: Option<File>,
    size: u64,
}

/// Why a log file cannot be used; logged once per open attempt, never fatal.
fn refuse(path: &Path, why: impl std::fmt::Display) {
    crate::warn!(
        "logs",
        "{}: {why}; this service's log is kept in memory only",
        path.display()
    );
}

/// Opens `dir` as PID 1's log directory, creating it (0750) if it is missing.
fn open_owned_dir(dir: &Path) -> Result<OwnedFd, String> {
    use std::os::unix::fs::DirBuilderExt;
    let _ = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir);
    let fd = crate::sys::open_dir_nofollow(None, dir)
        .map_err(|e| format!("cannot open the log directory: {e} (a symlink is refused)"))?;
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| format!("fstat: {e}"))?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "the log directory belongs to uid {}, not PID 1",
            st.st_uid
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(format!(
            "the log directory is writable by others (mode {:o})",
            st.st_mode & 0o7777
        ));
    }
    Ok(fd)
}

impl RotatingFile {
    pub fn new(path: PathBuf) -> RotatingFile {
        RotatingFile {
            path,
            dir: None,
            file: None,
            size: 0,
        }
    }

    fn name(&self, i: usize) -> String {
        let base = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if i == 0 {
            base
        } else {
            format!("{base}.{i}")
        }
    }

    fn open(&mut self) -> Option<&mut File> {
        if self.file.is_none() {
            if self.dir.is_none() {
                let parent = self.path.parent().unwrap_or(Path::new("/"));
                match open_owned_dir(parent) {
                    Ok(fd) => self.dir = Some(fd),
                    Err(e) => {
                        refuse(&self.path, e);
                        return None;
                    }
                }
            }
            let dir = self.dir.as_ref()?;
            let fd = match nix::fcntl::openat(
                Some(dir.as_raw_fd()),
                self.name(0).as_str(),
                OFlag::O_WRONLY
                    | OFlag::O_APPEND
                    | OFlag::O_CREAT
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_NOCTTY
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o640),
            ) {
                Ok(fd) => File::from(crate::sys::own_received_fd(fd)),
                Err(e) => {
                    refuse(
                        &self.path,
                        format!("cannot open: {e} (a symlink is refused)"),
                    );
                    return None;
                }
            };
            let meta = f_meta(&fd)?;
            if !meta.file_type().is_file() || meta.nlink() != 1 {
                refuse(&self.path, "not a plain file with a single link");
                return None;
            }
            self.size = meta.len();
            self.file = Some(fd);
        }
        self.file.as_mut()
    }

    pub fn write_line(&mut self, text: &str) {
        if self.size >= ROTATE_BYTES {
            self.rotate();
        }
        if let Some(f) = self.open() {
            if f.write_all(text.as_bytes()).is_ok() {
                self.size = self.size.saturating_add(text.len() as u64);
            }
        }
    }

    fn rotate(&mut self) {
        if let Some(f) = self.file.take() {
            let _ = f.sync_all();
        }
        self.size = 0;
        let Some(dir) = self.dir.as_ref() else {
            return;
        };
        let d = Some(dir.as_raw_fd());
        let _ = nix::unistd::unlinkat(
            d,
            self.name(ROTATE_KEEP).as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        for i in (0..ROTATE_KEEP).rev() {
            let _ = nix::fcntl::renameat(d, self.name(i).as_str(), d, self.name(i + 1).as_str());
        }
        let _ = nix::unistd::fsync(dir.as_raw_fd());
    }

    /// Flushes the file to disk (at shutdown, before /var is unmounted).
    pub fn sync(&mut self) {
        if let Some(f) = self.file.as_ref() {
            let _ = f.sync_all();
        }
    }
}

fn f_meta(f: &File) -> Option<std::fs::Metadata> {
    f.metadata().ok()
}

/// The log of one service.
pub struct LogBuffer {
    entries: VecDeque<LogEntry>,
    bytes: usize,
    capacity: usize,
    /// Bytes of an unfinished line, per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
    file: Option<RotatingFile>,
}

fn entry_cost(e: &LogEntry) -> usize {
    e.line.len() + 32
}

impl LogBuffer {
    pub fn new(capacity: usize, file: Option<PathBuf>) -> LogBuffer {
        LogBuffer {
            entries: VecDeque::new(),
            bytes: 0,
            capacity,
            partial: [Vec::new(), Vec::new()],
            file: file.map(RotatingFile::new),
        }
    }

    pub fn push(&mut self, entry: LogEntry) {
        if let Some(f) = self.file.as_mut() {
            let stream = match entry.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
                Stream::Kernel => "kernel",
            };
            f.write_line(&format!("{} {} {}\n", entry.ts_ms, stream, entry.line));
        }
        self.bytes += entry_cost(&entry);
        self.entries.push_back(entry);
        while self.bytes > self.capacity {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= entry_cost(&old),
                None => break,
            }
        }
    }

    /// Takes bytes read from a pipe; returns the complete lines they finished.
    pub fn ingest(&mut self, stream: Stream, data: &[u8], ts_ms: u64) -> Vec<LogEntry> {
        let idx = usize::from(stream == Stream::Stderr);
        let mut out = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let room = MAX_LINE - self.partial[idx].len();
            match rest.iter().take(room).position(|b| *b == b'\n') {
                Some(nl) => {
                    self.partial[idx].extend_from_slice(&rest[..nl]);
                    rest = &rest[nl + 1..];
                }
                None if rest.len() >= room => {
                    self.partial[idx].extend_from_slice(&rest[..room]);
                    rest = &rest[room..];
                }
                None => {
                    self.partial[idx].extend_from_slice(rest);
                    break;
                }
            }
            let line = std::mem::take(&mut self.partial[idx]);
            out.push(self.finish(stream, line, ts_ms));
        }
        out
    }

    /// The stream ended: an unterminated last line still counts.
    pub fn close_stream(&mut self, stream: Stream, ts_ms: u64) -> Option<LogEntry> {
        let idx = usize::from(stream == Stream::Stderr);
        if self.partial[idx].is_empty() {
            return None;
        }
        let line = std::mem::take(&mut self.partial[idx]);
        Some(self.finish(stream, line, ts_ms))
    }

    fn finish(&mut self, stream: Stream, line: Vec<u8>, ts_ms: u64) -> LogEntry {
        let mut text = String::from_utf8_lossy(&line).into_owned();
        if text.ends_with('\r') {
            text.pop();
        }
        let entry = LogEntry {
            ts_ms,
            stream,
            line: text,
        };
        self.push(entry.clone());
        entry
    }

    /// The retained lines, filtered: at or after `since_ms`, then the last `lines`.
    pub fn tail(&self, lines: Option<usize>, since_ms: Option<u64>) -> Vec<LogEntry> {
        let matching: Vec<&LogEntry> = self
            .entries
            .iter()
            .filter(|e| since_ms.is_none_or(|s| e.ts_ms >= s))
            .collect();
        let skip = lines.map_or(0, |n| matching.len().saturating_sub(n));
        matching.into_iter().skip(skip).cloned().collect()
    }

    /// Closes the log file for good (at shutdown, before /var is unmounted); the ring
    /// buffer goes on.
    pub fn close_file(&mut self) {
        if let Some(f) = self.file.as_mut() {
            f.sync();
        }
        self.file = None;
    }

    #[cfg(test)]
    pub fn retained_bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_reads_and_streams() {
        let mut b = LogBuffer::new(1 << 20, None);
        assert!(b.ingest(Stream::Stdout, b"hel", 1).is_empty());
        assert!(b.ingest(Stream::Stderr, b"oops\n", 2).len() == 1);
        let got = b.ingest(Stream::Stdout, b"lo\nworld\npart", 3);
        assert_eq!(
            got.iter().map(|e| e.line.as_str()).collect::<Vec<_>>(),
            ["hello", "world"]
        );
        assert_eq!(b.close_stream(Stream::Stdout, 4).unwrap().line, "part");
        let all = b.tail(None, None);
        assert_eq!(
            all.iter()
                .map(|e| (e.stream, e.line.as_str()))
                .collect::<Vec<_>>(),
            [
                (Stream::Stderr, "oops"),
                (Stream::Stdout, "hello"),
                (Stream::Stdout, "world"),
                (Stream::Stdout, "part")
            ]
        );
        assert_eq!(b.tail(Some(1), None)[0].line, "part");
        assert_eq!(b.tail(None, Some(3)).len(), 3);
    }

    #[test]
    fn ring_is_bounded_and_drops_oldest() {
        let mut b = LogBuffer::new(4096, None);
        for i in 0..1000 {
            b.ingest(Stream::Stdout, format!("line {i}\n").as_bytes(), i);
        }
        assert!(b.retained_bytes() <= 4096);
        let t = b.tail(None, None);
        assert_eq!(t.last().unwrap().line, "line 999");
        assert!(t.len() < 1000 && t.len() > 50);
    }

    #[test]
    fn long_lines_are_cut() {
        let mut b = LogBuffer::new(1 << 20, None);
        let got = b.ingest(Stream::Stdout, &vec![b'x'; MAX_LINE * 2 + 10], 1);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].line.len(), MAX_LINE);
    }

    #[test]
    fn file_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("svc.log");
        let mut f = RotatingFile::new(path.clone());
        let line = "x".repeat(1023) + "\n";
        for _ in 0..(ROTATE_BYTES as usize / 1024) * 2 + 1 {
            f.write_line(&line);
        }
        assert!(path.exists());
        assert!(dir.path().join("svc.log.1").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= ROTATE_BYTES);
    }

    fn owned_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        dir
    }

    #[test]
    fn a_symlink_in_place_of_the_log_file_is_not_followed() {
        let dir = owned_dir();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let path = dir.path().join("svc.log");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let mut f = RotatingFile::new(path.clone());
        f.write_line("attacker-controlled line\n");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(std::fs::symlink_metadata(&path)
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn a_hard_link_in_place_of_the_log_file_is_not_written() {
        let dir = owned_dir();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let path = dir.path().join("svc.log");
        std::fs::hard_link(&victim, &path).unwrap();
        let mut f = RotatingFile::new(path);
        f.write_line("attacker-controlled line\n");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }

    #[test]
    fn a_symlinked_or_shared_log_directory_is_refused() {
        let dir = owned_dir();
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let link = dir.path().join("logs");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        let mut f = RotatingFile::new(link.join("svc.log"));
        f.write_line("line\n");
        assert!(!elsewhere.join("svc.log").exists());

        use std::os::unix::fs::PermissionsExt;
        let open = dir.path().join("world-writable");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut f = RotatingFile::new(open.join("svc.log"));
        f.write_line("line\n");
        assert!(!open.join("svc.log").exists());
    }
}

//! PID 1's helper processes: its own binary started again with a helper flag
//! (`--image-helper`, `--update-helper`) for work that must not run in the event loop. The
//! helper's stdout is a non-blocking pipe PID 1 reads once per loop turn; its exit belongs
//! to the reaper (invariant 2), so the child handle is dropped without waiting. Both
//! runners ([`crate::images::runner`], [`crate::update::run`]) start theirs here.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("cannot make the pipe for the {helper} helper's output: {source}")]
    Pipe {
        helper: &'static str,
        source: nix::Error,
    },
    #[error("cannot start the {helper} helper {}: {source}", exe.display())]
    Spawn {
        helper: &'static str,
        exe: PathBuf,
        source: io::Error,
    },
}

/// A started helper: its pid (the reaper reports its exit) and its stdout.
pub struct Helper {
    pub pid: i32,
    output: File,
}

/// Starts this very binary — through /proc/self/exe, the file PID 1 runs: on the machine
/// the read-only initramfs' /init, which no path reaches any more (boot/root.rs; invariant 8)
/// — with `args`, `stdin` as its standard input (or /dev/null) and its stderr discarded.
/// `helper` names it in errors ("image", "update").
pub fn spawn(
    helper: &'static str,
    args: Vec<String>,
    stdin: Option<OwnedFd>,
) -> Result<Helper, SpawnError> {
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|source| SpawnError::Pipe { helper, source })?;
    let exe = PathBuf::from("/proc/self/exe");
    let child = Command::new(&exe)
        .args(args)
        .stdin(stdin.map_or_else(Stdio::null, Stdio::from))
        .stdout(Stdio::from(wr))
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| SpawnError::Spawn {
            helper,
            exe: exe.clone(),
            source,
        })?;
    let pid = child.id() as i32;
    // The reaper owns the exit (invariant 2): the handle is dropped without waiting.
    drop(child);
    let output = File::from(rd);
    let _ = nix::fcntl::fcntl(
        output.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    );
    Ok(Helper { pid, output })
}

impl Helper {
    /// Reads what the helper printed so far, never blocking, handing each chunk to `take`
    /// (which applies its runner's bound, invariant 12).
    pub fn read_available(&mut self, mut take: impl FnMut(&[u8])) {
        let mut buf = [0u8; 8192];
        while let Ok(n) = self.output.read(&mut buf) {
            if n == 0 {
                break;
            }
            take(&buf[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary is "this very binary" here: `--list` makes it print its tests on
    /// stdout, which must arrive through the pipe, read without blocking.
    #[test]
    fn the_helper_runs_this_binary_and_its_stdout_is_read_without_blocking() {
        let mut h = spawn("test", vec!["--list".into()], None).unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(h.pid), None).unwrap();
        let mut out = Vec::new();
        h.read_available(|c| out.extend_from_slice(c));
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("helper_proc::tests::the_helper_runs"), "{out}");
        // Nothing more to read and the writer is gone: returns at once.
        h.read_available(|c| panic!("read {} more bytes", c.len()));
    }
}

//! `sysctr notify`: the sd_notify protocol from a shell script, like systemd-notify. A
//! service with `"readiness": {"kind": "notify"}` runs it (from inside its container) to
//! tell init it is ready or what it is doing; it talks to `$NOTIFY_SOCKET`, not to the
//! control socket.
//!
//! init accepts a datagram only from a process in the service's cgroup, which it checks
//! when it reads the datagram, so the sender must still be alive then. The datagram
//! carries `BARRIER=1` and one end of a pipe; init closes that end once it has handled the
//! datagram, and this command waits for that (at most [`BARRIER_TIMEOUT`]) before it exits.

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use std::io::{IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// How long to wait for init to have handled the datagram.
pub const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  sysctr notify --ready
  sysctr notify --status 'loading 3 of 10'
  sysctr notify --ready --status serving")]
pub struct Args {
    /// Tell init the service is ready (READY=1).
    #[arg(long)]
    pub ready: bool,
    /// A one-line status shown by `sysctr ps --json` (STATUS=…).
    #[arg(long, value_name = "TEXT")]
    pub status: Option<String>,
}

/// The datagram sent: one `KEY=VALUE` per line.
pub fn message(args: &Args) -> String {
    let mut msg = String::new();
    if args.ready {
        msg.push_str("READY=1\n");
    }
    if let Some(s) = &args.status {
        msg.push_str(&format!("STATUS={}\n", s.replace('\n', " ")));
    }
    if !msg.is_empty() {
        msg.push_str("BARRIER=1\n");
    }
    msg
}

pub fn run(args: &Args, out: &mut dyn Write) -> Result<i32> {
    let msg = message(args);
    if msg.is_empty() {
        bail!("nothing to send: give --ready and/or --status");
    }
    let path = std::env::var_os("NOTIFY_SOCKET")
        .context("NOTIFY_SOCKET is not set: the service's readiness kind is not \"notify\"")?;
    let sock = UnixDatagram::unbound().context("create a datagram socket")?;
    let addr = UnixAddr::new(std::path::Path::new(&path))
        .with_context(|| format!("NOTIFY_SOCKET {path:?} is not a socket path"))?;
    let (barrier, theirs) = nix::unistd::pipe().context("create the barrier pipe")?;
    let fds = [theirs.as_raw_fd()];
    sendmsg(
        sock.as_raw_fd(),
        &[IoSlice::new(msg.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        Some(&addr),
    )
    .with_context(|| {
        format!(
            "send to NOTIFY_SOCKET {}",
            std::path::Path::new(&path).display()
        )
    })?;
    drop(theirs);
    // The pipe reports a hang-up once init has closed its copy: the datagram is handled.
    let mut fds = [PollFd::new(barrier.as_fd(), PollFlags::POLLIN)];
    let ms = BARRIER_TIMEOUT.as_millis() as u16;
    let _ = poll(&mut fds, PollTimeout::from(ms));
    let _ = out;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_ready_and_status_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let args = Args {
            ready: true,
            status: Some("serving\nnow".into()),
        };
        assert_eq!(message(&args), "READY=1\nSTATUS=serving now\nBARRIER=1\n");
        std::env::set_var("NOTIFY_SOCKET", &path);
        // The receiver reads (and so drops the barrier descriptor) while `run` waits.
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let n = server.recv(&mut buf).unwrap();
            buf[..n].to_vec()
        });
        let t = std::time::Instant::now();
        run(&args, &mut Vec::new()).unwrap();
        assert!(
            t.elapsed() < BARRIER_TIMEOUT,
            "the barrier ended when the datagram was read"
        );
        assert_eq!(
            reader.join().unwrap(),
            b"READY=1\nSTATUS=serving now\nBARRIER=1\n"
        );
        assert!(run(
            &Args {
                ready: false,
                status: None
            },
            &mut Vec::new()
        )
        .is_err());
    }
}

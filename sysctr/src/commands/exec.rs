//! `sysctr exec`: run a process inside a running service's container. The process gets
//! this command's own stdin, stdout and stderr, passed to init as file descriptors with the
//! request; with `-t` it gets a new pseudo-terminal instead, whose other side this command
//! connects to the user's terminal until the process exits.

use crate::client::{Client, ClientError};
use crate::tty::{self, RawMode};
use anyhow::Context;
use manifest::protocol::{ExitStatus, Op, Request, Response};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The command runs in the service's namespaces and cgroup, as the service's user. This
command exits with the process's exit code, or 128+N when signal N killed it. Only root may
exec.

Examples:
  sysctr exec ssh -- cat /etc/os-release
  sysctr exec -t ssh -- /bin/sh
  sysctr exec -e DEBUG=1 network -- ip addr
  echo 'ls /' | sysctr exec ssh -- sh")]
pub struct Args {
    /// Give the process a terminal, connected to this one (interactive programs).
    #[arg(short, long)]
    pub tty: bool,

    /// Set an environment variable for the process; may be repeated.
    #[arg(short = 'e', long = "env", value_name = "KEY=VAL", value_parser = parse_env)]
    pub env: Vec<String>,

    /// The running service to enter.
    pub service: String,

    /// The command and its arguments (put them after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub cmd: Vec<String>,
}

fn parse_env(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some((key, _)) if !key.is_empty() && !key.contains('\0') => Ok(text.to_string()),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

pub fn run(args: &Args, client: &Client) -> anyhow::Result<i32> {
    let op = Op::Exec {
        service: args.service.clone(),
        args: args.cmd.clone(),
        env: args.env.clone(),
        tty: args.tty,
    };
    let status = if args.tty {
        let stdin = io::stdin();
        run_tty(client, op, stdin.as_fd(), &mut io::stdout().lock())?
    } else {
        let stdio = [
            io::stdin().as_raw_fd(),
            io::stdout().as_raw_fd(),
            io::stderr().as_raw_fd(),
        ];
        run_with_fds(client, op, stdio)?
    };
    Ok(status.as_shell_code())
}

/// Sends the exec request with `fds` as the process's stdin, stdout and stderr, then waits
/// for it to exit.
pub fn run_with_fds(client: &Client, op: Op, fds: [RawFd; 3]) -> Result<ExitStatus, ClientError> {
    let mut conn = client.connect()?;
    conn.send_with_fds(&Request::new(op), &fds)?;
    loop {
        if let Some(status) = on_reply(conn.recv()?, conn.path())? {
            return Ok(status);
        }
    }
}

/// Handles one exec reply: `Some` once the process has exited.
fn on_reply(
    reply: Option<Response>,
    path: &std::path::Path,
) -> Result<Option<ExitStatus>, ClientError> {
    match reply {
        Some(Response::ExecStarted { .. }) => Ok(None),
        Some(Response::ExecExited { status }) => Ok(Some(status)),
        None | Some(Response::End) => Err(ClientError::ClosedEarly {
            path: path.to_path_buf(),
        }),
        Some(other) => Err(ClientError::unexpected("exec_exited", other)),
    }
}

/// `exec -t`: the process gets a new pty; `stdin` (the user's terminal, when it is one) and
/// `stdout` are connected to its master until the process exits.
pub fn run_tty(
    client: &Client,
    op: Op,
    stdin: BorrowedFd<'_>,
    stdout: &mut dyn Write,
) -> anyhow::Result<ExitStatus> {
    let local_tty = stdin.is_terminal();
    let size = tty::window_size(stdin).or_else(|| tty::window_size(io::stdout().as_fd()));
    let pty = nix::pty::openpty(size.as_ref(), None).context("cannot open a pseudo-terminal")?;

    let mut conn = client.connect()?;
    let slave = pty.slave.as_raw_fd();
    conn.send_with_fds(&Request::new(op), &[slave; 3])?;
    // Init holds the slave now; without our copy the master hangs up when the process ends.
    drop(pty.slave);

    // SIGWINCH resizes the remote terminal; SIGTERM and SIGHUP end the session cleanly so
    // that the terminal leaves raw mode. A signalfd keeps all of it in the poll loop.
    let mut mask = SigSet::empty();
    for s in [Signal::SIGWINCH, Signal::SIGTERM, Signal::SIGHUP] {
        mask.add(s);
    }
    mask.thread_block().context("cannot block signals")?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("cannot create a signalfd")?;

    let raw = if local_tty {
        Some(RawMode::enter(stdin).context("cannot put the terminal in raw mode")?)
    } else {
        None
    };
    let result = Proxy {
        conn: &mut conn,
        master: File::from(pty.master),
        stdin,
        stdout,
        local_tty,
        sigfd: &sigfd,
    }
    .run();
    drop(raw);
    let _ = mask.thread_unblock();
    result
}

struct Proxy<'a> {
    conn: &'a mut crate::client::Conn,
    master: File,
    stdin: BorrowedFd<'a>,
    stdout: &'a mut dyn Write,
    local_tty: bool,
    sigfd: &'a SignalFd,
}

/// After the process has exited, its terminal output is copied until the terminal has been
/// quiet this long, or for at most `DRAIN_MAX` (a grandchild may keep it open and busy).
const DRAIN_MS: u16 = 200;
const DRAIN_MAX: Duration = Duration::from_secs(2);

impl Proxy<'_> {
    /// Copies stdin to the terminal and the terminal to stdout until the process has exited
    /// and its output is drained.
    fn run(mut self) -> anyhow::Result<ExitStatus> {
        let mut buf = [0u8; 16 * 1024];
        let (mut stdin_open, mut master_open, mut sock_open) = (true, true, true);
        let mut status: Option<ExitStatus> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            match (status, drain_until) {
                (Some(s), _) if !master_open => return Ok(s),
                (Some(s), Some(t)) if Instant::now() >= t => return Ok(s),
                _ => {}
            }
            // Only open descriptors are polled: poll reports a hang-up even when no event
            // is asked for, which would spin this loop.
            let ready = {
                let mut which = Vec::with_capacity(4);
                let mut fds = Vec::with_capacity(4);
                let open = [true, master_open, stdin_open, sock_open];
                let all = [
                    self.sigfd.as_fd(),
                    self.master.as_fd(),
                    self.stdin,
                    self.conn.as_fd(),
                ];
                for (i, fd) in all.into_iter().enumerate().filter(|(i, _)| open[*i]) {
                    which.push(i);
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                }
                let timeout = if status.is_some() {
                    PollTimeout::from(DRAIN_MS)
                } else {
                    PollTimeout::NONE
                };
                match poll(&mut fds, timeout) {
                    Ok(0) => return Ok(status.expect("a timeout is set only after the exit")),
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(e).context("poll"),
                }
                let mut ready = [false; 4];
                for (i, fd) in which.into_iter().zip(&fds) {
                    ready[i] = fd.revents().is_some_and(|r| {
                        r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                    });
                }
                ready
            };

            if ready[0] {
                while let Ok(Some(info)) = self.sigfd.read_signal() {
                    let signo = info.ssi_signo as i32;
                    if signo == Signal::SIGWINCH as i32 {
                        if let Some(ws) = tty::window_size(self.stdin) {
                            let _ = tty::set_window_size(self.master.as_fd(), &ws);
                        }
                    } else {
                        // Terminated ourselves: report it like a shell would.
                        return Ok(ExitStatus::Signal(signo));
                    }
                }
            }
            if ready[1] {
                match self.master.read(&mut buf) {
                    Ok(0) => master_open = false,
                    Ok(n) => {
                        self.stdout
                            .write_all(&buf[..n])
                            .context("writing to standard output")?;
                        self.stdout.flush().context("writing to standard output")?;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // EIO: every holder of the slave has closed it.
                    Err(_) => master_open = false,
                }
            }
            if ready[2] {
                match nix::unistd::read(self.stdin.as_raw_fd(), &mut buf) {
                    Ok(0) => {
                        stdin_open = false;
                        if !self.local_tty {
                            // End of piped input: an EOF character for the remote terminal.
                            let _ = self.master.write_all(&[4]);
                        }
                    }
                    Ok(n) => {
                        if self.master.write_all(&buf[..n]).is_err() {
                            stdin_open = false;
                        }
                    }
                    Err(Errno::EINTR | Errno::EAGAIN) => {}
                    Err(_) => stdin_open = false,
                }
            }
            if ready[3] {
                let reply = self.conn.recv()?;
                let path = self.conn.path().to_path_buf();
                match on_reply(reply, &path) {
                    Ok(None) => {}
                    Ok(Some(s)) => {
                        status = Some(s);
                        drain_until = Some(Instant::now() + DRAIN_MAX);
                        sock_open = false;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_must_be_key_value() {
        assert!(parse_env("A=1").is_ok());
        assert!(parse_env("A=").is_ok());
        assert!(parse_env("PATH=/bin:/usr/bin=x").is_ok());
        assert!(parse_env("A").is_err());
        assert!(parse_env("=1").is_err());
    }
}

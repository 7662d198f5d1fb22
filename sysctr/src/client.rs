//! The client side of the control protocol: connecting to PID 1's socket, sending one
//! request frame (with file descriptors for `exec`), and reading response frames.
//!
//! Every failure is a [`ClientError`] whose variant decides the exit code: init refusing or
//! failing a request is exit 1, not being able to talk to init at all is exit 2.

use manifest::protocol::{self, ErrorKind, FrameError, Request, Response, MAX_RESPONSE_BYTES};
use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use std::io::{self, IoSlice, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code: the request was refused or failed inside init.
pub const EXIT_REFUSED: i32 = 1;
/// Exit code: init cannot be reached, or it answered something this client cannot read.
pub const EXIT_UNREACHABLE: i32 = 2;
/// Exit code: the command line is wrong.
pub const EXIT_USAGE: i32 = 64;

/// How long a single-answer request waits for its answer. Streams wait forever.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach init at {}: {} ({errno:?}){hint}", path.display(), errno.desc(), hint = unreachable_hint(*errno))]
    Unreachable { path: PathBuf, errno: Errno },
    // Causes are fields named `error`, not `source`: the message already includes them.
    #[error("lost the connection to init at {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("init at {} did not answer within {}s", path.display(), timeout.as_secs())]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("protocol error talking to init at {}: {error}", path.display())]
    Frame { path: PathBuf, error: FrameError },
    #[error("init at {} closed the connection before answering", path.display())]
    ClosedEarly { path: PathBuf },
    #[error("protocol error: init answered {got:?} where {expected} was expected")]
    Unexpected { expected: &'static str, got: String },
    #[error("init reported {}: {message}", kind_name(*kind))]
    Refused { kind: ErrorKind, message: String },
}

impl ClientError {
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Refused { .. } => EXIT_REFUSED,
            _ => EXIT_UNREACHABLE,
        }
    }

    /// Wraps an answer that is not what the request expects. Error answers become
    /// [`ClientError::Refused`] so that a caller matching on success never misses one.
    pub fn unexpected(expected: &'static str, got: Response) -> Self {
        match got {
            Response::Error { kind, message } => ClientError::Refused { kind, message },
            other => ClientError::Unexpected {
                expected,
                got: reply_name(&other).to_string(),
            },
        }
    }
}

fn unreachable_hint(errno: Errno) -> &'static str {
    match errno {
        Errno::ENOENT => {
            "; is sysctr's init running? (--socket or SYSCTR_SOCKET pick another socket)"
        }
        Errno::EACCES => "; read-only commands need root or the `sysctr` group",
        Errno::ECONNREFUSED => "; init is not listening on it",
        _ => "",
    }
}

/// The wire name of an error kind (`permission_denied`), as init sends it.
pub fn kind_name(kind: ErrorKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{kind:?}"))
}

/// The wire name of a reply (`services`, `log`, …), for error messages.
pub fn reply_name(resp: &Response) -> &'static str {
    match resp {
        Response::Version { .. } => "version",
        Response::Services { .. } => "services",
        Response::Inspect { .. } => "inspect",
        Response::Log { .. } => "log",
        Response::Boots { .. } => "boots",
        Response::Event { .. } => "event",
        Response::Ok { .. } => "ok",
        Response::ExecStarted { .. } => "exec_started",
        Response::ExecExited { .. } => "exec_exited",
        Response::Error { .. } => "error",
        Response::Applied { .. } => "applied",
        Response::Images { .. } => "images",
        Response::ImageImported { .. } => "image_imported",
        Response::End => "end",
    }
}

/// Where init listens. Connections are made per request.
#[derive(Debug, Clone)]
pub struct Client {
    pub socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Client {
            socket: socket.into(),
        }
    }

    pub fn connect(&self) -> Result<Conn, ClientError> {
        let stream = UnixStream::connect(&self.socket).map_err(|e| ClientError::Unreachable {
            path: self.socket.clone(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        Ok(Conn {
            stream,
            path: self.socket.clone(),
        })
    }

    /// Sends one request and returns its single answer; an error answer is
    /// [`ClientError::Refused`].
    pub fn call(&self, req: &Request) -> Result<Response, ClientError> {
        let mut conn = self.connect()?;
        conn.set_timeout(Some(REPLY_TIMEOUT))?;
        conn.send(req)?;
        conn.recv_reply()
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

/// One connection to init: one request, then its answers.
#[derive(Debug)]
pub struct Conn {
    stream: UnixStream,
    path: PathBuf,
}

impl Conn {
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_err(&self, source: io::Error) -> ClientError {
        if matches!(
            source.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            return ClientError::Timeout {
                path: self.path.clone(),
                timeout: REPLY_TIMEOUT,
            };
        }
        ClientError::Io {
            path: self.path.clone(),
            error: source,
        }
    }

    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ClientError> {
        self.stream
            .set_read_timeout(timeout)
            .map_err(|e| self.io_err(e))
    }

    pub fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        self.send_msg(req)
    }

    /// [`Conn::send`] for any request type of the protocol (`protocol_update`'s too).
    pub fn send_msg<T: serde::Serialize>(&mut self, req: &T) -> Result<(), ClientError> {
        let frame = protocol::encode(req);
        self.stream.write_all(&frame).map_err(|e| self.io_err(e))
    }

    /// Sends the request frame with `fds` attached (SCM_RIGHTS) to the same `sendmsg`, as
    /// init expects for `exec`: the descriptors arrive with the first byte of the frame.
    pub fn send_with_fds(&mut self, req: &Request, fds: &[RawFd]) -> Result<(), ClientError> {
        self.send_msg_with_fds(req, fds)
    }

    /// [`Conn::send_with_fds`] for any request type of the protocol.
    pub fn send_msg_with_fds<T: serde::Serialize>(
        &mut self,
        req: &T,
        fds: &[RawFd],
    ) -> Result<(), ClientError> {
        let frame = protocol::encode(req);
        let cmsg = [ControlMessage::ScmRights(fds)];
        let sent = loop {
            match sendmsg::<()>(
                self.stream.as_raw_fd(),
                &[IoSlice::new(&frame)],
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => break n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(self.io_err(io::Error::from(e))),
            }
        };
        // A stream socket may take part of the frame; the rest goes without descriptors.
        self.stream
            .write_all(&frame[sent..])
            .map_err(|e| self.io_err(e))
    }

    /// The next answer, or `None` when init closed the connection between frames.
    pub fn recv(&mut self) -> Result<Option<Response>, ClientError> {
        self.recv_as()
    }

    /// [`Conn::recv`] for any reply type of the protocol (`protocol_update`'s too).
    pub fn recv_as<T: serde::de::DeserializeOwned>(&mut self) -> Result<Option<T>, ClientError> {
        let body = match protocol::read_frame(&mut self.stream, MAX_RESPONSE_BYTES) {
            Ok(Some(body)) => body,
            Ok(None) => return Ok(None),
            Err(FrameError::Io(e)) => return Err(self.io_err(e)),
            Err(error) => {
                return Err(ClientError::Frame {
                    path: self.path.clone(),
                    error,
                })
            }
        };
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ClientError::Frame {
                path: self.path.clone(),
                error: FrameError::Malformed(e),
            })
    }

    /// The next answer, which must exist; an error answer is [`ClientError::Refused`].
    pub fn recv_reply(&mut self) -> Result<Response, ClientError> {
        match self.recv()? {
            None => Err(ClientError::ClosedEarly {
                path: self.path.clone(),
            }),
            Some(Response::Error { kind, message }) => Err(ClientError::Refused { kind, message }),
            Some(resp) => Ok(resp),
        }
    }

    /// Calls `each` for every answer of a stream until [`Response::End`] or until init hangs
    /// up. An error answer ends the stream as [`ClientError::Refused`].
    pub fn stream(
        &mut self,
        mut each: impl FnMut(Response) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        loop {
            match self.recv()? {
                None | Some(Response::End) => return Ok(()),
                Some(Response::Error { kind, message }) => {
                    return Err(ClientError::Refused { kind, message }.into())
                }
                Some(resp) => each(resp)?,
            }
        }
    }
}

/// The exit code for an error that ended a command: the client error's own code, 0 for a
/// closed stdout (`sysctr logs | head`), 1 otherwise.
pub fn exit_code_for(err: &anyhow::Error) -> i32 {
    if let Some(e) = err.chain().find_map(|c| c.downcast_ref::<ClientError>()) {
        return e.exit_code();
    }
    if is_broken_pipe(err) {
        return 0;
    }
    EXIT_REFUSED
}

/// Whether the error is our own stdout having been closed by its reader (not the socket).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    let socket_error = err.chain().any(|c| c.is::<ClientError>());
    let broken = |c: &(dyn std::error::Error + 'static)| {
        let kind = c
            .downcast_ref::<io::Error>()
            .map(io::Error::kind)
            .or_else(|| c.downcast_ref::<serde_json::Error>()?.io_error_kind());
        kind == Some(io::ErrorKind::BrokenPipe)
    };
    !socket_error && err.chain().any(broken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_stdout_is_not_an_error() {
        let pipe = || io::Error::from(io::ErrorKind::BrokenPipe);
        let err = anyhow::Error::from(pipe()).context("writing to standard output");
        assert!(is_broken_pipe(&err));
        assert_eq!(exit_code_for(&err), 0);
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let json = anyhow::Error::from(serde_json::to_writer(Closed, &[1, 2]).unwrap_err());
        assert!(is_broken_pipe(&json));
        // The socket breaking is init's side going away: exit 2, with a message.
        let socket = anyhow::Error::from(ClientError::Io {
            path: "/run/sysctr/control.sock".into(),
            error: pipe(),
        });
        assert!(!is_broken_pipe(&socket));
        assert_eq!(exit_code_for(&socket), EXIT_UNREACHABLE);
        assert_eq!(exit_code_for(&anyhow::anyhow!("other")), EXIT_REFUSED);
    }
}

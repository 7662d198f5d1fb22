//! One control connection: non-blocking reads through the shared frame decoder, the
//! descriptors that may come with an `exec` request, the queued output, and the deadlines
//! that keep an idle or stalled client from holding a slot.
//!
//! Descriptors (SCM_RIGHTS) are taken only from a root peer — the only one an `exec` can
//! be authorized for — and only with the first bytes of the request, at most three. For
//! anyone else the read has no room for them and the kernel closes them in flight.

use super::auth::Peer;
use manifest::protocol::{FrameDecoder, FrameError, MAX_REQUEST_BYTES};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Time a client has to send its whole request frame.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to read a reply (a single answer, or a stream's queued output).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Descriptors an `exec` request passes: stdin, stdout, stderr.
pub const EXEC_FDS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Waiting for the request frame.
    Request,
    FollowLogs {
        svc: usize,
    },
    FollowKernel,
    Events,
    Exec,
    /// Waiting for an update helper's progress and result (`update`).
    Update,
    /// Waiting for the image helper's result (`image_import`, `image_rm`).
    Image,
    /// Reply queued; close when it is written.
    Closing,
}

/// What a read brought.
pub enum Input {
    /// Nothing complete yet.
    Partial,
    Frame(Vec<u8>),
    /// The peer closed; `mid_frame` if it left a frame unfinished.
    Closed {
        mid_frame: bool,
    },
    TooLarge {
        len: u32,
        limit: u32,
    },
}

pub struct Client {
    pub stream: UnixStream,
    pub token: u64,
    pub peer: Peer,
    decoder: FrameDecoder,
    pub fds: Vec<OwnedFd>,
    pub output: Vec<u8>,
    pub mode: Mode,
    pub writable_armed: bool,
    /// /dev/kmsg being followed, with its reactor token.
    pub kmsg: Option<(u64, std::fs::File)>,
    /// When the client is dropped unless it makes progress (None: it may idle).
    pub deadline: Option<Instant>,
}

impl Client {
    pub fn new(stream: UnixStream, token: u64, peer: Peer, now: Instant) -> Client {
        Client {
            stream,
            token,
            peer,
            decoder: FrameDecoder::new(MAX_REQUEST_BYTES),
            fds: Vec::new(),
            output: Vec::new(),
            mode: Mode::Request,
            writable_armed: false,
            kmsg: None,
            deadline: Some(now + REQUEST_TIMEOUT),
        }
    }

    /// Reads what the request frame still needs (never more: the frame's end is the
    /// request's end).
    pub fn read_request(&mut self) -> Input {
        let mut buf = [0u8; 16384];
        loop {
            let want = self.decoder.wanted().clamp(1, buf.len());
            let n = match self.recv(&mut buf[..want]) {
                Ok(0) => {
                    return Input::Closed {
                        mid_frame: self.decoder.in_frame(),
                    }
                }
                Ok(n) => n,
                Err(nix::Error::EAGAIN) => return Input::Partial,
                Err(nix::Error::EINTR) => continue,
                Err(_) => return Input::Closed { mid_frame: false },
            };
            match self.decoder.feed(&buf[..n]) {
                Ok((_, Some(body))) => return Input::Frame(body),
                Ok((_, None)) => {}
                Err(FrameError::TooLarge(len, limit)) => return Input::TooLarge { len, limit },
                Err(_) => return Input::Closed { mid_frame: true },
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> nix::Result<usize> {
        let first = !self.decoder.in_frame();
        if !(first && self.peer.is_root()) {
            // No room for descriptors: the kernel discards any that were sent.
            return self
                .stream
                .read(buf)
                .map_err(|e| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO)));
        }
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; EXEC_FDS]);
        let mut iov = [IoSliceMut::new(buf)];
        let msg = recvmsg::<()>(
            self.stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmRights(fds) = c {
                self.fds
                    .extend(fds.into_iter().map(crate::sys::own_received_fd));
            }
        }
        Ok(msg.bytes)
    }

    /// Reads and discards input after the request (a stream's client sends nothing);
    /// false when the client has gone.
    pub fn still_there(&mut self) -> bool {
        let mut b = [0u8; 256];
        match self.stream.read(&mut b) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        }
    }

    /// Writes what is queued; false if the connection broke.
    pub fn write_out(&mut self, now: Instant) -> bool {
        let before = self.output.len();
        while !self.output.is_empty() {
            match self.stream.write(&self.output) {
                Ok(0) => break,
                Ok(n) => {
                    self.output.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.update_deadline(now, self.output.len() < before);
        true
    }

    /// The deadline after a request is in: a single reply must be read within
    /// [`REPLY_TIMEOUT`]; a stream may idle while nothing is queued, but queued output must
    /// move within that time.
    pub fn update_deadline(&mut self, now: Instant, progressed: bool) {
        if self.mode == Mode::Request {
            return; // the request deadline stands
        }
        if self.mode != Mode::Closing && self.output.is_empty() {
            self.deadline = None;
        } else if progressed || self.deadline.is_none() {
            self.deadline = Some(now + REPLY_TIMEOUT);
        }
    }
}

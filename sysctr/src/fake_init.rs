//! A stand-in for PID 1's control server, for unit tests of the client end to end: a
//! listening socket in a temporary directory and a thread that takes one connection,
//! receives the request (with any SCM_RIGHTS descriptors, as init does for `exec`), and
//! lets the test answer it with canned frames.

#![allow(unsafe_code)]

use crate::client::Client;
use manifest::protocol::{self, Request, Response, MAX_REQUEST_BYTES};
use manifest::protocol_update::{decode_update_request, UpdateRequest};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;

pub struct FakeInit {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    handle: Option<JoinHandle<()>>,
}

impl FakeInit {
    /// Serves one connection: `answer` gets the decoded request, the descriptors that came
    /// with it, and the connection to write replies to.
    pub fn serve(
        answer: impl FnOnce(Request, Vec<OwnedFd>, &mut UnixStream) + Send + 'static,
    ) -> FakeInit {
        FakeInit::serve_frame(move |body, fds, conn| {
            answer(protocol::decode_request(&body).unwrap(), fds, conn)
        })
    }

    /// [`FakeInit::serve`] for an update request (`sysctr update`, `rollback`).
    pub fn serve_update(
        answer: impl FnOnce(UpdateRequest, Vec<OwnedFd>, &mut UnixStream) + Send + 'static,
    ) -> FakeInit {
        FakeInit::serve_frame(move |body, fds, conn| {
            answer(decode_update_request(&body).unwrap(), fds, conn)
        })
    }

    /// Serves one connection: `answer` gets the request frame's body undecoded.
    fn serve_frame(
        answer: impl FnOnce(Vec<u8>, Vec<OwnedFd>, &mut UnixStream) + Send + 'static,
    ) -> FakeInit {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let (body, fds) = receive(&mut conn);
            answer(body, fds, &mut conn);
        });
        FakeInit {
            _dir: dir,
            path,
            handle: Some(handle),
        }
    }

    /// Serves one connection by writing `replies` in order, then closing.
    pub fn replying(replies: Vec<Response>) -> FakeInit {
        FakeInit::serve(move |_, _, conn| {
            for r in &replies {
                // A client that has what it needs may hang up early.
                let _ = protocol::write_frame(conn, r);
            }
        })
    }

    pub fn client(&self) -> Client {
        Client::new(&self.path)
    }

    /// Waits for the server thread, re-raising its panics (failed assertions).
    pub fn join(mut self) {
        if let Some(h) = self.handle.take() {
            h.join().expect("fake init panicked");
        }
    }
}

/// Reads one request frame like init does: the first `recvmsg` carries the descriptors.
fn receive(conn: &mut UnixStream) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 3]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap();
        let mut fds = Vec::new();
        for cmsg in msg.cmsgs().unwrap() {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                for fd in raw {
                    // SAFETY: SCM_RIGHTS installed these descriptors in this process just
                    // now; nothing else owns them.
                    fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        (msg.bytes, fds)
    };
    let mut rest = (&buf[..n]).chain(conn);
    let body = protocol::read_frame(&mut rest, MAX_REQUEST_BYTES)
        .unwrap()
        .unwrap();
    (body, fds)
}

#[cfg(test)]
mod tests;

//! The sd_notify socket of one service: a datagram socket PID 1 binds under
//! `<run dir>/notify/<service>.sock` and mounts into the container as `$NOTIFY_SOCKET`.
//!
//! - It is mode 0666, so a service running as any user can send to it; who may is decided
//!   per datagram, not by the file mode.
//! - SO_PASSCRED makes the kernel attach the sender's pid to every datagram. A datagram
//!   counts only if that pid's cgroup is the service's own cgroup (or below it): a process
//!   of another service that can reach the socket file (anything that mounts the run
//!   directory) cannot make this service Ready. The sender must still be alive when PID 1
//!   reads the datagram; `sysctr notify` waits for that with `BARRIER=1` (the descriptor it
//!   passes along is closed once the datagram has been handled).
//! - At most [`DATAGRAMS_PER_TURN`] datagrams are read per event-loop turn, so a flooding
//!   service cannot hold the loop; the rest wait for the next turn.

use nix::sys::socket::{
    recvmsg, setsockopt, sockopt::PassCred, ControlMessageOwned, MsgFlags, UnixAddr,
};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

/// Datagrams read per readable event; the socket stays readable for the rest.
pub const DATAGRAMS_PER_TURN: usize = 16;
/// The sd_notify protocol's messages are short; longer datagrams are cut here.
const MAX_DATAGRAM: usize = 4096;

#[derive(Debug, thiserror::Error)]
#[error("notify socket {path}: {source}")]
pub struct NotifyError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

pub struct NotifySocket {
    sock: UnixDatagram,
    path: PathBuf,
}

/// One datagram as received: the sender's pid (0 if the kernel gave none) and its text.
/// Descriptors that came with it (a `BARRIER=1`) are held until it is dropped.
pub struct Datagram {
    pub pid: i32,
    pub text: String,
    _fds: Vec<OwnedFd>,
}

/// What a datagram says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Message {
    pub ready: bool,
    pub status: Option<String>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> Result<NotifySocket, NotifyError> {
        let err = |source| NotifyError {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let _ = std::fs::remove_file(path);
        let sock = UnixDatagram::bind(path).map_err(err)?;
        sock.set_nonblocking(true).map_err(err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(err)?;
        setsockopt(&sock, PassCred, &true).map_err(|e| err(e.into()))?;
        Ok(NotifySocket {
            sock,
            path: path.to_path_buf(),
        })
    }

    /// Reads up to `budget` datagrams waiting now ([`DATAGRAMS_PER_TURN`] in the loop).
    pub fn receive(&self, budget: usize) -> Vec<Datagram> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for _ in 0..budget {
            let mut cmsg = nix::cmsg_space!(libc::ucred, [std::os::fd::RawFd; 4]);
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<UnixAddr>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(m) => m,
                Err(nix::Error::EINTR) => continue,
                Err(_) => break,
            };
            let mut pid = 0;
            let mut fds = Vec::new();
            for c in msg.cmsgs().into_iter().flatten() {
                match c {
                    ControlMessageOwned::ScmCredentials(cred) => pid = cred.pid(),
                    ControlMessageOwned::ScmRights(raw) => {
                        fds.extend(raw.into_iter().map(crate::sys::own_received_fd))
                    }
                    _ => {}
                }
            }
            let n = msg.bytes;
            out.push(Datagram {
                pid,
                text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                _fds: fds,
            });
        }
        out
    }
}

impl AsFd for NotifySocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Parses the `KEY=VALUE` lines of a datagram; unknown keys are ignored, as sd_notify does.
pub fn parse(text: &str) -> Message {
    let mut m = Message::default();
    for line in text.lines() {
        if line == "READY=1" {
            m.ready = true;
        } else if let Some(st) = line.strip_prefix("STATUS=") {
            m.status = Some(st.to_string());
        }
    }
    m
}

/// Whether the /proc/<pid>/cgroup text puts the process in `cgroup` or below it.
pub fn cgroup_contains(proc_cgroup: &str, cgroup: &str) -> bool {
    let cgroup = cgroup.trim_end_matches('/');
    proc_cgroup.lines().any(|line| {
        let path = line.splitn(3, ':').nth(2).unwrap_or("");
        path == cgroup
            || path
                .strip_prefix(cgroup)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Whether process `pid` (as PID 1 sees it) runs in `cgroup` or below it.
pub fn sender_in_cgroup(pid: i32, cgroup: &str) -> bool {
    pid > 0
        && std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .is_ok_and(|text| cgroup_contains(&text, cgroup))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ready_and_status() {
        assert_eq!(
            parse("READY=1\nSTATUS=serving\nMAINPID=3\n"),
            Message {
                ready: true,
                status: Some("serving".into())
            }
        );
        assert_eq!(parse("READY=0\nready=1"), Message::default());
        assert_eq!(parse("STATUS=a\nSTATUS=b").status.as_deref(), Some("b"));
    }

    #[test]
    fn cgroup_membership_is_by_path_component() {
        let v2 = "0::/sysctr/web\n";
        assert!(cgroup_contains(v2, "/sysctr/web"));
        assert!(cgroup_contains("0::/sysctr/web/sub\n", "/sysctr/web"));
        assert!(
            !cgroup_contains("0::/sysctr/webx\n", "/sysctr/web"),
            "a prefix is not a parent"
        );
        assert!(!cgroup_contains("0::/sysctr/db\n", "/sysctr/web"));
        assert!(!cgroup_contains("0::/\n", "/sysctr/web"));
        let v1 = "12:pids:/sysctr/web\n4:memory:/sysctr/web\n1:name=systemd:/\n";
        assert!(cgroup_contains(v1, "/sysctr/web"));
        assert!(!cgroup_contains("", "/sysctr/web"));
    }

    #[test]
    fn socket_is_writable_by_anyone_and_carries_the_sender_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n/svc.sock");
        let sock = NotifySocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        let client = UnixDatagram::unbound().unwrap();
        for i in 0..5 {
            client
                .send_to(format!("STATUS={i}\n").as_bytes(), &path)
                .unwrap();
        }
        let got = sock.receive(3);
        assert_eq!(got.len(), 3, "bounded per turn");
        assert_eq!(got[0].pid, std::process::id() as i32);
        assert_eq!(got[0].text, "STATUS=0\n");
        assert_eq!(sock.receive(3).len(), 2, "the rest on the next turn");
        assert!(sock.receive(3).is_empty());
        assert!(sender_in_cgroup(std::process::id() as i32, &own_cgroup()));
        assert!(!sender_in_cgroup(0, "/"));
        drop(sock);
        assert!(!path.exists(), "the socket file goes with the socket");
    }

    fn own_cgroup() -> String {
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        text.lines()
            .next()
            .and_then(|l| l.splitn(3, ':').nth(2))
            .unwrap()
            .to_string()
    }
}

//! Readiness checks that need more than a path test: a TCP connect made inside the
//! service's network namespace. PID 1 enters the namespace only to create the socket
//! (a socket stays in the namespace it was created in) and returns at once.

use nix::sched::{setns, CloneFlags};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

/// Whether `host:port` accepts a connection from inside the network namespace of `pid`.
pub fn tcp_accepts(pid: i32, host: &str, port: u16) -> bool {
    let Ok(addr) = format!("{host}:{port}").parse::<SocketAddr>() else {
        return false;
    };
    let (Ok(ours), Ok(theirs)) = (
        std::fs::File::open("/proc/self/ns/net"),
        std::fs::File::open(format!("/proc/{pid}/ns/net")),
    ) else {
        return false;
    };
    if setns(theirs.as_fd(), CloneFlags::CLONE_NEWNET).is_err() {
        return false;
    }
    // Bounded: a loopback connect answers at once; another host gets 50 ms.
    let result = TcpStream::connect_timeout(&addr, Duration::from_millis(50));
    if let Err(e) = setns(ours.as_fd(), CloneFlags::CLONE_NEWNET) {
        crate::error!(
            "readiness",
            "cannot return to PID 1's network namespace: {e}"
        );
    }
    result.is_ok()
}

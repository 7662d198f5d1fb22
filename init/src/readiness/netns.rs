//! Work done inside a service's network namespace: the TCP readiness check and bringing up
//! its loopback interface (called by the runtime right after a container is created). PID 1 enters the namespace only for the duration of one call
//! (a socket stays in the namespace it was created in) and returns at once.

use nix::sched::{setns, CloneFlags};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::Duration;

/// Runs `f` inside the network namespace of `pid`; None if the namespace cannot be entered.
pub fn in_netns<T>(pid: i32, f: impl FnOnce() -> T) -> Option<T> {
    let ours = std::fs::File::open("/proc/self/ns/net").ok()?;
    let theirs = std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()?;
    setns(theirs.as_fd(), CloneFlags::CLONE_NEWNET).ok()?;
    let out = f();
    if let Err(e) = setns(ours.as_fd(), CloneFlags::CLONE_NEWNET) {
        crate::error!("netns", "cannot return to PID 1's network namespace: {e}");
    }
    Some(out)
}

/// Whether `host:port` accepts a connection from inside the network namespace of `pid`.
pub fn tcp_accepts(pid: i32, host: &str, port: u16) -> bool {
    let Ok(addr) = format!("{host}:{port}").parse::<SocketAddr>() else {
        return false;
    };
    // Bounded: a loopback connect answers at once; another host gets 50 ms.
    in_netns(pid, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(50)).is_ok()
    })
    .unwrap_or(false)
}

/// A fresh network namespace has its loopback down; services expect it up.
pub fn loopback_up(pid: i32) -> Result<(), String> {
    match in_netns(pid, || crate::sys::interface_up("lo")) {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err(format!("bring up lo: {e}")),
        None => Err(format!("cannot enter the network namespace of pid {pid}")),
    }
}

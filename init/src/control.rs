//! The control socket (`/run/sysctr/control.sock`): the `sysctr` CLI's way in. Framed JSON
//! requests (see `manifest::protocol` and docs/api.md), authorized by the peer's
//! credentials: read-only requests for root and the `sysctr` group, changes for root only.
//!
//! Every client is non-blocking and has bounded buffers: a request larger than the limit is
//! refused before it is read, a malformed one gets an error reply, and a follower that does
//! not read its stream is dropped instead of being allowed to hold memory or stall the loop.

mod update;

use crate::reactor::{Reactor, Source};
use crate::runtime::Stdio;
use crate::supervisor::Supervisor;
use manifest::protocol::{
    self, ErrorKind, LogEntry, Op, PowerAction, Request, Response, Stream, MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
};
use nix::sys::epoll::EpollFlags;
use nix::sys::socket::{
    getsockopt, recvmsg, sockopt::PeerCredentials, ControlMessageOwned, MsgFlags,
};
use std::collections::HashMap;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// A follower whose unsent output grows past this is disconnected.
const MAX_QUEUED: usize = 8 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    /// Waiting for the request frame.
    Request,
    FollowLogs {
        svc: usize,
    },
    FollowKernel,
    Events,
    Exec,
    /// Waiting for an update helper's progress and result.
    Update,
    /// Reply queued; close when it is written.
    Closing,
}

struct Client {
    stream: UnixStream,
    token: u64,
    uid: u32,
    /// Primary and supplementary groups of the peer.
    gids: Vec<u32>,
    input: Vec<u8>,
    fds: Vec<OwnedFd>,
    output: Vec<u8>,
    mode: Mode,
    writable_armed: bool,
    /// /dev/kmsg being followed, with its reactor token.
    kmsg: Option<(u64, std::fs::File)>,
}

pub struct ControlServer {
    listener: UnixListener,
    clients: HashMap<u64, Client>,
    next_id: u64,
    control_gid: Option<u32>,
    init_boot_ms: u64,
    /// The booted slot and entry, shown by `sysctr version`.
    pub boot: Option<manifest::protocol::BootInfo>,
    /// The update helper, when one runs.
    updates: crate::update::run::Runner,
}

impl ControlServer {
    pub fn bind(
        path: &Path,
        control_gid: Option<u32>,
        r: &mut Reactor,
        init_boot_ms: u64,
    ) -> std::io::Result<ControlServer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
        if let Some(gid) = control_gid {
            let _ = nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)));
        }
        let _token = r
            .add(listener.as_fd(), Source::Listener)
            .map_err(std::io::Error::from)?;
        Ok(ControlServer {
            listener,
            clients: HashMap::new(),
            next_id: 1,
            control_gid,
            init_boot_ms,
            boot: None,
            updates: Default::default(),
        })
    }

    pub fn accept(&mut self, r: &mut Reactor) {
        for _ in 0..64 {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    crate::warn!("control", "accept: {e}");
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let Ok(cred) = getsockopt(&stream, PeerCredentials) else {
                continue;
            };
            let id = self.next_id;
            self.next_id += 1;
            let Ok(token) = r.add(stream.as_fd(), Source::Client(id)) else {
                continue;
            };
            self.clients.insert(
                id,
                Client {
                    stream,
                    token,
                    uid: cred.uid(),
                    gids: peer_groups(cred.pid(), cred.gid()),
                    input: Vec::new(),
                    fds: Vec::new(),
                    output: Vec::new(),
                    mode: Mode::Request,
                    writable_armed: false,
                    kmsg: None,
                },
            );
        }
    }

    fn close(&mut self, id: u64, r: &mut Reactor) {
        if let Some(c) = self.clients.remove(&id) {
            if let Some((token, f)) = &c.kmsg {
                r.remove(*token, f);
            }
            r.remove(c.token, &c.stream);
        }
    }

    /// New kernel log records for a client following them.
    pub fn on_kmsg(&mut self, id: u64, r: &mut Reactor) {
        let entries = match self.clients.get_mut(&id).and_then(|c| c.kmsg.as_mut()) {
            Some((_, f)) => read_kmsg(f),
            None => return,
        };
        for entry in entries {
            self.send(id, &Response::Log { entry }, r);
        }
    }

    /// Queues a reply for a client and tries to send it at once.
    fn send<T: serde::Serialize>(&mut self, id: u64, msg: &T, r: &mut Reactor) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        c.output.extend_from_slice(&protocol::encode(msg));
        if c.output.len() > MAX_QUEUED {
            crate::warn!(
                "control",
                "client {id} does not read its stream: disconnected"
            );
            self.close(id, r);
            return;
        }
        self.flush(id, r);
    }

    fn finish<T: serde::Serialize>(&mut self, id: u64, msg: &T, r: &mut Reactor) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.mode = Mode::Closing;
        }
        self.send(id, msg, r);
    }

    fn error(&mut self, id: u64, kind: ErrorKind, message: String, r: &mut Reactor) {
        self.finish(id, &Response::Error { kind, message }, r);
    }

    fn flush(&mut self, id: u64, r: &mut Reactor) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        while !c.output.is_empty() {
            match c.stream.write(&c.output) {
                Ok(0) => break,
                Ok(n) => {
                    c.output.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.close(id, r);
                    return;
                }
            }
        }
        let want_out = !c.output.is_empty();
        if want_out != c.writable_armed {
            let flags = if want_out {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT
            } else {
                EpollFlags::EPOLLIN
            };
            r.modify(c.token, c.stream.as_fd(), flags);
            c.writable_armed = want_out;
        }
        if !want_out && c.mode == Mode::Closing {
            self.close(id, r);
        }
    }

    /// A client socket is readable or writable.
    pub fn on_client(
        &mut self,
        id: u64,
        flags: EpollFlags,
        sup: &mut Supervisor,
        r: &mut Reactor,
    ) -> Option<PowerAction> {
        if flags.contains(EpollFlags::EPOLLOUT) {
            self.flush(id, r);
        }
        if !flags.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
            return None;
        }
        let c = self.clients.get_mut(&id)?;
        if c.mode != Mode::Request {
            // Streams take no further input: a read of 0 means the client left.
            let mut b = [0u8; 256];
            match c.stream.read(&mut b) {
                Ok(0) => self.close(id, r),
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => self.close(id, r),
                _ => {}
            }
            return None;
        }
        let mut buf = vec![0u8; 16384];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 3]);
        let mut eof = false;
        loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                c.stream.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    for cm in msg.cmsgs().into_iter().flatten() {
                        if let ControlMessageOwned::ScmRights(fds) = cm {
                            c.fds
                                .extend(fds.into_iter().map(crate::sys::own_received_fd));
                        }
                    }
                    let n = msg.bytes;
                    if n == 0 {
                        eof = true;
                        break;
                    }
                    c.input.extend_from_slice(&buf[..n]);
                    if c.input.len() >= 4 {
                        break;
                    }
                }
                Err(nix::Error::EAGAIN) => break,
                Err(nix::Error::EINTR) => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        if c.input.len() >= 4 {
            let len = u32::from_be_bytes([c.input[0], c.input[1], c.input[2], c.input[3]]);
            if len > MAX_REQUEST_BYTES {
                self.error(
                    id,
                    ErrorKind::TooLarge,
                    format!(
                        "request of {len} bytes is larger than the {MAX_REQUEST_BYTES}-byte limit"
                    ),
                    r,
                );
                return None;
            }
            if c.input.len() >= 4 + len as usize {
                let body = c.input[4..4 + len as usize].to_vec();
                return self.handle(id, &body, sup, r);
            }
        }
        if eof {
            if self.clients.get(&id).is_some_and(|c| !c.input.is_empty()) {
                self.error(
                    id,
                    ErrorKind::BadRequest,
                    "connection closed in the middle of a request frame".into(),
                    r,
                );
            } else {
                self.close(id, r);
            }
        }
        None
    }

    fn handle(
        &mut self,
        id: u64,
        body: &[u8],
        sup: &mut Supervisor,
        r: &mut Reactor,
    ) -> Option<PowerAction> {
        let req: Request = match protocol::decode_request(body) {
            Ok(req) => req,
            Err(e) => {
                if let Ok(u) = manifest::protocol_update::decode_update_request(body) {
                    self.handle_update(id, u, r);
                    return None;
                }
                self.error(
                    id,
                    ErrorKind::BadRequest,
                    format!("malformed request: {e}"),
                    r,
                );
                return None;
            }
        };
        if req.version != PROTOCOL_VERSION {
            self.error(
                id,
                ErrorKind::BadRequest,
                format!(
                    "protocol version {} is not supported (init speaks {PROTOCOL_VERSION})",
                    req.version
                ),
                r,
            );
            return None;
        }
        let (uid, gids) = self.clients.get(&id).map(|c| (c.uid, c.gids.clone()))?;
        if let Err(why) = authorize(uid, &gids, self.control_gid, &req.op) {
            crate::warn!(
                "control",
                "refused {:?} from uid {uid}: {why}",
                op_name(&req.op)
            );
            self.error(id, ErrorKind::PermissionDenied, why, r);
            return None;
        }
        let lookup = |sup: &Supervisor, name: &str| {
            sup.find(name).ok_or((
                ErrorKind::UnknownService,
                format!("no service named {name:?}"),
            ))
        };
        macro_rules! svc {
            ($name:expr) => {
                match lookup(sup, $name) {
                    Ok(i) => i,
                    Err((k, m)) => {
                        self.error(id, k, m, r);
                        return None;
                    }
                }
            };
        }
        let reply_api =
            |this: &mut Self, res: crate::supervisor::ApiResult, r: &mut Reactor| match res {
                Ok(message) => this.finish(id, &Response::Ok { message }, r),
                Err((kind, message)) => this.error(id, kind, message, r),
            };
        match req.op {
            Op::Version {} => self.finish(
                id,
                &Response::Version {
                    version: env!("CARGO_PKG_VERSION").into(),
                    protocol: PROTOCOL_VERSION,
                    init_boot_ms: self.init_boot_ms,
                    boot: self.boot.clone(),
                },
                r,
            ),
            Op::Ps {} => self.finish(
                id,
                &Response::Services {
                    services: sup.list(),
                },
                r,
            ),
            Op::Inspect { service } => {
                let i = svc!(&service);
                let s = &sup.services[i];
                let manifest = s
                    .def
                    .as_ref()
                    .and_then(|d| serde_json::to_value(d).ok())
                    .unwrap_or(serde_json::Value::Null);
                let resp = Response::Inspect {
                    status: sup.status(i),
                    manifest,
                    spec: s.spec.clone(),
                    cgroup: sup.cgroup_path(i),
                    bundle: sup.bundle_path(i),
                };
                self.finish(id, &resp, r)
            }
            Op::Logs {
                service,
                lines,
                since_ms,
                follow,
            } => {
                let i = svc!(&service);
                for entry in sup.services[i].logs.tail(lines, since_ms) {
                    self.send(id, &Response::Log { entry }, r);
                }
                if follow {
                    if let Some(c) = self.clients.get_mut(&id) {
                        c.mode = Mode::FollowLogs { svc: i };
                    }
                } else {
                    self.finish(id, &Response::End, r);
                }
            }
            Op::KernelLog { lines, follow } => {
                let Some(mut kmsg) = open_kmsg() else {
                    self.error(id, ErrorKind::Failed, "cannot open /dev/kmsg".into(), r);
                    return None;
                };
                let entries = read_kmsg(&mut kmsg);
                let skip = lines.map_or(0, |n| entries.len().saturating_sub(n));
                for entry in entries.into_iter().skip(skip) {
                    self.send(id, &Response::Log { entry }, r);
                }
                if !follow {
                    self.finish(id, &Response::End, r);
                    return None;
                }
                // Follow: the same descriptor, now at the end, is watched for new records.
                match r.add(kmsg.as_fd(), Source::Kmsg(id)) {
                    Ok(token) => {
                        if let Some(c) = self.clients.get_mut(&id) {
                            c.mode = Mode::FollowKernel;
                            c.kmsg = Some((token, kmsg));
                        }
                    }
                    Err(e) => self.error(id, ErrorKind::Failed, format!("watch /dev/kmsg: {e}"), r),
                }
            }
            Op::Events {} => {
                if let Some(c) = self.clients.get_mut(&id) {
                    c.mode = Mode::Events;
                }
            }
            Op::Start { service } => {
                let i = svc!(&service);
                let res = sup.start(i, r);
                reply_api(self, res, r)
            }
            Op::Stop { service } => {
                let i = svc!(&service);
                let res = sup.stop(i, r);
                reply_api(self, res, r)
            }
            Op::Restart { service } => {
                let i = svc!(&service);
                let res = sup.restart(i, r);
                reply_api(self, res, r)
            }
            Op::Exec {
                service,
                args,
                env,
                tty: _,
            } => {
                let i = svc!(&service);
                let mut fds = std::mem::take(&mut self.clients.get_mut(&id)?.fds);
                if fds.len() != 3 || args.is_empty() {
                    self.error(id, ErrorKind::BadRequest, format!("exec needs a command and exactly 3 file descriptors (stdin, stdout, stderr) passed with the request; got {} descriptors", fds.len()), r);
                    return None;
                }
                let stderr = fds.pop()?;
                let stdout = fds.pop()?;
                let stdin = fds.pop()?;
                match sup.exec(
                    i,
                    args,
                    env,
                    Stdio {
                        stdin,
                        stdout,
                        stderr,
                    },
                    id,
                ) {
                    Ok(pid) => {
                        if let Some(c) = self.clients.get_mut(&id) {
                            c.mode = Mode::Exec;
                        }
                        self.send(id, &Response::ExecStarted { pid }, r)
                    }
                    Err((kind, message)) => self.error(id, kind, message, r),
                }
            }
            Op::Power { action } => {
                self.finish(
                    id,
                    &Response::Ok {
                        message: format!("{action:?} requested").to_lowercase(),
                    },
                    r,
                );
                return Some(action);
            }
        }
        None
    }

    /// Delivers what the supervisor produced since the last call to the streaming clients.
    pub fn publish(&mut self, sup: &mut Supervisor, r: &mut Reactor) {
        let events = std::mem::take(&mut sup.events_out);
        let logs = std::mem::take(&mut sup.logs_out);
        let exits = std::mem::take(&mut sup.exec_exits);
        if self.clients.is_empty() {
            return;
        }
        let ids: Vec<(u64, Mode)> = self
            .clients
            .iter()
            .map(|(id, c)| (*id, c.mode.clone()))
            .collect();
        for (id, mode) in ids {
            match mode {
                Mode::Events => {
                    for e in &events {
                        self.send(id, &Response::Event { event: e.clone() }, r);
                    }
                }
                Mode::FollowLogs { svc } => {
                    for (_, entry) in logs.iter().filter(|(i, _)| *i == svc) {
                        self.send(
                            id,
                            &Response::Log {
                                entry: entry.clone(),
                            },
                            r,
                        );
                    }
                }
                _ => {}
            }
        }
        for (client, status) in exits {
            if self.clients.contains_key(&client) {
                self.send(client, &Response::ExecExited { status }, r);
                self.finish(client, &Response::End, r);
            }
        }
    }
}

fn op_name(op: &Op) -> &'static str {
    match op {
        Op::Version {} => "version",
        Op::Ps {} => "ps",
        Op::Inspect { .. } => "inspect",
        Op::Logs { .. } => "logs",
        Op::KernelLog { .. } => "kernel_log",
        Op::Events {} => "events",
        Op::Start { .. } => "start",
        Op::Stop { .. } => "stop",
        Op::Restart { .. } => "restart",
        Op::Exec { .. } => "exec",
        Op::Power { .. } => "power",
    }
}

/// Root may do anything; members of the control group (primary or supplementary) may
/// read; everyone else is refused.
pub fn authorize(uid: u32, gids: &[u32], control_gid: Option<u32>, op: &Op) -> Result<(), String> {
    if uid == 0 {
        return Ok(());
    }
    let in_group = control_gid.is_some_and(|g| gids.contains(&g));
    if op.is_read_only() && in_group {
        return Ok(());
    }
    if op.is_read_only() {
        Err(format!(
            "{} needs root or the sysctr group (peer uid {uid}, groups {gids:?})",
            op_name(op)
        ))
    } else {
        Err(format!(
            "{} changes the system and needs root (peer uid {uid})",
            op_name(op)
        ))
    }
}

/// The peer's groups: SO_PEERCRED gives only the primary one, /proc the rest.
fn peer_groups(pid: i32, primary: u32) -> Vec<u32> {
    let mut gids = vec![primary];
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        if let Some(line) = status.lines().find_map(|l| l.strip_prefix("Groups:")) {
            gids.extend(
                line.split_whitespace()
                    .filter_map(|g| g.parse::<u32>().ok()),
            );
        }
    }
    gids
}

/// The gid of the `sysctr` group, from /etc/group.
pub fn sysctr_gid() -> Option<u32> {
    let text = std::fs::read_to_string("/etc/group").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == "sysctr").then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

/// Opens /dev/kmsg for reading from the oldest record still in the ring.
fn open_kmsg() -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/kmsg")
        .ok()
}

/// Reads the kernel log records available now (bounded), as log entries.
fn read_kmsg(f: &mut std::fs::File) -> Vec<LogEntry> {
    let boot_epoch_ms = crate::logs::now_ms().saturating_sub(crate::supervisor::boot_ms());
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    for _ in 0..100_000 {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                let Some((head, msg)) = rec.split_once(';') else {
                    continue;
                };
                let usec: u64 = head
                    .split(',')
                    .nth(2)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let line = msg.lines().next().unwrap_or("").to_string();
                out.push(LogEntry {
                    ts_ms: boot_epoch_ms + usec / 1000,
                    stream: Stream::Kernel,
                    line,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {} // overwritten records
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_table() {
        let ps = Op::Ps {};
        let stop = Op::Stop {
            service: "ssh".into(),
        };
        assert!(authorize(0, &[0], None, &stop).is_ok());
        assert!(authorize(1000, &[990], Some(990), &ps).is_ok());
        assert!(
            authorize(1000, &[100, 990], Some(990), &ps).is_ok(),
            "a supplementary group counts"
        );
        assert_eq!(
            authorize(1000, &[990], Some(990), &stop).unwrap_err(),
            "stop changes the system and needs root (peer uid 1000)"
        );
        assert_eq!(
            authorize(1000, &[100], Some(990), &ps).unwrap_err(),
            "ps needs root or the sysctr group (peer uid 1000, groups [100])"
        );
    }
}

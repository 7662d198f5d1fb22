//! The control socket (`/run/sysctr/control.sock`): the `sysctr` CLI's way in. Framed JSON
//! requests (see `manifest::protocol` and docs/api.md), authorized by the peer's
//! credentials ([`auth`]), answered by [`dispatch`]; one connection's reading, writing and
//! deadlines are [`conn`].
//!
//! Every bound is explicit (docs/architecture.md, invariant 12): at most
//! [`MAX_CLIENTS`] connections from non-root peers plus [`MAX_ROOT_CLIENTS`] from root,
//! so a flood from the `sysctr` group never locks root out; a request must arrive within
//! [`conn::REQUEST_TIMEOUT`] and a reply be read within [`conn::REPLY_TIMEOUT`]; a
//! follower whose unsent output passes [`MAX_QUEUED`] is dropped; a request larger than
//! the limit is refused before its body is read.

pub mod auth;
mod conn;
mod dispatch;
mod images;
mod kmsg;
mod update;

use crate::reactor::{Reactor, Source};
use crate::supervisor::{ApiError, Supervisor};
use auth::{Peer, Refusals};
use conn::{Client, Input, Mode};
use manifest::protocol::{self, PowerAction, Response};
use nix::sys::epoll::EpollFlags;
use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

pub use auth::sysctr_gid;

/// A follower whose unsent output grows past this is disconnected.
const MAX_QUEUED: usize = 8 << 20;
/// Connections from peers other than root.
pub const MAX_CLIENTS: usize = 64;
/// Connections from root, counted apart so that root always gets in.
pub const MAX_ROOT_CLIENTS: usize = 64;
/// Connections accepted per readable event of the listener.
const ACCEPTS_PER_EVENT: usize = 64;
/// PID 1's descriptor limit: room for every service's pipes and sockets and every client.
pub const NOFILE_LIMIT: u64 = 65536;
/// How long the listener rests after accept(2) ran out of descriptors.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Raises PID 1's RLIMIT_NOFILE (the kernel starts init with 1024) to [`NOFILE_LIMIT`],
/// or to the hard limit if that is lower and cannot be raised.
pub fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let want = NOFILE_LIMIT.max(soft);
    if setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_err() {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

pub struct ControlServer {
    listener: UnixListener,
    listener_token: u64,
    /// Set while the listener rests after EMFILE.
    paused_until: Option<Instant>,
    clients: HashMap<u64, Client>,
    next_id: u64,
    control_gid: Option<u32>,
    init_boot_ms: u64,
    refusals: Refusals,
    /// The booted slot and entry, shown by `sysctr version`.
    pub boot: Option<manifest::protocol::BootInfo>,
    /// The update helper, when one runs.
    updates: crate::update::run::Runner,
    /// Where the boots' logs are kept (`/var/log/sysctr`), when /var persists.
    pub log_root: Option<std::path::PathBuf>,
    /// The applied set on the state partition (None without one: apply is refused).
    pub applied: Option<crate::applied::AppliedSet>,
    /// The image helper, when one runs.
    images: crate::images::runner::Runner,
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
        let listener_token = r
            .add(listener.as_fd(), Source::Listener)
            .map_err(std::io::Error::from)?;
        Ok(ControlServer {
            listener,
            listener_token,
            paused_until: None,
            clients: HashMap::new(),
            next_id: 1,
            control_gid,
            init_boot_ms,
            refusals: Refusals::default(),
            boot: None,
            log_root: None,
            updates: Default::default(),
            applied: None,
            images: Default::default(),
        })
    }

    pub fn accept(&mut self, r: &mut Reactor) {
        let now = Instant::now();
        for _ in 0..ACCEPTS_PER_EVENT {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
                        // Out of descriptors: rest instead of spinning on a readable listener.
                        r.modify(
                            self.listener_token,
                            self.listener.as_fd(),
                            EpollFlags::empty(),
                        );
                        self.paused_until = Some(now + ACCEPT_PAUSE);
                    }
                    self.refusals.log(format_args!("accept: {e}"));
                    return;
                }
            };
            let Ok(peer) = Peer::of(&stream) else {
                continue;
            };
            let root = peer.is_root();
            let (count, cap) = (
                self.clients
                    .values()
                    .filter(|c| c.peer.is_root() == root)
                    .count(),
                if root { MAX_ROOT_CLIENTS } else { MAX_CLIENTS },
            );
            if count >= cap {
                // Dropping the stream closes it: the peer reads EOF.
                self.refusals.log(format_args!(
                    "refused a connection from uid {} (pid {}): {count} clients already",
                    peer.uid, peer.pid
                ));
                continue;
            }
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let Ok(token) = r.add(stream.as_fd(), Source::Client(id)) else {
                continue;
            };
            self.clients
                .insert(id, Client::new(stream, token, peer, now));
        }
    }

    /// Drops clients past their deadline and wakes a resting listener; call every turn.
    pub fn sweep(&mut self, r: &mut Reactor) {
        let now = Instant::now();
        if self.paused_until.is_some_and(|t| now >= t) {
            self.paused_until = None;
            r.modify(
                self.listener_token,
                self.listener.as_fd(),
                EpollFlags::EPOLLIN,
            );
        }
        let late: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.deadline.is_some_and(|d| now >= d))
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            crate::debug!("control", "client {id} timed out");
            self.close(id, r);
        }
    }

    /// Whether client `id` is still connected (it has not read its last answer and hung up).
    pub fn is_connected(&self, id: u64) -> bool {
        self.clients.contains_key(&id)
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
            Some((_, f)) => kmsg::read_kmsg(f),
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

    fn set_mode(&mut self, id: u64, mode: Mode) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.mode = mode;
            c.update_deadline(Instant::now(), true);
        }
    }

    fn finish<T: serde::Serialize>(&mut self, id: u64, msg: &T, r: &mut Reactor) {
        self.set_mode(id, Mode::Closing);
        self.send(id, msg, r);
    }

    fn error(&mut self, id: u64, e: ApiError, r: &mut Reactor) {
        let resp = Response::Error {
            kind: e.kind(),
            message: e.to_string(),
        };
        self.finish(id, &resp, r);
    }

    fn flush(&mut self, id: u64, r: &mut Reactor) {
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        if !c.write_out(Instant::now()) {
            self.close(id, r);
            return;
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
            if !c.still_there() {
                self.close(id, r);
            }
            return None;
        }
        match c.read_request() {
            Input::Partial => None,
            Input::Frame(body) => self.handle(id, &body, sup, r),
            Input::TooLarge { len, limit } => {
                self.error(id, ApiError::TooLarge { len, limit }, r);
                None
            }
            Input::Closed { mid_frame: true } => {
                self.error(id, ApiError::Truncated, r);
                None
            }
            Input::Closed { mid_frame: false } => {
                self.close(id, r);
                None
            }
        }
    }

    /// Delivers what the supervisor produced since the last call to the streaming clients.
    pub fn publish(&mut self, sup: &mut Supervisor, r: &mut Reactor) {
        let out = sup.take_outbox();
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
                    for e in &out.events {
                        self.send(id, &Response::Event { event: e.clone() }, r);
                    }
                }
                Mode::FollowLogs { svc } => {
                    for (_, entry) in out.logs.iter().filter(|(i, _)| *i == svc) {
                        let entry = entry.clone();
                        self.send(id, &Response::Log { entry }, r);
                    }
                }
                _ => {}
            }
        }
        for (client, status) in out.exec_exits {
            if self.clients.contains_key(&client) {
                self.send(client, &Response::ExecExited { status }, r);
                self.finish(client, &Response::End, r);
            }
        }
    }
}

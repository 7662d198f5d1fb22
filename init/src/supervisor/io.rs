//! The services' output and notify datagrams: reading their pipes into the log buffers
//! (bounded per event, for fairness), the last words after an exit, and sd_notify
//! messages, accepted only from a process in the service's own cgroup.

use super::machine::Input;
use super::Supervisor;
use crate::logs::now_ms;
use crate::ratelimit::Verdict;
use crate::reactor::Reactor;
use crate::readiness::notify;
use manifest::protocol::Stream;
use std::os::fd::{AsRawFd, OwnedFd};

/// Reads per readable event before the loop moves on to other sources.
const READS_PER_EVENT: usize = 4;
/// Reads of what is left in a pipe after its service exited.
const READS_AFTER_EXIT: usize = 64;

/// A pipe end being read for a service's output.
pub(super) struct Pipe {
    pub token: u64,
    pub fd: OwnedFd,
    pub stream: Stream,
}

impl Supervisor {
    /// Reads what is waiting on one of a service's pipes (bounded per call, for fairness).
    pub fn on_pipe(&mut self, i: usize, stream: Stream, r: &mut Reactor) {
        let s = &mut self.services[i];
        let Some(pos) = s.pipes.iter().position(|p| p.stream == stream) else {
            return;
        };
        let mut buf = [0u8; 16384];
        let mut budget = READS_PER_EVENT;
        loop {
            match nix::unistd::read(s.pipes[pos].fd.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    let p = s.pipes.remove(pos);
                    r.remove(p.token, &p.fd);
                    if let Some(e) = s.logs.close_stream(stream, now_ms()) {
                        self.out.logs.push((i, e));
                    }
                    return;
                }
                Ok(n) => {
                    for e in s.logs.ingest(stream, &buf[..n], now_ms()) {
                        self.out.logs.push((i, e));
                    }
                    budget -= 1;
                    if budget == 0 {
                        return;
                    }
                }
                Err(nix::Error::EAGAIN) => return,
                Err(nix::Error::EINTR) => {}
                Err(e) => {
                    crate::warn!(&s.name, "read {stream:?}: {e}");
                    let p = s.pipes.remove(pos);
                    r.remove(p.token, &p.fd);
                    return;
                }
            }
        }
    }

    /// Reads whatever output is left after the service exited, so its last words are kept.
    pub(super) fn drain_pipes(&mut self, i: usize) {
        let s = &mut self.services[i];
        let mut buf = [0u8; 16384];
        for p in &s.pipes {
            for _ in 0..READS_AFTER_EXIT {
                match nix::unistd::read(p.fd.as_raw_fd(), &mut buf) {
                    Ok(n) if n > 0 => {
                        for e in s.logs.ingest(p.stream, &buf[..n], now_ms()) {
                            self.out.logs.push((i, e));
                        }
                    }
                    _ => break,
                }
            }
        }
    }

    /// sd_notify datagrams: READY=1 marks the service Ready, STATUS= is shown in ps. A
    /// datagram from a process outside the service's cgroup is dropped with a warning.
    pub fn on_notify(&mut self, i: usize, r: &mut Reactor) {
        let Some((_, sock)) = &self.services[i].notify else {
            return;
        };
        let datagrams = sock.receive(notify::DATAGRAMS_PER_TURN);
        let cgroup = self.fx.cgroup_path(&self.services[i].name);
        let mut ready = false;
        for d in datagrams {
            if !notify::sender_in_cgroup(d.pid, &cgroup) {
                if let Verdict::Write { suppressed } =
                    self.notify_refusals.check(std::time::Instant::now())
                {
                    crate::warn!(
                        &self.services[i].name,
                        "notify: ignored a datagram from pid {} (not in cgroup {cgroup}){}",
                        d.pid,
                        if suppressed > 0 {
                            format!("; {suppressed} more ignored before it")
                        } else {
                            String::new()
                        }
                    );
                }
                continue;
            }
            let msg = notify::parse(&d.text);
            if let Some(st) = msg.status {
                self.services[i].status_text = Some(st);
            }
            ready |= msg.ready;
        }
        if ready {
            self.step(i, Input::CheckPassed, r);
            self.schedule_if_needed(r);
        }
    }
}

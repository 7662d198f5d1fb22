//! The event loop's plumbing: one epoll instance over every descriptor PID 1 watches, each
//! registered with a [`Source`] saying who owns it, plus a timer queue whose earliest
//! deadline bounds the epoll wait. Single-threaded by design (docs/architecture.md,
//! invariant 3). A descriptor is removed before it is closed, or closed with its owner
//! (epoll forgets a closed descriptor by itself), so an event always has a live owner.

use crate::supervisor::machine::TimerKind;
use manifest::protocol::Stream;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Signals,
    Listener,
    Client(u64),
    /// A service's stdout or stderr. Removed from epoll before its descriptor is closed, so
    /// an event always belongs to the service's current pipes.
    Pipe {
        svc: usize,
        stream: Stream,
    },
    Notify {
        svc: usize,
    },
    /// /dev/kmsg followed for a control client.
    Kmsg(u64),
}

/// A timer of a service's state machine, for the run it was armed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Timer {
    Service {
        svc: usize,
        run: u64,
        kind: TimerKind,
    },
}

/// Stands in for a delay too long to add to the clock.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub struct Reactor {
    epoll: Epoll,
    sources: HashMap<u64, (Source, RawFd)>,
    next_token: u64,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
}

impl Reactor {
    pub fn new() -> nix::Result<Reactor> {
        Ok(Reactor {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            sources: HashMap::new(),
            next_token: 1,
            timers: BinaryHeap::new(),
            timer_seq: 0,
        })
    }

    /// Watches `fd` for input (and hang-up); returns the token to remove it with.
    pub fn add(&mut self, fd: BorrowedFd<'_>, source: Source) -> nix::Result<u64> {
        self.add_with(fd, source, EpollFlags::EPOLLIN)
    }

    pub fn add_with(
        &mut self,
        fd: BorrowedFd<'_>,
        source: Source,
        flags: EpollFlags,
    ) -> nix::Result<u64> {
        let token = self.next_token;
        self.next_token += 1;
        self.epoll.add(fd, EpollEvent::new(flags, token))?;
        self.sources.insert(token, (source, fd.as_raw_fd()));
        Ok(token)
    }

    /// Changes what a registered descriptor is watched for (e.g. add EPOLLOUT while a
    /// client has output queued).
    pub fn modify(&mut self, token: u64, fd: BorrowedFd<'_>, flags: EpollFlags) {
        let _ = self.epoll.modify(fd, &mut EpollEvent::new(flags, token));
    }

    /// Stops watching; call before the descriptor is closed.
    pub fn remove(&mut self, token: u64, fd: impl AsFd) {
        if self.sources.remove(&token).is_some() {
            let _ = self.epoll.delete(fd);
        }
    }

    pub fn at(&mut self, when: Instant, timer: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((when, self.timer_seq, timer)));
    }

    /// Fires `timer` after `delay`; a delay past what the clock can represent means
    /// "not in this boot" (about a century), never an overflow.
    pub fn after(&mut self, delay: Duration, timer: Timer) {
        let now = Instant::now();
        let when = now
            .checked_add(delay)
            .or_else(|| now.checked_add(FAR_FUTURE))
            .unwrap_or(now);
        self.at(when, timer);
    }

    /// Waits for readiness or the next timer, at most `max`. Returns the ready sources with
    /// their event flags, and the timers that are due.
    pub fn wait(&mut self, max: Duration) -> (Vec<(u64, Source, EpollFlags)>, Vec<Timer>) {
        let now = Instant::now();
        let mut timeout = max;
        if let Some(Reverse((when, _, _))) = self.timers.peek() {
            timeout = timeout.min(when.saturating_duration_since(now));
        }
        let mut events = [EpollEvent::empty(); 64];
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // Round a sub-millisecond wait up, so a due-soon timer does not spin the loop.
        let ms = if ms == 0 && !timeout.is_zero() { 1 } else { ms };
        let n = match self.epoll.wait(
            &mut events,
            EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::NONE),
        ) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => 0,
            Err(e) => {
                crate::error!("reactor", "epoll_wait: {e}");
                std::thread::sleep(Duration::from_millis(10));
                0
            }
        };
        let ready = events[..n]
            .iter()
            .filter_map(|e| {
                let token = e.data();
                self.sources
                    .get(&token)
                    .map(|(s, _)| (token, *s, e.events()))
            })
            .collect();
        let now = Instant::now();
        let mut due = Vec::new();
        while let Some(Reverse((when, _, _))) = self.timers.peek() {
            if *when > now {
                break;
            }
            if let Some(Reverse((_, _, t))) = self.timers.pop() {
                due.push(t);
            }
        }
        (ready, due)
    }
}

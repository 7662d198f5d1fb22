//! What a service's state machine needs from its manifest entry, in typed units: how it
//! is found Ready, its restart limits, its stop signal and timeout.

use super::restart::Limits;
use manifest::{Kind, Readiness, Service};
use std::time::Duration;

/// How a service is found Ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// As soon as the container runs.
    Started,
    /// On a READY=1 datagram.
    Notify,
    /// A probe (file, tcp, exec) run every `interval`.
    Poll { interval: Duration },
}

/// What the state machine needs from the manifest entry, in typed units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub kind: Kind,
    pub check: Check,
    /// The readiness kind's name, for messages.
    pub check_name: &'static str,
    pub ready_timeout: Duration,
    pub restart: Limits,
    pub stop_signal: i32,
    pub stop_signal_name: String,
    pub stop_timeout: Duration,
}

impl Policy {
    pub fn from_service(def: &Service) -> Policy {
        let check = match &def.readiness {
            Readiness::Started => Check::Started,
            Readiness::Notify { .. } => Check::Notify,
            other => Check::Poll {
                interval: Duration::from_millis(other.interval_ms()),
            },
        };
        Policy {
            kind: def.kind,
            check,
            check_name: def.readiness.name(),
            ready_timeout: Duration::from_secs(def.readiness.timeout_secs()),
            restart: Limits::from_manifest(&def.restart),
            stop_signal: def.stop.signal.number(),
            stop_signal_name: def.stop.signal.to_string(),
            stop_timeout: Duration::from_secs(def.stop.timeout_secs),
        }
    }
}

impl Policy {
    /// The manifest's defaults, for an entry that never runs (one the loader rejected).
    pub fn inert(kind: Kind) -> Policy {
        let stop = manifest::Stop::default();
        Policy {
            kind,
            check: Check::Started,
            check_name: "started",
            ready_timeout: Duration::ZERO,
            restart: Limits::from_manifest(&manifest::Restart::default()),
            stop_signal: libc::SIGTERM,
            stop_signal_name: stop.signal.to_string(),
            stop_timeout: Duration::from_secs(stop.timeout_secs),
        }
    }
}

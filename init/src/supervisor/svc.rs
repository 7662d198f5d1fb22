//! One service's record in the supervisor's table: its manifest entry (or the loader's
//! rejection), its state machine, and what PID 1 holds for it — output pipes, notify socket,
//! log buffer, the spec of the last start, timestamps. Built here from an entry or a
//! rejected one, the same way for the image's manifest and the applied set.

use super::io;
use super::machine::{Machine, Policy};
use crate::logs::LogBuffer;
use crate::readiness::notify::NotifySocket;
use manifest::protocol::State;
use manifest::{Kind, Rejected, Service};
use std::path::Path;

/// One service: its manifest entry, its state machine, and what PID 1 holds for it.
pub struct Svc {
    /// None for an entry the manifest loader rejected: it only shows as Failed.
    pub(super) def: Option<Service>,
    pub(super) name: String,
    pub(super) kind: Kind,
    pub(super) machine: Machine,
    pub(super) started_at_ms: Option<u64>,
    pub(super) started_boot_ms: Option<u64>,
    pub(super) ready_boot_ms: Option<u64>,
    pub(super) started_boot_us: Option<u64>,
    pub(super) start_us: Option<u64>,
    pub(super) exited_boot_us: Option<u64>,
    pub(super) status_text: Option<String>,
    pub(super) logs: LogBuffer,
    pub(super) pipes: Vec<io::Pipe>,
    pub(super) notify: Option<(u64, NotifySocket)>,
    /// A readiness probe process in flight.
    pub(super) probe_pid: Option<i32>,
    /// Compact JSON text: as a `serde_json::Value` tree the spec (its seccomp rules above
    /// all) took some 57 KiB of heap per service (host bench: 68.9 → 11.5 KiB of PID 1's RSS
    /// per service, 1 → 100 services); `inspect` parses it back.
    pub(super) spec: Option<Box<str>>,
    /// From the applied set on the state partition, not the image's manifest.
    pub(super) applied: bool,
    /// Removed by an apply: hidden from lookups and listings; its stop may be in flight.
    pub(super) removed: bool,
}

impl Svc {
    /// A service from a good entry: Pending, its log buffer sized by the entry and kept in
    /// `<var_log_dir>/<name>.log` when there is one.
    pub(super) fn from_def(def: Service, var_log_dir: Option<&Path>) -> Svc {
        let cap = def.log_buffer_bytes() as usize;
        let file = var_log_dir.map(|d| d.join(format!("{}.log", def.name)));
        let machine = Machine::new(Policy::from_service(&def));
        Svc::new(
            def.name.clone(),
            def.kind,
            Some(def),
            machine,
            LogBuffer::new(cap, file),
        )
    }

    /// A service for an entry the loader rejected (from `file`): Failed with the reason,
    /// which is logged.
    pub(super) fn rejected(rej: &Rejected, file: &str) -> Svc {
        let why = rej.describe(file);
        crate::error!(&rej.name, "rejected: {why}");
        let machine = Machine::failed(Policy::inert(rej.kind), why);
        Svc::new(
            rej.name.clone(),
            rej.kind,
            None,
            machine,
            LogBuffer::new(4096, None),
        )
    }
    fn new(
        name: String,
        kind: Kind,
        def: Option<Service>,
        machine: Machine,
        logs: LogBuffer,
    ) -> Svc {
        Svc {
            def,
            name,
            kind,
            machine,
            started_at_ms: None,
            started_boot_ms: None,
            ready_boot_ms: None,
            started_boot_us: None,
            start_us: None,
            exited_boot_us: None,
            status_text: None,
            logs,
            pipes: Vec::new(),
            notify: None,
            probe_pid: None,
            spec: None,
            applied: false,
            removed: false,
        }
    }
    pub fn def(&self) -> Option<&Service> {
        self.def.as_ref()
    }
    pub fn state(&self) -> State {
        self.machine.state()
    }
    pub fn pid(&self) -> Option<i32> {
        self.machine.pid()
    }
    pub fn logs(&self) -> &LogBuffer {
        &self.logs
    }
    /// The OCI spec of the last start, as JSON.
    pub fn spec(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.spec.as_deref()?).ok()
    }
}

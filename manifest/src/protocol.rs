//! The control protocol between the `sysctr` CLI and PID 1 over `/run/sysctr/control.sock`.
//!
//! Each message is a frame: a 4-byte big-endian length, then that many bytes of JSON. A
//! client sends one [`Request`]; PID 1 answers with one or more [`Response`] frames. Single
//! answers end the exchange; streams (`logs --follow`, `events`, `exec`) go on until PID 1
//! sends [`Response::End`] or the client hangs up. `docs/api.md` documents every message.

mod frame;

pub use frame::{decode_request, encode, read_frame, write_frame, FrameDecoder, FrameError};
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u32 = 1;
pub const SOCKET_PATH: &str = "/run/sysctr/control.sock";
/// Requests larger than this are refused without being parsed.
pub const MAX_REQUEST_BYTES: u32 = 64 * 1024;
/// Responses larger than this are a protocol error on the client side.
pub const MAX_RESPONSE_BYTES: u32 = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Must be [`PROTOCOL_VERSION`].
    pub version: u32,
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    pub fn new(op: Op) -> Self {
        Request {
            version: PROTOCOL_VERSION,
            op,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerAction {
    Reboot,
    Poweroff,
    Halt,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    // Struct variants even without fields, so that unknown fields are rejected.
    Version {},
    Ps {},
    Inspect {
        service: String,
    },
    Logs {
        service: String,
        /// Last N lines only.
        #[serde(default)]
        lines: Option<usize>,
        /// Only lines at or after this time (milliseconds since the Unix epoch).
        #[serde(default)]
        since_ms: Option<u64>,
        #[serde(default)]
        follow: bool,
    },
    /// Log lines kept on the state partition for this boot (0) or an earlier one (-1 the
    /// previous, …): a service's, or PID 1's own when `service` is absent. Not followed.
    BootLogs {
        #[serde(default)]
        boot: i64,
        #[serde(default)]
        service: Option<String>,
        /// Last N lines only.
        #[serde(default)]
        lines: Option<usize>,
    },
    /// The boots whose logs the state partition keeps, oldest first.
    ListBoots {},
    /// The kernel log (/dev/kmsg).
    KernelLog {
        #[serde(default)]
        lines: Option<usize>,
        #[serde(default)]
        follow: bool,
    },
    Events {},
    Start {
        service: String,
    },
    Stop {
        service: String,
    },
    Restart {
        service: String,
    },
    /// Run a process inside a running service's container. The client passes the stdin,
    /// stdout and stderr for it as three file descriptors (SCM_RIGHTS) with this frame.
    Exec {
        service: String,
        args: Vec<String>,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        tty: bool,
    },
    Power {
        action: PowerAction,
    },
    /// Replace the applied set (services on the state partition) with the manifest `text`
    /// (a manifest file's content). `dry_run` only validates and returns the plan.
    Apply {
        text: String,
        #[serde(default)]
        dry_run: bool,
    },
    /// Remove one applied service (stop it, drop it from the applied set).
    Rm {
        service: String,
    },
    /// Import an `oci-archive` or `docker save` tar, passed as one file descriptor with
    /// this frame, into the image store as `image` (`NAME:TAG`).
    ImageImport {
        image: String,
    },
    /// The images in the store.
    ImageLs {},
    /// Remove an image no applied service names; layers no other image needs are removed.
    ImageRm {
        image: String,
    },
}

/// One image of the store, as `image ls` and `image import` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// `NAME:TAG`.
    pub image: String,
    /// The image manifest's digest.
    pub id: String,
    pub layers: usize,
    /// Applied services that name it.
    #[serde(default)]
    pub used_by: Vec<String>,
}

impl Op {
    /// Whether the request only reads state (allowed for the `sysctr` group).
    pub fn is_read_only(&self) -> bool {
        matches!(
            self,
            Op::Version {}
                | Op::Ps {}
                | Op::Inspect { .. }
                | Op::Logs { .. }
                | Op::BootLogs { .. }
                | Op::ListBoots {}
                | Op::KernelLog { .. }
                | Op::Events {}
                | Op::ImageLs {}
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Pending,
    Starting,
    Running,
    Ready,
    Stopping,
    Exited,
    Failed,
    Backoff,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Starting => "starting",
            State::Running => "running",
            State::Ready => "ready",
            State::Stopping => "stopping",
            State::Exited => "exited",
            State::Failed => "failed",
            State::Backoff => "backoff",
        }
    }
}

/// How a process ended: an exit code or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The shell convention: the code, or 128 + the signal number.
    pub fn as_shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit {c}"),
            ExitStatus::Signal(s) => write!(f, "{}", crate::units::signal_name(*s)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub kind: crate::Kind,
    pub state: State,
    pub ready: bool,
    pub pid: Option<i32>,
    /// When the current (or last) run started, milliseconds since the Unix epoch.
    pub started_at_ms: Option<u64>,
    /// Milliseconds since boot (CLOCK_BOOTTIME) when the current run started and became Ready.
    pub started_boot_ms: Option<u64>,
    pub ready_boot_ms: Option<u64>,
    /// Microseconds since boot when the current run's container process was running.
    #[serde(default)]
    pub started_boot_us: Option<u64>,
    /// How long creating and starting the current run's container took, microseconds.
    #[serde(default)]
    pub start_us: Option<u64>,
    /// Microseconds since boot when PID 1 reaped the last run's exit.
    #[serde(default)]
    pub exited_boot_us: Option<u64>,
    pub restarts: u32,
    pub last_exit: Option<ExitStatus>,
    pub last_error: Option<String>,
    /// The last `STATUS=` a notify-ready service sent.
    pub status_text: Option<String>,
    /// cgroup memory.current, bytes.
    pub memory_bytes: Option<u64>,
    /// cgroup cpu.stat usage_usec.
    pub cpu_usec: Option<u64>,
}

impl ServiceStatus {
    /// A service that has never run: what a client sees before init started it.
    pub fn new(name: impl Into<String>, kind: crate::Kind, state: State) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            kind,
            state,
            ready: false,
            pid: None,
            started_at_ms: None,
            started_boot_ms: None,
            ready_boot_ms: None,
            started_boot_us: None,
            start_us: None,
            exited_boot_us: None,
            restarts: 0,
            last_exit: None,
            last_error: None,
            status_text: None,
            memory_bytes: None,
            cpu_usec: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
    Kernel,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    pub stream: Stream,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub ts_ms: u64,
    pub service: String,
    pub state: State,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request could not be decoded or has a wrong version.
    BadRequest,
    /// The request frame is larger than [`MAX_REQUEST_BYTES`].
    TooLarge,
    /// The peer may not make this request.
    PermissionDenied,
    UnknownService,
    /// The service is not in a state that allows the request.
    Conflict,
    /// PID 1 tried and failed; the message has the underlying error.
    Failed,
}

/// A boot whose logs are kept on the state partition (`sysctr logs --list-boots`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastBoot {
    /// 0 for this boot, -1 for the one before, … (what `--boot` takes).
    pub index: i64,
    /// The boot's number on this state partition, counting up from 1.
    pub seq: u64,
    /// The kernel's boot id (/proc/sys/kernel/random/boot_id).
    pub boot_id: String,
    /// When PID 1 started logging that boot (milliseconds since the Unix epoch).
    pub started_ms: u64,
    /// The services with a log file in that boot, sorted.
    pub services: Vec<String>,
}

/// Which slot and boot-loader entry the running system booted, from the kernel command line
/// (`sysctr.slot=`) and systemd-boot's EFI variables.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    /// `a` or `b`; None when the command line names no slot (a development boot).
    pub slot: Option<String>,
    /// Booted through UEFI firmware (else QEMU's direct kernel boot).
    pub uefi: bool,
    /// The boot-loader entry id (`LoaderEntrySelected`), e.g. `sysctr-a+2-1.efi`.
    pub entry: Option<String>,
    /// The counted entry's path on the ESP (`LoaderBootCountPath`), until it is blessed.
    pub boot_count_path: Option<String>,
    pub tries_left: Option<u32>,
    pub tries_done: Option<u32>,
    /// This boot renamed its counted entry to the counter-less name: the entry is good.
    pub blessed: bool,
    /// `LoaderInfo`, e.g. `systemd-boot 252.39-1~deb12u1`.
    pub loader: Option<String>,
    /// `LoaderFirmwareInfo`, e.g. `EDK II 1.00`.
    pub firmware: Option<String>,
    /// Microseconds since firmware start when the loader started and when it started the UKI.
    pub loader_init_us: Option<u64>,
    pub loader_exec_us: Option<u64>,
    /// The health gate's verdict on this trial boot ("blessed: …", "bad: …"), once decided.
    #[serde(default)]
    pub health: Option<String>,
    /// The last boot the health gate found bad (from the state partition), and why.
    #[serde(default)]
    pub previous_failure: Option<String>,
    /// The image's version (its `/etc/sysctr/release.json`): what updates compare.
    #[serde(default)]
    pub os_version: Option<String>,
}

// Replies are built once and serialized at once; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    Version {
        version: String,
        protocol: u32,
        /// Milliseconds since boot when PID 1 started.
        init_boot_ms: u64,
        /// The slot and boot entry this boot came from (absent from older inits).
        #[serde(default)]
        boot: Option<BootInfo>,
    },
    Services {
        services: Vec<ServiceStatus>,
    },
    Inspect {
        status: ServiceStatus,
        /// The manifest entry, as JSON.
        manifest: serde_json::Value,
        /// The generated OCI runtime spec, if the service has been started.
        spec: Option<serde_json::Value>,
        cgroup: String,
        bundle: String,
    },
    Log {
        entry: LogEntry,
    },
    Boots {
        boots: Vec<PastBoot>,
    },
    Event {
        event: Event,
    },
    Ok {
        message: String,
    },
    ExecStarted {
        pid: i32,
    },
    ExecExited {
        status: ExitStatus,
    },
    Error {
        kind: ErrorKind,
        message: String,
    },
    /// The outcome of an apply or rm: the plan and whether it was carried out.
    Applied {
        plan: crate::applied::Plan,
        dry_run: bool,
    },
    Images {
        images: Vec<ImageInfo>,
    },
    /// An import finished: how many layers it unpacked and how many it found shared.
    ImageImported {
        image: ImageInfo,
        unpacked: usize,
        shared: usize,
        #[serde(default)]
        warnings: Vec<String>,
    },
    /// The end of a stream.
    End,
}

#[cfg(test)]
mod tests;

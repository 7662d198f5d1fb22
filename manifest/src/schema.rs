//! The manifest schema: what a service is, as written in `/etc/sysctr/manifest.json`.
//!
//! Every struct rejects unknown fields, so a typo is an error rather than a silently ignored
//! setting. Defaults are the secure ones, so a service gets only what its entry asks for
//! (docs/architecture.md, invariant 6): read-only root, private namespaces, no extra
//! capabilities. `docs/manifest.md` documents each field.

use crate::units::{CapabilityName, SignalName, Size};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The only manifest format version this build understands.
pub const MANIFEST_VERSION: u32 = 1;

/// Default per-service log ring buffer: 1 MiB.
pub const DEFAULT_LOG_BUFFER: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Format version; must be [`MANIFEST_VERSION`].
    pub version: u32,
    /// Onboot tasks run in this order; services start by dependency and readiness.
    pub services: Vec<Service>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// Unique name: `[a-z0-9][a-z0-9_.-]*`, at most 63 bytes. Used as container id and cgroup name.
    pub name: String,
    #[serde(default)]
    pub kind: Kind,
    /// Absolute path of the container's root filesystem on the OS root. Empty (left out)
    /// for a service that names an `image` instead.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub root: String,
    /// `NAME:TAG` of an image in the store on the state partition (`sysctr image import`),
    /// instead of a `root`. Only for services applied at run time (`sysctr apply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Command and arguments; `args[0]` is resolved inside the container.
    pub args: Vec<String>,
    /// Environment as `KEY=VALUE` strings.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container (absolute).
    #[serde(default = "default_cwd")]
    pub cwd: String,
    #[serde(default)]
    pub user: User,
    /// Capabilities added to the minimal default set, by name (`CAP_NET_ADMIN`).
    #[serde(default)]
    pub capabilities: Vec<CapabilityName>,
    #[serde(default)]
    pub namespaces: Namespaces,
    /// Mounts in addition to the defaults (/proc, /dev, /sys read-only, /tmp, /run).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Host directories PID 1 creates (like `mkdir -p`, mode 0755, owned by root) before it
    /// creates the container, typically the sources of its bind mounts: absolute, below
    /// `/run` or `/var`, not one of PID 1's own paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_dirs: Vec<String>,
    /// Host device nodes made available inside the container, by absolute path.
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub restart: Restart,
    /// Services that must be Ready before this one starts.
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub readiness: Readiness,
    #[serde(default)]
    pub stop: Stop,
    /// Size of the in-memory log ring buffer, e.g. `"1M"`, `"256K"`. Default 1 MiB.
    #[serde(default)]
    pub log_buffer: Option<Size>,
    /// Onboot tasks only: what a failure does to the boot.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Mount the container's root filesystem read-only (default true).
    #[serde(default = "default_true")]
    pub readonly_root: bool,
    /// In the health set (default true): a trial boot is blessed only when every service in
    /// it is Ready and settled, and one of them failing sends the machine back to the other
    /// slot. `false` for a service whose failure must not roll the OS back.
    #[serde(default = "default_true")]
    pub health: bool,
    /// Full privileges, for a service that runs containers itself: every capability, no
    /// seccomp filter, no masked or read-only /proc paths, writable /sys and /sys/fs/cgroup,
    /// every device allowed, and setuid programs keep working (no_new_privileges off).
    #[serde(default)]
    pub privileged: bool,
    /// Container hostname (uts namespace); defaults to the service name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Namespaced sysctls set in the container.
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    /// Annotations copied into the OCI spec; free-form.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Bind PID 1's control socket into the container at `/run/sysctr/control.sock`, for
    /// an operator's shell (ssh, the console) that runs the `sysctr` CLI. Root in such a
    /// container controls the machine.
    #[serde(default)]
    pub control_socket: bool,
}

fn default_cwd() -> String {
    "/".into()
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Runs to completion, in manifest order, before any service starts.
    Onboot,
    /// Long-running, supervised.
    #[default]
    Service,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Record the failure and go on booting.
    #[default]
    Continue,
    /// Take the fatal path: stop everything and halt.
    Halt,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceMode {
    /// A fresh namespace for the container.
    #[default]
    Private,
    /// Share PID 1's namespace.
    Host,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// `host` for services that configure the machine's network (DHCP, sshd).
    #[serde(default)]
    pub network: NamespaceMode,
    /// `host` lets a service see every process (a debug console).
    #[serde(default)]
    pub pid: NamespaceMode,
    #[serde(default)]
    pub ipc: NamespaceMode,
    #[serde(default)]
    pub uts: NamespaceMode,
    /// `host` shows the whole cgroup tree, for a service that manages cgroups of its own
    /// (an OCI runtime, a cluster agent); writable only when the service is `privileged`.
    #[serde(default)]
    pub cgroup: NamespaceMode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Absolute host path for bind mounts; the filesystem name otherwise.
    #[serde(default)]
    pub source: String,
    /// Absolute path inside the container.
    pub destination: String,
    /// `bind`, `tmpfs`, `proc`, …
    #[serde(rename = "type", default = "default_mount_type")]
    pub kind: String,
    /// Mount options: `ro`, `rw`, `nosuid`, `size=16m`, …
    #[serde(default)]
    pub options: Vec<String>,
}

fn default_mount_type() -> String {
    "bind".into()
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// cgroup memory.max, e.g. `"64M"`.
    #[serde(default)]
    pub memory_max: Option<Size>,
    /// cgroup pids.max.
    #[serde(default)]
    pub pids_max: Option<u64>,
    /// cgroup cpu.weight, 1..=10000 (default 100).
    #[serde(default)]
    pub cpu_weight: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    #[serde(default)]
    pub policy: RestartPolicy,
    /// Delay before the second restart in a row; the first restart is immediate.
    #[serde(default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// The delay doubles per restart up to this.
    #[serde(default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    /// More than this many restarts within `crash_loop_window_secs` → Failed until started by hand.
    #[serde(default = "default_crash_loop_restarts")]
    pub crash_loop_restarts: u32,
    #[serde(default = "default_crash_loop_window")]
    pub crash_loop_window_secs: u64,
}

fn default_backoff_initial() -> u64 {
    100
}
fn default_backoff_max() -> u64 {
    30_000
}
fn default_crash_loop_restarts() -> u32 {
    5
}
fn default_crash_loop_window() -> u64 {
    60
}

impl Restart {
    pub fn backoff_initial(&self) -> Duration {
        Duration::from_millis(self.backoff_initial_ms)
    }
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }
    pub fn crash_loop_window(&self) -> Duration {
        Duration::from_secs(self.crash_loop_window_secs)
    }
}

impl Default for Restart {
    fn default() -> Self {
        Restart {
            policy: RestartPolicy::default(),
            backoff_initial_ms: default_backoff_initial(),
            backoff_max_ms: default_backoff_max(),
            crash_loop_restarts: default_crash_loop_restarts(),
            crash_loop_window_secs: default_crash_loop_window(),
        }
    }
}

/// When a service counts as Ready, which is when its dependents may start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Readiness {
    /// Ready as soon as the container process runs.
    #[default]
    Started,
    /// The sd_notify protocol: `READY=1` on `$NOTIFY_SOCKET`.
    Notify {
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
    /// A probe command run inside the container exits 0.
    Exec {
        command: Vec<String>,
        #[serde(default)]
        interval_ms: Option<u64>,
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
    /// A TCP port accepts connections (in the service's network namespace).
    Tcp {
        port: u16,
        #[serde(default)]
        host: Option<String>,
        #[serde(default)]
        interval_ms: Option<u64>,
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
    /// A path appears inside the container's root filesystem or a mount of it.
    File {
        path: String,
        #[serde(default)]
        interval_ms: Option<u64>,
        #[serde(default)]
        timeout_secs: Option<u64>,
    },
}

/// Default readiness timeout when a check does not set one.
pub const DEFAULT_READY_TIMEOUT_SECS: u64 = 30;
/// Default polling interval for exec/tcp/file checks.
pub const DEFAULT_READY_INTERVAL_MS: u64 = 50;

impl Readiness {
    pub fn timeout_secs(&self) -> u64 {
        match self {
            Readiness::Started => 0,
            Readiness::Notify { timeout_secs }
            | Readiness::Exec { timeout_secs, .. }
            | Readiness::Tcp { timeout_secs, .. }
            | Readiness::File { timeout_secs, .. } => {
                timeout_secs.unwrap_or(DEFAULT_READY_TIMEOUT_SECS)
            }
        }
    }

    /// How long the service may take to become Ready (bounded by validation).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs())
    }

    /// How often a polling check runs (bounded by validation).
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms())
    }

    pub fn interval_ms(&self) -> u64 {
        match self {
            Readiness::Exec { interval_ms, .. }
            | Readiness::Tcp { interval_ms, .. }
            | Readiness::File { interval_ms, .. } => {
                interval_ms.unwrap_or(DEFAULT_READY_INTERVAL_MS)
            }
            _ => DEFAULT_READY_INTERVAL_MS,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Readiness::Started => "started",
            Readiness::Notify { .. } => "notify",
            Readiness::Exec { .. } => "exec",
            Readiness::Tcp { .. } => "tcp",
            Readiness::File { .. } => "file",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    /// Signal name sent first, e.g. `SIGTERM`.
    #[serde(default = "default_stop_signal")]
    pub signal: SignalName,
    /// Then SIGKILL after this long.
    #[serde(default = "default_stop_timeout")]
    pub timeout_secs: u64,
}

fn default_stop_signal() -> SignalName {
    SignalName(nix::sys::signal::Signal::SIGTERM)
}
fn default_stop_timeout() -> u64 {
    10
}

impl Stop {
    /// How long after the stop signal SIGKILL follows (bounded by validation).
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            signal: default_stop_signal(),
            timeout_secs: default_stop_timeout(),
        }
    }
}

impl Service {
    /// The log buffer size in bytes.
    pub fn log_buffer_bytes(&self) -> u64 {
        self.log_buffer
            .as_ref()
            .map_or(DEFAULT_LOG_BUFFER, Size::bytes)
    }

    /// memory.max in bytes, if set.
    pub fn memory_max_bytes(&self) -> Option<u64> {
        self.resources.memory_max.as_ref().map(Size::bytes)
    }
}

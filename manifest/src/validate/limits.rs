//! Every bound a manifest value has: nothing a manifest sets is unbounded, so no entry can
//! make PID 1 allocate or wait without limit (docs/architecture.md, invariant 12).
//! `docs/manifest.md` lists them.

/// Services in one manifest.
pub const SERVICES: usize = 1024;
/// Entries in `args`, `env` and `readiness.command`.
pub const ARGS: usize = 1024;
/// Bytes of one argument or environment entry.
pub const ARG_BYTES: usize = 32 << 10;
/// Entries in `mounts`, `devices`, `depends_on`, `sysctl`, `annotations`, `capabilities`,
/// `user.additional_gids`.
pub const LIST: usize = 256;
/// Bytes of a path or of any other string field.
pub const PATH_BYTES: usize = 4096;
/// `readiness.timeout_secs`: 1 s to one day.
pub const READY_TIMEOUT_SECS: u64 = 86_400;
/// `readiness.interval_ms`: a check runs at most every 10 ms and at least once a minute.
pub const INTERVAL_MS_MIN: u64 = 10;
pub const INTERVAL_MS_MAX: u64 = 60_000;
/// `stop.timeout_secs`: 1 s to ten minutes (shutdown waits for it).
pub const STOP_TIMEOUT_SECS: u64 = 600;
/// `restart.backoff_initial_ms` and `backoff_max_ms`: at most one hour (0: at once).
pub const BACKOFF_MS: u64 = 3_600_000;
/// `restart.crash_loop_restarts`: 1 to 10000.
pub const CRASH_LOOP_RESTARTS: u32 = 10_000;
/// `restart.crash_loop_window_secs`: 1 s to one day.
pub const CRASH_LOOP_WINDOW_SECS: u64 = 86_400;
/// `resources.pids_max`: the kernel's PID_MAX_LIMIT.
pub const PIDS_MAX: u64 = 4 << 20;
/// `resources.memory_max`: 1 MiB to 64 TiB.
pub const MEMORY_MIN: u64 = 1 << 20;
pub const MEMORY_MAX: u64 = 1 << 46;
/// `log_buffer`: 4 KiB to 64 MiB (it lives in PID 1's memory).
pub const LOG_BUFFER_MIN: u64 = 4 << 10;
pub const LOG_BUFFER_MAX: u64 = 64 << 20;
/// The id `(uid_t)-1`, which setuid(2) and chown(2) read as "no change".
pub const NO_ID: u32 = u32::MAX;

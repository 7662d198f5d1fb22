//! The one test harness of the workspace, used by the host integration tests (`tests/`), the
//! QEMU boot tests (`boot-tests/`), the benchmark (`cargo xtask bench`), the registry
//! test of `rootfs/` and the OCI appliance build of xtask:
//!
//! - [`init`]: the real `init` binary as PID 1 of fresh pid and mount namespaces (unshare),
//!   with its manifest, run directory and cgroup prefix;
//! - [`rootfs`]: the busybox root filesystem the test containers run from;
//! - [`procs`]: the process tree from /proc (descendants, zombies, pids seen from a pid
//!   namespace), bounded waits, and removing the cgroups a test left behind;
//! - [`qemu`]: one QEMU machine's command line (firmware or direct kernel, disk bus, NIC,
//!   port forwards, boot config through fw_cfg), the serial console and ssh options;
//! - [`registry`]: a loopback `docker-registry` for the tests and image builds that pull.
//!
//! Everything here returns `io::Result` or plain values: the callers decide whether a
//! failure panics (tests) or is an error (xtask).

pub mod init;
pub mod procs;
pub mod qemu;
pub mod registry;
pub mod rootfs;

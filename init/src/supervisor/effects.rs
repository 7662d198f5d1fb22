//! Everything the supervisor does to the system, behind one trait: containers (create and
//! start, exec, delete), signals, cgroup files, and the looks into a container that
//! readiness checks take. [`Live`] is the real thing (libcontainer through
//! [`crate::runtime`], cgroupfs, /proc); tests use [`Recording`], which records each call
//! and answers from a script, so the supervisor's glue runs without root.

use crate::cgroups::{self, Usage};
use crate::hostdirs::HostDirError;
use crate::runtime::{Runtime, RuntimeError, Stdio};
use oci_spec::runtime::Spec;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub trait Effects {
    /// Writes the bundle, creates and starts the container; its init's pid.
    fn create_and_start(
        &mut self,
        name: &str,
        spec: &Spec,
        stdio: Stdio,
    ) -> Result<i32, RuntimeError>;
    /// Runs a process in a running container; its pid.
    fn exec(
        &mut self,
        name: &str,
        args: Vec<String>,
        env: HashMap<String, String>,
        stdio: Stdio,
    ) -> Result<i32, RuntimeError>;
    /// Deletes a container and what runs in it (a failed start, a cgroup not empty).
    fn delete(&mut self, name: &str);
    /// Forgets a stopped container whose cgroup is gone (state dir and bundle only).
    fn forget(&mut self, name: &str);
    fn bundle_dir(&self, name: &str) -> PathBuf;
    fn kill(&mut self, pid: i32, signal: i32);
    /// Removes the service's cgroup; false if it is not empty (processes left in it).
    fn remove_cgroup(&mut self, name: &str) -> bool;
    fn memory_bytes(&self, name: &str) -> Option<u64>;
    fn cpu_usec(&self, name: &str) -> Option<u64>;
    fn oom_kills(&self, name: &str) -> Option<u64>;
    /// Whether a host directory exists (the image root, before a start).
    fn is_dir(&self, path: &str) -> bool;
    /// Creates a service's `host_dirs` on the host (see [`crate::hostdirs`]).
    fn create_host_dirs(&mut self, dirs: &[String]) -> Result<(), HostDirError>;
    /// Whether `path` exists inside the container whose init is `pid`.
    fn path_exists_in(&self, pid: i32, path: &str) -> bool;
    /// Whether `host:port` accepts a TCP connection in the network namespace of `pid`.
    fn tcp_accepts(&self, pid: i32, host: &str, port: u16) -> bool;
    /// The cgroup path of the service as /proc/<pid>/cgroup shows it.
    fn cgroup_path(&self, name: &str) -> String;
    /// The service's cgroup directory (v1: the memory controller's).
    fn cgroup_dir(&self, name: &str) -> PathBuf;
    /// Mounts an overlay of `lower` (read-only) and `upper` (its changes) at `target`,
    /// creating `upper`, `work` and `target` as needed: a writable root.
    fn mount_overlay(
        &mut self,
        lower: &Path,
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), String>;
    /// Detaches what is mounted at `target` (a writable root of an ended run), if anything.
    fn unmount(&mut self, target: &Path);
}

/// The real system: libcontainer, cgroupfs and /proc.
pub struct Live {
    runtime: Runtime,
    cgroup_prefix: String,
    /// The usage files `sysctr ps` reads, kept open while the service's cgroup lives.
    usage: RefCell<cgroups::UsageFiles>,
}

impl Live {
    pub fn new(runtime: Runtime, cgroup_prefix: &str) -> Live {
        Live {
            runtime,
            cgroup_prefix: cgroup_prefix.to_string(),
            usage: RefCell::default(),
        }
    }
}

impl Effects for Live {
    fn create_and_start(
        &mut self,
        name: &str,
        spec: &Spec,
        stdio: Stdio,
    ) -> Result<i32, RuntimeError> {
        self.runtime.create_and_start(name, spec, stdio)
    }
    fn exec(
        &mut self,
        name: &str,
        args: Vec<String>,
        env: HashMap<String, String>,
        stdio: Stdio,
    ) -> Result<i32, RuntimeError> {
        self.runtime.exec(name, args, env, stdio)
    }
    fn delete(&mut self, name: &str) {
        self.usage.get_mut().forget(name);
        self.runtime.delete(name)
    }
    fn forget(&mut self, name: &str) {
        self.runtime.forget(name)
    }
    fn bundle_dir(&self, name: &str) -> PathBuf {
        self.runtime.bundle_dir(name)
    }
    fn kill(&mut self, pid: i32, signal: i32) {
        if let Ok(sig) = nix::sys::signal::Signal::try_from(signal) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }
    fn remove_cgroup(&mut self, name: &str) -> bool {
        self.usage.get_mut().forget(name);
        cgroups::remove(&self.cgroup_prefix, name)
    }
    fn memory_bytes(&self, name: &str) -> Option<u64> {
        self.usage.borrow_mut().read(name, Usage::Memory, || {
            cgroups::usage_path(&self.cgroup_prefix, name, Usage::Memory)
        })
    }
    fn cpu_usec(&self, name: &str) -> Option<u64> {
        self.usage.borrow_mut().read(name, Usage::Cpu, || {
            cgroups::usage_path(&self.cgroup_prefix, name, Usage::Cpu)
        })
    }
    fn oom_kills(&self, name: &str) -> Option<u64> {
        cgroups::oom_kills(&self.cgroup_prefix, name)
    }
    fn create_host_dirs(&mut self, dirs: &[String]) -> Result<(), HostDirError> {
        crate::hostdirs::create(Path::new("/"), dirs)
    }
    fn is_dir(&self, path: &str) -> bool {
        Path::new(path).is_dir()
    }
    fn path_exists_in(&self, pid: i32, path: &str) -> bool {
        crate::readiness::file_ready(pid, path)
    }
    fn tcp_accepts(&self, pid: i32, host: &str, port: u16) -> bool {
        crate::readiness::tcp_accepts(pid, host, port)
    }
    fn cgroup_path(&self, name: &str) -> String {
        cgroups::spec_path(&self.cgroup_prefix, name)
    }
    fn cgroup_dir(&self, name: &str) -> PathBuf {
        cgroups::dir(&self.cgroup_prefix, name, "memory")
    }
    fn mount_overlay(
        &mut self,
        lower: &Path,
        upper: &Path,
        work: &Path,
        target: &Path,
    ) -> Result<(), String> {
        use nix::mount::{mount, MsFlags};
        for d in [upper, work, target] {
            std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| {
            format!(
                "mount the writable root overlay at {}: {e}",
                target.display()
            )
        })
    }
    fn unmount(&mut self, target: &Path) {
        let _ = nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// One call the supervisor made, as [`Recording`] saw it.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Create(String),
    Exec(String, Vec<String>),
    Delete(String),
    Forget(String),
    Kill(i32, i32),
    RemoveCgroup(String),
    MountOverlay { lower: String, target: String },
    Unmount(String),
    HostDirs(Vec<String>),
}

/// A scripted system for unit tests: starts succeed with increasing pids unless a failure
/// is queued, directories and in-container paths exist when listed.
#[cfg(test)]
#[derive(Default)]
pub struct Recording {
    pub calls: std::rc::Rc<std::cell::RefCell<Vec<Call>>>,
    /// Errors for the next starts, in order (None: succeed).
    pub fail_starts: std::collections::VecDeque<Option<RuntimeError>>,
    pub dirs: std::rc::Rc<std::cell::RefCell<std::collections::HashSet<String>>>,
    pub paths_in: std::rc::Rc<std::cell::RefCell<std::collections::HashSet<String>>>,
    /// Cgroups that are not empty when removed.
    pub busy_cgroups: std::collections::HashSet<String>,
    pub next_pid: i32,
    /// How long each start takes (a hung start that runs into its timeout, say).
    pub start_delay: std::time::Duration,
    /// The error of the next `create_host_dirs` (None: the directories are made).
    pub host_dirs_error: Option<HostDirError>,
}

#[cfg(test)]
impl Recording {
    fn record(&self, c: Call) {
        self.calls.borrow_mut().push(c);
    }
    fn pid(&mut self) -> i32 {
        self.next_pid += 1;
        1000 + self.next_pid
    }
}

#[cfg(test)]
impl Effects for Recording {
    fn create_and_start(
        &mut self,
        name: &str,
        _spec: &Spec,
        _stdio: Stdio,
    ) -> Result<i32, RuntimeError> {
        self.record(Call::Create(name.into()));
        std::thread::sleep(self.start_delay);
        match self.fail_starts.pop_front().flatten() {
            Some(e) => Err(e),
            None => Ok(self.pid()),
        }
    }
    fn exec(
        &mut self,
        name: &str,
        args: Vec<String>,
        _env: HashMap<String, String>,
        _stdio: Stdio,
    ) -> Result<i32, RuntimeError> {
        self.record(Call::Exec(name.into(), args));
        Ok(self.pid())
    }
    fn delete(&mut self, name: &str) {
        self.record(Call::Delete(name.into()))
    }
    fn forget(&mut self, name: &str) {
        self.record(Call::Forget(name.into()))
    }
    fn bundle_dir(&self, name: &str) -> PathBuf {
        PathBuf::from("/fake/bundles").join(name)
    }
    fn kill(&mut self, pid: i32, signal: i32) {
        self.record(Call::Kill(pid, signal))
    }
    fn remove_cgroup(&mut self, name: &str) -> bool {
        self.record(Call::RemoveCgroup(name.into()));
        !self.busy_cgroups.contains(name)
    }
    fn memory_bytes(&self, _: &str) -> Option<u64> {
        Some(4096)
    }
    fn cpu_usec(&self, _: &str) -> Option<u64> {
        Some(7)
    }
    fn oom_kills(&self, _: &str) -> Option<u64> {
        Some(0)
    }
    fn create_host_dirs(&mut self, dirs: &[String]) -> Result<(), HostDirError> {
        self.record(Call::HostDirs(dirs.to_vec()));
        match self.host_dirs_error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    fn is_dir(&self, path: &str) -> bool {
        self.dirs.borrow().contains(path)
    }
    fn path_exists_in(&self, _pid: i32, path: &str) -> bool {
        self.paths_in.borrow().contains(path)
    }
    fn tcp_accepts(&self, _: i32, _: &str, _: u16) -> bool {
        false
    }
    fn cgroup_path(&self, name: &str) -> String {
        format!("/fake/{name}")
    }
    fn cgroup_dir(&self, name: &str) -> PathBuf {
        PathBuf::from("/sys/fs/cgroup/fake").join(name)
    }
    fn mount_overlay(
        &mut self,
        lower: &Path,
        _upper: &Path,
        _work: &Path,
        target: &Path,
    ) -> Result<(), String> {
        self.record(Call::MountOverlay {
            lower: lower.display().to_string(),
            target: target.display().to_string(),
        });
        Ok(())
    }
    fn unmount(&mut self, target: &Path) {
        self.record(Call::Unmount(target.display().to_string()))
    }
}

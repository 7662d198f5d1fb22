//! The container runtime, in process: youki's `libcontainer` creates, starts, execs into
//! and deletes containers from PID 1 itself — no runtime binary is executed. The container
//! init process is cloned as a child of PID 1, so its exit reaches the one reaper.
//!
//! libcontainer waits for its own short-lived intermediate process by pid inside `build()`;
//! that is the one `waitpid` outside the reaper, it cannot race with the reaper because PID 1
//! is single-threaded and the reaper only runs from the event loop.

use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use oci_spec::runtime::Spec;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod executor;
use executor::{Seccomp, ServiceExecutor};
pub use executor::{TEST_HANG_ANNOTATION, TEST_PANIC_ANNOTATION};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("write bundle {path}: {source}")]
    Bundle {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{step}: {source}")]
    Container {
        step: &'static str,
        #[source]
        source: libcontainer::error::LibcontainerError,
    },
    #[error("{step}: no pid recorded for the container")]
    NoPid { step: &'static str },
    #[error("{step}: the container did not come up within {secs} s (start timed out)")]
    Timeout { step: &'static str, secs: u64 },
    #[error(transparent)]
    Devices(#[from] crate::cgroups::devices::DeviceError),
}

/// Annotation in a bundle's config.json holding the service's seccomp profile when PID 1
/// installs it from its own compiled program (the spec's `linux.seccomp` is then empty, so
/// libcontainer does not compile it a second time); `sysctr exec` reads it back.
pub const SECCOMP_ANNOTATION: &str = "org.sysctr.seccomp";

/// Standard input, output and error for a container process.
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

pub struct Runtime {
    /// libcontainer's state directory (one subdirectory per container).
    state_root: PathBuf,
    /// Compiled seccomp programs by profile (its JSON text), None for a profile the
    /// compiler leaves to libcontainer: a handful of distinct ones, each tried once.
    filters: std::cell::RefCell<HashMap<String, Option<crate::seccomp::bpf::Program>>>,
    /// Programs precompiled by the image builder (seccomp/precompiled.rs), if any.
    precompiled: Option<PathBuf>,
    /// Bundle directories (`<name>/config.json`).
    bundle_root: PathBuf,
    /// How long creating+starting a container (or an exec) may block PID 1.
    start_timeout: Duration,
    test_mode: bool,
    /// On cgroup v2: the device programs PID 1 attaches to each container's cgroup
    /// (libcontainer writes device rules on v1 only).
    devices: Option<crate::cgroups::devices::Programs>,
}

impl Runtime {
    pub fn new(run_dir: &Path, start_timeout: Duration, test_mode: bool) -> Runtime {
        Runtime {
            state_root: run_dir.join("containers"),
            filters: Default::default(),
            precompiled: None,
            bundle_root: run_dir.join("bundles"),
            start_timeout,
            test_mode,
            devices: None,
        }
    }

    /// Enforces each spec's device rules on cgroup v2 (the hierarchy at `CGROUP_ROOT`).
    pub fn with_device_programs(mut self) -> Runtime {
        self.devices = Some(Default::default());
        self
    }

    /// Attaches the device program for `spec`'s rules to the container's cgroup, on v2.
    fn restrict_devices(&self, name: &str, spec: &Spec) -> Result<(), RuntimeError> {
        let Some(programs) = &self.devices else {
            return Ok(());
        };
        let linux = spec.linux().as_ref();
        let rules = linux
            .and_then(|l| l.resources().as_ref())
            .and_then(|r| r.devices().as_deref());
        let path = linux.and_then(|l| l.cgroups_path().as_deref());
        let (Some(rules), Some(path)) = (rules, path) else {
            return Ok(());
        };
        let dir =
            Path::new(crate::cgroups::CGROUP_ROOT).join(path.strip_prefix("/").unwrap_or(path));
        if programs.apply(rules, &dir)? {
            crate::debug!(name, "device allow-list attached to {}", dir.display());
        }
        Ok(())
    }

    /// Looks for seccomp programs precompiled by the image builder in `dir` before
    /// compiling a profile.
    pub fn with_precompiled(mut self, dir: PathBuf) -> Runtime {
        self.precompiled = Some(dir);
        self
    }

    /// Maps a libcontainer error to a timeout when the deadline is what ended the call.
    fn deadline_error(
        &self,
        started: Instant,
        step: &'static str,
    ) -> impl Fn(libcontainer::error::LibcontainerError) -> RuntimeError + '_ {
        move |source| {
            if started.elapsed() >= self.start_timeout {
                RuntimeError::Timeout {
                    step,
                    secs: self.start_timeout.as_secs(),
                }
            } else {
                RuntimeError::Container { step, source }
            }
        }
    }

    pub fn bundle_dir(&self, name: &str) -> PathBuf {
        self.bundle_root.join(name)
    }

    /// `profile` (whose JSON text is `key`) compiled, from the cache or now; None when it
    /// has something the compiler leaves to libcontainer (logged when first tried).
    fn compiled(
        &self,
        name: &str,
        profile: &oci_spec::runtime::LinuxSeccomp,
        key: &str,
    ) -> Option<crate::seccomp::bpf::Program> {
        if let Some(known) = self.filters.borrow().get(key) {
            return known.clone();
        }
        let program = self.precompiled_or_compiled(name, profile, key);
        self.filters
            .borrow_mut()
            .insert(key.to_string(), program.clone());
        program
    }

    /// The image builder's program for `profile` (text `key`), else the profile compiled
    /// now (a file PID 1 does not trust is named in a warning); None when the compiler
    /// leaves it to libcontainer.
    fn precompiled_or_compiled(
        &self,
        name: &str,
        profile: &oci_spec::runtime::LinuxSeccomp,
        key: &str,
    ) -> Option<crate::seccomp::bpf::Program> {
        let started = Instant::now();
        match self
            .precompiled
            .as_deref()
            .map(|dir| crate::seccomp::precompiled::load(dir, key))
        {
            Some(Ok(Some(p))) => {
                crate::debug!(
                    name,
                    "seccomp program precompiled by the image builder ({} instructions, \
                     loaded in {} ms)",
                    p.instructions().len(),
                    started.elapsed().as_millis()
                );
                return Some(p);
            }
            Some(Err(e)) => crate::warn!(name, "{e}; compiling the seccomp profile instead"),
            Some(Ok(None)) | None => {}
        }
        let started = Instant::now();
        let compiled = crate::seccomp::bpf::compile(profile);
        // libseccomp's working memory is all freed by now; do not keep it resident.
        crate::sys::release_free_heap();
        match compiled {
            Ok(p) => {
                crate::debug!(
                    name,
                    "seccomp profile compiled in {} ms ({} instructions)",
                    started.elapsed().as_millis(),
                    p.instructions().len()
                );
                Some(p)
            }
            Err(why) => {
                crate::debug!(name, "seccomp profile left to libcontainer: {why}");
                None
            }
        }
    }

    /// The spec libcontainer gets and the filter the executor installs: a profile PID 1
    /// compiles moves into [`SECCOMP_ANNOTATION`] (no_new_privileges must be set, as the
    /// executor installs it without privileges); anything else stays libcontainer's.
    fn split_seccomp(&self, name: &str, spec: &Spec) -> (Spec, Seccomp) {
        let nnp = spec.process().as_ref().and_then(|p| p.no_new_privileges()) == Some(true);
        let profile = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
        let (Some(profile), true) = (profile, nnp) else {
            return (spec.clone(), Seccomp::Spec);
        };
        let Ok(text) = serde_json::to_string(&profile) else {
            return (spec.clone(), Seccomp::Spec);
        };
        let Some(program) = self.compiled(name, &profile, &text) else {
            return (spec.clone(), Seccomp::Spec);
        };
        let mut out = spec.clone();
        if let Some(linux) = out.linux_mut() {
            linux.set_seccomp(None);
        }
        let mut notes = out.annotations().clone().unwrap_or_default();
        notes.insert(SECCOMP_ANNOTATION.to_string(), text);
        out.set_annotations(Some(notes));
        (out, Seccomp::Compiled(program))
    }

    /// The program a start of `spec` installs, when PID 1 installs one.
    #[cfg(test)]
    pub fn program_for(&self, name: &str, spec: &Spec) -> Option<crate::seccomp::bpf::Program> {
        match self.split_seccomp(name, spec).1 {
            Seccomp::Compiled(p) => Some(p),
            _ => None,
        }
    }

    /// Writes the bundle, creates the container and starts it; returns the pid of the
    /// container's process.
    pub fn create_and_start(
        &self,
        name: &str,
        spec: &Spec,
        stdio: Stdio,
    ) -> Result<i32, RuntimeError> {
        // A container left from an earlier run of this service (crash, failed start) would
        // make create fail with "already exists".
        let began = Instant::now();
        self.delete(name);
        let bundle = self.bundle_dir(name);
        let config = bundle.join("config.json");
        let (written, seccomp) = self.split_seccomp(name, spec);
        std::fs::create_dir_all(&bundle)
            .and_then(|_| written.save(&config).map_err(std::io::Error::other))
            .map_err(|source| RuntimeError::Bundle {
                path: config.display().to_string(),
                source,
            })?;
        std::fs::create_dir_all(&self.state_root).map_err(|source| RuntimeError::Bundle {
            path: self.state_root.display().to_string(),
            source,
        })?;
        let step = |step: &'static str| move |source| RuntimeError::Container { step, source };
        let injected = |key: &str| {
            self.test_mode
                && spec
                    .annotations()
                    .as_ref()
                    .is_some_and(|a| a.contains_key(key))
        };
        let (hang, panic) = (
            injected(TEST_HANG_ANNOTATION),
            injected(TEST_PANIC_ANNOTATION),
        );
        let started = Instant::now();
        let deadline = crate::sys::StartDeadline::arm(self.start_timeout);
        let mut container = ContainerBuilder::new(name.to_string(), SyscallType::Linux)
            .with_root_path(&self.state_root)
            .map_err(step("configure"))?
            .with_executor(ServiceExecutor {
                seccomp,
                hang,
                panic,
            })
            .with_stdin(stdio.stdin)
            .with_stdout(stdio.stdout)
            .with_stderr(stdio.stderr)
            .as_init(&bundle)
            .with_systemd(false)
            .with_detach(true)
            .build()
            .map_err(self.deadline_error(started, "create container"))?;
        let created = Instant::now();
        let pid = container.pid().ok_or(RuntimeError::NoPid {
            step: "create container",
        })?;
        let private_net = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .is_some_and(|ns| {
                ns.iter()
                    .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
            });
        if private_net {
            if let Err(e) = crate::readiness::loopback_up(pid.as_raw()) {
                crate::warn!(name, "{e}");
            }
        }
        // Before the service runs: its process is still waiting for start.
        self.restrict_devices(name, spec)?;
        container
            .start()
            .map_err(self.deadline_error(started, "start container"))?;
        drop(deadline);
        crate::debug!(
            name,
            "bundle {} ms, create {} ms, start {} ms",
            started.duration_since(began).as_millis(),
            created.duration_since(started).as_millis(),
            created.elapsed().as_millis()
        );
        Ok(pid.as_raw())
    }

    /// Runs a process inside a running container (libcontainer's tenant builder), as the
    /// container's user, with its capabilities and seccomp filter.
    pub fn exec(
        &self,
        name: &str,
        args: Vec<String>,
        env: HashMap<String, String>,
        stdio: Stdio,
    ) -> Result<i32, RuntimeError> {
        let step = |step: &'static str| move |source| RuntimeError::Container { step, source };
        let config = self.bundle_dir(name).join("config.json");
        let spec = Spec::load(&config).map_err(|e| RuntimeError::Bundle {
            path: config.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        // The container's profile: in the annotation (its text is the cache key) when PID 1
        // compiled it at the start, else (left to libcontainer then) in the spec.
        let profile = match spec
            .annotations()
            .as_ref()
            .and_then(|a| a.get(SECCOMP_ANNOTATION))
        {
            Some(text) => {
                let p =
                    serde_json::from_str::<oci_spec::runtime::LinuxSeccomp>(text).map_err(|e| {
                        RuntimeError::Bundle {
                            path: format!("{} (annotation {SECCOMP_ANNOTATION})", config.display()),
                            source: std::io::Error::other(e),
                        }
                    })?;
                Some((p, text.clone()))
            }
            None => spec
                .linux()
                .as_ref()
                .and_then(|l| l.seccomp().clone())
                .and_then(|p| serde_json::to_string(&p).ok().map(|text| (p, text))),
        };
        let seccomp = match profile {
            None => Seccomp::Spec,
            Some((p, text)) => match self.compiled(name, &p, &text) {
                Some(program) => Seccomp::Compiled(program),
                None => Seccomp::Profile(p),
            },
        };
        let executor = ServiceExecutor {
            seccomp,
            hang: false,
            panic: false,
        };
        // The process runs as the service does: its uid, gid and groups (libcontainer's
        // tenant builder would otherwise use uid 0), and the capabilities of its spec.
        let user = spec
            .process()
            .as_ref()
            .map(|p| p.user().clone())
            .unwrap_or_default();
        let started = Instant::now();
        let _deadline = crate::sys::StartDeadline::arm(self.start_timeout);
        let pid = ContainerBuilder::new(name.to_string(), SyscallType::Linux)
            .with_root_path(&self.state_root)
            .map_err(step("configure exec"))?
            .with_executor(executor)
            .with_stdin(stdio.stdin)
            .with_stdout(stdio.stdout)
            .with_stderr(stdio.stderr)
            .as_tenant()
            .with_user(Some(user.uid()))
            .with_group(Some(user.gid()))
            .with_additional_gids(user.additional_gids().clone().unwrap_or_default())
            .with_container_args(args)
            .with_env(env)
            .with_detach(true)
            .build()
            .map_err(self.deadline_error(started, "exec"))?;
        Ok(pid.as_raw())
    }

    /// Forgets a container whose init has been reaped and whose cgroup is gone: all that is
    /// left of it is its state directory and bundle. This is libcontainer's `delete` of a
    /// stopped container without loading its state and building a cgroup manager first,
    /// which is most of the time a restart spends between the exit and the new start.
    pub fn forget(&self, name: &str) {
        let _ = std::fs::remove_dir_all(self.state_root.join(name));
        let _ = std::fs::remove_dir_all(self.bundle_dir(name));
    }

    /// Deletes the container (killing what is left in it) and removes its bundle; a
    /// container that does not exist is not an error.
    pub fn delete(&self, name: &str) {
        let dir = self.state_root.join(name);
        if dir.exists() {
            match Container::load(dir.clone()) {
                Ok(mut c) => {
                    if let Err(e) = c.delete(true) {
                        crate::warn!(name, "delete container: {e}");
                    }
                }
                Err(e) => crate::warn!(name, "load container state: {e}"),
            }
            // libcontainer removes its directory on success; make sure nothing is left.
            let _ = std::fs::remove_dir_all(&dir);
        }
        let _ = std::fs::remove_dir_all(self.bundle_dir(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, SpecBuilder};

    fn spec(nnp: bool, seccomp: Option<oci_spec::runtime::LinuxSeccomp>) -> Spec {
        let mut linux = LinuxBuilder::default().build().unwrap();
        linux.set_seccomp(seccomp);
        SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .no_new_privileges(nnp)
                    .build()
                    .unwrap(),
            )
            .linux(linux)
            .build()
            .unwrap()
    }

    #[test]
    fn a_compiled_profile_moves_from_the_spec_into_the_annotation() {
        let dir = tempfile::tempdir().unwrap();
        let rt = Runtime::new(dir.path(), Duration::from_secs(5), true);
        let profile = crate::seccomp::profile(&Default::default()).unwrap();
        let (written, how) = rt.split_seccomp("svc", &spec(true, Some(profile.clone())));
        assert!(matches!(how, Seccomp::Compiled(_)));
        assert_eq!(written.linux().as_ref().unwrap().seccomp(), &None);
        let text = &written.annotations().as_ref().unwrap()[SECCOMP_ANNOTATION];
        let back: oci_spec::runtime::LinuxSeccomp = serde_json::from_str(text).unwrap();
        assert_eq!(back, profile);
        // compiled once: the second start takes it from the cache
        assert_eq!(rt.filters.borrow().len(), 1);
        rt.split_seccomp("other", &spec(true, Some(profile.clone())));
        assert_eq!(rt.filters.borrow().len(), 1);
        // A profile the compiler leaves to libcontainer stays in the spec, and is tried
        // once: the refusal is cached too.
        let mut arm = profile.clone();
        arm.set_architectures(Some(vec![oci_spec::runtime::Arch::ScmpArchAarch64]));
        let s = spec(true, Some(arm));
        for _ in 0..2 {
            let (written, how) = rt.split_seccomp("svc", &s);
            assert!(matches!(how, Seccomp::Spec));
            assert_eq!(written, s);
        }
        assert_eq!(rt.filters.borrow().len(), 2);

        // Without no_new_privileges the filter needs privileges the executor no longer
        // has: libcontainer keeps it (and loads it before dropping capabilities).
        let s = spec(false, Some(profile));
        let (written, how) = rt.split_seccomp("svc", &s);
        assert!(matches!(how, Seccomp::Spec));
        assert_eq!(written, s);
        // No profile: nothing to do.
        let s = spec(true, None);
        let (written, how) = rt.split_seccomp("svc", &s);
        assert!(matches!(how, Seccomp::Spec));
        assert_eq!(written, s);
    }
}

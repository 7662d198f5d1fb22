//! What one start creates, and what its end removes: the notify socket, the OCI spec, the
//! output pipes, the container itself; afterwards its container, cgroup and socket.

use super::machine::Input;
use super::{boot_ms, boot_us, io::Pipe, Supervisor};
use crate::logs::now_ms;
use crate::reactor::{Reactor, Source};
use crate::readiness::notify::{NotifyError, NotifySocket};
use crate::runtime::{RuntimeError, Stdio};
use crate::spec::{self, SpecError};
use manifest::protocol::Stream;
use manifest::Readiness;
use std::os::fd::{AsFd, AsRawFd};

/// Why a container could not be started; each variant names the step.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the manifest entry was rejected; it cannot start")]
    Rejected,
    #[error("image root {root} does not exist or is not a directory")]
    NoRoot { root: String },
    #[error("image {image:?} is not in the store (sysctr image ls)")]
    NoImage { image: String },
    #[error("a writable root needs the state partition (no /var/lib/sysctr)")]
    NoStateForOverlay,
    #[error("{0}")]
    Overlay(String),
    #[error(transparent)]
    HostDirs(#[from] crate::hostdirs::HostDirError),
    #[error(transparent)]
    Notify(#[from] NotifyError),
    #[error("create the {stream:?} pipe: {source}")]
    Pipe {
        stream: Stream,
        #[source]
        source: nix::Error,
    },
    #[error("watch {what}: {source}")]
    Watch {
        what: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("open /dev/null for stdin: {0}")]
    DevNull(#[source] std::io::Error),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl Supervisor {
    /// Carries out [`super::machine::Effect::Launch`]; the outcome is the machine's next input.
    pub(super) fn launch(&mut self, i: usize, r: &mut Reactor) -> Input {
        let t0 = boot_us();
        let began = std::time::Instant::now();
        let created = self.create(i, r);
        self.spent_on_start(began.elapsed());
        match created {
            Ok(pid) => {
                let t1 = boot_us();
                let s = &mut self.services[i];
                s.started_boot_us = Some(t1);
                s.start_us = Some(t1.saturating_sub(t0));
                s.started_at_ms = Some(now_ms());
                s.started_boot_ms = Some(boot_ms());
                s.ready_boot_ms = None;
                Input::Started { pid }
            }
            Err(e) => {
                self.close_io(i, r);
                Input::StartFailed {
                    error: e.to_string(),
                }
            }
        }
    }

    /// Creates the pipes, notify socket, spec and container; returns the pid.
    fn create(&mut self, i: usize, r: &mut Reactor) -> Result<i32, StartError> {
        let Some(mut def) = self.services[i].def.clone() else {
            return Err(StartError::Rejected);
        };
        if let Some(image) = &def.image {
            let store = self.state_dir.as_deref().map(crate::images::Store::new);
            let root = store.and_then(|s| s.root_of(image));
            let Some(root) = root else {
                return Err(StartError::NoImage {
                    image: image.clone(),
                });
            };
            def.root = root.display().to_string();
        }
        if !self.fx.is_dir(&def.root) {
            return Err(StartError::NoRoot { root: def.root });
        }
        if !def.host_dirs.is_empty() {
            self.fx.create_host_dirs(&def.host_dirs)?;
        }
        if self.services[i].applied && !def.readonly_root {
            def.root = self.writable_root(&def)?;
        }
        self.close_io(i, r);
        let notify_host = if matches!(def.readiness, Readiness::Notify { .. }) {
            let path = self.notify_path(&def.name);
            let sock = NotifySocket::bind(&path)?;
            let token = r
                .add(sock.as_fd(), Source::Notify { svc: i })
                .map_err(|source| StartError::Watch {
                    what: "the notify socket",
                    source,
                })?;
            self.services[i].notify = Some((token, sock));
            Some(path.to_string_lossy().into_owned())
        } else {
            None
        };
        let ctx = spec::Context {
            cgroups_path: self.fx.cgroup_path(&def.name),
            notify_socket: notify_host.as_deref(),
            run_dir: &self.run_dir,
        };
        let spec = spec::generate(&def, &ctx)?;
        self.services[i].spec = serde_json::to_string(&spec)
            .ok()
            .map(String::into_boxed_str);
        let mut ends = Vec::new();
        for stream in [Stream::Stdout, Stream::Stderr] {
            let pipe_err = |source| StartError::Pipe { stream, source };
            let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(pipe_err)?;
            nix::fcntl::fcntl(
                rd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(pipe_err)?;
            let token = r
                .add(rd.as_fd(), Source::Pipe { svc: i, stream })
                .map_err(|source| StartError::Watch {
                    what: "an output pipe",
                    source,
                })?;
            self.services[i].pipes.push(Pipe {
                token,
                fd: rd,
                stream,
            });
            ends.push(wr);
        }
        let stdin = std::fs::File::open("/dev/null").map_err(StartError::DevNull)?;
        let (Some(stderr), Some(stdout)) = (ends.pop(), ends.pop()) else {
            unreachable!("two pipes were made above");
        };
        let stdio = Stdio {
            stdin: stdin.into(),
            stdout,
            stderr,
        };
        // The write ends are handed to the container and closed here when `stdio` drops,
        // so the pipes report EOF once the service's processes are gone.
        Ok(self.fx.create_and_start(&def.name, &spec, stdio)?)
    }

    /// An applied service with `readonly_root: false`: its root as an overlay whose upper
    /// directory is on the state partition (`overlay/<name>/upper`), so what it writes
    /// survives restarts and reboots and the image's layers stay untouched.
    fn writable_root(&mut self, def: &manifest::Service) -> Result<String, StartError> {
        let state = self
            .state_dir
            .clone()
            .ok_or(StartError::NoStateForOverlay)?;
        let base = state.join("overlay").join(&def.name);
        let target = self.root_mount(&def.name);
        self.fx.unmount(&target);
        self.fx
            .mount_overlay(
                std::path::Path::new(&def.root),
                &base.join("upper"),
                &base.join("work"),
                &target,
            )
            .map_err(StartError::Overlay)?;
        Ok(target.display().to_string())
    }

    fn root_mount(&self, name: &str) -> std::path::PathBuf {
        self.run_dir.join("roots").join(name)
    }

    fn notify_path(&self, name: &str) -> std::path::PathBuf {
        self.run_dir.join("notify").join(format!("{name}.sock"))
    }

    /// Stops watching and closes a service's pipes and notify socket.
    pub(super) fn close_io(&mut self, i: usize, r: &mut Reactor) {
        let s = &mut self.services[i];
        for p in s.pipes.drain(..) {
            r.remove(p.token, &p.fd);
        }
        self.close_notify(i, r);
    }

    fn close_notify(&mut self, i: usize, r: &mut Reactor) {
        if let Some((token, sock)) = self.services[i].notify.take() {
            r.remove(token, &sock);
        }
    }

    /// Removes a run's container, its cgroup and its notify socket. After a failed start
    /// that takes libcontainer's delete, which kills what runs in it. After an exited run
    /// (its init reaped) whose cgroup is then empty, as a private pid namespace dies with
    /// its init, removing the cgroup and forgetting the state is all there is to do, which
    /// keeps restarts fast; processes left in the cgroup (a service in the host pid
    /// namespace) take the full delete too.
    pub(super) fn cleanup_container(&mut self, i: usize, exited: bool, r: &mut Reactor) {
        let name = self.services[i].name.clone();
        if exited && self.fx.remove_cgroup(&name) {
            self.fx.forget(&name);
        } else {
            self.fx.delete(&name);
            self.fx.remove_cgroup(&name);
        }
        self.close_notify(i, r);
        let _ = std::fs::remove_file(self.notify_path(&name));
        if self.services[i].applied
            && self.services[i]
                .def
                .as_ref()
                .is_some_and(|d| !d.readonly_root)
        {
            let target = self.root_mount(&name);
            self.fx.unmount(&target);
        }
    }
}

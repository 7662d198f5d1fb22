//! init as PID 1 of a namespace on the host, driven over its control socket.

use super::*;

pub(super) struct HostInit {
    pub(super) outer: Child,
    pub(super) dir: PathBuf,
    pub(super) prefix: String,
}

impl HostInit {
    pub(super) fn start(
        bins: &Binaries,
        scratch: &Scratch,
        tag: &str,
        services: Vec<Value>,
    ) -> Result<Self> {
        HostInit::launch(bins, scratch, tag, services, false)
    }

    /// init with one `sleep` service `name`, once that runs. With `v2`, init runs in a mount
    /// namespace whose /sys/fs/cgroup is the host's (controller-less) cgroup v2 hierarchy, so
    /// it takes its cgroup v2 path as in the guest.
    pub(super) fn running_one_sleeper(
        bins: &Binaries,
        scratch: &Scratch,
        tag: &str,
        name: &str,
        v2: bool,
    ) -> Result<Self> {
        let services = vec![sleep_service(name, &scratch.rootfs)];
        let init = HostInit::launch(bins, scratch, tag, services, v2)?;
        init.wait("first start", Duration::from_secs(20), |ps| {
            ps.iter().any(|s| s.name == name && s.pid.is_some())
        })?;
        Ok(init)
    }

    pub(super) fn launch(
        bins: &Binaries,
        scratch: &Scratch,
        tag: &str,
        services: Vec<Value>,
        v2_view: bool,
    ) -> Result<Self> {
        let dir = scratch.dir.join(tag);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let manifest = dir.join("manifest.json");
        fs::write(
            &manifest,
            serde_json::to_string(&harness::init::manifest(&services))?,
        )?;
        let log = fs::File::create(dir.join("init.log"))?;
        let prefix = format!("sysctr-bench-{}-{tag}", std::process::id());
        let mut launch =
            harness::init::Launch::new(&bins.init, &manifest, &dir.join("run"), &prefix);
        if v2_view {
            launch.prelude = Some(format!("mount --bind {V2_HIERARCHY} /sys/fs/cgroup"));
        }
        let outer = launch
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start unshare + init")?;
        let init = HostInit { outer, dir, prefix };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if matches!(init.call(Op::Version {}), Ok(Response::Version { .. })) {
                return Ok(init);
            }
            if Instant::now() > deadline {
                bail!(
                    "init did not answer on {} within 10 s; its log:\n{}",
                    init.socket().display(),
                    init.log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub(super) fn socket(&self) -> PathBuf {
        harness::init::socket(&self.dir.join("run"))
    }

    pub(super) fn log(&self) -> String {
        fs::read_to_string(self.dir.join("init.log")).unwrap_or_default()
    }

    /// The host pid of init (unshare's child).
    pub(super) fn host_pid(&self) -> Result<i32> {
        harness::init::init_pid(self.outer.id() as i32, true).context("unshare has no child")
    }

    /// The host pid of a process given by its pid in init's namespace (NSpid).
    pub(super) fn host_pid_of(&self, ns_pid: i32) -> Result<i32> {
        harness::procs::host_pid_of(self.host_pid()?, ns_pid.into())
            .with_context(|| format!("no process with pid {ns_pid} in init's namespace"))
    }

    /// One request, one reply, over a raw socket (no CLI process).
    /// The control client (sysctr-bench's, as bench-guest uses in the guest).
    pub(super) fn control(&self) -> Control {
        Control::new(self.socket())
    }

    pub(super) fn call(&self, op: Op) -> Result<Response> {
        self.control().call(op).map_err(anyhow::Error::msg)
    }

    pub(super) fn ps(&self) -> Result<Vec<ServiceStatus>> {
        self.control().ps().map_err(anyhow::Error::msg)
    }

    pub(super) fn status(&self, name: &str) -> Result<ServiceStatus> {
        self.control().status(name).map_err(anyhow::Error::msg)
    }

    pub(super) fn ok(&self, op: Op) -> Result<()> {
        match self.call(op.clone())? {
            Response::Ok { .. } => Ok(()),
            other => bail!("{op:?}: {other:?}"),
        }
    }

    pub(super) fn wait(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[ServiceStatus]) -> bool,
    ) -> Result<Vec<ServiceStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            let ps = self.ps()?;
            if pred(&ps) {
                return Ok(ps);
            }
            if Instant::now() > deadline {
                bail!(
                    "{what}: not reached within {timeout:?}; last status: {:?}\ninit log tail:\n{}",
                    ps.iter()
                        .map(|s| format!("{} {:?} {:?}", s.name, s.state, s.last_error))
                        .take(5)
                        .collect::<Vec<_>>(),
                    tail(&self.log(), 20)
                );
            }
            std::thread::sleep(STATUS_POLL);
        }
    }

    /// Stops the service and waits until it has exited.
    pub(super) fn stop(&self, name: &str) -> Result<()> {
        self.ok(Op::Stop {
            service: name.into(),
        })?;
        self.wait("stopped", Duration::from_secs(10), |ps| {
            ps.iter()
                .any(|s| s.name == name && s.state == State::Exited && s.pid.is_none())
        })?;
        Ok(())
    }

    /// The CLI, pointed at this init.
    pub(super) fn cli(&self, bins: &Binaries, args: &[&str]) -> Command {
        let mut c = Command::new(&bins.sysctr);
        c.env("SYSCTR_SOCKET", self.socket())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// PID 1's memory from smaps_rollup: (Rss, Pss) in bytes.
    pub(super) fn memory(&self) -> Result<(u64, u64)> {
        let text = fs::read_to_string(format!("/proc/{}/smaps_rollup", self.host_pid()?))?;
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                * 1024
        };
        Ok((field("Rss:"), field("Pss:")))
    }

    /// Where PID 1's resident memory is, by mapping (from /proc/<pid>/smaps), largest first.
    pub(super) fn memory_by_mapping(&self) -> Result<Vec<(String, u64)>> {
        let text = fs::read_to_string(format!("/proc/{}/smaps", self.host_pid()?))?;
        let mut by: Vec<(String, u64)> = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let perms = fields.get(1).copied().unwrap_or("");
                current = match fields.get(5) {
                    Some(p) if p.starts_with('/') => format!(
                        "{} ({})",
                        Path::new(p)
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_default(),
                        if perms.contains('x') { "code" } else { "data" }
                    ),
                    Some(p) => p.to_string(),
                    None => "anonymous (malloc arenas, mmap)".into(),
                };
            } else if let Some(v) = line.strip_prefix("Rss:") {
                let kb: u64 = v
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                match by.iter_mut().find(|(n, _)| *n == current) {
                    Some((_, b)) => *b += kb * 1024,
                    None => by.push((current.clone(), kb * 1024)),
                }
            }
        }
        by.sort_by_key(|e| std::cmp::Reverse(e.1));
        Ok(by)
    }
}

/// How long a poweroff request may take: init stops the services (the bench's stop within
/// a few seconds), deletes their containers and cgroups, and its namespace ends.
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);

impl Drop for HostInit {
    fn drop(&mut self) {
        // PID 1 honours no signal from the host or its namespace (issue 16), so it is asked
        // the way `sysctr poweroff` asks: over the control socket. Its orderly shutdown stops
        // the services, deletes the containers and removes the cgroups; in test mode its
        // reboot(2) ends the namespace, and unshare exits.
        let inner = self.host_pid().ok();
        let asked = match self.call(Op::Power {
            action: PowerAction::Poweroff,
        }) {
            Ok(Response::Ok { .. }) => "a poweroff request".to_string(),
            Ok(other) => format!("a poweroff request, answered {other:?}"),
            // Going down may close the socket before the answer is written; a dead init
            // has no socket: either way the wait below tells.
            Err(e) => format!("a poweroff request that failed ({e:#})"),
        };
        let t = Instant::now();
        while t.elapsed() < POWEROFF_TIMEOUT {
            if matches!(self.outer.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(self.outer.try_wait(), Ok(Some(_))) {
            eprintln!(
                "xtask: bench: init in {} (host pid {}) has not exited {:?} after {asked}; \
                 killing it with SIGKILL (its log: {})",
                self.dir.display(),
                inner.map_or("unknown".into(), |p| p.to_string()),
                POWEROFF_TIMEOUT,
                self.dir.join("init.log").display()
            );
            if let Some(p) = inner {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = self.outer.kill();
            let _ = self.outer.wait();
        }
        remove_cgroups(&self.prefix);
    }
}

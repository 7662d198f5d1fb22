//! Harness for the host integration tests: the real `init` binary as PID 1 of a fresh pid
//! and mount namespace (`unshare -p -f -m`), containers from a busybox-static root
//! filesystem, and the real `sysctr` CLI talking to it over its control socket.
//!
//! These tests need root (namespaces, mounts, cgroups). The binaries come from
//! `SYSCTR_INIT_BIN` / `SYSCTR_CLI_BIN` (set by `cargo xtask test`), else from
//! `target/debug/`.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn binary(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let p = workspace().join("target/debug").join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo xtask test` or `cargo build -p sysctr-init -p sysctr` first (or set {env})",
        p.display()
    );
    p
}

pub fn init_bin() -> PathBuf {
    binary("SYSCTR_INIT_BIN", "init")
}

pub fn cli_bin() -> PathBuf {
    binary("SYSCTR_CLI_BIN", "sysctr")
}

/// A busybox root filesystem shared by every test in this process (read-only for them),
/// with the static `sysctr` CLI in it for `sysctr notify`.
pub fn rootfs() -> &'static Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("sysctr-rootfs-")
            .tempdir()
            .unwrap();
        let r = dir.path();
        harness::rootfs::busybox(r, &["data"]).unwrap();
        std::fs::copy(cli_bin(), r.join("bin/sysctr")).unwrap();
        std::fs::write(r.join("etc/marker"), "inside the container rootfs\n").unwrap();
        dir
    })
    .path()
}

/// A service entry with the test rootfs and a shell command.
pub fn sh(name: &str, script: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "root": rootfs().display().to_string(),
        "args": ["/bin/sh", "-c", script],
        "stop": {"timeout_secs": 2}
    })
}

/// Merges extra fields into a service entry.
pub fn with(mut svc: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    for (k, v) in extra.as_object().unwrap() {
        svc[k] = v.clone();
    }
    svc
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A running init under test. Dropping it kills the namespace.
pub struct Init {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    output: Arc<Mutex<String>>,
    pub cgroup_prefix: String,
    /// Whether init runs as PID 1 of its own pid namespace (under unshare).
    pid_ns: bool,
}

impl Init {
    /// Starts init as PID 1 of new pid+mount namespaces with these services.
    pub fn start(services: Vec<serde_json::Value>) -> Init {
        Init::start_with(services, &[])
    }

    pub fn start_with(services: Vec<serde_json::Value>, extra: &[&str]) -> Init {
        Init::launch(services, extra, true)
    }

    /// Like [`Init::start_with`], with the descriptor limit the kernel gives the machine's
    /// init (1024 soft, 4096 hard) instead of the test runner's.
    pub fn start_with_boot_limits(services: Vec<serde_json::Value>, extra: &[&str]) -> Init {
        Init::launch_limited(services, extra, true, true, &|_| {})
    }

    /// Like [`Init::start_with`], after `prepare` ran with the manifest's path (what an
    /// image builder puts beside it).
    pub fn start_prepared(
        services: Vec<serde_json::Value>,
        extra: &[&str],
        prepare: &dyn Fn(&Path),
    ) -> Init {
        Init::launch_limited(services, extra, true, false, prepare)
    }

    /// Starts init as a plain subreaper (not PID 1) in test mode.
    pub fn start_subreaper(services: Vec<serde_json::Value>) -> Init {
        Init::launch(services, &[], false)
    }

    fn launch(services: Vec<serde_json::Value>, extra: &[&str], pid_ns: bool) -> Init {
        Init::launch_limited(services, extra, pid_ns, false, &|_| {})
    }

    fn launch_limited(
        services: Vec<serde_json::Value>,
        extra: &[&str],
        pid_ns: bool,
        boot_limits: bool,
        prepare: &dyn Fn(&Path),
    ) -> Init {
        let dir = tempfile::Builder::new()
            .prefix("sysctr-test-")
            .tempdir()
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let manifest = dir.path().join("manifest.json");
        // `@RUN@` in the manifest stands for init's run directory (known only now).
        let text = serde_json::to_string_pretty(&harness::init::manifest(&services))
            .unwrap()
            .replace("@RUN@", &dir.path().join("run").display().to_string());
        std::fs::write(&manifest, text).unwrap();
        prepare(&manifest);
        let cgroup_prefix = format!(
            "sysctr-it-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let mut launch = harness::init::Launch::new(
            &init_bin(),
            &manifest,
            &dir.path().join("run"),
            &cgroup_prefix,
        );
        launch.namespaces = pid_ns;
        launch.nofile = (pid_ns && boot_limits).then(|| "1024:4096".to_string());
        launch.extra = extra.iter().map(|s| s.to_string()).collect();
        let mut cmd = launch.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start init");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let out = output.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Init {
            dir,
            child: Some(child),
            output,
            cgroup_prefix,
            pid_ns,
        }
    }

    pub fn socket(&self) -> PathBuf {
        harness::init::socket(&self.dir.path().join("run"))
    }

    /// What init printed so far.
    pub fn log(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits until init's output contains `text`.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let ok = wait_until(timeout, || self.log().contains(text));
        assert!(
            ok,
            "init never printed {text:?} within {timeout:?}; its output:\n{}",
            self.log()
        );
    }

    /// The host pid of the init process (unshare's child, or the subreaper itself).
    pub fn host_pid(&self) -> i32 {
        let outer = self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1);
        harness::init::init_pid(outer, self.pid_ns).unwrap_or(outer)
    }

    /// Runs the CLI against this init.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(cli_bin())
            .env("SYSCTR_SOCKET", self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the CLI and returns stdout, failing the test on a non-zero exit.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "sysctr {args:?} failed: {}\nstdout: {}\nstderr: {}\ninit:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `sysctr ps --json`, parsed.
    pub fn ps(&self) -> Vec<serde_json::Value> {
        let out = self.cli(&["ps", "--json"]);
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    }

    pub fn service(&self, name: &str) -> serde_json::Value {
        self.ps()
            .into_iter()
            .find(|s| s["name"] == name)
            .unwrap_or(serde_json::Value::Null)
    }

    /// Waits until `pred` holds for the named service's status.
    pub fn wait_service(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let ok = wait_until(timeout, || {
            last = self.service(name);
            !last.is_null() && pred(&last)
        });
        assert!(ok, "service {name} never became {what} within {timeout:?}; last status: {last:#}\ninit:\n{}", self.log());
        last
    }

    pub fn wait_state(&self, name: &str, state: &str, timeout: Duration) -> serde_json::Value {
        self.wait_service(name, timeout, state, |s| s["state"] == state)
    }

    /// Sends a signal to init and waits for the namespace to end.
    pub fn signal_and_wait(&mut self, sig: i32, timeout: Duration) -> ExitStatus {
        let pid = self.host_pid();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::try_from(sig).unwrap(),
        )
        .unwrap();
        self.wait_exit(timeout)
    }

    /// Waits for init (or unshare, which mirrors its fate) to end.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100)); // let the readers drain
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "init did not end within {timeout:?}; output:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The host pid of a process given by its pid inside init's pid namespace.
    pub fn host_pid_of(&self, ns_pid: i64) -> Option<i32> {
        let mut found = None;
        // /proc is read while processes come and go (a fork bomb…): look a few times.
        wait_until(Duration::from_secs(3), || {
            found = harness::procs::host_pid_of(self.host_pid(), ns_pid);
            found.is_some()
        });
        found
    }
}

impl Drop for Init {
    fn drop(&mut self) {
        let inner = self.host_pid();
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(inner),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Cgroups left behind by a killed namespace: its processes die asynchronously after
        // SIGKILL, so removal is retried for a moment.
        let prefix = self.cgroup_prefix.clone();
        wait_until(Duration::from_secs(3), || {
            harness::procs::remove_cgroups(&prefix)
        });
    }
}

/// The signal that ended a process, if any.
pub fn signal_of(st: ExitStatus) -> Option<i32> {
    st.signal()
}

pub use harness::procs::{descendants, wait_until, zombies_below};

pub const SECS: fn(u64) -> Duration = Duration::from_secs;

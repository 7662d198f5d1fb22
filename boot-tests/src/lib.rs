//! The harness for QEMU boot tests of the real image: boot a copy of the disk with a boot
//! config (a fresh ssh key per VM), collect the serial console, run commands over ssh through
//! a loopback port forward, press the power button through the QEMU monitor.
//!
//! The image comes from `SYSCTR_KERNEL` and `SYSCTR_DISK`, set by `cargo xtask boot-test`.
//! When they are unset every test fails with a message saying so; it never passes silently.
//! Every wait is bounded, and failures carry the tail of the serial log.

mod scratch;

pub use scratch::{ImagePaths, Scratch, Turn};

use harness::qemu::{BootPath, Machine};
pub use harness::qemu::{DiskBus, Nic, ALL_READY, BOOT_COMPLETE, REACHED_SHUTDOWN};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// TCG on 2 shared cores: generous, but bounded.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// A free loopback TCP port (bound and released; good enough for sequential tests).
pub fn free_port() -> u16 {
    harness::qemu::free_port().expect("free port")
}

pub struct BootOptions {
    /// Extra kernel command line; direct-kernel boots only (under UEFI the command line is
    /// inside the UKI, signed with the root hash).
    pub append: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    pub hostname: String,
    /// The boot config's `network` object.
    pub network: serde_json::Value,
    /// QEMU loads the kernel itself (`-kernel`) instead of OVMF → systemd-boot → UKI.
    pub direct_kernel: bool,
    /// Pass the boot config through fw_cfg (else the guest has only the ESP's).
    pub fw_cfg: bool,
    /// The disk's bus: virtio-blk by default, NVMe like a PC's SSD.
    pub disk_bus: DiskBus,
    /// The NIC model.
    pub nic: Nic,
    /// More raw disk images, each attached as a virtio disk after the boot disk (a USB
    /// stick's stand-in).
    pub extra_disks: Vec<PathBuf>,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            append: String::new(),
            memory_mib: 512,
            hostname: "boottest".into(),
            network: serde_json::json!({ "mode": "dhcp" }),
            direct_kernel: false,
            fw_cfg: true,
            disk_bus: DiskBus::Virtio,
            nic: Nic::Virtio,
            extra_disks: Vec::new(),
        }
    }
}

/// A running VM. Killed on drop.
pub struct Vm {
    child: Child,
    console_in: Option<std::process::ChildStdin>,
    serial: Arc<Mutex<String>>,
    pub ssh_port: u16,
    key: PathBuf,
    monitor: PathBuf,
    log_path: PathBuf,
    pub started: Instant,
}

impl Vm {
    pub fn boot(image: &ImagePaths, scratch: &Scratch, opts: &BootOptions) -> Vm {
        let ssh_port = free_port();
        let config = scratch.dir.join("bootconfig.json");
        let cfg = harness::qemu::boot_config(
            &opts.hostname,
            &[scratch.public_key()],
            opts.network.clone(),
        );
        std::fs::write(&config, cfg).expect("write boot config");
        let monitor = scratch.dir.join("monitor.sock");
        let _ = std::fs::remove_file(&monitor);
        let boot = if opts.direct_kernel {
            // The command line the image was built for (its dm-verity root), from `cmdline`
            // next to the kernel.
            let base = harness::qemu::image_cmdline(&image.kernel)
                .expect("the image has no cmdline file next to its kernel");
            BootPath::direct(&image.kernel, &base, &opts.append)
        } else {
            assert!(
                opts.append.is_empty(),
                "--append needs a direct-kernel boot: the UKI's command line is fixed"
            );
            // The variable store persists across reboots of this scratch disk, like NVRAM.
            let vars = scratch.dir.join("OVMF_VARS.fd");
            if !vars.exists() {
                harness::qemu::fresh_vars(&vars).expect("copy OVMF_VARS");
            }
            BootPath::Uefi { vars }
        };
        let machine = Machine {
            bootconfig: opts.fw_cfg.then(|| config.clone()),
            memory_mib: opts.memory_mib,
            kvm: std::env::var_os("SYSCTR_KVM").is_some(),
            bus: opts.disk_bus,
            nic: opts.nic,
            ..Machine::new(boot, &scratch.disk, ssh_port)
        };
        let mut cmd = machine.command();
        for (i, extra) in opts.extra_disks.iter().enumerate() {
            cmd.arg("-drive")
                .arg(format!(
                    "file={},format=raw,if=none,id=x{i},cache=unsafe",
                    extra.display()
                ))
                .args(["-device", &format!("virtio-blk-pci,drive=x{i}")]);
        }
        cmd.args(["-display", "none", "-serial", "stdio"])
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start qemu-system-x86_64");
        let console_in = child.stdin.take();
        let serial = Arc::new(Mutex::new(String::new()));
        let log_path = scratch.dir.join("serial.log");
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let serial = serial.clone();
            let log_path = log_path.clone();
            std::thread::spawn(move || harness::qemu::pump(stream, serial, log_path));
        }
        Vm {
            child,
            console_in,
            serial,
            ssh_port,
            key: scratch.key.clone(),
            monitor,
            log_path,
            started: Instant::now(),
        }
    }

    /// Types `text` on the serial console.
    pub fn type_on_console(&mut self, text: &str) {
        let input = self.console_in.as_mut().expect("console input");
        input
            .write_all(text.as_bytes())
            .and_then(|_| input.flush())
            .expect("write to the serial console");
    }

    /// Everything the serial console printed so far.
    pub fn serial(&self) -> String {
        self.serial.lock().unwrap().clone()
    }

    /// The last `n` lines of the serial console, for failure messages.
    pub fn tail(&self, n: usize) -> String {
        let s = self.serial();
        let lines: Vec<&str> = s.lines().collect();
        let start = lines.len().saturating_sub(n);
        format!(
            "--- serial console, last {} lines (full log {}) ---\n{}",
            lines.len() - start,
            self.log_path.display(),
            lines[start..].join("\n")
        )
    }

    /// Waits until the serial log contains `needle` at least `count` times.
    pub fn wait_for_count(&mut self, needle: &str, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.serial().matches(needle).count() >= count {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "QEMU exited ({status}) before the console showed {needle:?}\n{}",
                    self.tail(60)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "no {needle:?} on the console within {}s\n{}",
                    timeout.as_secs(),
                    self.tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn wait_for(&mut self, needle: &str, timeout: Duration) {
        self.wait_for_count(needle, 1, timeout)
    }

    /// Runs a command over ssh; returns (exit status, stdout, stderr). Bounded by `timeout`.
    pub fn ssh_raw(&self, command: &str, timeout: Duration) -> (Option<i32>, String, String) {
        let mut child = harness::qemu::ssh(&self.key, self.ssh_port, command, Some(timeout))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ssh");
        let mut out = String::new();
        let mut err = String::new();
        child.stdout.take().unwrap().read_to_string(&mut out).ok();
        child.stderr.take().unwrap().read_to_string(&mut err).ok();
        let status = child.wait().expect("wait ssh");
        (status.code(), out, err)
    }

    /// Runs a command over ssh with `input` as its stdin (`sysctr update - < bundle`).
    pub fn ssh_input(
        &self,
        command: &str,
        input: &Path,
        timeout: Duration,
    ) -> (Option<i32>, String, String) {
        let file = std::fs::File::open(input).expect("open the input file");
        let out = harness::qemu::ssh(&self.key, self.ssh_port, command, Some(timeout))
            .stdin(file)
            .output()
            .expect("start ssh");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts a command over ssh with `input` as its stdin and returns at once (its output
    /// is discarded): for what must be cut short, like an install at a power cut.
    pub fn ssh_input_spawn(&self, command: &str, input: &Path) -> Child {
        let file = std::fs::File::open(input).expect("open the input file");
        harness::qemu::ssh(&self.key, self.ssh_port, command, None)
            .stdin(file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ssh")
    }

    /// Pulls the plug: SIGKILL to QEMU, no flush, no shutdown. The disk keeps what QEMU
    /// had written to it.
    pub fn power_cut(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Runs a command over ssh and returns its stdout; panics (with the console tail) on failure.
    pub fn ssh(&self, command: &str) -> String {
        let (code, out, err) = self.ssh_raw(command, Duration::from_secs(60));
        if code != Some(0) {
            panic!(
                "ssh {command:?} failed ({code:?})\nstdout: {out}\nstderr: {err}\n{}",
                self.tail(40)
            );
        }
        out
    }

    /// Waits until ssh accepts our key and runs `true`.
    pub fn wait_ssh(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "QEMU exited ({status}) while waiting for ssh\n{}",
                    self.tail(60)
                );
            }
            let (code, _, err) = self.ssh_raw("true", Duration::from_secs(20));
            if code == Some(0) {
                return;
            }
            last = err;
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!(
            "ssh did not accept the boot-config key within {}s (last error: {last})\n{}",
            timeout.as_secs(),
            self.tail(60)
        );
    }

    /// `sysctr ps --json` over ssh, parsed.
    pub fn ps(&self) -> Vec<serde_json::Value> {
        let out = self.ssh("sysctr ps --json");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
            panic!(
                "`sysctr ps --json` is not JSON ({e}): {out}\n{}",
                self.tail(20)
            )
        });
        match v {
            serde_json::Value::Array(a) => a,
            serde_json::Value::Object(ref o) if o.get("services").is_some() => {
                o["services"].as_array().cloned().unwrap_or_default()
            }
            other => panic!("unexpected `sysctr ps --json` shape: {other}"),
        }
    }

    /// Polls `sysctr ps --json` until `pred` holds for the service list.
    pub fn wait_ps(
        &mut self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let ps = self.ps();
            if pred(&ps) {
                return ps;
            }
            if Instant::now() > deadline {
                panic!(
                    "{what}: not reached within {}s; last ps: {}\n{}",
                    timeout.as_secs(),
                    serde_json::to_string_pretty(&ps).unwrap(),
                    self.tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A command to the QEMU monitor (`system_powerdown`, …).
    pub fn monitor(&self, command: &str) {
        let mut s = UnixStream::connect(&self.monitor).expect("connect to the QEMU monitor");
        s.write_all(format!("{command}\n").as_bytes())
            .expect("write to the monitor");
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Waits for QEMU to exit on its own (poweroff).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait qemu") {
                // let the pump threads drain
                std::thread::sleep(Duration::from_millis(200));
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "QEMU did not exit within {}s (no poweroff)\n{}",
                    timeout.as_secs(),
                    self.tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The host key the VM's ssh server presents (ssh-keyscan).
    pub fn host_key(&self) -> String {
        let out = Command::new("ssh-keyscan")
            .args([
                "-T",
                "20",
                "-t",
                "ed25519",
                "-p",
                &self.ssh_port.to_string(),
                "127.0.0.1",
            ])
            .stderr(Stdio::null())
            .output()
            .expect("ssh-keyscan");
        let text = String::from_utf8_lossy(&out.stdout);
        let key = text
            .lines()
            .find(|l| !l.starts_with('#') && l.contains("ssh-ed25519"))
            .unwrap_or_else(|| panic!("ssh-keyscan got no ed25519 host key\n{}", self.tail(20)));
        key.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service entry named `name` in a `ps --json` list.
pub fn service<'a>(ps: &'a [serde_json::Value], name: &str) -> Option<&'a serde_json::Value> {
    ps.iter().find(|s| s["name"] == name)
}

/// The system containers every image has.
pub const SYSTEM_SERVICES: &[&str] = &["logging", "network", "ssh", "time", "console"];

/// True when every system service is Ready.
pub fn system_ready(ps: &[serde_json::Value]) -> bool {
    SYSTEM_SERVICES
        .iter()
        .all(|n| service(ps, n).is_some_and(|s| s["state"] == "ready" || s["ready"] == true))
}

//! Booting an image in QEMU for the guest sections: a copy of the disk, the serial console
//! in a file, ssh forwarded to a free host port, and the boot config carrying one key.

use super::tail;
use crate::image;
use crate::qemu;
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// init's boot markers: every service settled, Ready or not.
pub const SYSCTR_MARKERS: &[&str] = &[harness::qemu::ALL_READY, harness::qemu::BOOT_COMPLETE];

/// Bound on one command over ssh (an install of a bundle included).
const SSH_TIMEOUT: Duration = Duration::from_secs(900);

/// How a guest boots (see [`Vm::boot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path_ {
    Uefi,
    Direct,
}

impl Path_ {
    pub fn name(self) -> &'static str {
        match self {
            Path_::Uefi => "UEFI (OVMF + systemd-boot + UKI)",
            Path_::Direct => "direct kernel (-kernel)",
        }
    }
}

/// Whether a boot with these extra words carries PID 1's initramfs: not when they name
/// another `init=` on the root (the baseline's), which the kernel runs only when there is no
/// initramfs (with one, it runs the initramfs' /init).
fn with_initramfs(extra: &str) -> bool {
    !extra.split_whitespace().any(|w| w.starts_with("init="))
}

/// A copy of the disk `src` (built as `img`) whose only boot entry is a slot-A UKI carrying
/// `extra` on its command line (the UEFI counterpart of `append`), at `out`.
pub fn uefi_disk_with(img: &image::Image, src: &Path, extra: &str, out: &Path) -> Result<()> {
    crate::util::run(Command::new("cp").arg("--sparse=always").arg(src).arg(out))?;
    let slot = image::Slot::A;
    let cmdline = img.verity.cmdline(slot, extra);
    let uki = out.with_extension("efi");
    rootfs::disk::make_uki(
        &img.kernel,
        with_initramfs(extra).then_some(img.initrd.as_path()),
        &cmdline,
        &rootfs::disk::os_release("sysctr", env!("CARGO_PKG_VERSION"), slot),
        &uki,
    )?;
    let esp = format!("{}@@{}", out.display(), rootfs::disk::ESP_START);
    // Whatever entries the disk has (counted or blessed) give way to this one, uncounted.
    let _ = Command::new("mdel")
        .args(["-i", &esp, "::/EFI/Linux/*.efi"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .status();
    let dest = format!(
        "::/EFI/Linux/{}",
        slot.uki_name(rootfs::disk::FIRST_GENERATION, None)
    );
    crate::util::run(
        Command::new("mcopy")
            .args(["-o", "-i", &esp])
            .arg(&uki)
            .arg(dest)
            .env("MTOOLS_SKIP_CHECK", "1"),
    )?;
    let _ = fs::remove_file(&uki);
    Ok(())
}

/// An ssh key and the boot config that hands it to the guest, in `dir`; the VMs booted
/// with it keep their disks and consoles there too.
pub struct Keys {
    pub dir: PathBuf,
    key: PathBuf,
    bootconfig: PathBuf,
}

impl Keys {
    pub fn new(dir: &Path) -> Result<Keys> {
        fs::create_dir_all(dir)?;
        let key = dir.join("id_ed25519");
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(key.with_extension("pub"));
        crate::util::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f"])
                .arg(&key),
        )?;
        let pubkey = fs::read_to_string(key.with_extension("pub"))?
            .trim()
            .to_string();
        let bootconfig = dir.join("bootconfig.json");
        fs::write(&bootconfig, qemu::boot_config("bench", &[pubkey]))?;
        Ok(Keys {
            dir: dir.to_path_buf(),
            key,
            bootconfig,
        })
    }
}

/// A running guest; QEMU is killed on drop.
pub struct Vm {
    child: Child,
    serial: PathBuf,
    key: PathBuf,
    pub port: u16,
    /// The guest's disk (a copy, written by the guest).
    pub disk: PathBuf,
    /// Host wall time from QEMU's start to the first marker on the console.
    pub host_wall: Duration,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vm {
    /// Boots `img` from a fresh copy of the disk `src` (TCG unless `kvm`) and waits until one
    /// of `markers` is on the console. `path` is the firmware route: UEFI (OVMF, systemd-boot,
    /// the UKI on the disk's ESP: its command line is fixed) or direct kernel (`append` added
    /// to the image's command line; an `init=` in it boots without PID 1's initramfs).
    #[allow(clippy::too_many_arguments)]
    pub fn boot(
        keys: &Keys,
        img: &image::Image,
        src: &Path,
        tag: &str,
        path: Path_,
        append: &str,
        kvm: bool,
        markers: &[&str],
    ) -> Result<Vm> {
        let disk = keys.dir.join(format!("disk-{tag}.img"));
        crate::util::run(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(src)
                .arg(&disk),
        )?;
        let port = qemu::free_port()?;
        let serial = keys.dir.join(format!("serial-{tag}.log"));
        let _ = fs::remove_file(&serial);
        // TCG unless asked: on this (nested) machine KVM with `-cpu host` aborts in QEMU, and
        // the boot tests use TCG too. Guest-side figures are then TCG figures.
        let boot = match path {
            Path_::Direct => {
                let mut boot =
                    qemu::BootPath::direct(&img.kernel, &qemu::image_cmdline(&img.kernel), append);
                if let qemu::BootPath::Direct { initrd, .. } = &mut boot {
                    if !with_initramfs(append) {
                        *initrd = None;
                    }
                }
                boot
            }
            Path_::Uefi => {
                if !append.is_empty() {
                    bail!("a UEFI boot takes its command line from the UKI (use uefi_disk_with)");
                }
                let vars = keys.dir.join(format!("vars-{tag}.fd"));
                qemu::fresh_vars(&vars)?;
                qemu::BootPath::Uefi { vars }
            }
        };
        let machine = qemu::Machine {
            bootconfig: Some(keys.bootconfig.clone()),
            kvm,
            ..qemu::Machine::new(boot, &disk, port)
        };
        let mut cmd = machine.command();
        cmd.args(["-display", "none", "-monitor", "none", "-serial"])
            .arg(format!("file:{}", serial.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(keys.dir.join(format!("qemu-{tag}.err")))?);
        let t0 = Instant::now();
        let mut vm = Vm {
            child: cmd.spawn().context("start qemu-system-x86_64")?,
            serial,
            key: keys.key.clone(),
            port,
            disk,
            host_wall: Duration::ZERO,
        };
        let timeout = Duration::from_secs(if kvm { 60 } else { 240 });
        loop {
            let log = vm.console();
            if markers.iter().any(|m| log.contains(m)) {
                vm.host_wall = t0.elapsed();
                return Ok(vm);
            }
            if let Ok(Some(st)) = vm.child.try_wait() {
                bail!(
                    "QEMU exited ({st}) before boot finished:\n{}",
                    tail(&log, 30)
                );
            }
            if t0.elapsed() > timeout {
                bail!(
                    "none of {markers:?} within {timeout:?}:\n{}",
                    tail(&log, 30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn console(&self) -> String {
        fs::read_to_string(&self.serial).unwrap_or_default()
    }

    /// Runs `command` as root over ssh (busybox sh in the ssh container, or in the
    /// baseline's chroot), with `input` on stdin; one try, at most 15 minutes.
    pub fn ssh(&self, command: &str, input: Option<&str>) -> Result<String> {
        let mut child = harness::qemu::ssh(&self.key, self.port, command, Some(SSH_TIMEOUT))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start ssh")?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.unwrap_or("").as_bytes())?;
        }
        let mut out = String::new();
        child
            .stdout
            .take()
            .context("stdout")?
            .read_to_string(&mut out)?;
        let mut err = String::new();
        child
            .stderr
            .take()
            .context("stderr")?
            .read_to_string(&mut err)?;
        let st = child.wait()?;
        if !st.success() {
            bail!("ssh {command:?}: {st}: {}", err.trim());
        }
        Ok(out)
    }

    /// Runs `command` as root over ssh with the file `input` on stdin (an update bundle);
    /// one try, at most 15 minutes. Returns its stdout.
    pub fn ssh_file(&self, command: &str, input: &Path) -> Result<String> {
        let file = fs::File::open(input).with_context(|| format!("open {}", input.display()))?;
        let out = harness::qemu::ssh(&self.key, self.port, command, Some(SSH_TIMEOUT))
            .stdin(file)
            .output()
            .context("start ssh")?;
        if !out.status.success() {
            bail!(
                "ssh {command:?} < {}: {}: {}",
                input.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// [`Vm::ssh`], retried every second until the guest's sshd lets us in (90 s).
    pub fn ssh_retry(&self, command: &str) -> Result<String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match self.ssh(command, None) {
                Ok(out) => return Ok(out),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
    }

    /// Waits until the guest powered off (QEMU exited).
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                bail!("the guest did not power off within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

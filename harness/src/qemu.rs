//! One QEMU machine as `cargo xtask run`, the boot tests and the benchmark boot it: q35,
//! OVMF → systemd-boot → the slot's UKI (or QEMU's own `-kernel` loader), the disk on
//! virtio, NVMe or AHCI, user networking with ssh and more ports forwarded to loopback, the
//! boot config in fw_cfg, virtio-rng and the i6300esb watchdog. The console and monitor are
//! the caller's choice (`-nographic`, `-serial file:…`).

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Marker init prints on the console when every service is Ready.
pub const ALL_READY: &str = "sysctr: all services ready";
/// Marker init prints when every service has settled, Ready or not (an image carrying
/// services that fail on purpose never prints [`ALL_READY`]).
pub const BOOT_COMPLETE: &str = "sysctr: boot complete";
/// Marker init prints right before reboot(2).
pub const REACHED_SHUTDOWN: &str = "sysctr: reached shutdown";

/// The Debian packages a machine needs on the host.
pub const QEMU_PACKAGES: &[&str] = &["qemu-system-x86", "openssh-client", "ovmf"];

/// Debian's OVMF: the UEFI firmware (read-only) and the template of its variable store,
/// copied per VM (systemd-boot and init keep state there).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The firmware image: `SYSCTR_OVMF_CODE`, else [`OVMF_CODE`].
pub fn ovmf_code() -> PathBuf {
    std::env::var_os("SYSCTR_OVMF_CODE").map_or_else(|| OVMF_CODE.into(), PathBuf::from)
}

/// The variable store template: `SYSCTR_OVMF_VARS`, else [`OVMF_VARS`].
pub fn ovmf_vars() -> PathBuf {
    std::env::var_os("SYSCTR_OVMF_VARS").map_or_else(|| OVMF_VARS.into(), PathBuf::from)
}

/// A fresh copy of OVMF's variable store for one VM at `path`.
pub fn fresh_vars(path: &Path) -> io::Result<()> {
    let template = ovmf_vars();
    fs::copy(&template, path).map(drop).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot copy {} (apt-get install ovmf): {e}",
                template.display()
            ),
        )
    })
}

/// The kernel command line when an image has no `cmdline` file next to its kernel: the root
/// partition mounted directly, without dm-verity.
pub const BASE_CMDLINE: &str =
    "console=ttyS0 root=PARTUUID=53595343-5452-4000-8000-000000000001 rootfstype=squashfs ro";

/// The command line an image was built for: `cmdline` next to its kernel (the dm-verity
/// root).
pub fn image_cmdline(kernel: &Path) -> io::Result<String> {
    fs::read_to_string(kernel.with_file_name("cmdline")).map(|s| s.trim().to_string())
}

/// The image's initramfs (PID 1 as `/init`), beside its kernel as the command line is.
pub const INITRD_FILE: &str = "initrd.img";

/// How a VM boots.
#[derive(Clone, Debug)]
pub enum BootPath {
    /// As a real machine: OVMF → systemd-boot on the ESP → the slot's UKI. `vars` is this
    /// VM's copy of the UEFI variable store.
    Uefi { vars: PathBuf },
    /// Development shortcut: QEMU loads the kernel (and the initramfs, when there is one)
    /// itself with this command line.
    Direct {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
}

impl BootPath {
    /// QEMU's `-kernel` with the image's initramfs beside it ([`INITRD_FILE`]) and the
    /// command line `base` plus `append` (when not empty).
    pub fn direct(kernel: &Path, base: &str, append: &str) -> BootPath {
        let mut cmdline = base.to_string();
        if !append.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(append);
        }
        BootPath::Direct {
            kernel: kernel.to_path_buf(),
            initrd: Some(kernel.with_file_name(INITRD_FILE)),
            cmdline,
        }
    }
}

/// The disk's bus: virtio (QEMU's fast path) or what PCs have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskBus {
    Virtio,
    Nvme,
    Ahci,
}

/// The NIC model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nic {
    Virtio,
    E1000e,
}

impl FromStr for DiskBus {
    type Err = String;
    fn from_str(s: &str) -> Result<DiskBus, String> {
        Ok(match s {
            "virtio" => DiskBus::Virtio,
            "nvme" => DiskBus::Nvme,
            "ahci" | "sata" => DiskBus::Ahci,
            other => return Err(format!("unknown disk bus {other:?} (virtio, nvme, ahci)")),
        })
    }
}

impl FromStr for Nic {
    type Err = String;
    fn from_str(s: &str) -> Result<Nic, String> {
        Ok(match s {
            "virtio" => Nic::Virtio,
            "e1000e" => Nic::E1000e,
            other => return Err(format!("unknown NIC {other:?} (virtio, e1000e)")),
        })
    }
}

impl fmt::Display for DiskBus {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            DiskBus::Virtio => "virtio",
            DiskBus::Nvme => "nvme",
            DiskBus::Ahci => "ahci",
        })
    }
}

impl fmt::Display for Nic {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Nic::Virtio => "virtio",
            Nic::E1000e => "e1000e",
        })
    }
}

/// One machine: what [`Machine::command`] turns into a QEMU command line.
#[derive(Clone, Debug)]
pub struct Machine {
    pub boot: BootPath,
    /// The raw disk image (written by the guest).
    pub disk: PathBuf,
    /// The boot config JSON, passed as fw_cfg `opt/sysctr/config`.
    pub bootconfig: Option<PathBuf>,
    /// Host loopback port forwarded to the guest's port 22.
    pub ssh_port: u16,
    /// More loopback forwards, `(host port, guest port)`, tcp.
    pub forwards: Vec<(u16, u16)>,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    pub cpus: u32,
    /// KVM with `-cpu host` instead of TCG.
    pub kvm: bool,
    pub bus: DiskBus,
    pub nic: Nic,
}

impl Machine {
    /// 512 MiB, 2 CPUs, TCG, virtio disk and NIC, no boot config, no extra forwards.
    pub fn new(boot: BootPath, disk: &Path, ssh_port: u16) -> Machine {
        Machine {
            boot,
            disk: disk.to_path_buf(),
            bootconfig: None,
            ssh_port,
            forwards: Vec::new(),
            memory_mib: 512,
            cpus: 2,
            kvm: false,
            bus: DiskBus::Virtio,
            nic: Nic::Virtio,
        }
    }

    /// The QEMU command line, without a console or monitor.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-machine", "q35", "-m"])
            .arg(self.memory_mib.to_string())
            .arg("-smp")
            .arg(self.cpus.to_string());
        if self.kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            cmd.args(["-accel", "tcg"]);
        }
        match &self.boot {
            BootPath::Uefi { vars } => {
                cmd.arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=0,readonly=on,file={}",
                        ovmf_code().display()
                    ))
                    .arg("-drive")
                    .arg(format!(
                        "if=pflash,format=raw,unit=1,file={}",
                        vars.display()
                    ));
            }
            BootPath::Direct {
                kernel,
                initrd,
                cmdline,
            } => {
                cmd.arg("-kernel").arg(kernel).arg("-append").arg(cmdline);
                if let Some(initrd) = initrd {
                    cmd.arg("-initrd").arg(initrd);
                }
            }
        }
        cmd.arg("-drive").arg(format!(
            "file={},format=raw,if=none,id=d0,cache=unsafe",
            self.disk.display()
        ));
        let dev = match self.bus {
            DiskBus::Virtio => "virtio-blk-pci,drive=d0",
            DiskBus::Nvme => "nvme,drive=d0,serial=sysctr0",
            DiskBus::Ahci => "ide-hd,drive=d0,bus=ide.0",
        };
        // The firmware boots the disk first; with -kernel, QEMU's own loader takes bootindex 0.
        let dev = match self.boot {
            BootPath::Uefi { .. } => format!("{dev},bootindex=0"),
            BootPath::Direct { .. } => dev.to_string(),
        };
        cmd.arg("-device").arg(dev);
        let mut netdev = format!("user,id=n0,hostfwd=tcp:127.0.0.1:{}-:22", self.ssh_port);
        for (host, guest) in &self.forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-:{guest}"));
        }
        cmd.arg("-netdev").arg(netdev);
        match self.nic {
            Nic::Virtio => cmd.args(["-device", "virtio-net-pci,netdev=n0"]),
            Nic::E1000e => cmd.args(["-device", "e1000e,netdev=n0"]),
        };
        // virtio-rng for first-boot entropy; the i6300esb watchdog PID 1 arms during a trial boot.
        cmd.args(["-device", "virtio-rng-pci", "-device", "i6300esb"]);
        if let Some(cfg) = &self.bootconfig {
            cmd.arg("-fw_cfg")
                .arg(format!("name=opt/sysctr/config,file={}", cfg.display()));
        }
        cmd
    }
}

/// The boot config JSON handed to init through fw_cfg.
pub fn boot_config(hostname: &str, keys: &[String], network: serde_json::Value) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "hostname": hostname,
        "authorized_keys": keys,
        "network": network,
    }))
    .expect("a JSON value always serializes")
}

/// A free loopback TCP port (bound and released; good enough for sequential users).
pub fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// ssh's options for root@127.0.0.1 on a forwarded `port` with `key`: no host key checks (a
/// fresh VM has a fresh host key), never a password prompt, bounded connect.
pub fn ssh_options(key: &Path, port: u16) -> Vec<String> {
    let mut v = vec!["-i".to_string(), key.display().to_string()];
    v.extend(["-p".to_string(), port.to_string()]);
    for o in [
        "StrictHostKeyChecking=no",
        "UserKnownHostsFile=/dev/null",
        "BatchMode=yes",
        "ConnectTimeout=10",
        "LogLevel=ERROR",
    ] {
        v.extend(["-o".to_string(), o.to_string()]);
    }
    v
}

/// `ssh root@127.0.0.1 command` on the forwarded `port` with `key` ([`ssh_options`]), the
/// whole run bounded by coreutils' `timeout` (whole seconds, at least one) when `timeout`
/// is given. Standard input and output are the caller's to set.
pub fn ssh(key: &Path, port: u16, command: &str, timeout: Option<Duration>) -> Command {
    let mut cmd = match timeout {
        Some(t) => {
            let mut c = Command::new("timeout");
            c.arg(t.as_secs().max(1).to_string()).arg("ssh");
            c
        }
        None => Command::new("ssh"),
    };
    cmd.args(ssh_options(key, port))
        .arg("root@127.0.0.1")
        .arg(command);
    cmd
}

/// Copies what `stream` (QEMU's stdout or stderr: the serial console) prints into `serial`
/// and appends it to the file `log`, carriage returns dropped, until the stream ends.
pub fn pump(mut stream: Box<dyn Read + Send>, serial: Arc<Mutex<String>>, log: PathBuf) {
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .ok();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).replace('\r', "");
                if let Some(f) = file.as_mut() {
                    let _ = f.write_all(text.as_bytes());
                }
                serial
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .push_str(&text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_is_bounded_by_timeout_in_whole_seconds_when_asked() {
        let args = |c: &Command| -> Vec<String> {
            c.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let c = ssh(
            Path::new("/k"),
            2222,
            "true",
            Some(Duration::from_millis(300)),
        );
        assert_eq!(c.get_program(), "timeout");
        let a = args(&c);
        assert_eq!(a[..2], ["1", "ssh"]);
        assert!(a.windows(2).any(|w| w == ["-p", "2222"]), "{a:?}");
        assert!(a.windows(2).any(|w| w == ["-i", "/k"]), "{a:?}");
        assert_eq!(a[a.len() - 2..], ["root@127.0.0.1", "true"]);
        let c = ssh(Path::new("/k"), 2222, "true", None);
        assert_eq!(c.get_program(), "ssh");
        assert_eq!(args(&c)[0], "-i");
    }

    fn line(m: &Machine) -> String {
        let cmd = m.command();
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn uefi_boots_the_disk_first_and_direct_leaves_bootindex_to_the_kernel_loader() {
        let uefi = Machine::new(
            BootPath::Uefi {
                vars: "/s/vars.fd".into(),
            },
            Path::new("/s/disk.img"),
            2222,
        );
        let l = line(&uefi);
        assert!(
            l.contains("-drive if=pflash,format=raw,unit=1,file=/s/vars.fd"),
            "{l}"
        );
        assert!(
            l.contains("-device virtio-blk-pci,drive=d0,bootindex=0"),
            "{l}"
        );
        assert!(l.contains("hostfwd=tcp:127.0.0.1:2222-:22"), "{l}");
        assert!(l.contains("-m 512 -smp 2 -accel tcg"), "{l}");
        assert!(!l.contains("fw_cfg"), "{l}");

        let mut direct = Machine::new(
            BootPath::Direct {
                kernel: "/k".into(),
                initrd: Some("/i.img".into()),
                cmdline: "console=ttyS0".into(),
            },
            Path::new("/d"),
            1,
        );
        direct.bus = DiskBus::Nvme;
        direct.nic = Nic::E1000e;
        direct.forwards = vec![(8080, 80)];
        direct.bootconfig = Some("/c.json".into());
        direct.kvm = true;
        let l = line(&direct);
        assert!(
            l.contains("-kernel /k -append console=ttyS0 -initrd /i.img"),
            "{l}"
        );
        assert!(l.contains("-device nvme,drive=d0,serial=sysctr0 "), "{l}");
        assert!(!l.contains("bootindex"), "{l}");
        assert!(l.contains("-device e1000e,netdev=n0"), "{l}");
        assert!(l.contains(",hostfwd=tcp:127.0.0.1:8080-:80"), "{l}");
        assert!(
            l.contains("-fw_cfg name=opt/sysctr/config,file=/c.json"),
            "{l}"
        );
        assert!(l.contains("-accel kvm -cpu host"), "{l}");
    }

    #[test]
    fn a_direct_boot_appends_words_only_when_there_are_some() {
        let BootPath::Direct { cmdline, .. } = BootPath::direct(Path::new("/k"), "a b", "") else {
            unreachable!()
        };
        assert_eq!(cmdline, "a b");
        let BootPath::Direct {
            cmdline,
            kernel,
            initrd,
        } = BootPath::direct(Path::new("/img/bzImage"), "a", "x=1")
        else {
            unreachable!()
        };
        assert_eq!(initrd.as_deref(), Some(Path::new("/img/initrd.img")));
        assert_eq!(
            (cmdline.as_str(), kernel.as_path()),
            ("a x=1", Path::new("/img/bzImage"))
        );
    }

    #[test]
    fn bus_and_nic_names_round_trip_and_unknown_ones_are_named_in_the_error() {
        for b in [DiskBus::Virtio, DiskBus::Nvme, DiskBus::Ahci] {
            assert_eq!(b.to_string().parse::<DiskBus>(), Ok(b));
        }
        assert_eq!("sata".parse::<DiskBus>(), Ok(DiskBus::Ahci));
        assert!("scsi".parse::<DiskBus>().unwrap_err().contains("\"scsi\""));
        for n in [Nic::Virtio, Nic::E1000e] {
            assert_eq!(n.to_string().parse::<Nic>(), Ok(n));
        }
        assert!("rtl8139".parse::<Nic>().unwrap_err().contains("rtl8139"));
    }

    #[test]
    fn ssh_options_never_prompt_and_name_the_key_and_port() {
        let o = ssh_options(Path::new("/k/id"), 2200).join(" ");
        assert!(o.starts_with("-i /k/id -p 2200 "), "{o}");
        assert!(o.contains("-o BatchMode=yes"), "{o}");
    }
}

//! The booted nodes: their disks, boot configs, the network namespace with its bridge and
//! taps, one QEMU per node inside it, and forming the swarm.

use super::{build_node_image, node_kernel, NodeArgs, CLUSTER_PACKAGES, SUBNET};
use crate::qemu::{self, QEMU_PACKAGES};
use crate::util::{ensure_debian_packages, run, workspace_root};
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(super) struct Node {
    /// 0-based.
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) addr: String,
    pub(super) disk: PathBuf,
    pub(super) console: PathBuf,
    pub(super) monitor: PathBuf,
    pub(super) bootconfig: PathBuf,
    pub(super) tap: String,
}

pub(super) struct Cluster {
    pub(super) netns: String,
    pub(super) dir: PathBuf,
    pub(super) key: PathBuf,
    pub(super) pubkey: String,
    pub(super) kernel: PathBuf,
    /// PID 1's initramfs of the node image (`-initrd`).
    pub(super) initrd: PathBuf,
    pub(super) cmdline: String,
    pub(super) kvm: bool,
    pub(super) memory_mb: u32,
    pub(super) cpus: u32,
    /// A reboot of a node ends its QEMU (`-no-reboot`). The test sets it: its nodes never
    /// reboot themselves, so a kernel panic (`panic=5`) or PID 1's fatal path is reported
    /// by `wait_until` within seconds instead of after the whole bound of a boot loop.
    pub(super) no_reboot: bool,
    pub(super) nodes: Vec<Node>,
    pub(super) children: Vec<Option<Child>>,
}

/// Whether KVM can be used (the device opens read-write).
fn kvm_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

impl Cluster {
    /// Builds the node image, one disk per node, the ssh key and the network namespace.
    /// Nothing is booted yet.
    pub(super) fn start(count: usize, o: &NodeArgs) -> Result<Cluster> {
        ensure_debian_packages(QEMU_PACKAGES)?;
        ensure_debian_packages(CLUSTER_PACKAGES)?;
        let root = workspace_root();
        // The node image (~1 GiB of build folder) and each node's disk, which grows with
        // its engine's state as the guest writes it.
        crate::util::ensure_free_space(
            &root,
            (2 + count as u64) << 30,
            &format!("a cluster of {count} nodes"),
        )?;
        let (disk, kernel, initrd, cmdline) = if o.no_build {
            let dir = root.join("build").join("image-node");
            let disk = dir.join("disk.img");
            if !disk.is_file() {
                bail!(
                    "--no-build: no {} (run cargo xtask cluster image)",
                    disk.display()
                );
            }
            (
                disk,
                node_kernel()?,
                dir.join(harness::qemu::INITRD_FILE),
                qemu::image_cmdline(&dir.join("bzImage")),
            )
        } else {
            let img = build_node_image()?;
            let cmdline = qemu::image_cmdline(&img.kernel);
            (img.disk, img.kernel, img.initrd, cmdline)
        };
        let dir = root.join("build").join("cluster");
        fs::create_dir_all(&dir)?;
        let key = dir.join("id_ed25519");
        if !key.exists() {
            run(Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "sysctr-cluster",
                    "-f",
                ])
                .arg(&key))?;
        }
        let pubkey = fs::read_to_string(key.with_extension("pub"))?
            .trim()
            .to_string();
        let pubkey = pubkey.as_str();
        let kvm = o.kvm;
        if kvm && !kvm_usable() {
            bail!("--kvm: /dev/kvm cannot be opened");
        }
        let mut nodes = Vec::new();
        for i in 0..count {
            let name = format!("node{}", i + 1);
            let node = Node {
                index: i,
                addr: format!("{SUBNET}.{}", 11 + i),
                disk: dir.join(format!("{name}.img")),
                console: dir.join(format!("{name}.console.log")),
                monitor: dir.join(format!("{name}.monitor")),
                bootconfig: dir.join(format!("{name}.bootconfig.json")),
                tap: format!("sctap{}", i + 1),
                name,
            };
            // The manager's role now; workers get theirs once the join token exists.
            let swarm = if i == 0 {
                serde_json::json!({ "role": "manager", "advertise": node.addr })
            } else {
                serde_json::Value::Null
            };
            write_bootconfig(&node, pubkey, swarm)?;
            node_disk(&disk, &node.disk, o.state_gib)?;
            nodes.push(node);
        }
        let mut cluster = Cluster {
            netns: o.netns.clone(),
            dir,
            key,
            pubkey: pubkey.to_string(),
            kernel,
            initrd,
            cmdline,
            kvm,
            memory_mb: o.memory,
            cpus: o.cpus,
            no_reboot: false,
            children: nodes.iter().map(|_| None).collect(),
            nodes,
        };
        cluster.network()?;
        Ok(cluster)
    }

    /// The namespace, its bridge (the host's address in it is `.1`) and a tap per node.
    fn network(&mut self) -> Result<()> {
        let ns = self.netns.clone();
        // A namespace left by an interrupted run is replaced.
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &ns]))?;
        let inside = |args: &[&str]| {
            run(Command::new("ip")
                .args(["netns", "exec", &ns, "ip"])
                .args(args))
        };
        inside(&["link", "set", "lo", "up"])?;
        inside(&["link", "add", "scbr0", "type", "bridge"])?;
        inside(&["addr", "add", &format!("{SUBNET}.1/24"), "dev", "scbr0"])?;
        inside(&["link", "set", "scbr0", "up"])?;
        for node in &self.nodes {
            inside(&["tuntap", "add", "dev", &node.tap, "mode", "tap"])?;
            inside(&["link", "set", &node.tap, "master", "scbr0"])?;
            inside(&["link", "set", &node.tap, "up"])?;
        }
        eprintln!(
            "cluster: network namespace {ns}: bridge scbr0 {SUBNET}.1/24, {} taps, no route out",
            self.nodes.len()
        );
        Ok(())
    }

    /// Starts node `i`'s QEMU inside the namespace (direct kernel boot, console to a file).
    pub(super) fn boot(&mut self, i: usize) -> Result<()> {
        let node = self.nodes[i].clone();
        let _ = fs::remove_file(&node.monitor);
        let console = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.console)?;
        let mut cmd = Command::new("ip");
        // SYSCTR_QEMU: another QEMU binary (or a link to it under another name).
        let qemu = std::env::var("SYSCTR_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into());
        cmd.args(["netns", "exec", &self.netns, &qemu])
            .args(["-machine", "q35", "-nodefaults", "-display", "none"])
            .args(["-m", &self.memory_mb.to_string()])
            .args(["-smp", &self.cpus.to_string()]);
        if self.no_reboot {
            cmd.arg("-no-reboot");
        }
        if self.kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            cmd.args(["-accel", "tcg"]);
        }
        cmd.arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(&self.initrd)
            .arg("-append")
            .arg(&self.cmdline)
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=d0,cache=unsafe",
                node.disk.display()
            ))
            .args(["-device", "virtio-blk-pci,drive=d0"])
            .arg("-netdev")
            .arg(format!(
                "tap,id=n0,ifname={},script=no,downscript=no",
                node.tap
            ))
            .arg("-device")
            .arg(format!(
                "virtio-net-pci,netdev=n0,mac=52:54:00:77:00:{:02x}",
                node.index + 11
            ))
            .args(["-device", "virtio-rng-pci"])
            .arg("-fw_cfg")
            .arg(format!(
                "name=opt/sysctr/config,file={}",
                node.bootconfig.display()
            ))
            .arg("-serial")
            .arg("stdio")
            .arg("-monitor")
            .arg(format!(
                "unix:{},server=on,wait=off",
                node.monitor.display()
            ))
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console);
        let child = cmd
            .spawn()
            .context("cannot start qemu-system-x86_64 in the namespace")?;
        eprintln!(
            "cluster: {} booting at {} ({}; console {})",
            node.name,
            node.addr,
            if self.kvm { "KVM" } else { "TCG" },
            node.console.display()
        );
        self.children[i] = Some(child);
        Ok(())
    }

    /// Pulls node `i`'s plug: QEMU's monitor `quit` (no clean shutdown in the guest).
    pub(super) fn power_off(&mut self, i: usize) -> Result<()> {
        let node = &self.nodes[i];
        if let Ok(mut s) = UnixStream::connect(&node.monitor) {
            let _ = s.write_all(b"quit\n");
        }
        if let Some(mut child) = self.children[i].take() {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if child.try_wait()?.is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        eprintln!("cluster: {} powered off", node.name);
        Ok(())
    }

    /// Boots the manager, waits for its swarm, gives the workers the join token, boots them
    /// and waits until every node is Ready. Returns how long that took.
    pub(super) fn form_swarm(&mut self) -> Result<Duration> {
        let t = Instant::now();
        let slow = if self.kvm { 1 } else { 4 };
        let manager = self.nodes[0].clone();
        self.boot(0)?;
        self.wait_until(
            &format!("{} to initialise the swarm", manager.name),
            Duration::from_secs(450 * slow),
            || {
                let out = self.ssh(
                    &manager,
                    "docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}'",
                )?;
                Ok((out.trim() == "active true").then_some(()))
            },
        )?;
        let token = self
            .ssh(&manager, "docker swarm join-token -q worker")?
            .trim()
            .to_string();
        if !token.starts_with("SWMTKN-") {
            bail!("{}: unexpected worker join token {token:?}", manager.name);
        }
        for i in 1..self.nodes.len() {
            let node = self.nodes[i].clone();
            let swarm = serde_json::json!({
                "role": "worker",
                "manager": format!("{}:2377", manager.addr),
                "token": token,
                "advertise": node.addr,
            });
            write_bootconfig(&node, &self.pubkey, swarm)?;
            self.boot(i)?;
        }
        let names: Vec<String> = self.nodes.iter().map(|n| n.name.clone()).collect();
        self.wait_until(
            &format!("{} nodes Ready in the swarm", names.len()),
            Duration::from_secs(450 * slow),
            || {
                let ready = self.ready_nodes(&manager)?;
                Ok(names.iter().all(|n| ready.contains(n)).then_some(()))
            },
        )?;
        eprintln!(
            "cluster: swarm formed: {} nodes Ready after {:.1}s",
            names.len(),
            t.elapsed().as_secs_f64()
        );
        Ok(t.elapsed())
    }
}

/// `try_wait` needs `&mut Child`; the poll loop only has `&self`. Reads the process state
/// from /proc instead: a QEMU that exited is a zombie (we have not reaped it) or gone.
pub(super) fn exited(child: &Child) -> Result<Option<String>> {
    let stat = match fs::read_to_string(format!("/proc/{}/stat", child.id())) {
        Ok(s) => s,
        Err(_) => return Ok(Some("gone".into())),
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("?");
    Ok((state == "Z").then(|| "exited".to_string()))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            if self.children[i].is_some() {
                let _ = self.power_off(i);
            }
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .status();
        eprintln!(
            "cluster: nodes powered off, namespace {} removed",
            self.netns
        );
    }
}

/// A node's boot config (fw_cfg `opt/sysctr/config`): its name, the test's ssh key, its
/// static address and its `swarm` object (init/src/bootconfig/swarm.rs).
fn write_bootconfig(node: &Node, pubkey: &str, swarm: serde_json::Value) -> Result<()> {
    let cfg = serde_json::json!({
        "hostname": node.name,
        "authorized_keys": [pubkey],
        "network": { "mode": "static", "address": format!("{}/24", node.addr), "dns": [] },
        "swarm": swarm,
    });
    fs::write(&node.bootconfig, serde_json::to_string_pretty(&cfg)?)
        .with_context(|| format!("cannot write {}", node.bootconfig.display()))
}

/// A node's disk: a sparse copy of the built disk with its state partition (the last one)
/// grown to `state_gib` GiB and a fresh, larger ext4 made in it (same label and UUID as
/// the image's, so init mounts it the same way).
fn node_disk(built: &Path, disk: &Path, state_gib: u64) -> Result<()> {
    use rootfs::disk::{MIB, STATE_FS_UUID, STATE_NAME, STATE_PART_GUID, STATE_START, TYPE_VAR};
    let _ = fs::remove_file(disk);
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(built)
        .arg(disk))?;
    let state_size = state_gib << 30;
    let total = STATE_START + state_size + MIB;
    fs::OpenOptions::new()
        .write(true)
        .open(disk)?
        .set_len(total)?;
    let s = |b: u64| b / 512;
    // Move the backup GPT to the new end, then recreate partition 4 over the larger span.
    run(Command::new("sgdisk")
        .arg("-e")
        .arg("-d")
        .arg("4")
        .arg(format!(
            "--new=4:{}:{}",
            s(STATE_START),
            s(STATE_START + state_size) - 1
        ))
        .arg(format!("--typecode=4:{TYPE_VAR}"))
        .arg(format!("--change-name=4:{STATE_NAME}"))
        .arg(format!("--partition-guid=4:{STATE_PART_GUID}"))
        .arg(disk)
        .stdout(Stdio::null()))?;
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", STATE_NAME, "-U", STATE_FS_UUID])
        .arg("-E")
        .arg(format!(
            "offset={STATE_START},hash_seed={STATE_FS_UUID},root_owner=0:0"
        ))
        .arg(disk)
        .arg(format!("{}k", state_size / 1024)))?;
    Ok(())
}

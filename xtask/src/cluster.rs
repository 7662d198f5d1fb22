//! `cargo xtask cluster` and `cargo xtask cluster-test`: sysctr nodes running Docker Swarm on
//! a private network the host builds for them, and the end-to-end swarm test.
//!
//! The node image is the default image plus the `docker-prepare` and `docker` system
//! containers, the docker CLI in the ssh container, a kernel with `kernel-config/node/`
//! merged in, and a larger state partition (images and containers live there).
//!
//! The network: a network namespace of its own (`ip netns add`), with a bridge and one tap
//! device per node inside it; every QEMU process runs inside that namespace, and so does
//! every ssh and HTTP client the host uses to talk to the nodes. Addresses are static, from
//! 10.77.0.0/24, and exist only inside the namespace: there is no route out of it, and no
//! DNS server, so nothing the nodes or the host do here reaches any other network. Test images
//! come from a tar built here from the host's busybox-static and `docker import`ed on every
//! node over ssh, never from a registry.
//!
//! Swarm settings reach a node in the `swarm` object of its boot config (QEMU fw_cfg
//! `opt/sysctr/config`; the join token is a secret: the kernel command line is readable by
//! every container, fw_cfg sysfs is masked for unprivileged ones). See
//! `init/src/bootconfig/swarm.rs`, `system-containers/docker/engine.sh` and docs/cluster.md.

use crate::image;
use crate::kernel;
use crate::qemu::{self, QEMU_PACKAGES};
use crate::util::{ensure_debian_packages, run, workspace_root};
use anyhow::{bail, Context, Result};
use std::fs;
use std::io::{BufRead, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Host tools: `ip` (netns, bridge, taps), ssh + ssh-keygen, curl (the routing mesh check;
/// the host's busybox wget crashes on a refused connection), busybox (the test image).
pub const CLUSTER_PACKAGES: &[&str] = &["iproute2", "openssh-client", "curl", "busybox-static"];

/// The first three octets of the private subnet; the host side of the bridge is `.1`, node
/// `i` (1-based) is `.(10 + i)`.
const SUBNET: &str = "10.77.0";
/// The routing mesh port the test service publishes, and the port its replicas listen on
/// (the same: a task whose target port differs needs the REDIRECT target in the node kernel,
/// which kernel-config/node/engine.config has; the test does not depend on it).
const WEB_PORT: u16 = 8080;
/// The most nodes `--nodes` accepts (addresses .11 to .19, MACs and tap names stay short).
const MAX_NODES: usize = 9;
/// The most memory a node may have: 3 nodes must fit beside everything else on the machine.
const MAX_MEMORY_MB: u32 = 1024;

/// The node appliance: the default image's containers, the engine, the node kernel fragment.
pub fn node_appliance() -> PathBuf {
    workspace_root()
        .join("examples")
        .join("node.appliance.json")
}

/// The node kernel: the base fragments plus the node appliance's (`kernel-config/node/`).
pub fn node_kernel() -> Result<PathBuf> {
    let appliance = rootfs::appliance::load(&node_appliance())?;
    kernel::build_with(&appliance.kernel_fragments())
}

#[derive(Debug, Clone)]
struct ClusterOptions {
    nodes: usize,
    memory_mb: u32,
    cpus: u32,
    /// KVM instead of TCG (TCG is the default, as for `cargo xtask run`: /dev/kvm may open
    /// and still not run a guest, e.g. nested under another hypervisor).
    kvm: bool,
    state_gib: u64,
    netns: String,
    /// Reuse build/image-node as it is (the kernel still comes from the node kernel cache).
    no_build: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: 3,
            memory_mb: MAX_MEMORY_MB,
            cpus: 1,
            kvm: false,
            state_gib: 4,
            netns: "sysctr-cluster".into(),
            no_build: false,
        }
    }
}

const USAGE: &str = "\
options:
  --nodes N          how many nodes (1-9; default 3; cluster-test always uses 3)
  --memory MB        memory per node (default and most: 1024)
  --cpus N           vCPUs per node (default 1)
  --kvm | --tcg      accelerator (default TCG)
  --state-gib N      size of each node's state partition (default 4; sparse)
  --netns NAME       the network namespace to build (default sysctr-cluster)
  --no-build         reuse the node image in build/image-node as it is
cargo xtask cluster kernel   only builds the node kernel
cargo xtask cluster image    only builds the node image (build/image-node)";

fn parse(args: &[String], test: bool) -> Result<ClusterOptions> {
    let mut o = ClusterOptions::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--nodes" if !test => {
                let v = val()?;
                o.nodes = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_NODES).contains(n))
                    .with_context(|| format!("--nodes {v}: expected 1 to {MAX_NODES}"))?;
            }
            "--memory" => {
                let v = val()?;
                o.memory_mb = v
                    .parse()
                    .ok()
                    .filter(|m| (256..=MAX_MEMORY_MB).contains(m))
                    .with_context(|| {
                        format!("--memory {v}: expected 256 to {MAX_MEMORY_MB} (MB)")
                    })?;
            }
            "--cpus" => {
                let v = val()?;
                o.cpus = v
                    .parse()
                    .ok()
                    .filter(|c| (1..=4).contains(c))
                    .with_context(|| format!("--cpus {v}: expected 1 to 4"))?;
            }
            "--no-build" => o.no_build = true,
            "--kvm" => o.kvm = true,
            "--tcg" => o.kvm = false,
            "--state-gib" => {
                let v = val()?;
                o.state_gib = v
                    .parse()
                    .ok()
                    .filter(|g| (1..=64).contains(g))
                    .with_context(|| format!("--state-gib {v}: expected 1 to 64"))?;
            }
            "--netns" => {
                let v = val()?;
                if v.is_empty()
                    || v.len() > 32
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    bail!("--netns {v:?}: expected 1-32 letters, digits, - or _");
                }
                o.netns = v;
            }
            "-h" | "--help" => {
                println!("usage: cargo xtask cluster[-test] [options]\n{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    Ok(o)
}

/// `cargo xtask cluster [--nodes N] ...`: boots the nodes, forms the swarm, prints how to reach
/// it and keeps it running until Enter (or end of input) on stdin.
pub fn command(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        Some("kernel") => return node_kernel().map(|k| println!("{}", k.display())),
        Some("image") => return build_node_image().map(|_| ()),
        _ => {}
    }
    let o = parse(args, false)?;
    let mut cluster = Cluster::start(&o)?;
    cluster.form_swarm()?;
    let m = &cluster.nodes[0];
    println!();
    println!(
        "swarm of {} nodes formed; manager {} ({})",
        o.nodes, m.name, m.addr
    );
    println!("  console logs: {}", cluster.dir.display());
    println!(
        "  ssh: ip netns exec {} ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@{}",
        o.netns,
        cluster.key.display(),
        m.addr
    );
    println!("  then: docker node ls; docker service create ...");
    println!("press Enter to power the cluster off");
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    drop(cluster);
    Ok(())
}

/// `cargo xtask cluster-test`: 3 nodes, swarm, a 3-replica service through the routing mesh
/// from every node, a node powered off (its replicas rescheduled within a printed bound), and
/// the node rejoining after it boots again.
pub fn test_command(args: &[String]) -> Result<()> {
    let o = parse(args, true)?;
    let t0 = Instant::now();
    let mut cluster = Cluster::start(&o)?;
    let slow = if cluster.kvm { 1 } else { 4 };
    let built = t0.elapsed();
    let formed = cluster.form_swarm()?;
    let manager = cluster.nodes[0].clone();

    // `sysctr ps` shows the engine as a service; `docker` works from the ssh shell.
    for node in &cluster.nodes {
        let ps = cluster.ssh(node, "sysctr ps")?;
        if !ps
            .lines()
            .any(|l| l.split_whitespace().next() == Some("docker"))
        {
            bail!(
                "{}: `sysctr ps` does not list the docker service:\n{ps}",
                node.name
            );
        }
    }
    eprintln!("cluster-test: `sysctr ps` lists the docker service on every node");

    // The test image, from a tar, on every node.
    let tar = web_image_tar(&cluster.dir)?;
    for node in &cluster.nodes {
        cluster.ssh_stdin(node, "docker import - sysctr/web:1", &tar)?;
    }
    eprintln!(
        "cluster-test: sysctr/web:1 imported on every node from {}",
        tar.display()
    );

    let t_deploy = Instant::now();
    cluster.ssh(
        &manager,
        &format!(
            "docker service create --detach --name web --replicas 3 --no-resolve-image \
             --hostname '{{{{.Node.Hostname}}}}-{{{{.Task.Slot}}}}' \
             --publish published={WEB_PORT},target={WEB_PORT} sysctr/web:1 \
             /bin/sh -c 'hostname > /www/index.html; exec httpd -f -p {WEB_PORT} -h /www'"
        ),
    )?;
    let placed = cluster.wait_until(
        "3 replicas of web running",
        Duration::from_secs(300 * slow),
        || {
            let tasks = cluster.running_tasks(&manager)?;
            Ok((tasks.len() == 3).then_some(tasks))
        },
    )?;
    let deployed = t_deploy.elapsed();
    eprintln!(
        "cluster-test: web running on {:?} after {:.1}s",
        placed,
        deployed.as_secs_f64()
    );

    // The routing mesh: every node answers on the published port, for every replica.
    let up: Vec<Node> = cluster.nodes.clone();
    let seen = cluster.wait_until(
        "the routing mesh to answer on every node",
        Duration::from_secs(120 * slow),
        || cluster.mesh_answers(&up).map(Some),
    )?;
    eprintln!("cluster-test: routing mesh answers: {seen:?}");
    let distinct: std::collections::BTreeSet<&String> = seen.iter().flat_map(|(_, a)| a).collect();
    if distinct.len() < 3 {
        bail!("the routing mesh reached only {distinct:?}, not all 3 replicas");
    }

    // One node powered off (the plug pulled, not a clean shutdown).
    let victim = cluster.nodes[2].clone();
    let bound = Duration::from_secs(if cluster.kvm { 120 } else { 480 });
    cluster.power_off(2)?;
    let t_off = Instant::now();
    let rescheduled = cluster.wait_until(
        &format!("web's replicas rescheduled off {}", victim.name),
        bound,
        || {
            let tasks = cluster.running_tasks(&manager)?;
            Ok((tasks.len() == 3 && tasks.iter().all(|n| *n != victim.name)).then_some(tasks))
        },
    )?;
    let resched = t_off.elapsed();
    eprintln!(
        "cluster-test: {} powered off; 3 replicas on {:?} after {:.1}s (bound {}s)",
        victim.name,
        rescheduled,
        resched.as_secs_f64(),
        bound.as_secs()
    );
    let rest: Vec<Node> = cluster.nodes[..2].to_vec();
    let seen = cluster.wait_until(
        "the routing mesh to answer on the remaining nodes",
        Duration::from_secs(120 * slow),
        || cluster.mesh_answers(&rest).map(Some),
    )?;
    eprintln!("cluster-test: routing mesh answers on the remaining nodes: {seen:?}");

    // The node boots again and rejoins by itself (its swarm state is on its state partition).
    let t_boot = Instant::now();
    cluster.boot(2)?;
    cluster.wait_until(
        &format!("{} to rejoin the swarm", victim.name),
        Duration::from_secs(450 * slow),
        || {
            let ready = cluster.ready_nodes(&manager)?;
            Ok(ready.contains(&victim.name).then_some(()))
        },
    )?;
    let rejoined = t_boot.elapsed();
    eprintln!(
        "cluster-test: {} rejoined {:.1}s after it was powered on",
        victim.name,
        rejoined.as_secs_f64()
    );

    println!();
    println!(
        "cluster-test: passed ({}, {} MB and {} vCPU per node)",
        if cluster.kvm { "KVM" } else { "TCG" },
        o.memory_mb,
        o.cpus
    );
    println!(
        "  image + kernel + disks + network   {:>7.1}s",
        built.as_secs_f64()
    );
    println!(
        "  3 nodes booted, swarm formed       {:>7.1}s",
        formed.as_secs_f64()
    );
    println!(
        "  3 replicas deployed                {:>7.1}s",
        deployed.as_secs_f64()
    );
    println!(
        "  rescheduled after power-off        {:>7.1}s   (bound {}s)",
        resched.as_secs_f64(),
        bound.as_secs()
    );
    println!(
        "  rejoined after boot                {:>7.1}s",
        rejoined.as_secs_f64()
    );
    println!(
        "  total                              {:>7.1}s",
        t0.elapsed().as_secs_f64()
    );
    drop(cluster);
    Ok(())
}

#[derive(Debug, Clone)]
struct Node {
    /// 0-based.
    index: usize,
    name: String,
    addr: String,
    disk: PathBuf,
    console: PathBuf,
    monitor: PathBuf,
    bootconfig: PathBuf,
    tap: String,
}

struct Cluster {
    netns: String,
    dir: PathBuf,
    key: PathBuf,
    pubkey: String,
    kernel: PathBuf,
    cmdline: String,
    kvm: bool,
    memory_mb: u32,
    cpus: u32,
    nodes: Vec<Node>,
    children: Vec<Option<Child>>,
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
    fn start(o: &ClusterOptions) -> Result<Cluster> {
        ensure_debian_packages(QEMU_PACKAGES)?;
        ensure_debian_packages(CLUSTER_PACKAGES)?;
        let root = workspace_root();
        let (disk, kernel, cmdline) = if o.no_build {
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
                qemu::image_cmdline(&dir.join("bzImage")),
            )
        } else {
            let img = build_node_image()?;
            let cmdline = qemu::image_cmdline(&img.kernel);
            (img.disk, img.kernel, cmdline)
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
        for i in 0..o.nodes {
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
            cmdline,
            kvm,
            memory_mb: o.memory_mb,
            cpus: o.cpus,
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
    fn boot(&mut self, i: usize) -> Result<()> {
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
        if self.kvm {
            cmd.args(["-accel", "kvm", "-cpu", "host"]);
        } else {
            cmd.args(["-accel", "tcg"]);
        }
        cmd.arg("-kernel")
            .arg(&self.kernel)
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
    fn power_off(&mut self, i: usize) -> Result<()> {
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
    fn form_swarm(&mut self) -> Result<Duration> {
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

    /// Runs `cmd` on a node through ssh (the client runs inside the namespace).
    fn ssh(&self, node: &Node, cmd: &str) -> Result<String> {
        self.ssh_inner(node, cmd, None)
    }

    fn ssh_stdin(&self, node: &Node, cmd: &str, input: &Path) -> Result<String> {
        self.ssh_inner(node, cmd, Some(input))
    }

    fn ssh_inner(&self, node: &Node, cmd: &str, input: Option<&Path>) -> Result<String> {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, "ssh", "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
            ])
            .arg(format!("root@{}", node.addr))
            .arg(cmd);
        c.stdin(match input {
            Some(p) => Stdio::from(
                fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?,
            ),
            None => Stdio::null(),
        });
        let out = c.output().context("cannot run ssh")?;
        if !out.status.success() {
            bail!(
                "{}: `{cmd}` failed ({}): {}",
                node.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Polls `f` every 2 s until it gives a value or `timeout` passes; the error names what was
    /// awaited, the last failure and where the consoles are.
    fn wait_until<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut() -> Result<Option<T>>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut last: String;
        let mut reported = Instant::now();
        loop {
            match f() {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => last = "(not yet)".into(),
                Err(e) => last = format!("{e:#}"),
            }
            if start.elapsed() > timeout {
                bail!(
                    "timed out after {}s waiting for {what}; last: {last}; consoles in {}",
                    timeout.as_secs(),
                    self.dir.display()
                );
            }
            if reported.elapsed() > Duration::from_secs(30) {
                reported = Instant::now();
                eprintln!(
                    "cluster: still waiting for {what} ({}s; last: {})",
                    start.elapsed().as_secs(),
                    last.lines().next().unwrap_or_default()
                );
            }
            // A node whose QEMU died will not come back: say so at once.
            for (i, child) in self.children.iter().enumerate() {
                if let Some(c) = child {
                    if let Ok(Some(status)) = exited(c) {
                        bail!(
                            "{}'s QEMU exited ({status}) while waiting for {what}; see {}",
                            self.nodes[i].name,
                            self.nodes[i].console.display()
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// The swarm nodes the manager sees as Ready.
    fn ready_nodes(&self, manager: &Node) -> Result<Vec<String>> {
        let out = self.ssh(
            manager,
            "docker node ls --format '{{.Hostname}} {{.Status}}'",
        )?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (name, status) = (w.next()?, w.next()?);
                (status == "Ready").then(|| name.to_string())
            })
            .collect())
    }

    /// The nodes of web's tasks that are Running and meant to be (one entry per task).
    fn running_tasks(&self, manager: &Node) -> Result<Vec<String>> {
        let out = self.ssh(
            manager,
            "docker service ps web --filter desired-state=running --format '{{.Node}} {{.CurrentState}}'",
        )?;
        let mut nodes: Vec<String> = out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (node, state) = (w.next()?, w.next()?);
                (state == "Running").then(|| node.to_string())
            })
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// Fetches the published port of every node 6 times from the host side of the namespace
    /// (curl inside it). Each answer is the replica's hostname (`nodeX-SLOT`).
    fn mesh_answers(&self, nodes: &[Node]) -> Result<Vec<(String, Vec<String>)>> {
        let mut all = Vec::new();
        for node in nodes {
            let mut answers = Vec::new();
            for _ in 0..6 {
                let out = Command::new("ip")
                    .args(["netns", "exec", &self.netns, "curl", "-sS", "-m", "5"])
                    .arg(format!("http://{}:{WEB_PORT}/", node.addr))
                    .output()
                    .context("cannot run curl")?;
                let body = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if !out.status.success() || !body.starts_with("node") {
                    bail!(
                        "http://{}:{WEB_PORT}/ ({}): {} {}",
                        node.addr,
                        node.name,
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                answers.push(body);
            }
            answers.sort();
            answers.dedup();
            all.push((node.name.clone(), answers));
        }
        Ok(all)
    }
}

/// `try_wait` needs `&mut Child`; the poll loop only has `&self`. Reads the process state
/// from /proc instead: a QEMU that exited is a zombie (we have not reaped it) or gone.
fn exited(child: &Child) -> Result<Option<String>> {
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

/// The node image (`examples/node.appliance.json`, built into build/image-node).
fn build_node_image() -> Result<image::Image> {
    let img = image::build(&image::Options {
        appliance: Some(node_appliance()),
        ..Default::default()
    })?;
    let kernel = fs::metadata(&img.kernel)?.len();
    let slot = fs::metadata(&img.root_slot)?.len();
    println!(
        "node image: kernel {kernel} bytes + root slot {slot} bytes = {} bytes ({:.1} MB)",
        kernel + slot,
        (kernel + slot) as f64 / 1e6
    );
    Ok(img)
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

/// The test image as a tar: busybox (static) with `sh`, `httpd` and `hostname`, and an
/// empty /www. `docker import` on each node turns it into `sysctr/web:1`.
fn web_image_tar(dir: &Path) -> Result<PathBuf> {
    let stage = dir.join("web-rootfs");
    let _ = fs::remove_dir_all(&stage);
    for d in ["bin", "www", "tmp", "etc"] {
        fs::create_dir_all(stage.join(d))?;
    }
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .context("no busybox on the host (apt-get install busybox-static)")?;
    fs::copy(busybox, stage.join("bin/busybox"))?;
    for applet in ["sh", "httpd", "hostname", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", stage.join("bin").join(applet))?;
    }
    fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    let tar = dir.join("web.tar");
    run(Command::new("tar")
        .args(["--owner=0", "--group=0", "--numeric-owner", "-C"])
        .arg(&stage)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    Ok(tar)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_fragments_dir() -> PathBuf {
        workspace_root().join("kernel-config").join("node")
    }

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_default_to_three_nodes_of_one_gib() {
        let o = parse(&[], false).unwrap();
        assert_eq!((o.nodes, o.memory_mb, o.cpus, o.state_gib), (3, 1024, 1, 4));
        assert_eq!(o.netns, "sysctr-cluster");
        assert!(!o.kvm);
        let o = parse(&args(&["--nodes", "5", "--tcg", "--memory", "768"]), false).unwrap();
        assert_eq!((o.nodes, o.memory_mb, o.kvm), (5, 768, false));
        assert!(parse(&args(&["--kvm"]), true).unwrap().kvm);
    }

    #[test]
    fn bad_options_name_the_option_and_the_range() {
        let err = |a: &[&str], test: bool| format!("{:#}", parse(&args(a), test).unwrap_err());
        assert!(err(&["--nodes", "0"], false).contains("--nodes 0: expected 1 to 9"));
        assert!(err(&["--nodes", "10"], false).contains("--nodes 10: expected 1 to 9"));
        assert!(err(&["--nodes", "x"], false).contains("--nodes x"));
        assert!(err(&["--nodes"], false).contains("--nodes needs a value"));
        // the test always runs 3 nodes
        assert!(err(&["--nodes", "2"], true).contains("unknown option \"--nodes\""));
        assert!(err(&["--memory", "2048"], false).contains("expected 256 to 1024"));
        assert!(err(&["--cpus", "0"], false).contains("--cpus 0"));
        assert!(err(&["--state-gib", "0"], false).contains("--state-gib 0"));
        assert!(err(&["--netns", "a/b"], false).contains("--netns \"a/b\""));
        assert!(err(&["--netns", ""], false).contains("--netns \"\""));
        assert!(err(&["--bogus"], false).contains("unknown option \"--bogus\""));
    }

    #[test]
    fn a_zombie_or_missing_process_counts_as_exited() {
        let mut child = Command::new("true").spawn().unwrap();
        // not reaped yet: a zombie once it has exited
        let deadline = Instant::now() + Duration::from_secs(10);
        while exited(&child).unwrap().is_none() {
            assert!(Instant::now() < deadline, "true did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait().unwrap();
        assert!(exited(&child).unwrap().is_some());
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        assert_eq!(exited(&sleeper).unwrap(), None);
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }

    #[test]
    fn the_node_fragment_only_adds_to_the_default_kernel() {
        // kernel-config/node/ is a subdirectory: the default kernel's fragment list (and so
        // its cache hash) does not include it; the node appliance names every fragment in it.
        let base = kernel::fragments().unwrap();
        assert!(base.iter().all(|f| !f.starts_with(node_fragments_dir())));
        let node = kernel::fragments_in(&node_fragments_dir()).unwrap();
        let appliance = rootfs::appliance::load(&node_appliance()).unwrap();
        let named: Vec<PathBuf> = appliance
            .kernel_fragments()
            .iter()
            .map(|f| fs::canonicalize(f).unwrap())
            .collect();
        for f in &node {
            assert!(
                named.contains(&fs::canonicalize(f).unwrap()),
                "{}",
                f.display()
            );
        }
        // every option in it carries a comment line above it (kernel-config/README.md)
        for f in node {
            let text = fs::read_to_string(&f).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            for (i, l) in lines.iter().enumerate() {
                if l.starts_with("CONFIG_") {
                    let above = lines[..i]
                        .iter()
                        .rev()
                        .find(|p| !p.starts_with("CONFIG_"))
                        .unwrap();
                    assert!(
                        above.starts_with('#'),
                        "{}: {l} has no comment",
                        f.display()
                    );
                }
            }
        }
    }
}

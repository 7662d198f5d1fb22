//! `cargo xtask cluster` and `cargo xtask cluster-test`: sysctr nodes running Docker Swarm on
//! a private network the host builds for them, and the end-to-end swarm test.
//!
//! The node image is the default image plus the `docker` system container (its directories
//! from its host_dirs), the docker CLI in the ssh container, a kernel with `kernel-config/node/`
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

mod nodes;
mod remote;
mod swarm_test;
#[cfg(test)]
mod tests;

pub use swarm_test::test_command;

use crate::image;
use crate::kernel;
use crate::util::workspace_root;
use anyhow::Result;
use nodes::Cluster;
use std::fs;
use std::io::BufRead;
use std::path::PathBuf;

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

/// The options every node of `cargo xtask cluster` and `cargo xtask cluster-test` shares.
#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// Memory per node in MB (256 to 1024: 3 nodes must fit beside everything else).
    #[arg(long, value_name = "MB", default_value_t = MAX_MEMORY_MB,
          value_parser = clap::value_parser!(u32).range(256..=MAX_MEMORY_MB as i64))]
    pub memory: u32,
    /// vCPUs per node (1 to 4).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=4))]
    pub cpus: u32,
    /// KVM instead of TCG (TCG is the default, as for `cargo xtask run`: /dev/kvm may open
    /// and still not run a guest, e.g. nested under another hypervisor).
    #[arg(long, conflicts_with = "tcg")]
    pub kvm: bool,
    /// TCG (the default; says so on a command line that also runs elsewhere).
    #[arg(long)]
    pub tcg: bool,
    /// Size of each node's state partition in GiB (1 to 64; the disk is sparse).
    #[arg(long = "state-gib", value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub state_gib: u64,
    /// The network namespace to build (1-32 letters, digits, - or _).
    #[arg(long, value_name = "NAME", default_value = "sysctr-cluster", value_parser = netns_name)]
    pub netns: String,
    /// Reuse the node image in build/image-node as it is (the kernel still comes from the
    /// node kernel cache).
    #[arg(long = "no-build")]
    pub no_build: bool,
}

/// `cargo xtask cluster [--nodes N] [options]`, or `cargo xtask cluster kernel|image`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ClusterArgs {
    /// Only build a part of the node (the cluster is not booted).
    #[command(subcommand)]
    pub only: Option<BuildOnly>,
    /// How many nodes (1 to 9).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=MAX_NODES as u64))]
    pub nodes: usize,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// A part of the node built alone.
#[derive(clap::Subcommand, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildOnly {
    /// Build the node kernel (kernel-config/ plus kernel-config/node/; cached by config
    /// hash in ~/.cache/sysctr/kernel) and print its path.
    Kernel,
    /// Build the node image (build/image-node) and print its size.
    Image,
}

/// `cargo xtask cluster-test [options]`: always 3 nodes.
#[derive(clap::Args, Debug)]
pub struct ClusterTestArgs {
    #[command(flatten)]
    pub node: NodeArgs,
}

fn netns_name(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 32
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(v.to_string())
    } else {
        Err(format!("{v:?}: expected 1-32 letters, digits, - or _"))
    }
}

/// `cargo xtask cluster [--nodes N] ...`: boots the nodes, forms the swarm, prints how to reach
/// it and keeps it running until Enter (or end of input) on stdin.
pub fn command(a: &ClusterArgs) -> Result<()> {
    match a.only {
        Some(BuildOnly::Kernel) => return node_kernel().map(|k| println!("{}", k.display())),
        Some(BuildOnly::Image) => return build_node_image().map(|_| ()),
        None => {}
    }
    let mut cluster = Cluster::start(a.nodes, &a.node)?;
    cluster.form_swarm()?;
    let m = &cluster.nodes[0];
    println!();
    println!(
        "swarm of {} nodes formed; manager {} ({})",
        a.nodes, m.name, m.addr
    );
    println!("  console logs: {}", cluster.dir.display());
    println!(
        "  ssh: ip netns exec {} ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@{}",
        a.node.netns,
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

/// The node image (`examples/node.appliance.json`, built into build/image-node).
fn build_node_image() -> Result<image::Image> {
    let img = image::build(&image::Options {
        appliance: Some(node_appliance()),
        ..Default::default()
    })?;
    let kernel = fs::metadata(&img.kernel)?.len();
    let initrd = fs::metadata(&img.initrd)?.len();
    let slot = fs::metadata(&img.root_slot)?.len();
    let total = kernel + initrd + slot;
    println!(
        "node image: kernel {kernel} bytes + initramfs {initrd} bytes + root slot {slot} bytes = {total} bytes ({:.1} MB)",
        total as f64 / 1e6
    );
    Ok(img)
}

//! `cargo xtask cluster-test`: the end-to-end swarm scenario of issue 15 on 3 nodes, and the
//! test image it deploys (a tar, never a registry).

use super::nodes::{Cluster, Node};
use super::{ClusterTestArgs, WEB_PORT};
use crate::util::run;
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `cargo xtask cluster-test`: 3 nodes, swarm, a 3-replica service through the routing mesh
/// from every node, a node powered off (its replicas rescheduled within a printed bound), and
/// the node rejoining after it boots again.
pub fn test_command(a: &ClusterTestArgs) -> Result<()> {
    let o = &a.node;
    let t0 = Instant::now();
    let mut cluster = Cluster::start(3, o)?;
    cluster.no_reboot = true;
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
        o.memory,
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
    let disks: Vec<PathBuf> = cluster.nodes.iter().map(|n| n.disk.clone()).collect();
    drop(cluster);
    // Passed: the disks (their engines' state) go; the consoles stay to be read.
    for disk in &disks {
        let _ = fs::remove_file(disk);
    }
    eprintln!("cluster-test: node disks removed; consoles kept in build/cluster/");
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

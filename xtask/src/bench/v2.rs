//! The host section on the cgroup v2 view: sysctr against runc and crun where the guest's
//! cgroup layout holds.

use super::*;

/// Where a hybrid host mounts its cgroup v2 hierarchy.
pub(super) const V2_HIERARCHY: &str = "/sys/fs/cgroup/unified";

/// Enters a private mount namespace whose /sys/fs/cgroup is the v2 hierarchy, for the rest
/// of this process (the v2 section runs after the v1 ones; QEMU does not care).
pub(super) fn enter_v2_view() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS)")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("make / private")?;
    mount(
        Some(V2_HIERARCHY),
        "/sys/fs/cgroup",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .context("bind the v2 hierarchy")?;
    Ok(())
}

/// sysctr vs runc vs crun on cgroup v2 (the guest's cgroup mode) on this host: init, runc
/// and crun all see the host's v2 hierarchy at /sys/fs/cgroup.
pub(super) fn v2_comparison(o: &Options, bins: &Binaries, scratch: &Scratch) -> Result<Section> {
    let mut fig = Figures::default();
    if !Path::new(V2_HIERARCHY).join("cgroup.procs").exists() {
        bail!(
            "this host has no separate v2 hierarchy at {V2_HIERARCHY} (pure v1 or pure v2 host: \
             the first table already is the comparison)"
        );
    }
    let name = "bench";
    let init = HostInit::running_one_sleeper(bins, scratch, "v2", name, true)?;
    let spec = init.control().spec(name).map_err(anyhow::Error::msg)?;
    let v2_cgroup = Path::new(V2_HIERARCHY)
        .join(&init.prefix)
        .join(name)
        .join("cgroup.procs")
        .exists();

    // From here on this process sees the v2 hierarchy at /sys/fs/cgroup, as init does.
    enter_v2_view()?;
    let (peer_prefix, full) = peer_spec(&spec, name);
    let mut nodev = full.clone();
    if let Some(r) = nodev["linux"]["resources"].as_object_mut() {
        r.remove("devices");
    }
    let mut peers = vec![
        peer("runc", "runc run -d, same spec", &full, scratch)?,
        peer("crun", "crun run -d, same spec", &full, scratch)?,
        peer(
            "runc",
            "runc run -d, spec without device rules",
            &nodev,
            scratch,
        )?,
        peer(
            "crun",
            "crun run -d, spec without device rules",
            &nodev,
            scratch,
        )?,
    ];
    let truebin = scratch.rootfs.join("bin/true");
    let deadline = Instant::now() + Duration::from_secs(150);
    let (mut in_init, mut fork_exec) = (Vec::new(), Vec::new());
    for _ in 0..o.runs {
        if Instant::now() > deadline {
            break;
        }
        let r = round(&init, name, &mut peers, &peer_prefix, &truebin)?;
        in_init.push(r.start_us);
        fork_exec.push(r.fork_exec_us);
    }
    let (cpu_profile, offcpu, slow_calls) = profile_start_cycles(&init, name)?;
    drop(init);
    let s_fork = stats(&fork_exec);

    let s_init = stats(&in_init);
    let mut t = String::new();
    writeln!(t, "## Host, cgroup v2 view: sysctr vs runc vs crun\n")?;
    writeln!(
        t,
        "crun refuses the host's hybrid layout, and the real target (the guest) is pure cgroup \
         v2. So init, runc and crun are run again in a mount namespace whose /sys/fs/cgroup is \
         the host's v2 hierarchy ({V2_HIERARCHY}; it has no controllers enabled, the device \
         rules become a BPF program). init took its v2 path: {}. The spec is init's generated \
         one, as above. This sandbox lacks CAP_SYS_RESOURCE, and crun 1.8 insists on raising \
         RLIMIT_MEMLOCK before loading the BPF device program, so crun also runs a copy of the \
         spec without `linux.resources.devices` (runc beside it for scale).\n",
        if v2_cgroup {
            "yes (its cgroup appeared under the v2 hierarchy)"
        } else {
            "not confirmed"
        }
    )?;
    t.push_str(TABLE_HEAD);
    t.push_str(&fig.row("sysctr: create+start inside PID 1 (`start_us`)", s_init));
    let mut medians: Vec<(&str, f64)> = Vec::new();
    let mut notes = String::new();
    for p in &peers {
        match &p.error {
            None => {
                let st = stats(&p.run);
                medians.push((&p.label, st.median));
                t.push_str(&fig.row(&format!("{}, wall time", p.label), st));
            }
            Some(e) => writeln!(notes, "- **{}** fails: `{}`", p.label, e.trim())?,
        }
    }
    t.push_str(&fig.row(
        "fork+exec+wait of busybox `true` (static) from the rootfs",
        s_fork,
    ));
    t.push('\n');
    t.push_str(&notes);
    if !notes.is_empty() {
        t.push('\n');
    }
    writeln!(t, "| ratio (medians) | value | target |\n|---|---:|---|")?;
    for (label, m) in &medians {
        let target = if label.starts_with("crun") {
            "≤ 0.5×"
        } else {
            ""
        };
        writeln!(
            t,
            "| sysctr in PID 1 / {label} | {} | {target} |",
            ratio(s_init.median, *m)
        )?;
    }
    writeln!(
        t,
        "| sysctr in PID 1 / fork+exec+wait `true` | {} | ≤ 15× |\n",
        ratio(s_init.median, s_fork.median)
    )?;
    writeln!(
        t,
        "Where sysctr's create+start time goes on cgroup v2: CPU profile over 10 stop+start \
         cycles (as in the v1 section):\n\n{cpu_profile}\
         Why it blocks (context switches, as in the v1 section):\n\n{offcpu}\
         Where it waits: syscalls of 0.5 ms or more over 10 more cycles (`perf trace`):\n\n\
         {slow_calls}"
    )?;
    Ok(Section::new(t, fig))
}

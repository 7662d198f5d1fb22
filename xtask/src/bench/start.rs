//! Sections 1 and 2 (host): create+start against runc, crun and fork+exec; restart latency.

use super::*;

pub(super) fn start_and_restart(
    o: &Options,
    bins: &Binaries,
    scratch: &Scratch,
) -> Result<Section> {
    let mut fig = Figures::default();
    let name = "bench";
    let init = HostInit::running_one_sleeper(bins, scratch, "start", name, false)?;
    let section_deadline = Instant::now() + Duration::from_secs(120);

    // The same OCI spec for runc and crun.
    let spec = init.control().spec(name).map_err(anyhow::Error::msg)?;
    let (peer_prefix, peer_spec) = peer_spec(&spec, name);
    let mut peers = vec![
        peer("runc", "runc run -d", &peer_spec, scratch)?,
        peer("crun", "crun run -d", &peer_spec, scratch)?,
    ];

    // Interleaved, so that load from elsewhere on the machine hits every contender alike:
    // sysctr through the CLI, sysctr through a raw socket client, each peer, and a plain
    // fork+exec+wait of the same static busybox (`true`, and `sleep 0` as the service runs).
    let truebin = scratch.rootfs.join("bin/true");
    let sleepbin = scratch.rootfs.join("bin/sleep");
    let (mut in_init, mut via_cli, mut via_socket) = (Vec::new(), Vec::new(), Vec::new());
    let (mut fork_exec, mut fork_exec_sleep) = (Vec::new(), Vec::new());
    for _ in 0..o.runs {
        if Instant::now() > section_deadline {
            break;
        }
        init.stop(name)?;
        settle();
        let t = Instant::now();
        let out = init.cli(bins, &["start", name]).output()?;
        if !out.status.success() {
            bail!(
                "sysctr start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        via_cli.push(elapsed_us(t));
        in_init.push(running_start_us(&init, name)?);
        let r = round(&init, name, &mut peers, &peer_prefix, &truebin)?;
        via_socket.push(r.socket_us);
        in_init.push(r.start_us);
        fork_exec.push(r.fork_exec_us);
        settle();
        fork_exec_sleep.push(fork_exec_wait(&sleepbin, &["0"])?);
    }

    // Restart: SIGKILL the service's process, time until its new container process runs.
    let (mut restart, mut restart_start, mut restart_gap) = (Vec::new(), Vec::new(), Vec::new());
    let (mut restart_exit, mut restart_handling) = (Vec::new(), Vec::new());
    let restart_deadline = Instant::now() + Duration::from_secs(90);
    for _ in 0..o.runs {
        if Instant::now() > restart_deadline {
            break;
        }
        // A fresh start resets the backoff step: the next restart is the "first in a row".
        init.stop(name)?;
        init.ok(Op::Start {
            service: name.into(),
        })?;
        settle();
        let before = init.status(name)?;
        let (Some(pid), Some(old)) = (before.pid, before.started_boot_us) else {
            bail!(
                "{name} not running before the kill: {:?}",
                before.last_error
            );
        };
        let host = init.host_pid_of(pid)?;
        let t0 = boot_us();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(host),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        let after = init.wait("restart", Duration::from_secs(10), |ps| {
            ps.iter().any(|s| {
                s.name == name && s.pid.is_some() && s.started_boot_us.is_some_and(|t| t != old)
            })
        })?;
        let s = after
            .into_iter()
            .find(|s| s.name == name)
            .context("service vanished")?;
        let new = s.started_boot_us.unwrap_or(0);
        let lat = new.saturating_sub(t0) as f64;
        let start = s.start_us.unwrap_or(0) as f64;
        restart.push(lat);
        restart_start.push(start);
        restart_gap.push(lat - start);
        if let Some(reaped) = s.exited_boot_us {
            restart_exit.push(reaped.saturating_sub(t0) as f64);
            restart_handling.push((new as f64 - start) - reaped as f64);
        }
    }

    // Where the create+start time goes: a CPU profile over 10 stop+start cycles, and the
    // syscall counts of PID 1 and its children over 10 more.
    let (cpu_profile, offcpu, slow_calls) = profile_start_cycles(&init, name)?;
    let profile = strace_profile(init.host_pid()?, || {
        start_cycles(&init, name, &mut Vec::new())
    })
    .unwrap_or_else(|e| format!("strace failed: {e:#}"));
    let mut profiled = Vec::new();
    for _ in 0..10 {
        init.stop(name)?;
        init.ok(Op::Start {
            service: name.into(),
        })?;
        profiled.push(init.status(name)?.start_us.unwrap_or(0) as f64);
    }
    drop(init);

    // The tables.
    let s_init = stats(&in_init);
    let s_cli = stats(&via_cli);
    let s_sock = stats(&via_socket);
    let s_fork = stats(&fork_exec);
    let s_fork_sleep = stats(&fork_exec_sleep);
    let mut t = String::new();
    writeln!(t, "## Host: container create+start\n")?;
    writeln!(
        t,
        "One service, `/bin/sleep 1000000` from a busybox-static root filesystem, every \
         namespace private, read-only root, seccomp, 9 capabilities (init's generated spec). \
         init runs as PID 1 of a pid+mount namespace (`--test-mode`). runc and crun run the \
         **same** `config.json` (from `sysctr inspect`; only `cgroupsPath` changed), with \
         `run -d` timed as a wall clock from this process. Each sysctr run is preceded by a \
         stop; each runc run is followed by `delete -f`. Rounds are interleaved (sysctr via \
         the CLI, sysctr via a raw socket, runc, crun, fork+exec), with a 30 ms pause before \
         every timed operation so deferred kernel work from the previous one settles.\n"
    )?;
    t.push_str(TABLE_HEAD);
    t.push_str(&fig.row(
        "sysctr: create+start inside PID 1 (`start_us`: spec, pipes, libcontainer build()+start())",
        s_init,
    ));
    t.push_str(&fig.row("sysctr: `start` request → reply, raw socket client", s_sock));
    t.push_str(&fig.row(
        "sysctr: `sysctr start` CLI, wall time (exec of the client included)",
        s_cli,
    ));
    let mut runc_median = None;
    let mut peer_notes = String::new();
    for p in &peers {
        match &p.error {
            None => {
                let s = stats(&p.run);
                if p.rt == "runc" {
                    runc_median = Some(s.median);
                }
                t.push_str(&fig.row(&format!("{}, wall time", p.label), s));
                t.push_str(&fig.row(&format!("{} delete -f, wall time", p.rt), stats(&p.delete)));
            }
            Some(e) => writeln!(
                peer_notes,
                "- **{}** does not run here: `{}`",
                p.rt,
                e.trim()
            )?,
        }
    }
    t.push_str(&fig.row(
        "fork+exec+wait of busybox `true` (static) from the rootfs",
        s_fork,
    ));
    t.push_str(&fig.row("fork+exec+wait of busybox `sleep 0`", s_fork_sleep));
    t.push('\n');
    if !peer_notes.is_empty() {
        writeln!(
            t,
            "{peer_notes}  (crun refuses hybrid cgroup hierarchies; the cgroup v2 section \
             below compares all three on the host's v2 hierarchy, the guest's cgroup mode.)\n"
        )?;
    }
    writeln!(t, "| ratio (medians) | value | target |\n|---|---:|---|")?;
    if let Some(r) = runc_median {
        writeln!(
            t,
            "| sysctr in PID 1 / runc run -d | {} | crun: see the cgroup v2 section |",
            ratio(s_init.median, r)
        )?;
        writeln!(
            t,
            "| sysctr CLI start / runc run -d (both include a process exec) | {} | |",
            ratio(s_cli.median, r)
        )?;
    }
    writeln!(
        t,
        "| sysctr in PID 1 / fork+exec+wait `true` | {} | ≤ 15× |",
        ratio(s_init.median, s_fork.median)
    )?;
    writeln!(
        t,
        "| sysctr in PID 1 / fork+exec+wait `sleep 0` | {} | ≤ 15× |\n",
        ratio(s_init.median, s_fork_sleep.median)
    )?;
    writeln!(
        t,
        "### Where the create+start time goes\n\n\
         CPU profile (`perf record -g -p <init>`, children inherited, 4 kHz) over 10 \
         stop+start cycles: PID 1, libcontainer's intermediate and init processes and the \
         container's program; the binary is stripped, so user time is one line per process. \
         (`start_us` of 10 unprofiled runs right after: median {} ms; the difference to the \
         CPU total is time spent waiting.)\n\n{cpu_profile}\
         Why it blocks: context switches away from PID 1 and its children over 10 more \
         cycles, by the kernel functions they blocked in (`perf record -e \
         sched:sched_switch -g`; counts, not durations):\n\n{offcpu}\
         Where it waits: syscalls of 0.5 ms or more over 10 more cycles (`perf trace`):\n\n\
         {slow_calls}\
         Syscall counts of PID 1 and its children over 10 more cycles (`strace -c -f`; \
         times under strace are inflated, the counts are not):\n\n```\n{profile}\n```\n",
        ms(stats(&profiled).median)
    )?;

    let s_restart = stats(&restart);
    let s_rstart = stats(&restart_start);
    let s_gap = stats(&restart_gap);
    writeln!(t, "## Host: restart latency\n")?;
    writeln!(
        t,
        "SIGKILL of the service's process (found by NSpid) at CLOCK_BOOTTIME T0; latency = \
         the new run's `started_boot_us` − T0 (same clock inside init's namespace). Each \
         run starts from a fresh `start`, so the backoff is at its first step (immediate).\n"
    )?;
    t.push_str(TABLE_HEAD);
    t.push_str(&fig.row("kill → new container process running", s_restart));
    t.push_str(&fig.row(
        "of which: create+start of the new run (`start_us`)",
        s_rstart,
    ));
    t.push_str(&fig.row(
        "of which: exit noticed, old container deleted, cgroup removed (the rest)",
        s_gap,
    ));
    t.push_str(&fig.row(
        "… the rest, part 1: kill until PID 1 reaped the exit (`exited_boot_us` − T0; kernel)",
        stats(&restart_exit),
    ));
    t.push_str(&fig.row(
        "… the rest, part 2: PID 1's exit handling until the new start began",
        stats(&restart_handling),
    ));
    writeln!(
        t,
        "\n| ratio | value | target |\n|---|---:|---|\n\
         | restart − create+start (median) | {} ms | ≤ 5 ms |\n",
        ms(s_restart.median - s_rstart.median)
    )?;
    Ok(Section::new(t, fig))
}

/// `start_us` of the service's current run, which must be running.
/// 10 stop+start cycles spaced like the measured rounds (a settle pause before each start),
/// collecting each run's `start_us`.
pub(super) fn start_cycles(init: &HostInit, name: &str, seen: &mut Vec<f64>) -> Result<()> {
    for _ in 0..10 {
        init.stop(name)?;
        settle();
        init.ok(Op::Start {
            service: name.into(),
        })?;
        seen.push(running_start_us(init, name)?);
    }
    Ok(())
}

/// Where the create+start time goes: a CPU profile, the context switches with their kernel
/// stacks, and the slow syscalls, each over 10 stop+start cycles spaced like the measured
/// rounds (a settle pause before each start), with the `start_us` median seen meanwhile.
pub(super) fn profile_start_cycles(
    init: &HostInit,
    name: &str,
) -> Result<(String, String, String)> {
    let seen = std::cell::RefCell::new(Vec::new());
    let cycle = || start_cycles(init, name, &mut seen.borrow_mut());
    let while_seen = || {
        let m = stats(&seen.borrow()).median;
        seen.borrow_mut().clear();
        format!("`start_us` median during these cycles: {} ms.\n\n", ms(m))
    };
    let cpu_profile = perf_profile(init.host_pid()?, 10, cycle)
        .map(|t| t + &while_seen())
        .unwrap_or_else(|e| format!("perf failed: {e:#}\n"));
    let offcpu = offcpu_profile(init.host_pid()?, cycle)
        .map(|t| t + &while_seen())
        .unwrap_or_else(|e| format!("perf failed: {e:#}\n"));
    let slow_calls = perf_trace_slow(init.host_pid()?, 10, cycle)
        .map(|t| {
            t + &while_seen().replace(
                ".\n",
                " (tracing every syscall on the machine slows the start down; read \
                 the table for where the waiting is, not for its size).\n",
            )
        })
        .unwrap_or_else(|e| format!("perf trace failed: {e:#}\n"));
    Ok((cpu_profile, offcpu, slow_calls))
}

/// The cgroup prefix the peers run under (beside init's) and `spec` moved into it.
pub(super) fn peer_spec(spec: &Value, name: &str) -> (String, Value) {
    let prefix = format!("sysctr-bench-{}-peer", std::process::id());
    let mut moved = spec.clone();
    moved["linux"]["cgroupsPath"] = json!(format!("/{prefix}/{name}"));
    (prefix, moved)
}

/// One interleaved round's times, in microseconds.
pub(super) struct Round {
    /// The `start` request through the socket, as the client sees it.
    pub socket_us: f64,
    /// init's own create+start (`start_us`).
    pub start_us: f64,
    /// fork+exec+wait of the plain binary.
    pub fork_exec_us: f64,
}

/// One round of the comparison: sysctr stop + timed start through the socket, each peer
/// once (their cgroups under `peer_prefix` removed after), then fork+exec+wait of
/// `plain`, with a settle pause before each timed step.
pub(super) fn round(
    init: &HostInit,
    name: &str,
    peers: &mut [Peer],
    peer_prefix: &str,
    plain: &Path,
) -> Result<Round> {
    init.stop(name)?;
    settle();
    let t = Instant::now();
    init.ok(Op::Start {
        service: name.into(),
    })?;
    let socket_us = elapsed_us(t);
    let start_us = running_start_us(init, name)?;
    for p in peers.iter_mut() {
        p.once();
    }
    remove_cgroups(peer_prefix);
    settle();
    let fork_exec_us = fork_exec_wait(plain, &[])?;
    Ok(Round {
        socket_us,
        start_us,
        fork_exec_us,
    })
}

pub(super) fn running_start_us(init: &HostInit, name: &str) -> Result<f64> {
    let s = init.status(name)?;
    if s.pid.is_none() {
        bail!("{name} is not running after start: {:?}", s.last_error);
    }
    Ok(s.start_us.context("no start_us in status")? as f64)
}

/// An OCI runtime running `spec` from a bundle of its own in the scratch directory.
pub(super) fn peer(rt: &str, label: &str, spec: &Value, scratch: &Scratch) -> Result<Peer> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("sysctr-bench-{}", std::process::id());
    Ok(Peer::new(
        rt,
        label,
        spec,
        &scratch.dir.join(format!("peer-{n}")),
        &id,
    )?)
}

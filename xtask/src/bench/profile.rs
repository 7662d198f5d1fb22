//! Where the time goes: strace, perf and off-CPU profiles of init while a closure runs.

use super::*;

pub(super) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `f` while a tracer (`perf record`, `perf trace`, `strace`) watches: starts it, gives
/// it `attach` to attach, runs `f`, waits `linger` for the last events, then stops it with
/// SIGINT (which makes it write its output) and waits for it.
pub(super) fn trace_while(
    cmd: &mut Command,
    what: &str,
    attach: Duration,
    linger: Duration,
    f: impl FnOnce() -> Result<()>,
) -> Result<()> {
    let mut tracer = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context(what.to_string())?;
    std::thread::sleep(attach);
    let r = f();
    std::thread::sleep(linger);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(tracer.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = tracer.wait();
    r
}

/// A syscall profile of a process while `f` runs: `strace -c -f` summary (top lines).
pub(super) fn strace_profile(pid: i32, f: impl FnOnce() -> Result<()>) -> Result<String> {
    let out = std::env::temp_dir().join(format!("sysctr-bench-strace-{}", std::process::id()));
    trace_while(
        Command::new("strace")
            .args(["-c", "-f", "-S", "calls", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()]),
        "strace",
        Duration::from_millis(500),
        Duration::ZERO,
        f,
    )?;
    let text = fs::read_to_string(&out).unwrap_or_default();
    let _ = fs::remove_file(&out);
    Ok(text.lines().take(16).collect::<Vec<_>>().join("\n"))
}

/// Where a container start waits: every syscall of ≥ 0.5 ms made by PID 1 (`init/<pid>`) or
/// by libcontainer's processes (`youki:[1:INTER]`, `youki:[2:INIT]`) while `f` runs `runs`
/// operations (`perf trace -a --duration`, system-wide, filtered by those names; other
/// tests on the machine run the same code, so a stray line is possible). Summed by process
/// and syscall, with the cgroup file where it is one.
pub(super) fn perf_trace_slow(
    pid: i32,
    runs: usize,
    f: impl FnOnce() -> Result<()>,
) -> Result<String> {
    let out = std::env::temp_dir().join(format!("sysctr-bench-trace-{}", std::process::id()));
    trace_while(
        Command::new("perf")
            .args(["trace", "-a", "--duration", "0.5", "-o"])
            .arg(&out),
        "perf trace",
        Duration::from_millis(1500),
        Duration::from_millis(200),
        f,
    )?;
    let text = fs::read_to_string(&out).unwrap_or_default();
    let _ = fs::remove_file(&out);
    let me = format!("init/{pid}");
    let mut sums: Vec<(String, String, usize, f64)> = Vec::new();
    for line in text.lines() {
        let Some((head, rest)) = line.split_once(" ms): ") else {
            continue;
        };
        let Some(dur) = head
            .rsplit('(')
            .next()
            .and_then(|d| d.trim().parse::<f64>().ok())
        else {
            continue;
        };
        let Some((who, call)) = rest.split_once(' ') else {
            continue;
        };
        let process = if who == me {
            "init (PID 1)"
        } else if who.starts_with("youki:[1:INTER") {
            "youki:[1:INTER]"
        } else if who.starts_with("youki:[2:INIT]") {
            "youki:[2:INIT]"
        } else {
            continue;
        };
        let name = call.split('(').next().unwrap_or("").to_string();
        if name == "epoll_wait" {
            continue; // PID 1 idle between requests
        }
        // The cgroup file, where the syscall is on one (`fd: 22</sys/fs/cgroup/…/x>`).
        let what = match call.find("</sys/fs/cgroup/") {
            Some(i) => {
                let path = &call[i + 1..];
                let path = path.split('>').next().unwrap_or("");
                let file = path.rsplit('/').next().unwrap_or("");
                format!("{name} (cgroup {file})")
            }
            None => name,
        };
        match sums.iter_mut().find(|e| e.0 == process && e.1 == what) {
            Some(e) => {
                e.2 += 1;
                e.3 += dur;
            }
            None => sums.push((process.to_string(), what, 1, dur)),
        }
    }
    sums.sort_by(|a, b| b.3.total_cmp(&a.3));
    let mut t = String::new();
    writeln!(
        t,
        "| process | syscall ≥ 0.5 ms | calls | ms per operation |\n|---|---|---:|---:|"
    )?;
    for (process, what, n, total) in sums.iter().take(12) {
        writeln!(
            t,
            "| `{process}` | {what} | {n} | {:.2} |",
            total / runs as f64
        )?;
    }
    t.push('\n');
    Ok(t)
}

/// Why PID 1 and its children block while `f` runs: every context switch away from them
/// (`perf record -e sched:sched_switch -g -p`, children inherited), grouped by process, the
/// syscall it happened in and the kernel functions it blocked in. Counts, not durations.
pub(super) fn offcpu_profile(pid: i32, f: impl FnOnce() -> Result<()>) -> Result<String> {
    let data = std::env::temp_dir().join(format!("sysctr-bench-offcpu-{}", std::process::id()));
    trace_while(
        Command::new("perf")
            .args([
                "record",
                "-q",
                "-e",
                "sched:sched_switch",
                "-g",
                "-p",
                &pid.to_string(),
            ])
            .arg("-o")
            .arg(&data),
        "perf",
        Duration::from_millis(700),
        Duration::ZERO,
        f,
    )?;
    let script = output(
        Command::new("perf")
            .args(["script", "-F", "comm,ip,sym", "-i"])
            .arg(&data)
            .stderr(Stdio::null()),
    );
    let _ = fs::remove_file(&data);
    let script = script?;
    const GENERIC: &[&str] = &[
        "__schedule",
        "schedule",
        "schedule_timeout",
        "schedule_hrtimeout_range",
        "schedule_hrtimeout_range_clock",
        "io_schedule",
        "io_schedule_timeout",
        "schedule_preempt_disabled",
        "__wait_for_common",
        "wait_for_common",
        "wait_for_completion",
        "wait_for_completion_io_timeout",
        "wait_for_completion_state",
        "do_wait_for_common",
    ];
    let mut counts: Vec<(String, String, String, usize)> = Vec::new();
    let mut add = |comm: &str, frames: &[String]| {
        if frames.is_empty() {
            return;
        }
        let syscall = frames
            .iter()
            .find_map(|f| {
                f.strip_prefix("__x64_sys_")
                    .or_else(|| f.strip_prefix("__do_sys_"))
                    .or_else(|| f.strip_prefix("__se_sys_"))
            })
            .unwrap_or("-")
            .to_string();
        let why: Vec<&str> = if frames.iter().any(|f| f == "exit_to_user_mode_loop") {
            vec!["preempted (waits for a CPU)"]
        } else {
            frames
                .iter()
                .map(String::as_str)
                .filter(|f| !GENERIC.contains(f))
                .take(3)
                .collect()
        };
        let why = why.join(" ← ");
        match counts
            .iter_mut()
            .find(|c| c.0 == comm && c.1 == syscall && c.2 == why)
        {
            Some(c) => c.3 += 1,
            None => counts.push((comm.to_string(), syscall, why, 1)),
        }
    };
    let mut comm = String::new();
    let mut frames: Vec<String> = Vec::new();
    for line in script.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            add(&comm, &frames);
            comm = line.split_whitespace().next().unwrap_or("").to_string();
            frames.clear();
        } else if let Some(sym) = line.split_whitespace().nth(1) {
            frames.push(sym.split('+').next().unwrap_or(sym).to_string());
        }
    }
    add(&comm, &frames);
    counts.retain(|c| c.1 != "epoll_wait");
    counts.sort_by_key(|c| std::cmp::Reverse(c.3));
    let mut t = String::new();
    writeln!(
        t,
        "| process | syscall | blocked in (innermost first) | times |\n|---|---|---|---:|"
    )?;
    for (comm, syscall, why, n) in counts.iter().take(12) {
        writeln!(t, "| `{comm}` | {syscall} | {why} | {n} |")?;
    }
    t.push('\n');
    Ok(t)
}

/// A CPU profile of PID 1 and every process it forks while `f` runs `runs` operations
/// (`perf record -g -p`, inherited by children: libcontainer's intermediate and init
/// processes and the container's program): CPU ms per operation by process and kernel/user,
/// and the kernel functions with the most inclusive time (syscall entries, hot spots).
pub(super) fn perf_profile(
    pid: i32,
    runs: usize,
    f: impl FnOnce() -> Result<()>,
) -> Result<String> {
    const FREQ: u32 = 4000;
    let data = std::env::temp_dir().join(format!("sysctr-bench-perf-{}", std::process::id()));
    trace_while(
        Command::new("perf")
            .args([
                "record",
                "-q",
                "-g",
                "-F",
                &FREQ.to_string(),
                "-p",
                &pid.to_string(),
            ])
            .arg("-o")
            .arg(&data),
        "perf (apt-get install linux-perf)",
        Duration::from_millis(700),
        Duration::ZERO,
        f,
    )?;
    let report = |extra: &[&str]| -> Result<String> {
        output(
            Command::new("perf")
                .arg("report")
                .arg("-i")
                .arg(&data)
                .args(["--stdio", "-g", "none"])
                .args(extra)
                .stderr(Stdio::null()),
        )
    };
    let by_comm = report(&["--no-children", "--sort", "comm,dso", "-n"]);
    let by_sym = report(&["--children", "--sort", "sym", "--percentage", "relative"]);
    let _ = fs::remove_file(&data);
    let (by_comm, by_sym) = (by_comm?, by_sym?);
    let mut t = String::new();
    writeln!(
        t,
        "| process | code | CPU ms per operation |\n|---|---|---:|"
    )?;
    let mut total = 0.0;
    for line in by_comm.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let Ok(samples) = f[1].parse::<f64>() else {
            continue;
        };
        let ms_per = samples / FREQ as f64 * 1000.0 / runs as f64;
        total += ms_per;
        let code = if f[3].starts_with("[kernel") {
            "kernel"
        } else {
            "user (stripped)"
        };
        writeln!(
            t,
            "| `{}` | {code} ({}) | {ms_per:.2} |",
            f[2],
            f[3..].join(" ")
        )?;
    }
    writeln!(t, "| **total** | | **{total:.2}** |\n")?;
    writeln!(
        t,
        "Kernel functions with the most time (inclusive, % of the CPU samples above):\n\n```"
    )?;
    let interesting = [
        "__x64_sys",
        "__do_sys",
        "show_mountinfo",
        "seq_read_iter",
        "copy_net_ns",
        "cleanup_net",
        "asm_exc_page_fault",
        "copy_process",
        "cgroup_mkdir",
        "cgroup_rmdir",
        "do_seccomp",
        "copy_page_range",
        "do_exit",
        "path_openat",
        "pivot_root",
    ];
    let mut shown = 0;
    for line in by_sym.lines().filter(|l| !l.starts_with('#')) {
        if interesting.iter().any(|k| line.contains(k)) {
            writeln!(t, "{}", line.trim_end())?;
            shown += 1;
            if shown == 18 {
                break;
            }
        }
    }
    writeln!(t, "```\n")?;
    Ok(t)
}

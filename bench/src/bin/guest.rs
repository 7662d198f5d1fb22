//! The in-guest half of `cargo xtask bench`: run inside the privileged `bench` container of
//! the benchmark image (`bench/container/`), it times sysctr against crun and runc on the
//! same bundle, on the guest's own kernel and pure cgroup v2 hierarchy.
//!
//! Usage: `bench-guest [--runs N] [--service NAME] [--socket PATH] [--ps-only]`; with
//! `--ps-only` just PID 1's memory and the `ps` latency (for a boot with many services).
//! `bench-guest --raw-write PARTNAME` copies stdin to the partition with that GPT name and
//! fsyncs it (the baseline of the update figures: the same bytes an install writes).
//!
//! Output is one line per figure, for xtask to tabulate:
//!   sample SERIES MICROSECONDS
//!   error SERIES MESSAGE
//!   mem FIELD KIB                  PID 1's /proc/1/status and smaps_rollup
//!   info TEXT
//!   sample raw_write MICROSECONDS  --raw-write: first byte read → fsync done

use std::path::Path;
use std::time::{Duration, Instant};
use sysctr_bench::{
    boot_us, elapsed_us, first_line, fork_exec_wait, remove_cgroup_tree, settle, Control, Peer,
};

/// Where crun's and runc's containers go in the cgroup tree: beside sysctr's, as the host
/// bench does.
const PEER_CGROUP: &str = "sysctr-bench-peers";

struct Args {
    runs: usize,
    ps_only: bool,
    service: String,
    socket: String,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        runs: 50,
        ps_only: false,
        service: "bench-target".into(),
        socket: "/run/sysctr/control.sock".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--runs" => a.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--service" => a.service = value()?,
            "--socket" => a.socket = value()?,
            "--ps-only" => a.ps_only = true,
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    Ok(a)
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--raw-write") {
        let Some(part) = argv.get(1).filter(|_| argv.len() == 2) else {
            eprintln!("bench-guest: usage: bench-guest --raw-write PARTNAME");
            std::process::exit(2);
        };
        match raw_write(part) {
            Ok(us) => sample("raw_write", us),
            Err(e) => {
                println!("error raw_write {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-guest: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        println!("error run {e}");
        std::process::exit(1);
    }
}

/// Copies stdin to the partition named `partname` (GPT name, from sysfs), creating its
/// device node if the container's /dev lacks it, and fsyncs. Returns the microseconds from
/// the first byte read to the end of the fsync.
fn raw_write(partname: &str) -> Result<f64, String> {
    use std::io::{Read, Write};
    let sys = Path::new("/sys/class/block");
    let name = std::fs::read_dir(sys)
        .map_err(|e| format!("{}: {e}", sys.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| {
            std::fs::read_to_string(sys.join(n).join("uevent"))
                .is_ok_and(|u| u.lines().any(|l| l == format!("PARTNAME={partname}")))
        })
        .ok_or(format!(
            "no partition named {partname} in {}",
            sys.display()
        ))?;
    let dev = Path::new("/dev").join(&name);
    if !dev.exists() {
        let numbers = std::fs::read_to_string(sys.join(&name).join("dev"))
            .map_err(|e| format!("{name}/dev: {e}"))?;
        let (major, minor) = numbers
            .trim()
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .ok_or(format!("{name}/dev: {numbers:?} is not MAJOR:MINOR"))?;
        nix::sys::stat::mknod(
            &dev,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(major, minor),
        )
        .map_err(|e| format!("mknod {}: {e}", dev.display()))?;
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .open(&dev)
        .map_err(|e| format!("open {}: {e}", dev.display()))?;
    let mut input = std::io::stdin().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut started = None;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(|e| format!("read stdin: {e}"))?;
        if n == 0 {
            break;
        }
        started.get_or_insert_with(Instant::now);
        out.write_all(&buf[..n])
            .map_err(|e| format!("write {}: {e}", dev.display()))?;
    }
    out.sync_all()
        .map_err(|e| format!("fsync {}: {e}", dev.display()))?;
    let started = started.ok_or("nothing on stdin")?;
    Ok(started.elapsed().as_secs_f64() * 1e6)
}

fn sample(series: &str, us: f64) {
    println!("sample {series} {us:.0}");
}

fn run(a: &Args) -> Result<(), String> {
    let init = Control::new(&a.socket);
    let name = a.service.as_str();
    init.wait(name, Duration::from_secs(30), |s| s.pid.is_some())?;
    memory();
    if a.ps_only {
        return ps_latency(&init, a.runs);
    }

    // The same OCI spec for crun and runc, in a cgroup of their own.
    let mut spec = init.spec(name)?;
    let dir = Path::new("/run/bench");
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let mut peers = Vec::new();
    for rt in ["crun", "runc"] {
        spec["linux"]["cgroupsPath"] = format!("/{PEER_CGROUP}/{rt}").into();
        peers.push(
            Peer::new(rt, &format!("{rt} run -d"), &spec, dir, "bench-peer")
                .map_err(|e| e.to_string())?,
        );
    }
    for p in &peers {
        println!(
            "info {} {}",
            p.rt,
            first_line(std::process::Command::new(&p.rt).arg("--version"))
        );
    }

    // Interleaved rounds, so that whatever else the machine does hits every contender alike.
    for _ in 0..a.runs {
        init.stop(name)?;
        settle();
        let t = Instant::now();
        init.start(name)?;
        sample("sysctr_request", elapsed_us(t));
        let s = init.status(name)?;
        match (s.pid, s.start_us) {
            (Some(_), Some(us)) => sample("sysctr_start", us as f64),
            _ => {
                return Err(format!(
                    "{name} not running after start: {:?}",
                    s.last_error
                ))
            }
        }
        for p in peers.iter_mut() {
            p.once();
        }
        remove_cgroup_tree(&Path::new("/sys/fs/cgroup").join(PEER_CGROUP));
        settle();
        if let Ok(us) = fork_exec_wait(Path::new("/bin/true"), &[]) {
            sample("fork_exec_true", us);
        }
        settle();
        if let Ok(us) = fork_exec_wait(Path::new("/bin/sleep"), &["0"]) {
            sample("fork_exec_sleep", us);
        }
    }
    for p in &peers {
        for us in &p.run {
            sample(&format!("{}_run", p.rt), *us);
        }
        for us in &p.delete {
            sample(&format!("{}_delete", p.rt), *us);
        }
        if let Some(e) = &p.error {
            println!("error {} {}", p.rt, e.replace('\n', " "));
        }
    }

    // Restart: SIGKILL the service's process, time until its new container process runs.
    for _ in 0..a.runs {
        // A fresh start resets the backoff: each kill is the first restart in a row.
        init.stop(name)?;
        init.start(name)?;
        settle();
        let before = init.status(name)?;
        let (Some(pid), Some(old)) = (before.pid, before.started_boot_us) else {
            return Err(format!("{name} not running before the kill"));
        };
        let t0 = boot_us();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .map_err(|e| format!("kill {pid}: {e}"))?;
        let after = init.wait(name, Duration::from_secs(10), |s| {
            s.pid.is_some() && s.started_boot_us.is_some_and(|t| t != old)
        })?;
        let new = after.started_boot_us.unwrap_or(0);
        let start = after.start_us.unwrap_or(0);
        sample("restart", new.saturating_sub(t0) as f64);
        sample("restart_start", start as f64);
        // Where the rest goes: the kernel's exit of the old container up to PID 1 reaping it,
        // then PID 1's exit handling (cleanup of the old run) until the new start begins.
        if let Some(reaped) = after.exited_boot_us {
            sample("restart_exit", reaped.saturating_sub(t0) as f64);
            sample(
                "restart_handling",
                new.saturating_sub(start).saturating_sub(reaped) as f64,
            );
        }
    }

    ps_latency(&init, a.runs)?;
    memory();
    Ok(())
}

/// `sysctr ps`: the request alone, and the CLI (its exec included).
fn ps_latency(init: &Control, runs: usize) -> Result<(), String> {
    let services = init.ps()?.len();
    println!("info services {services}");
    for _ in 0..runs {
        let t = Instant::now();
        init.ps()?;
        sample("ps_request", elapsed_us(t));
        if let Ok(us) = fork_exec_wait(Path::new("/usr/bin/sysctr"), &["ps"]) {
            sample("ps_cli", us);
        }
        if let Ok(us) = fork_exec_wait(Path::new("/usr/bin/sysctr"), &["--version"]) {
            sample("cli_version", us);
        }
    }
    Ok(())
}

/// PID 1's memory: RSS split from /proc/1/status, PSS from smaps_rollup (this container
/// shares the machine's pid namespace and holds CAP_SYS_PTRACE).
fn memory() {
    for (file, keys) in [
        ("/proc/1/status", &["VmRSS:", "RssAnon:", "RssFile:"][..]),
        (
            "/proc/1/smaps_rollup",
            &["Pss:", "Pss_Anon:", "Pss_File:"][..],
        ),
    ] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for k in keys {
            if let Some(v) = text
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|v| v.split_whitespace().next())
            {
                println!("mem {} {v}", k.trim_end_matches(':'));
            }
        }
    }
}

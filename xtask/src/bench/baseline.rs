//! The plain-process boot baseline (issue 7): how long the benchmark image takes from kernel
//! start to all services Ready when its daemons run as plain processes, against the same
//! image booted by our init with every daemon in a container.
//!
//! Both boots use the same kernel, disk image and boot config. The baseline only adds
//! `init=/containers/bench/rootfs/usr/libexec/baseline-init` to the kernel command line:
//! a busybox script (`bench/container/baseline-init`) that mounts what init mounts and
//! starts the same programs with `chroot` into their container roots, in manifest order,
//! honouring `depends_on` and readiness. It reports on the serial console through
//! /dev/kmsg (`baseline: ...` lines); our init reports `sysctr: all services ready (N
//! services, M ms since boot)` and its per-service times in `sysctr ps --json`. Boots
//! alternate (baseline, sysctr, baseline, ...), each on a fresh copy of the disk, so both
//! generate the ssh host key on their first boot.

use super::vm::{Keys, Path_, Vm, SYSCTR_MARKERS};
use super::{ratio, stats, Options, Scratch};
use crate::image;
use anyhow::{bail, Context, Result};
use manifest::protocol::ServiceStatus;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

/// Where the script lands in the benchmark image (bench/container/rootfs.json).
pub const BASELINE_INIT: &str = "/containers/bench/rootfs/usr/libexec/baseline-init";

/// Boots of each kind (fewer when `--runs` asks for fewer).
pub(super) const BOOTS: usize = 3;

/// The services, in manifest order, whose Ready time both kinds of boot report.
pub(super) const SERVICES: &[&str] = &[
    "logging",
    "network",
    "ssh",
    "time",
    "console",
    "bench",
    "bench-target",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Baseline,
    Sysctr,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline",
            Kind::Sysctr => "sysctr",
        }
    }
}

/// What one boot reports. Ready times are CLOCK_BOOTTIME milliseconds (init's clock; the
/// baseline reads /proc/uptime, 10 ms steps, taken at the middle of the step).
#[derive(Debug, Default, PartialEq)]
pub(super) struct Boot {
    /// printk time of the kernel's "Run … as init process", ms.
    init_exec_ms: Option<f64>,
    /// Every service Ready.
    all_ready_ms: f64,
    /// How many services the boot marker counts.
    services: usize,
    /// Each service's Ready time, by name.
    ready: Vec<(String, f64)>,
    /// The baseline's own progress lines: (message without pids, printk ms).
    steps: Vec<(String, f64)>,
    /// Host wall clock from QEMU start to the boot marker on the console.
    host_wall: Duration,
    /// How far the printk clock runs ahead of CLOCK_BOOTTIME (baseline: the printk time
    /// of each line carrying an uptime, minus that uptime; median).
    printk_ahead_ms: Option<f64>,
}

impl Boot {
    fn ready_ms(&self, name: &str) -> Option<f64> {
        self.ready.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// A line's printk timestamp (`[    1.234567] text`, possibly after console output that
/// had no newline yet) in milliseconds, and the text after it.
pub(super) fn printk(line: &str) -> Option<(f64, &str)> {
    for (i, _) in line.match_indices('[') {
        let Some((ts, text)) = line[i + 1..].split_once(']') else {
            continue;
        };
        let Some((s, frac)) = ts.trim().split_once('.') else {
            continue;
        };
        if s.is_empty()
            || frac.is_empty()
            || frac.len() > 6
            || !(s.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
        {
            continue;
        }
        // Whole microseconds, so that the milliseconds are as exact as the printed text.
        let us: u64 = s.parse::<u64>().ok()? * 1_000_000
            + frac.parse::<u64>().ok()? * 10u64.pow(6 - frac.len() as u32);
        return Some((us as f64 / 1000.0, text.strip_prefix(' ').unwrap_or(text)));
    }
    None
}

/// The printk time (ms) of the kernel starting the init program.
pub(super) fn init_exec_ms(log: &str) -> Option<f64> {
    log.lines().find_map(|l| {
        let (ts, text) = printk(l)?;
        (text.starts_with("Run ") && text.contains(" as init process")).then_some(ts)
    })
}

/// `uptime S s` inside a baseline line, as CLOCK_BOOTTIME ms at the middle of the 10 ms
/// step /proc/uptime truncates to.
pub(super) fn uptime_ms(text: &str) -> Option<f64> {
    let v = text.split("uptime ").nth(1)?.split(' ').next()?;
    let (s, cs) = v.split_once('.')?;
    if cs.len() != 2 {
        return None;
    }
    Some((s.parse::<u64>().ok()? * 1000 + cs.parse::<u64>().ok()? * 10 + 5) as f64)
}

/// Reads a baseline boot's serial log.
pub(super) fn parse_baseline(log: &str) -> Result<Boot> {
    let mut b = Boot {
        init_exec_ms: init_exec_ms(log),
        ..Default::default()
    };
    let mut done = false;
    let mut ahead = Vec::new();
    for line in log.lines() {
        let Some((ts, text)) = printk(line) else {
            continue;
        };
        let Some(msg) = text.strip_prefix("baseline: ") else {
            continue;
        };
        let msg = msg.trim_end();
        if let Some(failed) = msg.strip_prefix("boot complete: ") {
            bail!("the baseline boot did not finish: {failed}");
        }
        if let Some(rest) = msg.strip_prefix("all services ready (") {
            b.services = rest
                .split(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .context("no service count in the baseline's marker")?;
            b.all_ready_ms = uptime_ms(rest).context("no uptime in the baseline's marker")?;
            done = true;
        } else if let Some((name, _)) = msg
            .strip_prefix('[')
            .and_then(|m| m.split_once("] ready: "))
        {
            let at = uptime_ms(msg).with_context(|| format!("no uptime in {msg:?}"))?;
            b.ready.push((name.to_string(), at));
        }
        if let Some(up) = uptime_ms(msg) {
            ahead.push(ts - up);
        }
        // The step, with pids and uptimes cut off, so that boots can be compared.
        let step = if msg.starts_with("all services ready") {
            "all services ready"
        } else {
            let m = msg.split(": pid ").next().unwrap_or(msg);
            m.split(" (uptime ").next().unwrap_or(m)
        };
        b.steps.push((step.to_string(), ts));
    }
    b.printk_ahead_ms = median(ahead);
    if !done {
        bail!("no \"baseline: all services ready\" line");
    }
    Ok(b)
}

/// Reads a sysctr boot: the boot marker from the serial log, the services' Ready times
/// from `sysctr ps --json` (init's kmsg copies of its per-service lines stop reaching the
/// console once the logging service's klogd lowers the console log level).
pub(super) fn parse_sysctr(log: &str, ps: &[ServiceStatus]) -> Result<Boot> {
    let marker = "sysctr: all services ready (";
    let Some(rest) = log.lines().find_map(|l| l.split(marker).nth(1)) else {
        if let Some(l) = log.lines().find(|l| l.contains("sysctr: boot complete")) {
            bail!("init's boot did not finish: {}", l.trim());
        }
        bail!("no {marker:?} line");
    };
    // "7 services, 7197 ms since boot)"
    let mut words = rest.split([' ', ',', ')']).filter(|w| !w.is_empty());
    let services = words.next().and_then(|n| n.parse().ok());
    let all_ready = words.nth(1).and_then(|n| n.parse::<f64>().ok());
    let (Some(services), Some(all_ready_ms)) = (services, all_ready) else {
        bail!("cannot read init's marker {rest:?}");
    };
    Ok(Boot {
        init_exec_ms: init_exec_ms(log),
        all_ready_ms,
        services,
        ready: ps
            .iter()
            .filter_map(|s| Some((s.name.clone(), s.ready_boot_ms? as f64)))
            .collect(),
        steps: Vec::new(),
        host_wall: Duration::ZERO,
        printk_ahead_ms: None,
    })
}

/// The per-run setup every boot shares: an ssh key and the boot config holding it.
pub(super) struct Setup<'a> {
    keys: Keys,
    img: &'a image::Image,
    kvm: bool,
    path: Path_,
}

impl Setup<'_> {
    /// One boot of `kind` from a copy of the disk `src`; its serial log is kept as
    /// `build/bench/boot-KIND-N.log`. With `seed`, a sysctr boot then powers off cleanly
    /// and leaves its disk (state partition with the ssh host key) at `seed`.
    fn run(
        &self,
        kind: Kind,
        n: usize,
        src: &Path,
        check_login: bool,
        seed: Option<&Path>,
    ) -> Result<(Boot, Option<String>)> {
        let tag = format!("{}-{n}", kind.name());
        let (mut vm, note) = match kind {
            Kind::Baseline => {
                let init = format!("init={BASELINE_INIT}");
                let (src, append) = match self.path {
                    Path_::Direct => (src.to_path_buf(), init),
                    Path_::Uefi => {
                        // The command line is in the UKI: a disk whose entry boots the baseline.
                        let disk = self.keys.dir.join(format!("baseline-src-{n}.img"));
                        super::vm::uefi_disk_with(self.img, src, &init, &disk)?;
                        (disk, String::new())
                    }
                };
                let vm = Vm::boot(
                    &self.keys,
                    self.img,
                    &src,
                    &tag,
                    self.path,
                    &append,
                    self.kvm,
                    &["baseline: all services ready", "baseline: boot complete"],
                )?;
                // Whether the boot config reached ssh: a login with the key it carries.
                let note = check_login.then(|| match vm.ssh_retry("hostname") {
                    Ok(h) => format!(
                        "an ssh login into the baseline works (hostname {})",
                        h.trim()
                    ),
                    Err(e) => format!("**an ssh login into the baseline failed**: {e:#}"),
                });
                (vm, note)
            }
            Kind::Sysctr => {
                let vm = Vm::boot(
                    &self.keys,
                    self.img,
                    src,
                    &tag,
                    self.path,
                    "",
                    self.kvm,
                    SYSCTR_MARKERS,
                )?;
                (vm, None)
            }
        };
        let wall = vm.host_wall;
        let log = vm.console();
        let keep = crate::util::workspace_root().join("build").join("bench");
        let _ = fs::create_dir_all(&keep);
        let _ = fs::write(keep.join(format!("boot-{tag}.log")), &log);
        let mut boot = match kind {
            Kind::Baseline => parse_baseline(&log)?,
            Kind::Sysctr => {
                let ps: Vec<ServiceStatus> =
                    serde_json::from_str(&vm.ssh_retry("sysctr ps --json")?)
                        .context("sysctr ps --json")?;
                parse_sysctr(&log, &ps)?
            }
        };
        boot.host_wall = wall;
        if let (Some(seed), Kind::Sysctr) = (seed, kind) {
            // The connection may drop as the guest goes down: the exit is what counts.
            let _ = vm.ssh("sysctr poweroff", None);
            vm.wait_exit(Duration::from_secs(60))?;
            fs::rename(&vm.disk, seed)?;
        }
        Ok((boot, note))
    }
}

pub(super) fn median(v: Vec<f64>) -> Option<f64> {
    (!v.is_empty()).then(|| stats(&v).median)
}

pub(super) fn cell(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into())
}

/// `cargo xtask bench`'s section "Guest (QEMU): plain-process boot baseline".
pub fn section(o: &Options, scratch: &Scratch, img: &image::Image, path: Path_) -> Result<String> {
    let setup = Setup {
        keys: Keys::new(&scratch.dir.join(format!("vm-baseline-{path:?}")))?,
        img,
        kvm: o.kvm,
        path,
    };
    let boots = o.runs.clamp(1, BOOTS);
    let mut results: Vec<(Kind, usize, Result<Boot>)> = Vec::new();
    let mut notes = Vec::new();
    // Round 0: first boots, on the image's blank state partition (each generates the ssh
    // host key). The sysctr one then powers off and its disk seeds the other rounds, which
    // are ordinary boots: same state partition, host key already there.
    let seed = setup.keys.dir.join("seed.img");
    let _ = fs::remove_file(&seed);
    for n in 0..=boots {
        let src = if n > 0 && seed.exists() {
            seed.as_path()
        } else {
            img.disk.as_path()
        };
        for kind in [Kind::Baseline, Kind::Sysctr] {
            eprintln!("xtask: bench: boot round {n}/{boots}: {}", kind.name());
            let r = setup
                .run(kind, n, src, n == 0, (n == 0).then_some(seed.as_path()))
                .map(|(b, note)| {
                    notes.extend(note);
                    b
                });
            results.push((kind, n, r));
        }
    }
    if !seed.exists() {
        notes.push(
            "**the first sysctr boot did not leave a disk**: every boot was a first boot".into(),
        );
    }
    Ok(report(o.kvm, path, &results, &notes))
}

pub(super) fn report(
    kvm: bool,
    path: Path_,
    results: &[(Kind, usize, Result<Boot>)],
    notes: &[String],
) -> String {
    // Ordinary boots (rounds 1..) for the medians; round 0 is the first boot of each.
    let ok = |kind: Kind, first: bool| -> Vec<&Boot> {
        results
            .iter()
            .filter(|(k, n, _)| *k == kind && (*n == 0) == first)
            .filter_map(|(_, _, r)| r.as_ref().ok())
            .collect()
    };
    let (base, sys) = (ok(Kind::Baseline, false), ok(Kind::Sysctr, false));
    let (base0, sys0) = (ok(Kind::Baseline, true), ok(Kind::Sysctr, true));
    let med = |boots: &[&Boot], f: &dyn Fn(&Boot) -> Option<f64>| {
        median(boots.iter().filter_map(|b| f(b)).collect())
    };
    let all_base: Vec<&Boot> = base.iter().chain(&base0).copied().collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "## Guest (QEMU): plain-process boot baseline, {}\n",
        path.name()
    );
    let _ = writeln!(
        t,
        "The benchmark image (production services plus `bench/container/`) booted under {} \
         with 2 vCPUs and 512 MiB, alternating: by our init, every daemon a container, and \
         with `init={BASELINE_INIT}` on the kernel command line, a busybox script that mounts \
         what init mounts and starts the same programs with the same arguments and files as \
         plain processes (`chroot` into each container's root, the service's bind mounts; no \
         namespaces, cgroups, capabilities, seccomp, read-only binds or restarts), honouring \
         `depends_on` and each service's readiness check, polled every 50 ms as init polls. \
         Same kernel, root image and boot config; each boot on a fresh copy of the disk. \
         Round 0 is the first boot of each (blank state partition: ssh generates its host \
         key); rounds 1–{} are ordinary boots from the disk the first sysctr boot left after \
         a clean power-off (host key present). Both kinds count the same 7 services: the \
         five system services plus the image's two benchmark services `bench` and \
         `bench-target` (sleeps; the baseline starts them too), so sysctr's figure includes \
         two more container starts than a production boot. Times are ms since kernel start \
         on CLOCK_BOOTTIME (init's `… ms since boot` and `sysctr ps --json`; the baseline's \
         /proc/uptime, 10 ms steps), except the kernel's hand-over to init and the \
         baseline's step list (printk time, which runs {} ms ahead of CLOCK_BOOTTIME in \
         these boots).\n",
        if kvm { "KVM" } else { "TCG" },
        results.iter().map(|(_, n, _)| *n).max().unwrap_or(0),
        cell(med(&all_base, &|b| b.printk_ahead_ms)),
    );
    let _ = writeln!(
        t,
        "| boot (round) | kernel runs init (ms) | ssh ready (ms) | all services ready (ms) \
         | host wall to marker (s) |\n|---|---:|---:|---:|---:|"
    );
    for (kind, n, r) in results {
        let label = if *n == 0 {
            format!("{} 0 (first boot)", kind.name())
        } else {
            format!("{} {n}", kind.name())
        };
        match r {
            Ok(b) => {
                let _ = writeln!(
                    t,
                    "| {label} | {} | {} | {} | {:.1} |",
                    cell(b.init_exec_ms),
                    cell(b.ready_ms("ssh")),
                    cell(Some(b.all_ready_ms)),
                    b.host_wall.as_secs_f64()
                );
            }
            Err(e) => {
                let e = format!("{e:#}").replace('\n', " ").replace('|', "/");
                let _ = writeln!(t, "| {label} | failed: {e} | | | |");
            }
        }
    }
    for (kind, boots) in [(Kind::Baseline, &base), (Kind::Sysctr, &sys)] {
        let _ = writeln!(
            t,
            "| **median {}, rounds 1–** | {} | **{}** | **{}** | |",
            kind.name(),
            cell(med(boots, &|b| b.init_exec_ms)),
            cell(med(boots, &|b| b.ready_ms("ssh"))),
            cell(med(boots, &|b| Some(b.all_ready_ms))),
        );
    }
    t.push('\n');
    let r =
        |s: &[&Boot], b: &[&Boot], f: &dyn Fn(&Boot) -> Option<f64>| match (med(s, f), med(b, f)) {
            (Some(s), Some(b)) => ratio(s, b),
            _ => "n/a".into(),
        };
    let all = |b: &Boot| Some(b.all_ready_ms);
    let ssh = |b: &Boot| b.ready_ms("ssh");
    let all_after_init = |b: &Boot| Some(b.all_ready_ms - b.init_exec_ms?);
    let ssh_after_init = |b: &Boot| Some(b.ready_ms("ssh")? - b.init_exec_ms?);
    let _ = writeln!(
        t,
        "| ratio sysctr / baseline | value | target |\n|---|---:|---|\n\
         | all services ready, from kernel start (medians, rounds 1–) | {} | ≤ 1.5× |\n\
         | ssh ready, from kernel start (medians, rounds 1–) | {} | ≤ 1.5× |\n\
         | all services ready, from the kernel running init: user space only (medians, rounds 1–) | {} | |\n\
         | ssh ready, from the kernel running init: user space only (medians, rounds 1–) | {} | |\n\
         | all services ready, first boot (round 0, one boot each) | {} | |\n",
        r(&sys, &base, &all),
        r(&sys, &base, &ssh),
        r(&sys, &base, &all_after_init),
        r(&sys, &base, &ssh_after_init),
        r(&sys0, &base0, &all),
    );
    // Per service: when each became Ready, side by side.
    let _ = writeln!(
        t,
        "Each service's Ready time (medians of rounds 1–, ms since kernel start):\n\n\
         | service | baseline | sysctr | difference |\n|---|---:|---:|---:|"
    );
    for name in SERVICES {
        let f = |x: &Boot| x.ready_ms(name);
        let (b, s) = (med(&base, &f), med(&sys, &f));
        let diff = match (s, b) {
            (Some(s), Some(b)) => format!("{:+.0}", s - b),
            _ => "-".into(),
        };
        let _ = writeln!(t, "| {name} | {} | {} | {diff} |", cell(b), cell(s));
    }
    t.push('\n');
    // Where the baseline's time goes: its own progress lines (printk), medians.
    if let Some(first) = base.first() {
        let _ = writeln!(
            t,
            "Where the baseline's time goes (its `baseline:` lines on the console; printk \
             ms, medians of rounds 1–):\n\n| step | ms since kernel start |\n|---|---:|"
        );
        let _ = writeln!(
            t,
            "| kernel runs the script | {} |",
            cell(med(&base, &|b| b.init_exec_ms))
        );
        for (step, _) in &first.steps {
            let v = med(&base, &|b| {
                b.steps.iter().find(|(s, _)| s == step).map(|(_, v)| *v)
            });
            let _ = writeln!(t, "| {} | {} |", step.replace('|', "/"), cell(v));
        }
        t.push('\n');
    }
    for note in notes {
        let _ = writeln!(t, "- {note}");
    }
    if !notes.is_empty() {
        t.push('\n');
    }
    t
}

/// For the tests: the script's text with `\`-continued lines joined.
#[cfg(test)]
pub(super) fn script_text() -> String {
    let p = crate::util::workspace_root().join("bench/container/baseline-init");
    fs::read_to_string(p)
        .expect("bench/container/baseline-init")
        .replace("\\\n", " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use std::process::Command;

    /// A real baseline boot's serial log from "Run … as init process" on (TCG), as QEMU
    /// wrote it: CR LF line ends, getty's prompt ahead of a kernel line.
    const BASELINE_LOG: &str = "\
[    1.634391] Freeing unused kernel image (rodata/data gap) memory: 1216K\r
[    1.635336] Run /containers/bench/rootfs/usr/libexec/baseline-init as init process\r
[    2.371782] baseline: [init] busybox sh as PID 1: plain processes, no containers\r
[    2.646623] EXT4-fs (vda2): recovery complete\r
[    2.649090] EXT4-fs (vda2): mounted filesystem with ordered data mode. Quota mode: disabled.\r
[    2.662016] baseline: [mount-var] /var on /dev/vda2 (persistent)\r
[    2.732257] baseline: [hostname] bench\r
[    2.763461] baseline: [prepare] starting\r
[    3.139792] baseline: [prepare] exited: 0\r
[    3.185012] baseline: [logging] running: pid 68\r
[    3.248592] baseline: [network] running: pid 73\r
[    3.344412] baseline: [console] running: pid 77\r
[    3.345866] baseline: [console] ready: started (uptime 3.31 s)\r
[    3.392041] baseline: [bench] running: pid 80\r
[    3.392953] baseline: [bench] ready: started (uptime 3.36 s)\r
[    3.394332] baseline: [bench-target] running: pid 81\r
[    3.408326] baseline: [bench-target] ready: started (uptime 3.37 s)\r
[    4.233354] baseline: [logging] ready: file (uptime 4.20 s)\r
[    4.345180] baseline: [ssh] running: pid 95\r
\r\r
sysctr bench (/dev/ttyS0): log in over ssh with a key from the boot config\r
\r\r
\rbench login: [    5.387992] baseline: [network] ready: file (uptime 5.35 s)\r
[    5.456732] baseline: [time] running: pid 119\r
[    5.457384] baseline: [time] ready: started (uptime 5.42 s)\r
[    7.106677] baseline: [ssh] ready: tcp (uptime 7.07 s)\r
[    7.106677] baseline: all services ready (7 services, uptime 7.07 s)\r
";

    #[test]
    fn reads_a_baseline_boot() {
        let b = parse_baseline(BASELINE_LOG).unwrap();
        assert_eq!(b.init_exec_ms, Some(1635.336));
        assert_eq!(b.services, 7);
        assert_eq!(b.all_ready_ms, 7075.0);
        assert_eq!(b.ready_ms("ssh"), Some(7075.0));
        assert_eq!(b.ready_ms("network"), Some(5355.0)); // after "bench login: "
        assert_eq!(b.ready_ms("console"), Some(3315.0));
        assert_eq!(b.ready.len(), 7);
        let steps: Vec<&str> = b.steps.iter().map(|(s, _)| s.as_str()).collect();
        assert!(steps.contains(&"[logging] running"), "{steps:?}");
        assert!(steps.contains(&"[ssh] ready: tcp"), "{steps:?}");
        assert_eq!(steps.last(), Some(&"all services ready"));
        assert_eq!(
            b.steps[0],
            (
                "[init] busybox sh as PID 1: plain processes, no containers".into(),
                2371.782
            )
        );
        // printk minus uptime over the eight lines with an uptime; median of the middle two.
        assert!((b.printk_ahead_ms.unwrap() - 31.677).abs() < 1e-6, "{b:?}");
        let failed = BASELINE_LOG.replace(
            "all services ready (7 services, uptime 7.07 s)",
            "boot complete: failed: network time (uptime 61.20 s)",
        );
        let e = parse_baseline(&failed).unwrap_err().to_string();
        assert!(e.contains("network time"), "{e}");
        assert!(parse_baseline(&BASELINE_LOG[..1200]).is_err());
    }

    #[test]
    fn reads_a_sysctr_boot() {
        // A real sysctr boot of the same image: init's own console lines carry no printk
        // time once klogd has lowered the console log level; the marker has its own time.
        let log = "\
[    1.285522] Run /init as init process
sysctr: INFO [init] sysctr 0.1.0 starting (PID 1)
[    2.175165] sysctr: INFO [mount-var] /var on /dev/vda2 (persistent)
sysctr: INFO [ssh] starting

bench login: sysctr: INFO [ssh] running: pid 69
sysctr: INFO [ssh] ready: tcp after 2108 ms
sysctr: all services ready (7 services, 7197 ms since boot)
";
        let ps: Vec<ServiceStatus> = serde_json::from_value(serde_json::json!([
            {"name": "ssh", "kind": "service", "state": "ready", "ready": true, "pid": 69,
             "started_at_ms": null, "started_boot_ms": 5088, "ready_boot_ms": 7196,
             "restarts": 0, "last_exit": null, "last_error": null, "status_text": null,
             "memory_bytes": null, "cpu_usec": null},
            {"name": "prepare", "kind": "onboot", "state": "exited", "ready": false, "pid": null,
             "started_at_ms": null, "started_boot_ms": 2879, "ready_boot_ms": null,
             "restarts": 0, "last_exit": null, "last_error": null, "status_text": null,
             "memory_bytes": null, "cpu_usec": null}
        ]))
        .unwrap();
        let b = parse_sysctr(log, &ps).unwrap();
        assert_eq!(b.init_exec_ms, Some(1285.522));
        assert_eq!((b.services, b.all_ready_ms), (7, 7197.0));
        assert_eq!(b.ready_ms("ssh"), Some(7196.0));
        assert_eq!(b.ready_ms("prepare"), None);
        let failed = log.replace(
            "sysctr: all services ready (7 services, 7197 ms since boot)",
            "sysctr: boot complete: 6 ready, 1 failed: network (61000 ms since boot)",
        );
        assert!(parse_sysctr(&failed, &ps)
            .unwrap_err()
            .to_string()
            .contains("1 failed: network"));
    }

    #[test]
    fn report_tables() {
        let boot = |all: f64, ssh: f64| Boot {
            init_exec_ms: Some(1000.0),
            all_ready_ms: all,
            services: 7,
            ready: vec![("ssh".into(), ssh), ("logging".into(), all / 2.0)],
            steps: vec![("[init] x".into(), 1500.0)],
            host_wall: Duration::from_secs(9),
            printk_ahead_ms: Some(30.0),
        };
        let results = vec![
            (Kind::Baseline, 0, Ok(boot(5000.0, 5000.0))),
            (Kind::Sysctr, 0, Ok(boot(9000.0, 9000.0))),
            (Kind::Baseline, 1, Ok(boot(4000.0, 3900.0))),
            (Kind::Sysctr, 1, Ok(boot(6000.0, 5850.0))),
            (Kind::Baseline, 2, Err(anyhow::anyhow!("no marker\nat all"))),
            (Kind::Sysctr, 2, Ok(boot(6400.0, 6300.0))),
        ];
        let t = report(false, Path_::Direct, &results, &["a note".into()]);
        assert!(
            t.contains("| baseline 0 (first boot) | 1000 | 5000 | 5000 | 9.0 |"),
            "{t}"
        );
        assert!(
            t.contains("| baseline 2 | failed: no marker at all |"),
            "{t}"
        );
        // medians of rounds 1–: baseline 4000 (one boot), sysctr 6200
        assert!(
            t.contains("| **median sysctr, rounds 1–** | 1000 | **6075** | **6200** | |"),
            "{t}"
        );
        assert!(
            t.contains("from kernel start (medians, rounds 1–) | 1.55× | ≤ 1.5× |"),
            "{t}"
        );
        assert!(
            t.contains("first boot (round 0, one boot each) | 1.80× |"),
            "{t}"
        );
        assert!(t.contains("| logging | 2000 | 3100 | +1100 |"), "{t}");
        assert!(t.contains("runs 30 ms ahead"), "{t}");
        assert!(t.contains("- a note"), "{t}");
    }

    #[test]
    fn printk_prefix() {
        assert_eq!(printk("[    0.000000] Linux"), Some((0.0, "Linux")));
        assert_eq!(printk("login: [   12.5] x"), Some((12500.0, "x")));
        assert_eq!(printk("[mem 0x0-0x1] [ 3.250001] y"), Some((3250.001, "y")));
        assert_eq!(printk("[ 1.2.3] [x] z"), None);
        assert_eq!(printk("sysctr: INFO [ssh] ready"), None);
    }

    /// The script starts what the manifest says: every system service's and benchmark
    /// service's program with its arguments, and binds every bind mount's source.
    #[test]
    fn script_follows_the_manifest() {
        let root = crate::util::workspace_root();
        let script = script_text();
        let mut files: Vec<PathBuf> = image::default_containers()
            .unwrap()
            .iter()
            .map(|c| root.join("system-containers").join(c).join("service.json"))
            .collect();
        files.push(root.join("bench/container/service.json"));
        let mut services: Vec<serde_json::Value> = Vec::new();
        for f in &files {
            services.push(serde_json::from_str(&fs::read_to_string(f).unwrap()).unwrap());
        }
        let target: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(root.join("bench/container/target.json")).unwrap(),
        )
        .unwrap();
        services.extend(target["services"].as_array().unwrap().iter().cloned());
        for s in &services {
            let name = s["name"].as_str().unwrap();
            let args: Vec<&str> = s["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap())
                .collect();
            let args = args.join(" ");
            assert!(script.contains(&args), "{name}: {args:?} not in the script");
            for m in s["mounts"].as_array().into_iter().flatten() {
                let src = m["source"].as_str().unwrap();
                if m["type"].as_str().unwrap_or("bind") == "bind" {
                    assert!(
                        script.contains(&format!("bind {src} ")),
                        "{name}: no bind of {src}"
                    );
                }
            }
            assert!(
                script.contains(&format!("[{name}] ready"))
                    || script.contains(&format!("ready {name} ")),
                "{name}: no ready line"
            );
            // The paths after each `mkdir -p` (the script is one line of words here).
            let words: Vec<&str> = script.split(' ').collect();
            let made: Vec<&str> = words
                .windows(2)
                .enumerate()
                .filter(|(_, w)| w == &["mkdir", "-p"])
                .flat_map(|(i, _)| words[i + 2..].iter().take_while(|w| w.starts_with('/')))
                .copied()
                .collect();
            for d in s["host_dirs"].as_array().into_iter().flatten() {
                let d = d.as_str().unwrap();
                assert!(
                    made.contains(&d),
                    "{name}: host_dirs {d} not made by the script's mkdir -p"
                );
            }
        }
    }

    /// The script's boot-config conversion writes what init's bootconfig step writes.
    #[test]
    fn script_bootconfig_matches_init() {
        let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            eprintln!("no busybox: skipped");
            return;
        };
        let dir = std::env::temp_dir().join(format!("sysctr-baseline-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let script = crate::util::workspace_root().join("bench/container/baseline-init");
        let convert = |json: &str, out: &str| -> PathBuf {
            let src = dir.join(format!("{out}.json"));
            fs::write(&src, json).unwrap();
            let out = dir.join(out);
            let st = Command::new(busybox)
                .arg("sh")
                .arg(&script)
                .arg("bootconfig")
                .arg(&src)
                .arg(&out)
                .status()
                .unwrap();
            assert!(st.success());
            out
        };
        let read = |p: PathBuf| fs::read_to_string(p).unwrap();
        // The same input and expectations as init's bootconfig test.
        let out = convert(
            r#"{"hostname":"edge1","authorized_keys":["ssh-ed25519 AAAA test"],
               "network":{"mode":"static","address":"10.0.2.20/24","gateway":"10.0.2.2","dns":["10.0.2.3"]}}"#,
            "static",
        );
        assert_eq!(read(out.join("hostname")), "edge1\n");
        assert_eq!(read(out.join("authorized_keys")), "ssh-ed25519 AAAA test\n");
        assert_eq!(
            read(out.join("network.env")),
            "MODE=static\nADDRESS=10.0.2.20/24\nGATEWAY=10.0.2.2\nDNS=\"10.0.2.3\"\n"
        );
        // What the bench hands QEMU (pretty-printed), with two keys.
        let pretty = serde_json::to_string_pretty(&serde_json::json!({
            "hostname": "bench",
            "authorized_keys": ["ssh-ed25519 AAAA one", "ssh-rsa BBBB \"two\""],
            "network": { "mode": "dhcp" },
        }))
        .unwrap();
        let out = convert(&pretty, "dhcp");
        assert_eq!(
            read(out.join("authorized_keys")),
            "ssh-ed25519 AAAA one\nssh-rsa BBBB \"two\"\n"
        );
        assert_eq!(read(out.join("network.env")), "MODE=dhcp\n");
        // No config at all: no hostname, no keys, DHCP.
        let out = convert("", "empty");
        assert!(!out.join("hostname").exists());
        assert_eq!(read(out.join("authorized_keys")), "");
        assert_eq!(read(out.join("network.env")), "MODE=dhcp\n");
        let _ = fs::remove_dir_all(&dir);
    }
}

//! `cargo xtask soak [--cycles N] [--out FILE]`: the real static init as PID 1 of a
//! namespace, driven through N crash/restart cycles (a service that exits at once, restart
//! policy `always` without backoff) and N start/stop cycles (a sleeper stopped and started
//! over the control socket), N = 1000 by default. PID 1's open descriptors and resident
//! memory are read before and after each phase (after a warm-up, so one-time allocations
//! are not counted), and in the start/stop phase after every cycle too; a reading waits
//! until init has closed the connection of the request it just answered (init closes it
//! right after writing the reply, and the soak may read /proc in between: that was the
//! "11 → 12" of the first run). The section "Soak" of `bench/RESULTS.md` is replaced with
//! the figures and the descriptors that changed, and the command fails when either grows
//! (issue 16). `cargo xtask bench` keeps the
//! section when it rewrites the file.

use super::{sleep_service, HostInit, Scratch};
use crate::build;
use crate::util::{ensure_debian_packages, workspace_root};
use anyhow::{bail, Context, Result};
use manifest::protocol::{Op, ServiceStatus};
use serde_json::json;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The heading that starts the soak's section of the results file.
pub const HEADING: &str = "## Soak";
/// Cycles run before the "before" reading: the first starts allocate what stays.
const WARM_UP: u32 = 20;
/// Resident memory may move this much (allocator slack, page cache of libraries) and
/// still count as flat; a leak of even 200 bytes a cycle is well past it after 1000.
const RSS_SLACK_KIB: i64 = 192;

/// One reading of PID 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub fds: usize,
    pub rss_kib: i64,
    /// Each open descriptor: its number and what it is (readlink of /proc/PID/fd/N, with
    /// the unix socket's path or the pidfd's pid where /proc says so).
    pub open: Vec<(u32, String)>,
}

impl Sample {
    /// The descriptors open after and not before (`+`), and before and not after (`-`),
    /// matched by number and target, so a descriptor number reused for another file shows
    /// as one of each.
    pub fn diff(before: &Sample, after: &Sample) -> Vec<String> {
        let mut changed = Vec::new();
        for (sign, from, to) in [('-', before, after), ('+', after, before)] {
            for e in &from.open {
                if !to.open.contains(e) {
                    changed.push((e.0, sign == '+', sign, &e.1));
                }
            }
        }
        changed.sort();
        changed
            .into_iter()
            .map(|(fd, _, sign, target)| format!("{sign} fd {fd} → {target}"))
            .collect()
    }
}

/// One phase's figures.
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: &'static str,
    pub cycles: u32,
    pub secs: f64,
    pub before: Sample,
    pub after: Sample,
    /// Readings taken after each cycle (start/stop only) that found more descriptors than
    /// `before`: the cycle, and what differed from `before` then. Tells a descriptor that
    /// stays from one open only for a moment.
    pub above: Vec<(u32, Vec<String>)>,
    /// How many such readings there were.
    pub readings: u32,
    /// Readings whose first try found the connection of the request just answered still
    /// open (closed by init a moment later), and the longest wait for that close.
    pub caught_open: u32,
    pub longest_close: Duration,
}

impl Phase {
    /// Whether PID 1 kept its descriptors and its memory.
    pub fn flat(&self) -> bool {
        self.after.fds <= self.before.fds
            && self.after.rss_kib - self.before.rss_kib <= RSS_SLACK_KIB
    }
}

/// `cargo xtask soak`'s options.
#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Cycles in each phase.
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    cycles: u32,
    /// The results file whose "Soak" section is replaced (default bench/RESULTS.md).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn command(args: &SoakArgs) -> Result<()> {
    let cycles = args.cycles;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| workspace_root().join("bench/RESULTS.md"));
    if !nix::unistd::geteuid().is_root() {
        bail!("soak needs root (namespaces, cgroups)");
    }
    ensure_debian_packages(&["busybox-static", "util-linux"])?;
    let bins = build::static_binaries()?;
    let scratch = Scratch::new()?;
    let started = Instant::now();
    let phases = run(&bins, &scratch, cycles)?;
    let section = render(&phases, cycles, started.elapsed().as_secs_f64());
    print!("{section}");
    let old = fs::read_to_string(&out).unwrap_or_default();
    fs::write(&out, replace_section(&old, &section))
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("xtask: soak: results in {}", out.display());
    let grew: Vec<&str> = phases
        .iter()
        .filter(|p| !p.flat())
        .map(|p| p.name)
        .collect();
    if !grew.is_empty() {
        bail!("PID 1 grew during: {}", grew.join(", "));
    }
    Ok(())
}

/// /proc/net/unix's Flags of a listening socket (`__SO_ACCEPTCON`).
const LISTENING: &str = "00010000";
/// Readings of the crash/restart phase, of which the quietest counts ([`quietest`]).
const CRASH_READINGS: usize = 20;
/// How long a reading waits for PID 1 to close the connection of the request just answered.
const SETTLE: Duration = Duration::from_secs(1);

/// PID 1's end of control connections open in `s` (accepted, not the listener): the soak's
/// readings come right after a request, whose connection init closes just after writing
/// the reply, so a reading can run before that close.
fn control_connections(s: &Sample, socket: &str) -> usize {
    let conn = format!("(unix stream {socket})");
    s.open.iter().filter(|(_, t)| t.ends_with(&conn)).count()
}

/// A reading once PID 1 has closed the connections of the requests it answered (at most
/// [`SETTLE`]; a connection open longer is counted, and the diff shows it). Also says
/// whether the first reading caught one still open, and how long the close took.
fn settled(init: &HostInit) -> Result<(Sample, Option<Duration>)> {
    let socket = init.socket().display().to_string();
    let t = Instant::now();
    let mut caught = false;
    loop {
        let s = sample(init)?;
        if control_connections(&s, &socket) == 0 || t.elapsed() > SETTLE {
            return Ok((s, caught.then(|| t.elapsed())));
        }
        caught = true;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Of `n` settled readings 10 ms apart, the one with the fewest descriptors: while the
/// crasher restarts, a reading may catch PID 1 in the middle of a start (libcontainer's
/// sockets, the new run's pipes), which a lasting descriptor outlives and a start does not.
fn quietest(init: &HostInit, n: usize) -> Result<Sample> {
    let mut best: Option<Sample> = None;
    for _ in 0..n {
        let (s, _) = settled(init)?;
        if best.as_ref().is_none_or(|b| s.fds < b.fds) {
            best = Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    best.context("no reading")
}

fn sample(init: &HostInit) -> Result<Sample> {
    let pid = init.host_pid()?;
    let open = open_descriptors(pid)?;
    let fds = open.len();
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/<init>/status")?;
    Ok(Sample { fds, rss_kib, open })
}

/// `pid`'s open descriptors, by number, each with what it refers to.
fn open_descriptors(pid: i32) -> Result<Vec<(u32, String)>> {
    let dir = format!("/proc/{pid}/fd");
    let unix = fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap_or_default();
    let mut open = Vec::new();
    for e in fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let e = e?;
        let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A descriptor closed between the listing and the readlink is not open any more.
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        let mut target = target.display().to_string();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
        {
            // /proc/net/unix: Num RefCount Protocol Flags Type St Inode [Path]
            if let Some(l) = unix
                .lines()
                .find(|l| l.split_whitespace().nth(6) == Some(inode))
            {
                let f: Vec<&str> = l.split_whitespace().collect();
                let kind = match (f.get(4).copied(), f.get(3).copied()) {
                    (Some("0001"), Some(LISTENING)) => "stream listening",
                    (Some("0001"), _) => "stream",
                    (Some("0002"), _) => "dgram",
                    (Some("0005"), _) => "seqpacket",
                    _ => "unix",
                };
                let _ = write!(target, " (unix {kind} {})", f.get(7).unwrap_or(&"unnamed"));
            }
        }
        if target.contains("pidfd") {
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
            if let Some(p) = info.lines().find_map(|l| l.strip_prefix("Pid:")) {
                let _ = write!(target, " (pid {})", p.trim());
            }
        }
        open.push((fd, target));
    }
    open.sort();
    Ok(open)
}

fn restarts(init: &HostInit, name: &str) -> Result<u32> {
    Ok(init.status(name)?.restarts)
}

fn run(bins: &build::Binaries, scratch: &Scratch, cycles: u32) -> Result<Vec<Phase>> {
    let crasher = json!({
        "name": "crasher",
        "root": scratch.rootfs.display().to_string(),
        "args": ["/bin/sh", "-c", "exit 3"],
        "restart": {
            "policy": "always",
            "backoff_initial_ms": 0,
            "backoff_max_ms": 0,
            "crash_loop_restarts": 10000,
            "crash_loop_window_secs": 1
        }
    });
    let cycler = sleep_service("cycler", &scratch.rootfs);
    let init = HostInit::start(bins, scratch, "soak", vec![crasher, cycler])?;
    let running = |s: &[ServiceStatus]| s.iter().any(|s| s.name == "cycler" && s.pid.is_some());
    init.wait("cycler running", Duration::from_secs(30), running)?;
    // Generous: a cycle takes tens of milliseconds on the host, more on a loaded machine.
    let budget = Duration::from_secs(60) + Duration::from_millis(500) * cycles;

    // Crash/restart: PID 1 reaps, cleans up and starts the crasher again, by itself.
    let warm = restarts(&init, "crasher")? + WARM_UP;
    init.wait("crasher warm-up", budget, |ps| {
        ps.iter().any(|s| s.name == "crasher" && s.restarts >= warm)
    })?;
    let before = quietest(&init, CRASH_READINGS)?;
    let from = restarts(&init, "crasher")?;
    let t = Instant::now();
    init.wait("crash/restart cycles", budget, |ps| {
        ps.iter()
            .any(|s| s.name == "crasher" && s.restarts >= from + cycles)
    })?;
    let secs = t.elapsed().as_secs_f64();
    let after = quietest(&init, CRASH_READINGS)?;
    let crash = Phase {
        name: "crash/restart",
        cycles,
        secs,
        before,
        after,
        above: Vec::new(),
        readings: 0,
        caught_open: 0,
        longest_close: Duration::ZERO,
    };
    init.stop("crasher")?;

    // Start/stop over the control socket.
    let cycle = |init: &HostInit| -> Result<()> {
        init.stop("cycler")?;
        init.ok(Op::Start {
            service: "cycler".into(),
        })?;
        init.wait("cycler started", Duration::from_secs(30), running)?;
        Ok(())
    };
    for _ in 0..WARM_UP {
        cycle(&init)?;
    }
    let (before, _) = settled(&init)?;
    let t = Instant::now();
    let mut above = Vec::new();
    let mut reading = Duration::ZERO;
    let (mut caught_open, mut longest_close) = (0, Duration::ZERO);
    for i in 0..cycles {
        cycle(&init).with_context(|| format!("start/stop cycle {i}"))?;
        let r = Instant::now();
        let (now, caught) = settled(&init)?;
        if let Some(d) = caught {
            caught_open += 1;
            longest_close = longest_close.max(d);
        }
        if now.fds > before.fds {
            above.push((i, Sample::diff(&before, &now)));
        }
        reading += r.elapsed();
    }
    let secs = (t.elapsed() - reading).as_secs_f64();
    let (after, _) = settled(&init)?;
    let start_stop = Phase {
        name: "start/stop",
        cycles,
        secs,
        before,
        after,
        above,
        readings: cycles,
        caught_open,
        longest_close,
    };
    // Dropping `init` asks it to power off, over the control socket.
    Ok(vec![crash, start_stop])
}

fn render(phases: &[Phase], cycles: u32, total_secs: f64) -> String {
    let mut s = format!(
        "{HEADING}\n\n`cargo xtask soak` ({cycles} cycles a phase, after {WARM_UP} warm-up \
         cycles): the static init as PID 1 of a namespace on the host. PID 1's open \
         descriptors (/proc/PID/fd) and VmRSS, before and after (crash/restart: the \
         fewest of {CRASH_READINGS} readings, as one may catch a start half-way); flat means \
         no more descriptors and at most {RSS_SLACK_KIB} KiB more memory.\n\n\
         | phase | cycles | time (s) | ms/cycle | descriptors before → after | VmRSS KiB before → after | |\n\
         |---|---:|---:|---:|---:|---:|---|\n"
    );
    for p in phases {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} | {} → {} | {} → {} ({:+}) | {} |",
            p.name,
            p.cycles,
            p.secs,
            p.secs * 1000.0 / f64::from(p.cycles.max(1)),
            p.before.fds,
            p.after.fds,
            p.before.rss_kib,
            p.after.rss_kib,
            p.after.rss_kib - p.before.rss_kib,
            if p.flat() { "flat" } else { "**grew**" }
        );
    }
    for p in phases {
        let diff = Sample::diff(&p.before, &p.after);
        if !diff.is_empty() {
            let _ = writeln!(
                s,
                "\nDescriptors of PID 1 that changed during {} (`-` closed, `+` opened and \
                 still open):\n\n```\n{}\n```",
                p.name,
                diff.join("\n")
            );
        }
        if p.readings > 0 {
            let _ = writeln!(
                s,
                "\n{}: PID 1 read after every cycle. {} of the {} readings came before init \
                 had closed its end of the cycle's last request (it closes it right after \
                 writing the reply, which the soak may read first), so they were read again \
                 once it had (at most {} ms later); then {} readings found more descriptors \
                 than before{}",
                p.name,
                p.caught_open,
                p.readings,
                p.longest_close.as_millis(),
                p.above.len(),
                if p.above.is_empty() {
                    "."
                } else {
                    "; the first ones:"
                }
            );
            for (cycle, diff) in p.above.iter().take(3) {
                let _ = writeln!(s, "\nafter cycle {cycle}:\n\n```\n{}\n```", diff.join("\n"));
            }
        }
    }
    let date =
        crate::util::output(std::process::Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .map(|d| d.trim().to_string())
            .unwrap_or_default();
    let _ = writeln!(s, "\nRun {date}, {total_secs:.0} s in all.");
    s
}

/// The soak section of a results file, if it has one: from its heading to the next
/// second-level heading or the closing rule.
pub fn section_in(doc: &str) -> Option<String> {
    let start = find_heading(doc)?;
    let end = section_end(doc, start);
    Some(doc[start..end].trim_end().to_string() + "\n")
}

fn find_heading(doc: &str) -> Option<usize> {
    let mut at = 0;
    for line in doc.split_inclusive('\n') {
        if line.trim_end() == HEADING {
            return Some(at);
        }
        at += line.len();
    }
    None
}

fn section_end(doc: &str, start: usize) -> usize {
    let mut at = start;
    for (i, line) in doc[start..].split_inclusive('\n').enumerate() {
        if i > 0 && (line.starts_with("## ") || line.trim_end() == "---") {
            return at;
        }
        at += line.len();
    }
    doc.len()
}

/// `doc` with its soak section replaced by `section` (or, without one, `section` put
/// before "## Not measured" or the closing rule, or at the end).
pub fn replace_section(doc: &str, section: &str) -> String {
    let section = section.trim_end().to_string() + "\n";
    if let Some(start) = find_heading(doc) {
        let end = section_end(doc, start);
        let rest = &doc[end..];
        let sep = if rest.is_empty() { "" } else { "\n" };
        return format!("{}{section}{sep}{rest}", &doc[..start]);
    }
    for marker in ["## Not measured", "\n---\n"] {
        if let Some(i) = doc.find(marker) {
            let i = if marker.starts_with('\n') { i + 1 } else { i };
            return format!("{}{section}\n{}", &doc[..i], &doc[i..]);
        }
    }
    if doc.is_empty() {
        section
    } else {
        format!("{}\n\n{section}", doc.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soak_section_is_replaced_in_place_and_kept() {
        let doc = "# r\n\n## Host\n\nx\n\n## Not measured, and why\n\n- y\n\n---\nWhole run.\n";
        let one = replace_section(doc, "## Soak\n\nfirst\n");
        assert!(
            one.contains("x\n\n## Soak\n\nfirst\n\n## Not measured"),
            "{one}"
        );
        let two = replace_section(&one, "## Soak\n\nsecond\n");
        assert_eq!(two, one.replace("first", "second"));
        assert_eq!(section_in(&two).unwrap(), "## Soak\n\nsecond\n");
        // last section before the closing rule
        let doc = "# r\n\n## Soak\n\nold\n\n---\nWhole run.\n";
        assert_eq!(
            replace_section(doc, "## Soak\n\nnew"),
            "# r\n\n## Soak\n\nnew\n\n---\nWhole run.\n"
        );
        assert_eq!(section_in("# r\n\n## Host\n"), None);
        assert_eq!(replace_section("", "## Soak\n"), "## Soak\n");
    }

    #[test]
    fn growth_is_not_flat() {
        let s = |fds, rss_kib| Sample {
            fds,
            rss_kib,
            open: Vec::new(),
        };
        let p = |before, after| Phase {
            name: "p",
            cycles: 1000,
            secs: 1.0,
            before,
            after,
            above: Vec::new(),
            readings: 0,
            caught_open: 0,
            longest_close: Duration::ZERO,
        };
        assert!(p(s(12, 4000), s(12, 4000)).flat());
        assert!(p(s(12, 4000), s(11, 4100)).flat());
        assert!(!p(s(12, 4000), s(13, 4000)).flat());
        assert!(!p(s(12, 4000), s(12, 4000 + RSS_SLACK_KIB + 1)).flat());
    }

    #[test]
    fn the_descriptor_diff_names_what_was_opened_and_closed() {
        let s = |open: &[(u32, &str)]| Sample {
            fds: open.len(),
            rss_kib: 0,
            open: open.iter().map(|(n, t)| (*n, t.to_string())).collect(),
        };
        let before = s(&[
            (0, "/dev/null"),
            (3, "anon_inode:[eventpoll]"),
            (7, "pipe:[10]"),
        ]);
        let after = s(&[
            (0, "/dev/null"),
            (3, "anon_inode:[eventpoll]"),
            (7, "pipe:[11]"),
            (11, "socket:[99] (unix stream /run/x.sock)"),
        ]);
        assert_eq!(
            Sample::diff(&before, &after),
            [
                "- fd 7 → pipe:[10]",
                "+ fd 7 → pipe:[11]",
                "+ fd 11 → socket:[99] (unix stream /run/x.sock)"
            ]
        );
        assert!(Sample::diff(&after, &after).is_empty());
    }

    #[test]
    fn only_accepted_control_connections_delay_a_reading() {
        let sock = "/run/x/control.sock";
        let s = |open: &[&str]| Sample {
            fds: open.len(),
            rss_kib: 0,
            open: open
                .iter()
                .enumerate()
                .map(|(i, t)| (i as u32, t.to_string()))
                .collect(),
        };
        let listener = "socket:[1] (unix stream listening /run/x/control.sock)";
        let conn = "socket:[2] (unix stream /run/x/control.sock)";
        let other = "socket:[3] (unix stream /run/x/other.sock)";
        assert_eq!(
            control_connections(&s(&[listener, other, "pipe:[4]"]), sock),
            0
        );
        assert_eq!(control_connections(&s(&[listener, conn]), sock), 1);
    }
}

//! `cargo xtask bench`: the numbers behind issue 7, measured side by side in one run and
//! written as markdown tables to `bench/RESULTS.md` (and printed).
//!
//! Host sections run the real static `init` as PID 1 of a fresh pid+mount namespace in test
//! mode (as `tests/` does) with busybox containers, and drive it over its control socket;
//! runc and crun run the very OCI spec init generated. The guest sections boot images in
//! QEMU: the development image for the boot timeline and PID 1's memory; the benchmark image
//! (production services plus `bench/container/`) for sysctr against crun and runc on the
//! guest's own cgroup v2 (`bench-guest`, run in the privileged `bench` container), and for
//! the same boot with a plain-process shell script as init (`baseline`). Every section is
//! bounded in time; a section that cannot run says why in the results instead of failing
//! the whole command. Everything it creates (namespaces, cgroups, bundles, VMs) is removed.

mod baseline;
mod guest;
mod host_init;
mod memory;
mod profile;
mod results;
mod scratch;
pub mod soak;
mod start;
mod stats;
mod update;
mod v2;
mod vm;

use crate::build::{self, Binaries};
use crate::image;
use crate::qemu;
use crate::util::{ensure_debian_packages, output, workspace_root};
use anyhow::{bail, Context, Result};
use guest::*;
use host_init::*;
use manifest::protocol::{Op, Response, ServiceStatus, State};
use memory::*;
use profile::*;
use results::*;
use scratch::*;
use serde_json::{json, Value};
use start::*;
use stats::*;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use sysctr_bench::{
    boot_us, elapsed_us, first_line, fork_exec_wait, settle, Control, Peer, STATUS_POLL,
};
use v2::*;

/// Service counts for the memory and `ps` sections.
pub(super) const MEMORY_COUNTS: &[usize] = &[0, 1, 10, 50, 100];
pub(super) const PS_COUNTS: &[usize] = &[10, 100];

pub(super) struct Options {
    runs: usize,
    host: bool,
    guest: bool,
    kvm: bool,
    out: PathBuf,
}

/// `cargo xtask bench`'s options.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Timed runs per measurement.
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    /// Skip the image build and the QEMU guest sections.
    #[arg(long = "no-guest")]
    no_guest: bool,
    /// Skip the host sections (only the guest and the image).
    #[arg(long = "no-host")]
    no_host: bool,
    /// Boot the guest with KVM (default TCG).
    #[arg(long)]
    kvm: bool,
    /// Where the markdown results go (default bench/RESULTS.md; the JSON goes next to it
    /// as results.json).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

impl BenchArgs {
    fn options(&self) -> Options {
        Options {
            runs: self.runs as usize,
            host: !self.no_host,
            guest: !self.no_guest,
            kvm: self.kvm,
            out: self
                .out
                .clone()
                .unwrap_or_else(|| workspace_root().join("bench").join("RESULTS.md")),
        }
    }

    /// The options as they would be typed, for the record in the results.
    fn words(&self) -> String {
        let mut w = String::new();
        if self.runs != 50 {
            w.push_str(&format!(" --runs {}", self.runs));
        }
        for (on, flag) in [
            (self.no_guest, " --no-guest"),
            (self.no_host, " --no-host"),
            (self.kvm, " --kvm"),
        ] {
            if on {
                w.push_str(flag);
            }
        }
        if let Some(out) = &self.out {
            w.push_str(&format!(" --out {}", out.display()));
        }
        w
    }
}

/// `cargo xtask bench`.
pub fn command(args: &BenchArgs) -> Result<()> {
    let o = args.options();
    if !nix::unistd::geteuid().is_root() {
        bail!("bench needs root (namespaces, cgroups, runc)");
    }
    ensure_debian_packages(&["busybox-static", "runc", "crun", "strace", "util-linux"])?;
    cleanup_stale();
    let bins = build::static_binaries()?;
    let scratch = Scratch::new()?;
    let started = Instant::now();
    // `cargo xtask soak` writes a section of its own; a bench run keeps it.
    let soak_section = fs::read_to_string(&o.out)
        .ok()
        .and_then(|t| soak::section_in(&t));
    let mut doc = Doc::new(
        &o.out,
        header()?,
        format!("cargo xtask bench{}", args.words()),
    );

    if o.host {
        run_section(&mut doc, "host: create+start", || {
            start_and_restart(&o, &bins, &scratch)
        });
        run_section(&mut doc, "host: PID 1 memory and sysctr ps", || {
            memory_and_ps(&o, &bins, &scratch)
        });
        run_section(
            &mut doc,
            "host: cgroup v2 view, sysctr vs runc vs crun",
            || v2_comparison(&o, &bins, &scratch),
        );
    } else {
        doc.note("host", "## Host\n\nSkipped (`--no-host`).\n");
    }
    if o.guest {
        run_section(&mut doc, "guest: boot and image", || guest(&o, &scratch));
    } else {
        doc.note(
            "guest: boot and image",
            "## Guest (QEMU) and image size\n\nSkipped (`--no-guest`).\n",
        );
    }
    if let Some(s) = &soak_section {
        doc.text(s);
    }
    doc.text(NOT_MEASURED);
    doc.text(&format!(
        "\n---\nWhole run: {:.0} s. Command: `cargo xtask bench{}`.\n",
        started.elapsed().as_secs_f64(),
        args.words()
    ));
    eprintln!(
        "xtask: bench: results in {} and {}",
        o.out.display(),
        doc.json_path().display()
    );
    Ok(())
}

/// What the issue asks for that this command cannot measure here, and why.
pub(super) const NOT_MEASURED: &str = "\
## Not measured, and why

- **KVM**: QEMU aborts with `-cpu host` under the nested KVM on this machine \
  (`failed to set MSR 0x10a`), so guest figures are TCG (every guest figure is several \
  times its KVM or bare-metal value; ratios from one run hold); `--kvm` uses KVM where it \
  works.
- **PSS of PID 1 in production images**: no production container may ptrace PID 1; the \
  benchmark image's privileged `bench` container reads `/proc/1/smaps_rollup` instead.
";

fn header() -> Result<String> {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = output(Command::new("uname").arg("-r"))?.trim().to_string();
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
        .trim()
        .to_string();
    let commit = output(Command::new("git").current_dir(workspace_root()).args([
        "rev-parse",
        "--short",
        "HEAD",
    ]))
    .map(|s| s.trim().to_string())
    .unwrap_or_else(|_| "unknown".into());
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let runc = first_line(Command::new("runc").arg("--version"));
    let crun = first_line(Command::new("crun").arg("--version"));
    let cgroups = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "cgroup v2"
    } else if Path::new("/sys/fs/cgroup/unified").exists() {
        "hybrid (v1 controllers + empty v2)"
    } else {
        "cgroup v1"
    };
    Ok(format!(
        "# sysctr benchmarks\n\n\
         Generated by `cargo xtask bench` (xtask/src/bench/); targets from issue 7 are \
         reported as ratios, not asserted. `bench/ANALYSIS.md` reads a committed run: targets \
         met and missed, and what the profiles say.\n\n\
         | | |\n|---|---|\n\
         | date | {date} |\n| commit | {commit} |\n| CPU | {cpu} |\n| nproc | {nproc} |\n\
         | kernel | {kernel} |\n| host cgroups | {cgroups} |\n| load average at start | {load} |\n\
         | runc | {runc} |\n| crun | {crun} |\n\n\
         Medians and p95 (nearest rank) in milliseconds. The machine is shared with other \
         builds, so p95 is noisy; ratios come from the same run.\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_median_p95() {
        let v: Vec<f64> = (1..=100).map(|i| i as f64).collect();
        let s = stats(&v);
        assert_eq!(s.median, 50.5);
        assert_eq!(s.p95, 95.0);
        assert_eq!(s.min, 1.0);
        assert_eq!(stats(&[3.0, 1.0, 2.0]).median, 2.0);
    }

    #[test]
    fn guest_output_parses() {
        let mut fig = Figures::default();
        let t = guest_figures(
            "info crun crun version 1.8.1\nsample sysctr_start 1500\nsample sysctr_start 2500\n\
             sample crun_run 4000\nsample crun_run 4000\nerror runc no cgroup\n\
             sample restart 5000\nsample restart_start 2000\nmem VmRSS 6000\nmem Pss 5000\n",
            &mut fig,
        )
        .unwrap();
        let start = fig
            .0
            .iter()
            .find(|f| f.name == "guest: sysctr create+start in PID 1 (`start_us`)")
            .unwrap_or_else(|| panic!("no start_us figure in {fig:?}"));
        assert_eq!((start.runs, start.value, start.unit), (Some(2), 2.0, "ms"));
        assert!(fig
            .0
            .iter()
            .any(|f| f.name == "guest PID 1 VmRSS after the rounds" && f.value == 6000.0));
        assert!(
            t.contains("| sysctr create+start in PID 1 (`start_us`) | 2 | 2.00 |"),
            "{t}"
        );
        assert!(t.contains("| 0.50× | ≤ 0.5× |"), "{t}");
        assert!(t.contains("| 3.00 ms | ≤ 5 ms |"), "{t}");
        assert!(t.contains("**error** runc: no cgroup"), "{t}");
        assert!(t.contains("Pss 5000, VmRSS 6000"), "{t}");
        assert!(t.contains("- crun: crun version 1.8.1"), "{t}");
    }
}

//! Power cuts during an update (issue 12): QEMU is killed at a random moment of an install
//! (the bundle streaming into the inactive slot over ssh) or of the trial boot that follows
//! it, and the next boot must have every service of the health set Ready on a good slot (a
//! trial there is waited for until the health gate blesses it). `cargo xtask boot-test` runs a few cuts;
//! `cargo xtask powercut --runs N` runs N and writes the table to bench/RESULTS.md
//! (SYSCTR_POWERCUT_RUNS, SYSCTR_POWERCUT_TABLE, SYSCTR_POWERCUT_SEED), rewriting it after
//! each run; `--jobs J` (SYSCTR_POWERCUT_JOBS) cuts J VMs side by side, each on its own disk.
//! The cut moment is drawn over a window that follows the phase's measured length.

use std::path::PathBuf;
use std::time::{Duration, Instant};
use sysctr_boot_tests::*;

/// The first windows for the cut moment, before a run has measured the phase: an install
/// of the test bundle and a trial boot up to its blessing take less under TCG. Each window
/// then follows what the runs measure (see [`Windows`]), so the cuts spread over the phase
/// itself and not over the idle time after it.
const INSTALL_WINDOW_MS: u64 = 20_000;
const TRIAL_WINDOW_MS: u64 = 60_000;

/// A window is this much longer than the phase's latest measured length (in per cent): about
/// one cut in eight (at most) lands just after the phase, a moment worth cutting too.
const WINDOW_MARGIN_PCT: u64 = 115;

/// How often the phase's end is looked for while waiting for the cut.
const POLL: Duration = Duration::from_millis(100);

/// The cut windows of both kinds of run, in ms, shared by the lanes.
#[derive(Clone, Copy)]
struct Windows {
    install_ms: u64,
    trial_ms: u64,
}

impl Windows {
    /// The window after a run whose phase `ended` that long after its start (its length),
    /// or did not end before the cut at `delay` (at least that long): the window follows.
    fn follow(old: u64, ended: Option<Duration>, delay: Duration) -> u64 {
        let fit = |d: Duration| d.as_millis() as u64 * WINDOW_MARGIN_PCT / 100;
        match ended {
            Some(took) => fit(took).max(1_000),
            None => old.max(fit(delay)),
        }
    }
}

#[test]
fn the_cut_window_follows_the_measured_phase() {
    let s = Duration::from_secs;
    // Ended before the cut: 115% of its length, at least 1 s.
    assert_eq!(Windows::follow(20_000, Some(s(4)), s(9)), 4_600);
    assert_eq!(Windows::follow(20_000, Some(s(0)), s(9)), 1_000);
    // Not ended by the cut: the window grows when the cut came later than it expected.
    assert_eq!(Windows::follow(4_600, None, s(3)), 4_600);
    assert_eq!(Windows::follow(4_600, None, s(10)), 11_500);
}

/// Waits until `delay` after `t0`, looking every [`POLL`] for the phase's end; returns how
/// long after `t0` it was first seen, if it was.
fn wait_for_cut(t0: Instant, delay: Duration, mut ended: impl FnMut() -> bool) -> Option<Duration> {
    let mut seen = None;
    while t0.elapsed() < delay {
        std::thread::sleep(POLL.min(delay.saturating_sub(t0.elapsed())));
        if seen.is_none() && ended() {
            seen = Some(t0.elapsed());
        }
    }
    seen
}

/// What a run's cut interrupted, as the table names it.
const INSTALL: &str = "install";
const AFTER_INSTALL: &str = "install (just after it)";
const REBOOT: &str = "reboot into the trial";
const TRIAL: &str = "trial boot";
const AFTER_BLESSING: &str = "trial boot, after its blessing";
const PHASES: [&str; 5] = [INSTALL, AFTER_INSTALL, REBOOT, TRIAL, AFTER_BLESSING];

struct Rng(u64);

impl Rng {
    /// xorshift64*: the seed is printed, so a failing sequence can be replayed.
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

fn env_u64(var: &str) -> Option<u64> {
    std::env::var(var).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{var}={v:?}: expected a number"))
    })
}

fn status(vm: &Vm) -> serde_json::Value {
    let out = vm.ssh("sysctr update status --json");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn booted_state(st: &serde_json::Value) -> (String, String) {
    let booted = st["booted"].as_str().unwrap_or("?").to_string();
    let state = st["slots"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["slot"] == booted.as_str()))
        .and_then(|s| s["state"].as_str())
        .unwrap_or("?")
        .to_string();
    (booted, state)
}

/// The test image's health set: the system services and every test service that does not
/// opt out with `"health": false` (the crash-looper, the memory hog, … do).
fn health_set() -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(include_str!("../test-services.json"))
        .expect("boot-tests/test-services.json");
    let mut names: Vec<String> = SYSTEM_SERVICES.iter().map(|s| s.to_string()).collect();
    names.extend(
        v["services"]
            .as_array()
            .expect("test-services.json: services")
            .iter()
            .filter(|s| s["health"] != false && s["kind"] != "onboot")
            .filter_map(|s| s["name"].as_str().map(String::from)),
    );
    names
}

/// Boots and waits until every service of the health set is Ready on a good slot: a trial
/// boot must be blessed. Returns (slot, how long it took).
fn boot_to_good(image: &ImagePaths, scratch: &Scratch) -> (Vm, String, Duration) {
    let vm = Vm::boot(image, scratch, &BootOptions::default());
    let names = health_set();
    // Polled with tolerant ssh calls: under a loaded host a boot may be reset (watchdog)
    // and start again, which is allowed; only the deadline ends the wait.
    let deadline = Instant::now() + 2 * BOOT_TIMEOUT;
    let mut last = String::new();
    let (slot, state) = loop {
        if Instant::now() > deadline {
            panic!(
                "after a power cut no boot had the health set {names:?} Ready on a good slot \
                 within {}s (last: {last})\n{}",
                (2 * BOOT_TIMEOUT).as_secs(),
                vm.tail(60)
            );
        }
        std::thread::sleep(Duration::from_secs(2));
        let (code, out, err) = vm.ssh_raw("sysctr ps --json", Duration::from_secs(30));
        if code != Some(0) {
            last = format!("ssh: {code:?} {}", err.trim());
            continue;
        }
        let ps: Vec<serde_json::Value> = match serde_json::from_str(out.trim()) {
            Ok(serde_json::Value::Array(a)) => a,
            _ => {
                last = format!("ps: {out}");
                continue;
            }
        };
        let waiting: Vec<&String> = names
            .iter()
            .filter(|n| !service(&ps, n).is_some_and(|s| s["state"] == "ready"))
            .collect();
        if !waiting.is_empty() {
            last = format!("not Ready yet: {waiting:?}");
            continue;
        }
        let (code, out, _) = vm.ssh_raw("sysctr update status --json", Duration::from_secs(30));
        let Some(st) = (code == Some(0))
            .then(|| serde_json::from_str::<serde_json::Value>(out.trim()).ok())
            .flatten()
        else {
            last = format!("update status: {out}");
            continue;
        };
        let (slot, state) = booted_state(&st);
        if state == "good" {
            break (slot, state);
        }
        last = format!("slot {slot} is {state}");
    };
    assert_eq!(state, "good");
    let took = vm.started.elapsed();
    (vm, slot, took)
}

/// One finished run: its number, what the cut interrupted, and its table row.
struct Row {
    run: u64,
    phase: &'static str,
    line: String,
}

/// What every lane shares: the image, the bundle, how many runs in all, and the rows so far
/// (the table is rewritten after each run, so an interrupted run of 100 keeps what it did).
struct Plan {
    image: ImagePaths,
    bundle: PathBuf,
    runs: u64,
    jobs: u64,
    seed: u64,
    table: Option<PathBuf>,
    rows: std::sync::Mutex<Vec<Row>>,
    /// The next run to take: a lane that is free takes it, so the lanes stay busy alike.
    next: std::sync::atomic::AtomicU64,
    windows: std::sync::Mutex<Windows>,
    /// Set by a lane that failed: the others stop after their current run.
    failed: std::sync::atomic::AtomicBool,
}

/// Marks the plan failed when its lane unwinds from a failed assertion.
struct FailFlag<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for FailFlag<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[test]
fn power_cut_during_install_and_trial() {
    let image = ImagePaths::from_env();
    let bundle = PathBuf::from(std::env::var_os("SYSCTR_BUNDLE_GOOD").unwrap_or_else(|| {
        panic!("SYSCTR_BUNDLE_GOOD is not set: run the boot tests with `cargo xtask boot-test`")
    }));
    let runs = env_u64("SYSCTR_POWERCUT_RUNS").unwrap_or(2);
    // Lanes: VMs cut side by side, each on its own disk (one per core is what TCG affords).
    let jobs = env_u64("SYSCTR_POWERCUT_JOBS").unwrap_or(1).clamp(1, runs);
    let seed = env_u64("SYSCTR_POWERCUT_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    eprintln!(
        "power cut: {runs} runs in {jobs} lane(s), seed {seed} \
         (SYSCTR_POWERCUT_SEED={seed} SYSCTR_POWERCUT_JOBS={jobs} replays them)"
    );
    let plan = Plan {
        image,
        bundle,
        runs,
        jobs,
        seed,
        table: std::env::var_os("SYSCTR_POWERCUT_TABLE").map(PathBuf::from),
        rows: std::sync::Mutex::new(Vec::new()),
        next: std::sync::atomic::AtomicU64::new(1),
        windows: std::sync::Mutex::new(Windows {
            install_ms: INSTALL_WINDOW_MS,
            trial_ms: TRIAL_WINDOW_MS,
        }),
        failed: std::sync::atomic::AtomicBool::new(false),
    };
    let turn = Turn::take();
    std::thread::scope(|s| {
        let lanes: Vec<_> = (0..jobs)
            .map(|lane| {
                let (plan, turn) = (&plan, &turn);
                s.spawn(move || {
                    // Lanes start a few seconds apart: their first boots do not contend
                    // for the same moments (firmware, the squashfs read) and ports.
                    std::thread::sleep(Duration::from_secs(5 * lane));
                    run_lane(plan, turn, lane)
                })
            })
            .collect();
        for lane in lanes {
            if let Err(panic) = lane.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    let done = plan.rows.lock().unwrap().len() as u64;
    assert_eq!(done, runs, "every run reported its row");
}

/// A lane takes the next run until all are taken: boots to a good slot, then for each run
/// starts an install (odd runs: cut during it) or an install and its trial boot (even runs:
/// cut during the reboot or the trial), pulls the plug and boots to a good slot again.
fn run_lane(plan: &Plan, turn: &Turn, lane: u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let image = &plan.image;
    let scratch = Scratch::beside(turn, &format!("powercut-{lane}"), image);
    let runs = plan.runs;
    let (mut vm, _, _) = boot_to_good(image, &scratch);
    let _flag = FailFlag(&plan.failed);
    loop {
        if plan.failed.load(Relaxed) {
            eprintln!("power cut: lane {lane} stops, another lane failed");
            break;
        }
        let run = plan.next.fetch_add(1, Relaxed);
        if run > runs {
            break;
        }
        let trial = run.is_multiple_of(2);
        let w = *plan.windows.lock().unwrap();
        let window = if trial { w.trial_ms } else { w.install_ms };
        // Where in its window a run cuts comes from the seed and the run's number alone, so
        // a sequence replays whichever lane takes which run (the windows follow the timing).
        let per_mille = Rng((plan.seed ^ run.wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1).below(1000);
        let delay = Duration::from_millis(window * per_mille / 1000);
        let from = booted_state(&status(&vm)).0;
        // --allow-downgrade: every run installs the same bundle again into the other slot.
        let command = if trial {
            "sysctr update --allow-downgrade --reboot -"
        } else {
            "sysctr update --allow-downgrade -"
        };
        let started = vm.serial().len();
        let mut ssh = vm.ssh_input_spawn(command, &plan.bundle);
        let t0 = Instant::now();
        let phase = if trial {
            let st = ssh.wait().expect("wait ssh");
            // The reboot may take the ssh session down before it relays the CLI's exit
            // status (ssh then exits 255, as `ssh host reboot` does): the guest's own log
            // says whether the install succeeded and the reboot began.
            let rebooting = vm.serial()[started..].contains("rebooting into the new slot");
            assert!(
                st.success() || (st.code() == Some(255) && rebooting),
                "run {run}: the install failed ({st})\n{}",
                vm.tail(40)
            );
            let mark = vm.serial().len();
            let blessed = wait_for_cut(Instant::now(), delay, || {
                vm.serial()[mark..].contains("blessed the boot entry")
            });
            let after = vm.serial()[mark..].to_string();
            vm.power_cut();
            {
                let mut w = plan.windows.lock().unwrap();
                w.trial_ms = Windows::follow(w.trial_ms, blessed, delay);
            }
            if after.contains("blessed the boot entry") {
                AFTER_BLESSING
            } else if after.contains("sysctr.slot=") {
                TRIAL
            } else {
                REBOOT
            }
        } else {
            let ended = wait_for_cut(t0, delay, || matches!(ssh.try_wait(), Ok(Some(_))));
            vm.power_cut();
            {
                let mut w = plan.windows.lock().unwrap();
                w.install_ms = Windows::follow(w.install_ms, ended, delay);
            }
            if ended.is_some() {
                let st = ssh.wait().expect("wait ssh");
                assert!(
                    st.success(),
                    "run {run}: the install failed ({st})\n{}",
                    vm.tail(40)
                );
                AFTER_INSTALL
            } else {
                INSTALL
            }
        };
        let _ = ssh.kill();
        let _ = ssh.wait();
        drop(vm);
        let (next, slot, took) = boot_to_good(image, &scratch);
        eprintln!(
            "power cut {run}/{runs} (lane {lane}): {phase} at {:.1} s of {:.1} (from slot {from}) → slot {slot} good, health set Ready in {:.0} s",
            delay.as_secs_f64(),
            window as f64 / 1000.0,
            took.as_secs_f64()
        );
        let row = format!(
            "| {run} | {phase} | {:.1} | {:.1} | {from} | {slot} | yes | {:.0} |",
            delay.as_secs_f64(),
            window as f64 / 1000.0,
            took.as_secs_f64()
        );
        let mut rows = plan.rows.lock().unwrap();
        rows.push(Row {
            run,
            phase,
            line: row,
        });
        rows.sort_by_key(|r| r.run);
        if let Some(path) = &plan.table {
            write_section(path, &table(plan, &rows));
        }
        drop(rows);
        vm = next;
    }
    let _ = vm.ssh_raw("sysctr poweroff", Duration::from_secs(20));
    vm.wait_exit(Duration::from_secs(120));
}

/// The results section for the rows so far (saying how many of the runs are in, until all
/// are).
fn table(plan: &Plan, rows: &[Row]) -> String {
    let (runs, jobs) = (plan.runs, plan.jobs);
    let progress = if rows.len() as u64 == runs {
        String::new()
    } else {
        format!(" **{} of the {runs} runs done so far.**", rows.len())
    };
    let phases = PHASES
        .iter()
        .map(|p| format!("{p}: {}", rows.iter().filter(|r| r.phase == *p).count()))
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "## Guest (QEMU): power cuts during an update\n\n\
         `cargo xtask powercut --runs {runs} --jobs {jobs}` (seed {}): QEMU killed (SIGKILL) at a \
         random moment of an install of a {} byte bundle (odd runs, from the install's start) \
         or of the reboot and trial boot after it (even runs, from the install's end), {jobs} \
         VM(s) side by side on their own disks. The moment is drawn uniformly over a window \
         {}% as long as the phase's latest measured length (the install to its exit, the \
         trial to its blessing; at first {} s and {} s), so the cuts fall within the phases. \
         Every next boot had every health-set service Ready on a good slot. TCG.{progress}\n\n\
         Cuts by phase: {phases}.\n\n\
         | run | cut during | at (s) | window (s) | from slot | next boot's slot | health set Ready, slot good | boot to good (s) |\n\
         |---|---|---|---|---|---|---|---|\n{}\n",
        plan.seed,
        std::fs::metadata(&plan.bundle).map(|m| m.len()).unwrap_or(0),
        WINDOW_MARGIN_PCT,
        INSTALL_WINDOW_MS / 1000,
        TRIAL_WINDOW_MS / 1000,
        rows.iter().map(|r| r.line.as_str()).collect::<Vec<_>>().join("\n")
    )
}

/// Replaces (or appends) this test's section in the results file, leaving the rest.
fn write_section(path: &std::path::Path, table: &str) {
    let title = table.lines().next().unwrap();
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let text = match old.find(title) {
        Some(start) => {
            let rest = &old[start + title.len()..];
            let end = rest
                .find("\n## ")
                .map(|i| start + title.len() + i + 1)
                .unwrap_or(old.len());
            format!("{}{table}{}", &old[..start], &old[end..])
        }
        None => format!("{old}\n{table}"),
    };
    // Written aside and renamed: a run interrupted mid-write leaves the old file whole.
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

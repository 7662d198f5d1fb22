//! sysctr's PID 1. `main` only wires the parts together, in the order a PID 1 must:
//! signals blocked before anything can start a child, early boot steps, the manifest, then
//! the single-threaded event loop. Every way out of the loop — a power request, a fatal
//! error, a panic — goes through `shutdown`, which never returns.

#![deny(unsafe_code)]

mod applied;
mod boot;
mod bootconfig;
mod bootlogs;
mod bootslot;
mod cgroups;
mod config;
mod control;
mod fatal;
mod health;
mod helper_proc;
mod hostdirs;
mod images;
mod log;
mod logs;
mod mounts;
mod ratelimit;
mod reactor;
mod readiness;
mod reaper;
mod runtime;
mod seccomp;
mod shutdown;
mod signals;
mod spec;
mod supervisor;
#[allow(unsafe_code)]
mod sys;
mod trial;
mod update;
#[allow(unsafe_code)]
mod watchdog;

use config::{Config, PowerAction};
use fatal::Fatal;
use reactor::{Reactor, Source};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};
use supervisor::Supervisor;

/// How long `sysctr update --reboot` waits for its client to read the answer and hang up
/// before the reboot goes ahead anyway.
const UPDATE_ANSWER_GRACE: Duration = Duration::from_secs(3);
/// After the client hung up, how long the reboot still waits: the client's last lines may be
/// in a pipe to a remote shell's server (ssh) that has yet to send them, and the shutdown
/// stops that server first.
const UPDATE_ANSWER_DRAIN: Duration = Duration::from_secs(1);

/// Why the event loop ended.
enum Exit {
    Power(PowerAction),
    Fatal(Fatal),
}

/// Everything the shutdown path may need after the loop ended, even by a panic.
#[derive(Default)]
struct World {
    sup: Option<Supervisor>,
    reactor: Option<Reactor>,
}

fn main() {
    sys::mark_main_process();
    let init_boot_ms = supervisor::boot_ms();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(update::run::HELPER_FLAG) {
        // PID 1's update helper: this binary, started by PID 1 for one install.
        std::process::exit(update::helper::helper_main(&args));
    }
    if args.first().map(String::as_str) == Some(images::helper::HELPER_FLAG) {
        // PID 1's image helper: this binary, started by PID 1 for one import or removal.
        std::process::exit(images::helper::helper_main(&args));
    }
    if args.first().map(String::as_str) == Some(seccomp::precompiled::TOOL_FLAG) {
        // The image builder's use of this binary: compile the manifests' seccomp profiles.
        std::process::exit(seccomp::precompiled::tool_main(&args));
    }
    let pid1 = nix::unistd::getpid().as_raw() == 1;
    let test_mode = args.iter().any(|a| a == "--test-mode");
    if !pid1 && !test_mode {
        eprintln!("init: this is sysctr's PID 1; run it as the kernel's init, or with --test-mode");
        std::process::exit(2);
    }
    let cfg = if test_mode {
        match Config::from_args(&args) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("init: {e}");
                std::process::exit(2);
            }
        }
    } else {
        // /proc is not mounted yet, and the kernel does not hand sysctr.* words to init:
        // a word with a dot before its `=` counts as a (unused) module parameter and is
        // dropped; other unknown `key=value` words become init's environment, bare words
        // and everything after `--` its arguments. So this sees only what follows `--`;
        // the full command line is read from /proc/cmdline once /proc is mounted (below).
        Config::from_cmdline(&args.join(" "))
    };
    log::set_level(cfg.log_level);
    if !pid1 {
        // A subreaper adopts orphans of its descendants, as PID 1 adopts everyone's.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            error!("init", "cannot become a subreaper: {e}");
        }
    }
    std::panic::set_hook(Box::new(|info| {
        if sys::is_forked_child() {
            sys::exit_forked_child(&info.to_string());
        }
        error!("panic", "{info}");
    }));
    let plan = |action, fatal| shutdown::Plan {
        action,
        fatal,
        pid1,
        unmount: !cfg.test_mode,
        // The machine keeps its cgroup tree until reboot; a test run leaves nothing behind.
        cgroup_prefix: if cfg.test_mode {
            cfg.cgroup_prefix.clone()
        } else {
            String::new()
        },
        test_mounts: if cfg.test_mode {
            vec![cfg.run_dir.join("tmp")]
        } else {
            Vec::new()
        },
    };

    let mut world = World::default();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        run(&cfg, &mut world, pid1, init_boot_ms)
    }));
    let (action, fatal, reason) = match outcome {
        Ok(Exit::Power(a)) => (a, false, "requested".to_string()),
        Ok(Exit::Fatal(why)) => (cfg.fatal_action, true, why.to_string()),
        Err(_) => (cfg.fatal_action, true, Fatal::Panicked.to_string()),
    };
    if fatal {
        error!(
            "init",
            "fatal: {reason}: taking the shutdown path ({:?})", action
        );
    }
    watchdog::disarm();
    let again = catch_unwind(AssertUnwindSafe(|| {
        shutdown::run(
            plan(action, fatal),
            &reason,
            world.sup.as_mut(),
            world.reactor.as_mut(),
        )
    }));
    // Only reached if the orderly path panicked.
    let _ = again;
    shutdown::emergency(action, pid1)
}

fn run(cfg: &Config, world: &mut World, pid1: bool, init_boot_ms: u64) -> Exit {
    let signal_fd = match signals::install(pid1 && !cfg.test_mode) {
        Ok(fd) => fd,
        Err(e) => return Exit::Fatal(Fatal::Signals(e)),
    };
    // Bounds how long a hung container start can hold the event loop.
    sys::install_alarm_handler();
    control::raise_fd_limit();
    info!(
        "init",
        "sysctr {} starting ({})",
        env!("CARGO_PKG_VERSION"),
        if cfg.test_mode { "test mode" } else { "PID 1" }
    );

    let mut cfg = cfg.clone();
    let steps = if cfg.test_mode {
        boot::test_steps()
    } else {
        boot::machine_steps()
    };
    let mut ctx = boot::Ctx {
        cfg: &cfg,
        facts: boot::Facts::default(),
        step: "",
    };
    if let Err((step, source)) = boot::run(&steps, &mut ctx) {
        return Exit::Fatal(Fatal::BootStep { step, source });
    }
    let facts = ctx.facts;
    let mut boot_info: Option<manifest::protocol::BootInfo> = None;
    let mut gate: Option<health::Gate> = None;
    if !cfg.test_mode {
        // Now that /proc is mounted, the full command line is readable.
        if let Ok(line) = std::fs::read_to_string("/proc/cmdline") {
            let fatal_before = cfg.fatal_action;
            let (re, problems) = Config::parse_cmdline(&line);
            for p in &problems {
                warn!("cmdline", "{p}; keeping the default");
            }
            cfg.log_level = re.log_level;
            cfg.fatal_action = re.fatal_action;
            cfg.manifest = re.manifest;
            cfg.start_timeout_secs = re.start_timeout_secs;
            log::set_level(cfg.log_level);
            debug!(
                "init",
                "cmdline: {} (fatal action {:?} → {:?})",
                line.trim(),
                fatal_before,
                cfg.fatal_action
            );
        }
        if !facts.var_persistent {
            cfg.log_dir = None;
        }
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        let mut b = bootslot::detect(&cmdline, std::path::Path::new(bootslot::EFIVARS));
        info!("boot", "{}", bootslot::describe(&b));
        if facts.var_persistent {
            b.previous_failure = bootslot::last_bad(std::path::Path::new(trial::BOOT_HISTORY));
            if let Some(f) = &b.previous_failure {
                warn!("boot", "the last bad boot: {f}");
            }
        }
        if b.boot_count_path.is_some() {
            let (gc, problems) = health::GateConfig::from_cmdline(&cmdline);
            for p in problems {
                warn!("health", "{p}");
            }
            info!(
                "health",
                "trial boot: blessed once every service is Ready and settled for {}s, within {}s",
                gc.settle.as_secs(),
                gc.deadline.as_secs()
            );
            gate = Some(health::Gate::new(gc, std::time::Instant::now()));
        }
        boot_info = Some(b);
        // A bad sysctr.watchdog= value must not leave hangs uncaught: the default applies.
        let timeout = watchdog::timeout_from_cmdline(&cmdline).unwrap_or_else(|e| {
            warn!("watchdog", "{e}");
            watchdog::DEFAULT_TIMEOUT
        });
        match watchdog::arm(timeout) {
            Ok(what) => info!("watchdog", "{what}"),
            Err(e) => warn!("watchdog", "{e}"),
        }
        if gate.is_some() {
            trial::test_hook_in_trial();
        }
        cfg.control_gid = control::sysctr_gid();
    }

    // This boot's log directory on the state partition (`sysctr logs --boot`).
    let boot_log_dir = cfg.log_dir.as_deref().and_then(|root| {
        match bootlogs::start(root, &bootlogs::kernel_boot_id(), logs::now_ms()) {
            Ok(dir) => Some(dir),
            Err(e) => {
                warn!("logs", "{e}; logs are kept in memory only this boot");
                None
            }
        }
    });
    match &boot_log_dir {
        Some(dir) => {
            log::open_file(dir.join(bootlogs::INIT_LOG));
            info!("logs", "this boot's logs: {}", dir.display());
        }
        None => log::no_file(),
    }

    let loaded = match manifest::load_file(&cfg.manifest) {
        Ok(l) => l,
        Err(e) => {
            // No services, but PID 1 runs on: the console and the control socket still work.
            error!("manifest", "{e}");
            manifest::Loaded {
                path: cfg.manifest.display().to_string(),
                manifest: manifest::Manifest {
                    version: manifest::MANIFEST_VERSION,
                    services: Vec::new(),
                },
                rejected: Vec::new(),
            }
        }
    };
    info!(
        "manifest",
        "{}: {} services, {} rejected",
        loaded.path,
        loaded.manifest.services.len(),
        loaded.rejected.len()
    );

    let mut r = match Reactor::new() {
        Ok(r) => r,
        Err(e) => return Exit::Fatal(Fatal::Epoll(e)),
    };
    if let Err(e) = r.add(std::os::fd::AsFd::as_fd(&signal_fd), Source::Signals) {
        return Exit::Fatal(Fatal::WatchSignals(e));
    }
    let runtime = runtime::Runtime::new(
        &cfg.run_dir,
        Duration::from_secs(cfg.start_timeout_secs),
        cfg.test_mode,
    )
    .with_precompiled(seccomp::precompiled::dir_for(&cfg.manifest));
    let runtime = if cgroups::is_v2() {
        runtime.with_device_programs()
    } else {
        runtime
    };
    // The applied set comes after the image's manifest, checked against it.
    let applied = cfg
        .state_dir
        .as_deref()
        .map(|d| applied::AppliedSet::new(loaded.clone(), d));
    let mut supervisor = Supervisor::new(
        loaded,
        runtime,
        &cfg.run_dir,
        &cfg.cgroup_prefix,
        boot_log_dir
            .as_ref()
            .map(|d| d.join(bootlogs::SERVICES_DIR)),
    );
    supervisor.set_state_dir(cfg.state_dir.clone());
    if let Some(set) = &applied {
        if let Some(joined) = set.load_at_boot() {
            info!(
                "apply",
                "{}: {} applied services, {} rejected",
                set.file().display(),
                joined.services.len(),
                joined.rejected.len()
            );
            supervisor.add_applied_at_boot(joined, &set.file().display().to_string());
        }
    }
    world.sup = Some(supervisor);
    world.reactor = Some(r);
    let (Some(sup), Some(r)) = (world.sup.as_mut(), world.reactor.as_mut()) else {
        return Exit::Fatal(Fatal::Internal("world not set"));
    };
    let mut control =
        match control::ControlServer::bind(&cfg.socket_path(), cfg.control_gid, r, init_boot_ms) {
            Ok(c) => Some(c),
            Err(e) => {
                error!(
                    "control",
                    "cannot listen on {}: {e}; sysctr CLI will not work",
                    cfg.socket_path().display()
                );
                None
            }
        };
    if let Some(c) = control.as_mut() {
        c.boot = boot_info.clone();
        c.log_root = boot_log_dir.as_ref().and(cfg.log_dir.clone());
        c.applied = applied;
    }
    sup.begin_turn();
    sup.schedule(r);
    if cfg.panic_after_boot {
        panic!("injected panic after boot (--panic-after-boot)");
    }

    // An update disk is looked for once the boot is not a trial (at once, or once blessed).
    let mut offline_pending = !cfg.test_mode;
    let mut trial_open = gate.is_some();
    let mut power_after_answer: Option<(PowerAction, u64, Instant)> = None;
    loop {
        // Starts left over from the last turn (its start budget was spent) go on as soon as
        // what is ready has been served.
        let wait = if sup.has_deferred() {
            Duration::ZERO
        } else {
            Duration::from_secs(1)
        };
        // A reboot waiting for an update's client wakes the loop at its deadline.
        let wait = power_after_answer.map_or(wait, |(_, _, deadline)| {
            wait.min(deadline.saturating_duration_since(Instant::now()))
        });
        let (ready, timers) = r.wait(wait);
        sup.begin_turn();
        for (_, source, flags) in ready {
            match source {
                Source::Signals => {
                    while let Ok(Some(info)) = signal_fd.read_signal() {
                        let from = signals::Sender::of(&info);
                        match signals::action_for(info.ssi_signo as i32, from, pid1) {
                            signals::Action::Reap => {
                                reaper::reap();
                            }
                            signals::Action::Power(a) => {
                                info!("signals", "signal {} → {a:?}", info.ssi_signo);
                                return Exit::Power(a);
                            }
                            signals::Action::Refused { action, pid } => {
                                warn!(
                                    "signals",
                                    "ignored signal {} ({action:?}) from pid {pid}: only the kernel may ask that by signal; use `sysctr {}`",
                                    info.ssi_signo,
                                    format!("{action:?}").to_lowercase()
                                )
                            }
                            signals::Action::Ignore => {
                                debug!("signals", "ignored signal {}", info.ssi_signo)
                            }
                        }
                    }
                }
                Source::Listener => {
                    if let Some(c) = control.as_mut() {
                        c.accept(r);
                    }
                }
                Source::Client(id) => {
                    if let Some(c) = control.as_mut() {
                        if let Some(action) = c.on_client(id, flags, sup, r) {
                            c.publish(sup, r);
                            return Exit::Power(action);
                        }
                    }
                }
                Source::Pipe { svc, stream } => sup.on_pipe(svc, stream, r),
                Source::Notify { svc } => sup.on_notify(svc, r),
                Source::Kmsg(id) => {
                    if let Some(c) = control.as_mut() {
                        c.on_kmsg(id, r);
                    }
                }
            }
        }
        for t in timers {
            sup.on_timer(t, r);
        }

        if let Some(c) = control.as_mut() {
            c.poll_update(r);
            c.poll_images();
        }
        for (pid, status) in reaper::take() {
            if let Some(c) = control.as_mut() {
                if c.image_exited(pid, &format!("{status:?}"), r) {
                    continue;
                }
                let (was_helper, reboot) = c.update_exited(pid, &format!("{status:?}"), r);
                if was_helper {
                    if let Some((action, client)) = reboot {
                        power_after_answer =
                            Some((action, client, Instant::now() + UPDATE_ANSWER_GRACE));
                    }
                    continue;
                }
            }
            if !sup.on_exit(pid, status, r) {
                debug!("reaper", "reaped orphan {pid}: {status}");
            }
        }
        // `sysctr update --reboot`: the reboot waits until the client has read its answer
        // and hung up (bounded), then for the drain period, so the shutdown does not stop
        // the service it runs in (ssh) before that has relayed what was installed.
        if let Some((action, client, deadline)) = power_after_answer {
            let answered = control.as_ref().is_none_or(|c| !c.is_connected(client));
            let now = Instant::now();
            if answered && deadline > now + UPDATE_ANSWER_DRAIN {
                // Hung up: the drain period from now, then the reboot.
                power_after_answer = Some((action, client, now + UPDATE_ANSWER_DRAIN));
            } else if now >= deadline {
                if let Some(c) = control.as_mut() {
                    c.publish(sup, r);
                }
                info!("update", "rebooting into the new slot");
                return Exit::Power(action);
            }
        }
        sup.schedule_if_needed(r);
        watchdog::pet();
        if let Some(g) = gate.as_mut() {
            match g.step(std::time::Instant::now(), &sup.health()) {
                health::Verdict::Wait => {}
                health::Verdict::Bless => {
                    trial::bless_once(&mut boot_info, control.as_mut());
                    trial_open = false;
                }
                health::Verdict::Bad(why) => {
                    let why = why.to_string();
                    if let Some(action) = trial::bad_boot(&mut boot_info, control.as_mut(), &why) {
                        return Exit::Power(action);
                    }
                }
            }
        }
        if offline_pending && !trial_open {
            offline_pending = false;
            if let Some(c) = control.as_mut() {
                c.start_offline_update();
            }
        }
        if let Some(c) = control.as_mut() {
            c.publish(sup, r);
            c.sweep(r);
        }
        if let Some(why) = sup.take_fatal() {
            return Exit::Fatal(why);
        }
    }
}

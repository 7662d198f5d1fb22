//! PID 1 core, as root: the real init as PID 1 of fresh pid+mount namespaces.

use nix::sys::signal::Signal;
use sysctr_tests::*;

#[test]
fn orphaned_grandchildren_leave_no_zombies() {
    // A service in init's own pid namespace double-forks 500 short sleeps: each is
    // orphaned and re-parented to PID 1, which must reap it.
    let svc = with(
        sh("orphans", "i=0; while [ $i -lt 500 ]; do (sleep 0.3 &) ; i=$((i+1)); done; echo spawned; exec sleep 1000"),
        serde_json::json!({"namespaces": {"pid": "host"}}),
    );
    let init = Init::start(vec![svc]);
    init.wait_state("orphans", "ready", SECS(20));
    let spawned = wait_until(SECS(30), || {
        init.cli_ok(&["logs", "orphans"]).contains("spawned")
    });
    assert!(
        spawned,
        "the service never finished spawning\n{}",
        init.log()
    );
    // All 500 sleeps end within a second; then nothing below PID 1 may be a zombie.
    let clean = wait_until(SECS(10), || {
        let below = descendants(init.host_pid());
        below.len() <= 2 && zombies_below(init.host_pid()).is_empty()
    });
    let z = zombies_below(init.host_pid());
    assert!(
        clean && z.is_empty(),
        "zombies left: {z:?}; processes below init: {:?}",
        descendants(init.host_pid())
    );
}

fn power_signal(sig: Signal, expect_ns_signal: Signal, expect_text: &str) {
    let mut init = Init::start(vec![sh(
        "svc",
        "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.1; done",
    )]);
    init.wait_state("svc", "ready", SECS(20));
    let st = init.signal_and_wait(sig as i32, SECS(30));
    let log = init.log();
    // reboot(2) from a pid namespace's init ends the namespace: SIGHUP for restart,
    // SIGINT for power-off and halt; unshare mirrors the signal.
    assert_eq!(
        signal_of(st),
        Some(expect_ns_signal as i32),
        "{sig}: exit {st:?}\n{log}"
    );
    assert!(
        log.contains(&format!("reached shutdown: {expect_text}")),
        "{sig}:\n{log}"
    );
    assert!(
        log.contains("[svc] shutdown: sending SIGTERM"),
        "the service got its stop signal:\n{log}"
    );
}

#[test]
fn sigterm_reboots() {
    power_signal(Signal::SIGTERM, Signal::SIGHUP, "reboot");
}

#[test]
fn sigint_ctrl_alt_del_reboots() {
    power_signal(Signal::SIGINT, Signal::SIGHUP, "reboot");
}

#[test]
fn sigusr2_powers_off() {
    power_signal(Signal::SIGUSR2, Signal::SIGINT, "poweroff");
}

#[test]
fn sigpwr_powers_off() {
    power_signal(Signal::SIGPWR, Signal::SIGINT, "poweroff");
}

#[test]
fn sigusr1_halts() {
    power_signal(Signal::SIGUSR1, Signal::SIGINT, "halt");
}

#[test]
fn a_panic_takes_the_shutdown_path() {
    let mut init = Init::start_with(
        vec![sh(
            "svc",
            "trap 'exit 0' TERM; while true; do sleep 0.1; done",
        )],
        &["--panic-after-boot", "--fatal", "halt"],
    );
    let st = init.wait_exit(SECS(30));
    let log = init.log();
    assert!(log.contains("injected panic after boot"), "{log}");
    assert!(log.contains("fatal: PID 1 panicked"), "{log}");
    assert!(log.contains("reached shutdown: halt"), "{log}");
    assert_eq!(
        signal_of(st),
        Some(Signal::SIGINT as i32),
        "halt ends the namespace with SIGINT: {st:?}\n{log}"
    );
}

#[test]
fn a_failing_optional_mount_warns_and_boot_goes_on() {
    let init = Init::start_with(
        vec![sh("svc", "exec sleep 1000")],
        &["--fail-step", "mount-tmp"],
    );
    init.wait_state("svc", "ready", SECS(20));
    let log = init.log();
    assert!(
        log.contains(
            "WARN [mount-tmp] optional step failed, boot goes on: mount sysctr-injected-failure on"
        ),
        "{log}"
    );
    assert!(
        log.contains("No such device"),
        "the real mount(2) error is shown: {log}"
    );
}

#[test]
fn a_failing_required_mount_takes_the_fatal_path() {
    let mut init = Init::start_with(
        vec![sh("svc", "exec sleep 1000")],
        &["--fail-step", "mount-proc"],
    );
    let st = init.wait_exit(SECS(30));
    let log = init.log();
    assert!(
        log.contains("ERROR [mount-proc] required step failed"),
        "{log}"
    );
    assert!(
        log.contains("fatal: required boot step mount-proc failed"),
        "{log}"
    );
    assert!(log.contains("reached shutdown: reboot"), "{log}");
    assert!(
        !log.contains("[svc] starting"),
        "no service starts after a required step failed: {log}"
    );
    assert_eq!(signal_of(st), Some(Signal::SIGHUP as i32), "{log}");
}

#[test]
fn subreaper_mode_runs_services_and_exits_on_sigterm() {
    let mut init = Init::start_subreaper(vec![sh(
        "svc",
        "trap 'exit 0' TERM; while true; do sleep 0.1; done",
    )]);
    init.wait_state("svc", "ready", SECS(20));
    let pid = init.host_pid();
    let st = init.signal_and_wait(libc::SIGTERM, SECS(30));
    assert_eq!(st.code(), Some(0), "{}", init.log());
    assert!(
        descendants(pid).is_empty(),
        "nothing survives the subreaper"
    );
    assert!(init.log().contains("reached shutdown: reboot"));
}

//! Supervision under failure, as root, with the real init: start failures go through the
//! restart policy, shutdown stops services in parallel (dependents first, each killed at
//! its own timeout), the notify socket works for a non-root service and only for it, and
//! a flood of control clients locks nobody out.

use serde_json::json;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use sysctr_tests::*;

/// Runs the CLI with a deadline, so a PID 1 that stopped answering fails the test
/// instead of hanging it.
fn cli_within(init: &Init, args: &[&str], timeout: Duration) -> Option<std::process::Output> {
    let mut child = Command::new(cli_bin())
        .env("SYSCTR_SOCKET", init.socket())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_service_whose_root_appears_later_is_restarted_per_policy() {
    let parent = tempfile::tempdir().unwrap();
    let late_root = parent.path().join("late-root");
    let init = Init::start(vec![with(
        sh("late", "exec sleep 1000"),
        json!({"root": late_root.display().to_string(),
               "restart": {"backoff_initial_ms": 300, "backoff_max_ms": 600}}),
    )]);
    let s = init.wait_state("late", "backoff", SECS(20));
    assert!(
        s["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{s:#}"
    );
    std::thread::sleep(Duration::from_millis(700));
    assert_ne!(
        init.service("late")["state"],
        "failed",
        "a start failure is retried"
    );
    std::os::unix::fs::symlink(rootfs(), &late_root).unwrap();
    let s = init.wait_state("late", "ready", SECS(20));
    assert!(s["restarts"].as_u64().unwrap() >= 1, "{s:#}");
}

#[test]
fn poweroff_takes_the_longest_stop_timeout_not_the_sum() {
    // `sleep` as a pid namespace's init ignores SIGTERM: each service needs its SIGKILL.
    let stubborn = |name: &str| {
        with(
            sh(name, "exec sleep 1000"),
            json!({"stop": {"timeout_secs": 3}}),
        )
    };
    let mut init = Init::start(vec![
        stubborn("a"),
        stubborn("b"),
        with(stubborn("c"), json!({"depends_on": ["a"]})),
    ]);
    for s in ["a", "b", "c"] {
        init.wait_state(s, "ready", SECS(20));
    }
    let t = Instant::now();
    init.cli_ok(&["poweroff"]);
    init.wait_exit(SECS(30));
    let took = t.elapsed();
    let log = init.log();
    assert!(
        took < Duration::from_millis(6500),
        "poweroff took {took:?}: three 3 s stop timeouts in a row, not in parallel\n{log}"
    );
    assert!(
        took >= Duration::from_secs(3),
        "the stop timeout was honoured: {took:?}"
    );
    let pos = |s: &str| {
        log.find(&format!("[{s}] shutdown: sending"))
            .unwrap_or(usize::MAX)
    };
    assert!(
        pos("c") < pos("a"),
        "c depends on a, so c stops first:\n{log}"
    );
    assert!(log.contains("reached shutdown: poweroff"), "{log}");
}

/// The milliseconds init reports for stopping the services ("services stopped in N ms").
fn stopped_in_ms(log: &str) -> u64 {
    harness::init::services_stopped_ms(log)
        .unwrap_or_else(|| panic!("no 'services stopped in' line:\n{log}"))
}

#[test]
fn poweroff_kills_each_stubborn_service_at_its_own_timeout_all_at_once() {
    // Three independent services that ignore SIGTERM (`sleep` as a pid namespace's init),
    // with stop timeouts of 1, 2 and 3 s: stopped together, the poweroff takes the longest
    // (3 s), not the sum (6 s); each is killed at its own timeout.
    let stubborn = |name: &str, secs: u64| {
        with(
            sh(name, "exec sleep 1000"),
            json!({"stop": {"timeout_secs": secs}}),
        )
    };
    let mut init = Init::start(vec![
        stubborn("one", 1),
        stubborn("two", 2),
        stubborn("three", 3),
    ]);
    for s in ["one", "two", "three"] {
        init.wait_state(s, "ready", SECS(20));
    }
    let t = Instant::now();
    init.cli_ok(&["poweroff"]);
    init.wait_exit(SECS(30));
    // wait_exit lets the output readers drain for 100 ms after the exit.
    let took = t.elapsed().saturating_sub(Duration::from_millis(100));
    let log = init.log();
    let stopped = stopped_in_ms(&log);
    assert!(
        (3000..3500).contains(&stopped),
        "services stopped in {stopped} ms, not the longest timeout (3 s) + < 0.5 s:\n{log}"
    );
    assert!(
        took < Duration::from_millis(3500) && took > Duration::from_secs(3),
        "poweroff took {took:?}: not the longest stop timeout (3 s) + < 0.5 s\n{log}"
    );
    let at = |s: &str| position_in(&log, s);
    // All three got their stop signal before the first SIGKILL (one wave, not one by one).
    let first_kill = at("did not stop in time: SIGKILL");
    for s in ["one", "two", "three"] {
        assert!(
            at(&format!("[{s}] shutdown: sending SIGTERM")) < first_kill,
            "{s} was signalled only after a SIGKILL:\n{log}"
        );
    }
    assert!(
        at("[one] did not stop in time: SIGKILL") < at("[two] did not stop in time: SIGKILL"),
        "one (1 s) is killed before two (2 s):\n{log}"
    );
    assert!(
        at("[two] exited") < at("[three] exited"),
        "two (2 s) is gone before three (3 s):\n{log}"
    );
    assert!(log.contains("reached shutdown: poweroff"), "{log}");
}

#[test]
fn poweroff_signals_a_dependency_only_once_its_dependent_is_gone() {
    // web depends on db. web ignores SIGTERM (1 s timeout, then SIGKILL); db exits on
    // SIGTERM. db may get its signal only after web has exited, and then has its own
    // timeout: it exits by itself, no SIGKILL.
    let mut init = Init::start(vec![
        with(
            sh("db", "trap 'exit 0' TERM; sleep 1000 & wait"),
            json!({"stop": {"timeout_secs": 2}}),
        ),
        with(
            sh("web", "exec sleep 1000"),
            json!({"depends_on": ["db"], "stop": {"timeout_secs": 1}}),
        ),
    ]);
    for s in ["db", "web"] {
        init.wait_state(s, "ready", SECS(20));
    }
    let t = Instant::now();
    init.cli_ok(&["poweroff"]);
    init.wait_exit(SECS(30));
    let took = t.elapsed();
    let log = init.log();
    let at = |s: &str| position_in(&log, s);
    assert!(
        at("[web] shutdown: sending SIGTERM") < at("[web] did not stop in time: SIGKILL"),
        "{log}"
    );
    assert!(
        at("[web] exited") < at("[db] shutdown: sending SIGTERM"),
        "db was signalled while web, which depends on it, still ran:\n{log}"
    );
    assert!(
        at("[db] shutdown: sending SIGTERM") < at("[db] exited: stopped (exit 0"),
        "db exits by itself on SIGTERM:\n{log}"
    );
    assert!(!log.contains("[db] did not stop in time"), "{log}");
    let stopped = stopped_in_ms(&log);
    assert!(
        (1000..1500).contains(&stopped),
        "web's 1 s timeout, then db at once: {stopped} ms\n{log}"
    );
    assert!(
        took < Duration::from_secs(5),
        "poweroff took {took:?}\n{log}"
    );
}

#[test]
fn a_non_root_notify_service_becomes_ready() {
    let init = Init::start(vec![with(
        sh(
            "nobody-notify",
            "sleep 0.2; sysctr notify --ready --status up; exec sleep 1000",
        ),
        json!({"user": {"uid": 65534, "gid": 65534},
               "readiness": {"kind": "notify", "timeout_secs": 10}}),
    )]);
    let s = init.wait_state("nobody-notify", "ready", SECS(20));
    assert_eq!(s["status_text"], "up", "{s:#}");
}

#[test]
fn a_forged_ready_from_another_cgroup_is_ignored() {
    let init = Init::start(vec![
        with(
            sh("victim", "exec sleep 1000"),
            json!({"readiness": {"kind": "notify", "timeout_secs": 6}}),
        ),
        // Another service that can reach the victim's socket file sends READY for it. Only a
        // privileged service may bind PID 1's notify directory at all (the manifest refuses
        // it otherwise, see the next test); the cgroup check is the second line behind that.
        with(
            sh(
                "forger",
                "sleep 0.5; NOTIFY_SOCKET=/forge/victim.sock sysctr notify --ready --status forged; echo sent; exec sleep 1000",
            ),
            json!({"privileged": true,
                   "mounts": [{"source": "@RUN@/notify", "destination": "/forge", "type": "bind"}]}),
        ),
    ]);
    init.wait_state("forger", "ready", SECS(20));
    let sent = wait_until(SECS(10), || {
        init.cli_ok(&["logs", "forger"]).contains("sent")
    });
    assert!(sent, "the forger sent its datagram:\n{}", init.log());
    std::thread::sleep(Duration::from_millis(500));
    let v = init.service("victim");
    assert_eq!(
        v["state"], "running",
        "a READY from another cgroup made it ready: {v:#}"
    );
    assert_ne!(v["status_text"], "forged", "{v:#}");
    assert!(
        init.log()
            .contains("[victim] notify: ignored a datagram from pid"),
        "{}",
        init.log()
    );
    // Its own readiness timeout still applies.
    init.wait_state("victim", "failed", SECS(20));
}

#[test]
fn a_service_that_is_not_privileged_may_not_bind_the_notify_directory() {
    let init = Init::start(vec![
        sh("bystander", "exec sleep 1000"),
        with(
            sh("forger", "exec sleep 1000"),
            json!({"mounts": [{"source": "@RUN@/notify", "destination": "/forge", "type": "bind"}]}),
        ),
    ]);
    let f = init.wait_state("forger", "failed", SECS(30));
    let err = f["last_error"].as_str().unwrap_or_default();
    assert!(
        err.contains("mounts[0].source")
            && err.contains("may not be mounted into a service that is not privileged"),
        "the refusal names the field and the reason: {f:#}"
    );
    // The refusal is the forger's alone.
    init.wait_state("bystander", "ready", SECS(10));
}

/// Not a test on its own: the flooding peer of the test below, run as a non-root member
/// of the control group (it re-executes this test binary with `--ignored`).
#[test]
#[ignore]
fn flood_helper() {
    let Ok(path) = std::env::var("SYSCTR_FLOOD_SOCKET") else {
        return;
    };
    use nix::sys::socket::{
        connect, sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType,
        UnixAddr,
    };
    use std::os::fd::{AsRawFd, IntoRawFd};
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        hard.min(65536),
        hard,
    )
    .unwrap();
    let addr = UnixAddr::new(path.as_str()).unwrap();
    let null = std::fs::File::open("/dev/null").unwrap();
    let payload: Vec<i32> = (0..200)
        .map(|_| null.try_clone().unwrap().into_raw_fd())
        .collect();
    let mut held = Vec::new();
    let mut connected = 0;
    for i in 0..2000 {
        let s = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        if connect(s.as_raw_fd(), &addr).is_err() {
            held.push(s);
            continue;
        }
        connected += 1;
        // Half a frame header, with a load of descriptors on the first 200.
        let iov = [std::io::IoSlice::new(&[0u8, 0])];
        let cmsg = [ControlMessage::ScmRights(&payload)];
        let cmsgs: &[ControlMessage] = if i < 200 { &cmsg } else { &[] };
        let _ = sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None);
        held.push(s);
    }
    println!("FLOODED {connected}");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(held);
}

#[test]
fn a_client_flood_locks_out_neither_root_nor_supervision() {
    let gid = 4343u32;
    // As at boot: PID 1 starts with 1024 descriptors unless it raises the limit.
    let init = Init::start_with_boot_limits(
        vec![with(
            sh("crasher", "sleep 0.2; exit 1"),
            json!({"restart": {"backoff_initial_ms": 100, "backoff_max_ms": 200,
                               "crash_loop_restarts": 1000}}),
        )],
        &["--control-gid", &gid.to_string()],
    );
    init.wait_service("crasher", SECS(20), "restarted", |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    nix::unistd::chown(&init.socket(), None, Some(nix::unistd::Gid::from_raw(gid))).unwrap();
    let mut flood = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "flood_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SYSCTR_FLOOD_SOCKET", init.socket())
        .uid(4343)
        .gid(gid)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(flood.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        use std::io::BufRead;
        if out.read_line(&mut line).unwrap() == 0 || line.contains("FLOODED") {
            break;
        }
    }
    let connected: usize = line
        .split("FLOODED ")
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(connected >= 1000, "the flood helper connected: {line:?}");
    // Every look during the flood has a deadline: a wedged PID 1 fails, not hangs.
    let restarts = || -> Option<u64> {
        let out = cli_within(&init, &["ps", "--json"], SECS(5))?;
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
        list.iter().find(|s| s["name"] == "crasher")?["restarts"].as_u64()
    };
    let before = restarts().unwrap_or(u64::MAX);
    let ps = cli_within(&init, &["ps"], SECS(10));
    let ok = ps.as_ref().is_some_and(|o| o.status.success());
    let restarted =
        before != u64::MAX && wait_until(SECS(10), || restarts().is_some_and(|n| n >= before + 3));
    drop(flood.stdin.take());
    let _ = flood.wait();
    assert!(ok, "root's ps during the flood: {ps:?}\n{}", init.log());
    assert!(
        restarted,
        "the crash-looping service kept restarting:\n{}",
        init.log()
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", init.host_pid())).unwrap();
    let nofile: Vec<u64> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // 65536, or all the hard limit allows where it cannot be raised (a container host).
    assert!(
        nofile.len() == 2 && nofile[0] == nofile[1] && nofile[0] > 1024,
        "PID 1 raised its descriptor limit: {nofile:?}\n{limits}"
    );
}

/// Where `text` first stands in init's log (the order of what init did); panics with the
/// log when it is not there.
fn position_in(log: &str, text: &str) -> usize {
    log.find(text)
        .unwrap_or_else(|| panic!("no {text:?} in the log:\n{log}"))
}

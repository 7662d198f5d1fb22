//! Services as containers, as root: ordering, readiness, restart policy, limits, logs,
//! leaks and bad input, with real containers from a busybox root filesystem.

use serde_json::json;
use std::time::{Duration, Instant};
use sysctr_tests::*;

fn ready_ms(s: &serde_json::Value) -> u64 {
    s["ready_boot_ms"].as_u64().unwrap_or(u64::MAX)
}
fn started_ms(s: &serde_json::Value) -> u64 {
    s["started_boot_ms"].as_u64().unwrap_or(0)
}

#[test]
fn dependency_order_with_each_readiness_kind() {
    let services = vec![
        // file: ready when the path appears inside the container
        with(sh("a-file", "sleep 0.3; touch /tmp/ready; exec sleep 1000"), json!({"readiness": {"kind": "file", "path": "/tmp/ready", "timeout_secs": 10}})),
        // tcp: ready when the port accepts, in the container's own network namespace
        with(sh("b-tcp", "sleep 0.3; exec nc -ll -p 7777 -e /bin/cat"), json!({"depends_on": ["a-file"], "readiness": {"kind": "tcp", "port": 7777, "timeout_secs": 10}})),
        // exec: ready when a probe command inside the container exits 0
        with(sh("c-exec", "sleep 0.3; touch /tmp/ok; exec sleep 1000"), json!({"depends_on": ["b-tcp"], "readiness": {"kind": "exec", "command": ["/bin/test", "-f", "/tmp/ok"], "timeout_secs": 10}})),
        // notify: READY=1 over $NOTIFY_SOCKET (sysctr notify is the systemd-notify of sysctr)
        with(sh("d-notify", "sleep 0.3; sysctr notify --status 'warming up'; sleep 0.2; sysctr notify --ready --status serving; exec sleep 1000"), json!({"depends_on": ["c-exec"], "readiness": {"kind": "notify", "timeout_secs": 10}})),
        with(sh("e-started", "exec sleep 1000"), json!({"depends_on": ["d-notify"]})),
    ];
    let init = Init::start(services);
    let e = init.wait_state("e-started", "ready", SECS(40));
    let names = ["a-file", "b-tcp", "c-exec", "d-notify"];
    let st: Vec<serde_json::Value> = names.iter().map(|n| init.service(n)).collect();
    for s in &st {
        assert_eq!(s["state"], "ready", "{s:#}");
    }
    for w in st.windows(2) {
        assert!(
            started_ms(&w[1]) >= ready_ms(&w[0]),
            "{} started before {} was ready:\n{:#}\n{:#}",
            w[1]["name"],
            w[0]["name"],
            w[1],
            w[0]
        );
        // each readiness kind waited for its check (the 0.3 s sleep), not just the start
        assert!(
            ready_ms(&w[0]) >= started_ms(&w[0]) + 250,
            "{} ready too early: {:#}",
            w[0]["name"],
            w[0]
        );
    }
    assert!(started_ms(&e) >= ready_ms(&st[3]));
    assert_eq!(st[3]["status_text"], "serving");
}

#[test]
fn independent_services_start_in_parallel() {
    let slow = |n: &str| {
        with(
            sh(n, "sleep 1; touch /tmp/up; exec sleep 1000"),
            json!({"readiness": {"kind": "file", "path": "/tmp/up"}}),
        )
    };
    let init = Init::start(vec![slow("p1"), slow("p2"), slow("p3")]);
    for n in ["p1", "p2", "p3"] {
        init.wait_state(n, "ready", SECS(30));
    }
    let st: Vec<u64> = ["p1", "p2", "p3"]
        .iter()
        .map(|n| started_ms(&init.service(n)))
        .collect();
    let spread = st.iter().max().unwrap() - st.iter().min().unwrap();
    assert!(
        spread < 900,
        "independent services waited for each other: starts {st:?}"
    );
}

#[test]
fn restart_policies() {
    let init = Init::start(vec![
        with(
            sh("always", "exit 0"),
            json!({"restart": {"policy": "always", "backoff_initial_ms": 50, "crash_loop_restarts": 1000}}),
        ),
        with(
            sh("onfail-ok", "exit 0"),
            json!({"restart": {"policy": "on-failure"}}),
        ),
        with(
            sh("onfail-bad", "exit 3"),
            json!({"restart": {"policy": "on-failure", "backoff_initial_ms": 50, "crash_loop_restarts": 1000}}),
        ),
        with(
            sh("never", "exit 4"),
            json!({"restart": {"policy": "never"}}),
        ),
    ]);
    init.wait_service("always", SECS(20), "restarted 3 times", |s| {
        s["restarts"].as_u64() >= Some(3)
    });
    init.wait_service("onfail-bad", SECS(20), "restarted 3 times", |s| {
        s["restarts"].as_u64() >= Some(3)
    });
    let ok = init.wait_state("onfail-ok", "exited", SECS(20));
    assert_eq!(ok["restarts"], 0);
    assert_eq!(ok["last_exit"], json!({"code": 0}));
    let never = init.wait_state("never", "failed", SECS(20));
    assert_eq!(never["restarts"], 0);
    assert_eq!(never["last_exit"], json!({"code": 4}));
    assert!(
        never["last_error"].as_str().unwrap().contains("exit 4"),
        "{never:#}"
    );
}

#[test]
fn backoff_schedule_and_crash_loop_limit() {
    let init = Init::start(vec![
        with(
            sh("crasher", "echo crashing; exit 1"),
            json!({"restart": {"policy": "always", "backoff_initial_ms": 200, "backoff_max_ms": 400, "crash_loop_restarts": 4, "crash_loop_window_secs": 60}}),
        ),
        sh("bystander", "exec sleep 1000"),
    ]);
    let failed = init.wait_state("crasher", "failed", SECS(30));
    let log = init.log();
    // first restart at once, then 200 ms, doubling to the 400 ms cap
    let delays: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[crasher] backoff"))
        .collect();
    assert!(
        log.contains("[crasher] pending: exit 1 after"),
        "the first restart is immediate:\n{log}"
    );
    assert!(
        delays.len() == 3
            && delays[0].ends_with("restart in 200 ms")
            && delays[1].ends_with("restart in 400 ms")
            && delays[2].ends_with("restart in 400 ms"),
        "{delays:#?}\n{log}"
    );
    assert_eq!(failed["restarts"], 4);
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .starts_with("crash loop: 4 restarts within 60 s"),
        "{failed:#}"
    );
    assert_eq!(init.service("bystander")["state"], "ready");
    // Failed until started by hand
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(init.service("crasher")["state"], "failed");
    init.cli_ok(&["start", "crasher"]);
    init.wait_service("crasher", SECS(10), "restarted by hand", |s| {
        s["state"] != "failed" || s["started_boot_ms"] != failed["started_boot_ms"]
    });
}

#[test]
fn sigkill_of_a_service_restarts_it() {
    let init = Init::start(vec![sh("victim", "exec sleep 1000")]);
    let before = init.wait_state("victim", "ready", SECS(20));
    let host = init
        .host_pid_of(before["pid"].as_i64().unwrap())
        .expect("host pid of the service");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(host),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let after = init.wait_service("victim", SECS(20), "restarted", |s| {
        s["restarts"] == 1 && s["state"] == "ready"
    });
    assert_eq!(after["last_exit"], json!({"signal": 9}));
    assert_ne!(after["pid"], before["pid"]);
    assert!(zombies_below(init.host_pid()).is_empty());
}

#[test]
fn onboot_failure_continue_records_and_boots_on() {
    let init = Init::start(vec![
        with(
            sh("first", "echo first; exit 2"),
            json!({"kind": "onboot", "on_failure": "continue"}),
        ),
        with(
            sh("second", "echo second; exit 0"),
            json!({"kind": "onboot"}),
        ),
        sh("svc", "exec sleep 1000"),
    ]);
    init.wait_state("svc", "ready", SECS(20));
    let first = init.service("first");
    assert_eq!(first["state"], "failed");
    assert_eq!(first["last_exit"], json!({"code": 2}));
    assert_eq!(init.service("second")["state"], "exited");
    let log = init.log();
    assert!(log.find("[first] failed").unwrap() < log.find("[second] starting").unwrap());
    assert!(
        log.find("[second] exited").unwrap() < log.find("[svc] starting").unwrap(),
        "services wait for onboot tasks:\n{log}"
    );
}

#[test]
fn onboot_failure_halt_takes_the_fatal_path() {
    let mut init = Init::start_with(
        vec![
            with(
                sh("must", "exit 5"),
                json!({"kind": "onboot", "on_failure": "halt"}),
            ),
            sh("svc", "exec sleep 1000"),
        ],
        &["--fatal", "halt"],
    );
    let st = init.wait_exit(SECS(30));
    let log = init.log();
    assert!(
        log.contains("fatal: onboot task must failed: exit 5"),
        "{log}"
    );
    assert!(log.contains("reached shutdown: halt"), "{log}");
    assert!(!log.contains("[svc] starting"), "{log}");
    assert_eq!(signal_of(st), Some(libc::SIGINT));
}

#[test]
fn memory_limit_oom_kills_only_that_service() {
    let init = Init::start(vec![
        with(
            sh(
                "hog",
                "a=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; while true; do a=\"$a$a\"; done",
            ),
            json!({"resources": {"memory_max": "16M"}, "restart": {"policy": "never"}}),
        ),
        sh("bystander", "exec sleep 1000"),
    ]);
    let hog = init.wait_state("hog", "failed", SECS(60));
    assert_eq!(hog["last_exit"], json!({"signal": 9}), "{hog:#}");
    assert!(
        hog["last_error"]
            .as_str()
            .unwrap()
            .contains("out of memory"),
        "{hog:#}"
    );
    assert_eq!(init.service("bystander")["state"], "ready");
    assert!(init.cli(&["ps"]).status.success(), "init still answers");
}

#[test]
fn pids_limit_stops_a_fork_bomb() {
    let init = Init::start(vec![
        with(
            sh(
                "bomb",
                "sh -c 'while true; do sleep 1000 & done'; echo bomb defused; exec sleep 1000",
            ),
            json!({"resources": {"pids_max": 20}}),
        ),
        sh("bystander", "exec sleep 1000"),
    ]);
    init.wait_state("bomb", "ready", SECS(20));
    // busybox sh reports the failed fork and retries with a growing delay
    let hit = wait_until(SECS(20), || {
        let logs = init.cli_ok(&["logs", "bomb"]);
        logs.contains("can't fork") || logs.contains("Resource temporarily unavailable")
    });
    assert!(
        hit,
        "forks beyond pids.max never failed:\n{}",
        init.cli_ok(&["logs", "bomb"])
    );
    let pid = init
        .host_pid_of(init.service("bomb")["pid"].as_i64().unwrap())
        .unwrap();
    let in_container = descendants(pid).len() + 1;
    assert!(
        in_container <= 20,
        "{in_container} processes despite pids.max 20"
    );
    let bomb = init.service("bomb");
    assert_eq!(
        (bomb["state"].as_str(), bomb["restarts"].as_u64()),
        (Some("ready"), Some(0)),
        "{bomb:#}"
    );
    assert_eq!(init.service("bystander")["state"], "ready");
}

#[test]
fn a_flooding_service_does_not_stall_another() {
    let init = Init::start(vec![
        sh(
            "flood",
            "exec yes 'flooding the log pipe as fast as possible'",
        ),
        with(
            sh("late", "sleep 0.5; touch /tmp/up; exec sleep 1000"),
            json!({"readiness": {"kind": "file", "path": "/tmp/up", "timeout_secs": 10}}),
        ),
    ]);
    let late = init.wait_state("late", "ready", SECS(20));
    assert!(
        ready_ms(&late) - started_ms(&late) < 3000,
        "readiness stalled by the flood: {late:#}"
    );
    let t = Instant::now();
    init.cli_ok(&["ps"]);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "ps took {:?} during the flood",
        t.elapsed()
    );
    let tail = init.cli_ok(&["logs", "-n", "3", "flood"]);
    assert_eq!(tail.lines().count(), 3, "{tail}");
}

fn count_entries(p: &std::path::Path) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn start_stop_cycles_leak_nothing() {
    let init = Init::start(vec![with(
        sh(
            "cycler",
            "trap 'exit 0' TERM; while true; do sleep 0.05; done",
        ),
        json!({"restart": {"policy": "never"}}),
    )]);
    init.wait_state("cycler", "ready", SECS(20));
    let pid = init.host_pid();
    let fd_list = || {
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .map(|e| {
                let target = std::fs::read_link(e.path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                format!("{} -> {target}", e.file_name().to_string_lossy())
            })
            .collect();
        v.sort();
        v
    };
    let mounts = || {
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .unwrap()
            .lines()
            .count()
    };
    let state = init.dir.path().join("run");
    let cycle = || {
        init.cli_ok(&["stop", "cycler"]);
        init.wait_state("cycler", "exited", SECS(10));
        init.cli_ok(&["start", "cycler"]);
        init.wait_state("cycler", "ready", SECS(10));
    };
    // The first cycle may open what is then kept for good; every cycle after it must leave
    // descriptors, mounts, state dirs and cgroups where they were.
    cycle();
    let (fd0, m0) = (fd_list(), mounts());
    let cycles: usize = std::env::var("SYSCTR_LEAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    for _ in 0..cycles {
        cycle();
    }
    // The connection of the last CLI call may still be open for a moment: PID 1 closes it
    // when its event loop reads the client's end. A leak does not go away.
    let mut fd1 = fd_list();
    if fd1.len() > fd0.len() {
        wait_until(SECS(5), || {
            fd1 = fd_list();
            fd1.len() <= fd0.len()
        });
    }
    assert!(
        fd1.len() <= fd0.len(),
        "file descriptors leaked over {cycles} cycles:\nbefore {fd0:#?}\nafter {fd1:#?}"
    );
    // A leak is growth; the host may unmount something of its own meanwhile (init's mount
    // namespace receives the host's propagation), which is not init's doing.
    let m1 = mounts();
    assert!(
        m1 <= m0,
        "mounts leaked over {cycles} cycles: {m0} before, {m1} after"
    );
    assert_eq!(
        count_entries(&state.join("containers")),
        1,
        "one container state dir"
    );
    assert_eq!(count_entries(&state.join("bundles")), 1, "one bundle");
    let cg = std::path::Path::new("/sys/fs/cgroup/memory").join(&init.cgroup_prefix);
    let cg = if cg.exists() {
        cg
    } else {
        std::path::Path::new("/sys/fs/cgroup").join(&init.cgroup_prefix)
    };
    let dirs = std::fs::read_dir(&cg)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .count();
    assert_eq!(dirs, 1, "exactly one service cgroup under {}", cg.display());
}

#[test]
fn bad_input_fails_one_service_and_the_others_run() {
    let init = Init::start(vec![
        with(
            sh("no-image", "true"),
            json!({"root": "/nonexistent/rootfs"}),
        ),
        with(
            sh("no-command", "true"),
            json!({"args": ["/bin/does-not-exist"]}),
        ),
        with(
            sh("bad-mount", "true"),
            json!({"mounts": [{"source": "/nonexistent-source", "destination": "/mnt"}]}),
        ),
        with(
            sh("never-ready", "exec sleep 1000"),
            json!({"readiness": {"kind": "file", "path": "/tmp/never", "timeout_secs": 1}, "restart": {"policy": "never"}}),
        ),
        json!({"name": "typo", "root": "/x", "args": ["/bin/true"], "restat": {}}),
        sh("good", "exec sleep 1000"),
    ]);
    init.wait_state("good", "ready", SECS(20));
    let err = |n: &str| {
        init.wait_state(n, "failed", SECS(20))["last_error"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // A start failure goes through the restart policy; after the crash-loop limit the
    // error still names what is wrong.
    let e = err("no-image");
    assert!(
        e.contains("image root /nonexistent/rootfs does not exist or is not a directory"),
        "{e}"
    );
    let e = err("no-command");
    assert!(
        e.contains("does-not-exist"),
        "the error names the command: {e}"
    );
    let e = err("bad-mount");
    assert!(!e.is_empty() && e.contains("create container"), "{e}");
    assert_eq!(err("never-ready"), "not ready after 1 s (file check)");
    let e = err("typo");
    assert!(
        e.contains("manifest.json: service \"typo\": restat: unknown field"),
        "{e}"
    );
    assert_eq!(init.service("good")["state"], "ready");
    assert!(
        init.log().contains("boot complete: 1 ready, 5 failed"),
        "{}",
        init.log()
    );
}

#[test]
fn containers_start_least_privileged() {
    let init = Init::start(vec![
        sh("plain", "exec sleep 1000"),
        with(
            sh("netadmin", "exec sleep 1000"),
            json!({"capabilities": ["CAP_NET_ADMIN"], "namespaces": {"network": "host"}}),
        ),
        with(
            sh("admin", "exec sleep 1000"),
            json!({"capabilities": ["CAP_SYS_ADMIN"]}),
        ),
        with(
            sh("runtime", "exec sleep 1000"),
            json!({"privileged": true, "namespaces": {"cgroup": "host"}}),
        ),
    ]);
    init.wait_state("plain", "ready", SECS(20));
    init.wait_state("runtime", "ready", SECS(20));
    init.wait_state("netadmin", "ready", SECS(20));
    init.wait_state("admin", "ready", SECS(20));
    // The service's own process, as PID 1 sees it.
    let status = |name: &str| {
        let pid = init
            .host_pid_of(init.service(name)["pid"].as_i64().unwrap())
            .unwrap();
        std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap()
    };
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let plain = status("plain");
    assert_eq!(field(&plain, "NoNewPrivs:"), "1", "{plain}");
    assert_eq!(
        field(&plain, "Seccomp:"),
        "2",
        "a seccomp filter is installed:\n{plain}"
    );
    // CAP_CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP NET_BIND_SERVICE
    let default_caps: u64 = [0, 1, 3, 4, 5, 6, 7, 8, 10].iter().map(|b| 1u64 << b).sum();
    assert_eq!(
        u64::from_str_radix(&field(&plain, "CapBnd:"), 16).unwrap(),
        default_caps
    );
    assert_eq!(
        u64::from_str_radix(&field(&plain, "CapEff:"), 16).unwrap(),
        default_caps
    );
    let netadmin = status("netadmin");
    assert_eq!(
        u64::from_str_radix(&field(&netadmin, "CapEff:"), 16).unwrap(),
        default_caps | 1 << 12
    );
    // read-only root, own hostname, private network with only loopback (up)
    let out = init.cli(&["exec", "plain", "--", "/bin/touch", "/should-fail"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the root filesystem is read-only"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{out:?}"
    );
    assert_eq!(
        init.cli_ok(&["exec", "plain", "--", "/bin/hostname"])
            .trim(),
        "plain"
    );
    let links = init.cli_ok(&["exec", "plain", "--", "/bin/ip", "-o", "link"]);
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    // a process exec'd into the container is under the same filter
    let own = init.cli_ok(&["exec", "plain", "--", "/bin/cat", "/proc/self/status"]);
    assert_eq!(
        field(&own, "Seccomp:"),
        "2",
        "exec'd processes get the container's seccomp filter:\n{own}"
    );
    assert_eq!(field(&own, "NoNewPrivs:"), "1");
    // seccomp refuses unshare(2) unless the service holds CAP_SYS_ADMIN: a new user
    // namespace needs no capability, so only the filter stands in the way.
    let out = init.cli(&["exec", "plain", "--", "/bin/unshare", "-U", "/bin/true"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Operation not permitted"),
        "{out:?}"
    );
    let out = init.cli(&["exec", "admin", "--", "/bin/unshare", "-U", "/bin/true"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "with CAP_SYS_ADMIN the filter allows unshare: {out:?}"
    );
    // `privileged` lifts all of it: no filter, every capability, setuid works, and with
    // the host cgroup namespace the service sees where it sits in the whole tree.
    let runtime = status("runtime");
    assert_eq!(field(&runtime, "Seccomp:"), "0", "{runtime}");
    assert_eq!(field(&runtime, "NoNewPrivs:"), "0", "{runtime}");
    let eff = u64::from_str_radix(&field(&runtime, "CapEff:"), 16).unwrap();
    for cap in [12, 16, 19, 21, 25] {
        // NET_ADMIN SYS_MODULE SYS_PTRACE SYS_ADMIN SYS_TIME
        assert!(eff & 1 << cap != 0, "capability {cap} missing: {runtime}");
    }
    let own = init.cli_ok(&["exec", "runtime", "--", "/bin/cat", "/proc/self/status"]);
    assert_eq!(field(&own, "Seccomp:"), "0", "{own}");
    init.cli_ok(&[
        "exec",
        "runtime",
        "--",
        "/bin/mount",
        "-t",
        "tmpfs",
        "none",
        "/tmp",
    ]);
    let cg = init.cli_ok(&["exec", "runtime", "--", "/bin/cat", "/proc/self/cgroup"]);
    assert!(cg.contains("/runtime"), "host cgroup namespace:\n{cg}");
    let cg = init.cli_ok(&["exec", "plain", "--", "/bin/cat", "/proc/self/cgroup"]);
    assert!(!cg.contains("/plain"), "private cgroup namespace:\n{cg}");
}

#[test]
fn a_hung_container_start_is_bounded() {
    let init = Init::start_with(
        vec![
            with(
                sh("hangs", "exec sleep 1000"),
                json!({"annotations": {"org.sysctr.test.hang-before-start": "true"},
                       "restart": {"policy": "never"}}),
            ),
            sh("fine", "exec sleep 1000"),
        ],
        &["--start-timeout", "2"],
    );
    let hung = init.wait_state("hangs", "failed", SECS(20));
    assert_eq!(
        hung["last_error"],
        "create container: the container did not come up within 2 s (start timed out)",
        "{hung:#}"
    );
    init.wait_state("fine", "ready", SECS(20));
    // what the hung start left behind is killed and reaped
    let clean = wait_until(SECS(10), || {
        descendants(init.host_pid()).len() == 1 && zombies_below(init.host_pid()).is_empty()
    });
    assert!(clean, "left behind: {:?}", descendants(init.host_pid()));
    // and init keeps serving
    assert!(init.cli_ok(&["ps"]).contains("fine"));
}

#[test]
fn a_restart_kills_what_the_old_run_left_in_its_cgroup() {
    // In the host pid namespace nothing kills a service's children when it exits: they stay
    // in its cgroup, and the restart must not leave them running beside the new run.
    let init = Init::start(vec![with(
        sh("leaky", "sleep 1000 & echo child $! >&2; sleep 0.3; exit 3"),
        json!({"namespaces": {"pid": "host"},
               "restart": {"policy": "on-failure", "backoff_initial_ms": 0}}),
    )]);
    init.wait_service("leaky", SECS(20), "restarted", |s| {
        s["restarts"].as_u64() >= Some(1)
    });
    // Every `sleep 1000` that ran is gone but the current run's (if it already started one).
    let clean = wait_until(SECS(10), || {
        let sleepers: Vec<i32> = descendants(init.host_pid())
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.split('\0').take(2).eq(["sleep", "1000"]))
            })
            .collect();
        sleepers.len() <= 1
    });
    assert!(
        clean,
        "old run's child survived: {:?}",
        descendants(init.host_pid())
    );
    assert!(
        wait_until(SECS(5), || zombies_below(init.host_pid()).is_empty()),
        "zombies: {:?}",
        zombies_below(init.host_pid())
    );
}

/// Finding 4 of issue 16: hung starts are spread over turns of the event loop, so PID 1
/// answers between them. Five starts that each hang for the whole start timeout (2 s) took
/// one schedule pass, 10 s in which nothing was served; now a request waits for at most the
/// start under way and one more (its connection is accepted in one turn and read in the
/// next), and every hung service still ends failed.
#[test]
fn hung_starts_do_not_freeze_pid1_for_their_sum() {
    let hung = ["h1", "h2", "h3", "h4", "h5"];
    let mut services: Vec<serde_json::Value> = hung
        .iter()
        .map(|name| {
            with(
                sh(name, "exec sleep 1000"),
                json!({"annotations": {"org.sysctr.test.hang-before-start": "true"},
                       "restart": {"policy": "never"}}),
            )
        })
        .collect();
    services.push(sh("fine", "exec sleep 1000"));
    let init = Init::start_with(services, &["--start-timeout", "2"]);
    // Ask for `ps` again and again while the hung starts run; keep the slowest answer.
    let began = Instant::now();
    let (mut slowest, mut answered) = (Duration::ZERO, 0);
    while began.elapsed() < SECS(30) {
        let t = Instant::now();
        let out = init.cli(&["ps"]);
        if !out.status.success() {
            std::thread::sleep(Duration::from_millis(50)); // not listening yet
            continue;
        }
        answered += 1;
        slowest = slowest.max(t.elapsed());
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        let failed = |h: &&str| {
            table
                .lines()
                .any(|l| l.starts_with(&format!("{h} ")) && l.contains("failed"))
        };
        if hung.iter().all(failed) {
            break;
        }
    }
    assert!(answered >= 2, "only {answered} answers:\n{}", init.log());
    assert!(
        slowest < Duration::from_secs(7),
        "a request waited {slowest:?} behind the hung starts (5 of them, 2 s each)\n{}",
        init.log()
    );
    for h in hung {
        init.wait_state(h, "failed", SECS(20));
    }
    init.wait_state("fine", "ready", SECS(20));
}

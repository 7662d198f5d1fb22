//! The security review's findings (issue 16), as root: each test is an attack that worked
//! before its fix — PID 1 told to reboot by a process, a container making itself a user
//! namespace, a probe running as root, a manifest that panicked PID 1.

use manifest::protocol::{encode, read_frame, Op, Request, Response};
use serde_json::json;
use std::path::{Path, PathBuf};
use sysctr_tests::*;

/// A root filesystem holding only the `nsprobe` test binary and the shared libraries it
/// links, at their host paths.
fn probe_rootfs() -> &'static Path {
    static ROOT: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("sysctr-probe-")
            .tempdir()
            .unwrap();
        let r = dir.path();
        for d in ["proc", "dev", "sys", "tmp", "run"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_nsprobe"));
        std::fs::copy(&bin, r.join("nsprobe")).unwrap();
        let ldd = std::process::Command::new("ldd")
            .arg(&bin)
            .output()
            .unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux… (0x…)"
            let path = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from);
            if let Some(lib) = path {
                let real = std::fs::canonicalize(&lib).unwrap();
                for at in [&lib, &real] {
                    let dst = r.join(at.strip_prefix("/").unwrap());
                    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
                    std::fs::copy(&real, &dst).unwrap();
                }
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    })
    .path()
}

/// The probe's report, `attempt -> "ok" | "errno N"`, from its log.
fn probe_results(init: &Init, name: &str) -> std::collections::BTreeMap<String, String> {
    let mut got = Default::default();
    let done = wait_until(SECS(20), || {
        got = init
            .cli_ok(&["logs", "--raw", name])
            .lines()
            .filter_map(|l| {
                l.split_once(' ')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect::<std::collections::BTreeMap<_, _>>();
        got.contains_key("unshare-newcgroup")
    });
    assert!(done, "probe {name} never finished: {got:?}\n{}", init.log());
    got
}

#[test]
fn seccomp_refuses_every_way_to_a_new_namespace() {
    let probe = |name: &str, extra: serde_json::Value| {
        let mut svc = json!({
            "name": name,
            "kind": "onboot",
            "root": probe_rootfs().display().to_string(),
            "args": ["/nsprobe"],
        });
        for (k, v) in extra.as_object().unwrap() {
            svc[k] = v.clone();
        }
        svc
    };
    let init = Init::start(vec![
        probe("plain", json!({})),
        probe("admin", json!({"capabilities": ["CAP_SYS_ADMIN"]})),
    ]);
    init.wait_state("plain", "exited", SECS(30));
    init.wait_state("admin", "exited", SECS(30));
    let plain = probe_results(&init, "plain");
    let eperm = "errno 1".to_string();
    let enosys = "errno 38".to_string();
    assert_eq!(plain["clone-plain"], "ok", "a plain fork works: {plain:?}");
    for class in [
        "newuser",
        "newnet",
        "newuser+newnet",
        "newns",
        "newpid",
        "newipc",
        "newuts",
        "newcgroup",
    ] {
        assert_eq!(
            plain[&format!("clone-{class}")],
            eperm,
            "clone {class}: {plain:?}"
        );
        assert_eq!(
            plain[&format!("unshare-{class}")],
            eperm,
            "unshare {class}: {plain:?}"
        );
    }
    // clone3's flags are out of a filter's reach: ENOSYS, so libc falls back to clone.
    assert_eq!(plain["clone3-plain"], enosys, "{plain:?}");
    assert_eq!(plain["clone3-newuser"], enosys, "{plain:?}");
    // With CAP_SYS_ADMIN, making namespaces is the service's business.
    let admin = probe_results(&init, "admin");
    assert_eq!(admin["clone-newuser"], "ok", "{admin:?}");
    assert_eq!(admin["clone3-newuser"], "ok", "{admin:?}");
    assert_eq!(admin["unshare-newuser"], "ok", "{admin:?}");
}

#[test]
fn busybox_namespace_and_mount_tools_are_refused() {
    let init = Init::start(vec![sh("plain", "exec sleep 1000")]);
    init.wait_state("plain", "ready", SECS(20));
    for args in [
        &["/bin/unshare", "-U", "/bin/true"][..],
        &["/bin/unshare", "-n", "/bin/true"],
        &["/bin/unshare", "-Un", "/bin/true"],
        &["/bin/unshare", "-m", "/bin/true"],
        &["/bin/unshare", "-p", "-f", "/bin/true"],
        &["/bin/mount", "-t", "tmpfs", "none", "/tmp"],
        &["/bin/mount", "-t", "proc", "proc", "/tmp"],
    ] {
        let mut cmd = vec!["exec", "plain", "--"];
        cmd.extend_from_slice(args);
        let out = init.cli(&cmd);
        assert_ne!(out.status.code(), Some(0), "{args:?} succeeded: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("operation not permitted") || err.contains("permission denied"),
            "{args:?}: {err}"
        );
    }
    // Ordinary work still runs under the allow-list: pipes, subshells, sockets, time.
    let out = init.cli_ok(&[
        "exec",
        "plain",
        "--",
        "/bin/sh",
        "-c",
        "echo a | cat; (echo sub); date +%s >/dev/null; nc -l -p 9 & kill $!; echo done",
    ]);
    assert!(out.contains("a\nsub\ndone"), "{out}");
}

#[test]
fn kill_from_inside_the_pid_namespace_does_not_stop_init() {
    let mut init = Init::start(vec![
        with(
            sh(
                "console",
                "for s in TERM INT USR1 USR2 PWR; do kill -$s 1; done; echo sent; exec sleep 1000",
            ),
            json!({"namespaces": {"pid": "host"}}),
        ),
        sh("bystander", "exec sleep 1000"),
    ]);
    init.wait_state("bystander", "ready", SECS(20));
    let sent = wait_until(SECS(20), || {
        init.cli_ok(&["logs", "console"]).contains("sent")
    });
    assert!(sent, "{}", init.log());
    init.wait_log("ignored signal 10", SECS(10));
    std::thread::sleep(std::time::Duration::from_secs(1));
    let log = init.log();
    for sig in [15, 2, 10, 12, 30] {
        assert!(
            log.contains(&format!("ignored signal {sig} (")),
            "signal {sig} not refused:\n{log}"
        );
    }
    assert!(!log.contains("reached shutdown"), "{log}");
    assert_eq!(init.service("bystander")["state"], "ready");
    // The control socket's authorized request still reboots.
    init.cli_ok(&["reboot"]);
    let st = init.wait_exit(SECS(30));
    assert_eq!(signal_of(st), Some(libc::SIGHUP), "{}", init.log());
    assert!(init.log().contains("reached shutdown: reboot"));
}

#[test]
fn exec_and_exec_probes_run_as_the_services_user() {
    let init = Init::start(vec![with(
        sh("nobody", "exec sleep 1000"),
        json!({
            "user": {"uid": 65534, "gid": 65534},
            "readiness": {"kind": "exec", "command": ["/bin/sh", "-c", "id > /tmp/probe-id"], "timeout_secs": 10}
        }),
    )]);
    init.wait_state("nobody", "ready", SECS(20));
    let ids = |text: &str| {
        text.contains("uid=65534(") && text.contains(" gid=65534") && !text.contains("=0(")
    };
    let id = init.cli_ok(&["exec", "nobody", "--", "/bin/id"]);
    assert!(ids(&id), "sysctr exec: {id}");
    let probe = init.cli_ok(&["exec", "nobody", "--", "/bin/cat", "/tmp/probe-id"]);
    assert!(ids(&probe), "probe: {probe}");
}

/// Sends one request frame on a fresh connection and returns the first reply.
fn request(init: &Init, op: Op) -> Response {
    use std::io::Write;
    let mut s = std::os::unix::net::UnixStream::connect(init.socket()).unwrap();
    s.write_all(&encode(&Request::new(op))).unwrap();
    let body = read_frame(&mut s, 1 << 20).unwrap().expect("a reply");
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn bad_manifest_values_fail_their_service_and_pid1_runs_on() {
    let bad = |name: &str, extra: serde_json::Value| with(sh(name, "exec sleep 1000"), extra);
    let init = Init::start(vec![
        bad(
            "huge-timeout",
            json!({"readiness": {"kind": "notify", "timeout_secs": 18446744073709551615u64}}),
        ),
        bad(
            "huge-stop",
            json!({"stop": {"timeout_secs": 18446744073709551615u64}}),
        ),
        bad(
            "busy-probe",
            json!({"readiness": {"kind": "file", "path": "/x", "interval_ms": 0}}),
        ),
        bad("nul-env", json!({"env": ["A=b\u{0}c"]})),
        bad("no-change-uid", json!({"user": {"uid": 4294967295u64}})),
        bad(
            "host-root",
            json!({"mounts": [{"source": "/", "destination": "/mnt"}]}),
        ),
        bad(
            "procfs",
            json!({"mounts": [{"source": "proc", "destination": "/mnt", "type": "proc"}]}),
        ),
        bad("root-is-host", json!({"root": "/"})),
        sh("good", "exec sleep 1000"),
    ]);
    init.wait_state("good", "ready", SECS(20));
    for (name, field) in [
        (
            "huge-timeout",
            "readiness.timeout_secs: 18446744073709551615 is above the maximum of 86400",
        ),
        (
            "huge-stop",
            "stop.timeout_secs: 18446744073709551615 is above the maximum of 600",
        ),
        (
            "busy-probe",
            "readiness.interval_ms: 0 is below the minimum of 10",
        ),
        ("nul-env", "env[0]: \"A=b\\0c\" contains a NUL byte"),
        ("no-change-uid", "user.uid: 4294967295 is (uid_t)-1"),
        (
            "host-root",
            "mounts[0].source: the host's root directory may not be mounted",
        ),
        (
            "procfs",
            "mounts[0].type: \"proc\" mounts need \"privileged\": true",
        ),
        (
            "root-is-host",
            "root: the host's root directory cannot be a container's root filesystem",
        ),
    ] {
        let s = init.service(name);
        assert_eq!(s["state"], "failed", "{name}: {s:#}");
        let err = s["last_error"].as_str().unwrap_or("");
        assert!(err.contains(field), "{name}: {err}");
    }
    // An exec request with a bad environment is refused before it reaches the runtime.
    for (env, says) in [
        ("A=b\u{0}c", "contains a NUL byte"),
        ("NOEQUALS", "is not KEY=VALUE"),
        ("=x", "has an empty name"),
    ] {
        let reply = request(
            &init,
            Op::Exec {
                service: "good".into(),
                args: vec!["/bin/true".into()],
                env: vec![env.into()],
                tty: false,
            },
        );
        match reply {
            Response::Error { message, .. } => {
                assert!(message.contains(says), "{env:?}: {message}")
            }
            other => panic!("{env:?}: {other:?}"),
        }
    }
    assert_eq!(init.service("good")["state"], "ready");
    assert!(!init.log().contains("panicked"), "{}", init.log());
}

#[test]
fn a_panic_in_a_forked_child_does_not_run_pid1s_shutdown() {
    let started = std::time::Instant::now();
    let init = Init::start(vec![
        sh("bystander", "exec sleep 1000"),
        with(
            sh("broken", "exec sleep 1000"),
            json!({
                "depends_on": ["bystander"],
                "restart": {"policy": "never"},
                "annotations": {"org.sysctr.test.panic-before-start": "1"}
            }),
        ),
    ]);
    init.wait_state("bystander", "ready", SECS(20));
    let s = init.wait_service("broken", SECS(25), "failed or exited", |s| {
        s["state"] == "failed" || s["state"] == "exited" || s["state"] == "backoff"
    });
    assert!(
        started.elapsed() < SECS(20),
        "the start waited for the deadline instead of seeing the child die: {s:#}"
    );
    // The child's last words go to PID 1's stderr (the console), and nothing else of its.
    let everything = || format!("{}\n{}", init.log(), init.cli_ok(&["logs", "broken"]));
    let said = wait_until(SECS(5), || {
        everything().contains("a process forked from PID 1 panicked")
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    let log = everything();
    assert!(said, "{log}");
    assert!(!log.contains("taking the shutdown path"), "{log}");
    assert!(!log.contains("reached shutdown"), "{log}");
    assert_eq!(init.service("bystander")["state"], "ready", "{log}");
}

/// PID 1's open descriptors, once it has closed every control connection it answered
/// (the listener stays): the count `cargo xtask soak` compares.
fn settled_fds(init: &Init) -> Vec<String> {
    let pid = init.host_pid();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let unix = std::fs::read_to_string(format!("/proc/{pid}/net/unix")).unwrap();
        let mut fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|t| t.display().to_string())
            .collect();
        fds.sort();
        let connections = fds.iter().filter(|t| {
            let Some(inode) = t.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) else {
                return false;
            };
            unix.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.get(6) == Some(&inode) && f.get(3) != Some(&"00010000") && f.len() > 7
            })
        });
        if connections.count() == 0 || std::time::Instant::now() > deadline {
            return fds;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The soak's start/stop phase in small (issue 16): a client that keeps its end open gets
/// EOF right after its reply (PID 1 closes, it does not wait for the client), and start/stop
/// cycles over the control socket leave PID 1 with the descriptors it had.
#[test]
fn replies_close_their_connection_and_start_stop_leaves_no_descriptor() {
    use std::io::{Read, Write};
    let mut svc = sh("cycler", "exec sleep 1000");
    svc["stop"] = json!({"signal": "SIGKILL", "timeout_secs": 2});
    let init = Init::start(vec![svc]);
    init.wait_state("cycler", "ready", SECS(20));

    let mut s = std::os::unix::net::UnixStream::connect(init.socket()).unwrap();
    s.write_all(&encode(&Request::new(Op::Ps {}))).unwrap();
    let body = read_frame(&mut s, 1 << 20).unwrap().expect("a reply to ps");
    assert!(matches!(
        serde_json::from_slice(&body).unwrap(),
        Response::Services { .. }
    ));
    s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut rest = [0u8; 16];
    assert_eq!(
        s.read(&mut rest)
            .expect("EOF from PID 1 within 2 s, not a timeout"),
        0,
        "PID 1 sent more after its reply"
    );
    drop(s);

    let cycle = || {
        for op in [
            Op::Stop {
                service: "cycler".into(),
            },
            Op::Start {
                service: "cycler".into(),
            },
        ] {
            let stop = matches!(op, Op::Stop { .. });
            assert!(
                matches!(request(&init, op), Response::Ok { .. }),
                "stop/start refused"
            );
            let want = if stop { "exited" } else { "ready" };
            init.wait_service("cycler", SECS(20), want, |s| {
                s["state"] == want && s["pid"].is_null() == stop
            });
        }
    };
    for _ in 0..5 {
        cycle();
    }
    let before = settled_fds(&init);
    for _ in 0..50 {
        cycle();
    }
    let after = settled_fds(&init);
    // Pipes are new each run; count them, and compare everything else by name.
    let kinds = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|t| match t.split_once(":[") {
                Some((kind, _)) => kind.to_string(),
                None => t.clone(),
            })
            .collect()
    };
    assert_eq!(
        kinds(&after),
        kinds(&before),
        "PID 1's descriptors after 50 start/stop cycles ({after:?}) differ from before ({before:?})"
    );
}

/// A service whose first start must get its filter: `unshare -U` is refused.
fn unshare_probe() -> serde_json::Value {
    sh(
        "plain",
        "/bin/unshare -U /bin/true 2>&1; echo \"unshare rc=$?\"; exec sleep 1000",
    )
}

#[test]
fn precompiled_seccomp_programs_are_used_and_enforce_the_same_filter() {
    // What the image builder does: `init --seccomp-precompile` beside the manifest.
    let precompile = |manifest: &Path| {
        let out = std::process::Command::new(init_bin())
            .arg("--seccomp-precompile")
            .arg(manifest)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    };
    let init = Init::start_prepared(vec![unshare_probe()], &["--log", "debug"], &precompile);
    init.wait_state("plain", "ready", SECS(20));
    init.wait_log("seccomp program precompiled by the image builder", SECS(10));
    assert!(
        !init.log().contains("seccomp profile compiled in"),
        "{}",
        init.log()
    );
    assert!(wait_until(SECS(10), || init
        .cli_ok(&["logs", "plain"])
        .contains("unshare rc=1")));
    assert!(init
        .cli_ok(&["logs", "plain"])
        .contains("Operation not permitted"));
    drop(init);

    // A damaged program is named and not used: the profile is compiled, the filter holds.
    let damage = |manifest: &Path| {
        precompile(manifest);
        let dir = manifest.parent().unwrap().join("seccomp");
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            std::fs::write(e.path(), b"\x06\x00\x00\x00\x00\x00").unwrap();
        }
    };
    let init = Init::start_prepared(vec![unshare_probe()], &["--log", "debug"], &damage);
    init.wait_state("plain", "ready", SECS(20));
    init.wait_log(
        "6 bytes is not a whole number of instructions; compiling the seccomp profile instead",
        SECS(10),
    );
    init.wait_log("seccomp profile compiled in", SECS(10));
    assert!(wait_until(SECS(10), || init
        .cli_ok(&["logs", "plain"])
        .contains("unshare rc=1")));
}

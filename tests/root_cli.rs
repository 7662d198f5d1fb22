//! The `sysctr` CLI against a real init in namespaces, as root.

use serde_json::json;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;
use sysctr_tests::*;

fn basic() -> Init {
    let init = Init::start(vec![
        with(sh("setup", "echo prepared"), json!({"kind": "onboot"})),
        sh(
            "ticker",
            "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.2; done",
        ),
        with(
            sh("crashy", "exit 7"),
            json!({"restart": {"policy": "never"}}),
        ),
    ]);
    init.wait_state("ticker", "ready", SECS(20));
    init.wait_state("crashy", "failed", SECS(20));
    init
}

#[test]
fn ps_table_and_json() {
    let init = basic();
    let table = init.cli_ok(&["ps"]);
    let header = table.lines().next().unwrap();
    for col in [
        "NAME",
        "KIND",
        "STATE",
        "READY",
        "PID",
        "UPTIME",
        "RESTARTS",
        "LAST EXIT",
        "MEM",
        "CPU",
    ] {
        assert!(header.contains(col), "missing column {col}: {table}");
    }
    assert!(
        !table.contains('\u{1b}'),
        "no colour when stdout is not a tty"
    );
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no row for {name}:\n{table}"))
            .to_string()
    };
    assert!(
        row("setup").contains("onboot") && row("setup").contains("exit 0"),
        "{table}"
    );
    assert!(
        row("ticker").contains("ready") && row("ticker").contains("yes"),
        "{table}"
    );
    assert!(
        row("crashy").contains("failed") && row("crashy").contains("exit 7"),
        "{table}"
    );
    let json: Vec<serde_json::Value> =
        serde_json::from_str(&init.cli_ok(&["ps", "--json"])).unwrap();
    assert_eq!(json.len(), 3);
    let ticker = json.iter().find(|s| s["name"] == "ticker").unwrap();
    assert_eq!(ticker["state"], "ready");
    assert!(ticker["pid"].as_i64().unwrap() > 1);
    assert!(ticker["memory_bytes"].as_u64().unwrap() > 0, "{ticker:#}");
}

#[test]
fn logs_inspect_start_stop_restart_version() {
    let init = basic();
    assert!(init.cli_ok(&["logs", "setup"]).contains("prepared"));
    let ticks = wait_until(SECS(10), || {
        init.cli_ok(&["logs", "ticker"]).lines().count() >= 3
    });
    assert!(ticks, "ticker logs nothing");
    let two = init.cli_ok(&["logs", "-n", "2", "ticker"]);
    assert_eq!(two.lines().count(), 2, "{two}");
    let inspect: serde_json::Value =
        serde_json::from_str(&init.cli_ok(&["inspect", "ticker"])).unwrap();
    assert_eq!(inspect["manifest"]["name"], "ticker");
    assert_eq!(inspect["spec"]["process"]["noNewPrivileges"], true);
    assert_eq!(inspect["spec"]["root"]["readonly"], true);
    assert!(inspect["cgroup"]
        .as_str()
        .unwrap()
        .contains(&init.cgroup_prefix));
    init.cli_ok(&["stop", "ticker"]);
    init.wait_state("ticker", "exited", SECS(10));
    let again = init.cli(&["stop", "ticker"]);
    assert_eq!(
        again.status.code(),
        Some(1),
        "stopping a stopped service is refused"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not running"),
        "{again:?}"
    );
    init.cli_ok(&["start", "ticker"]);
    let before = init.wait_state("ticker", "ready", SECS(10));
    init.cli_ok(&["restart", "ticker"]);
    init.wait_service("ticker", SECS(10), "restarted", |s| {
        s["state"] == "ready" && s["pid"] != before["pid"]
    });
    let unknown = init.cli(&["start", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no service named \"nope\""));
    assert!(init.cli_ok(&["version"]).contains("0.1.0"));
}

#[test]
fn exec_runs_inside_the_container() {
    let init = basic();
    let out = init.cli(&["exec", "ticker", "--", "/bin/cat", "/etc/marker"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "inside the container rootfs\n"
    );
    let out = init.cli(&["exec", "ticker", "--", "/bin/sh", "-c", "exit 3"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "exec exits with the process's code"
    );
    // the process sees the container's pid namespace: its init is the service's shell
    let out = init.cli_ok(&["exec", "ticker", "--", "/bin/cat", "/proc/1/cmdline"]);
    assert!(out.contains("while true"), "{out}");
}

#[test]
fn logs_follow_delivers_new_lines() {
    let init = basic();
    let mut follow = Command::new(cli_bin())
        .env("SYSCTR_SOCKET", init.socket())
        .args(["logs", "-f", "-n", "0", "ticker"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = follow.stdout.take().unwrap();
    let got = std::thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        let mut text = String::new();
        while text.matches("tick").count() < 3 {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    });
    let ok = wait_until(SECS(10), || got.is_finished());
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(ok, "logs -f delivered nothing new");
    let text = got.join().unwrap();
    assert!(text.matches("tick").count() >= 3, "{text}");
}

#[test]
fn events_stream_state_changes() {
    let init = basic();
    let mut ev = Command::new(cli_bin())
        .env("SYSCTR_SOCKET", init.socket())
        .args(["events", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    init.cli_ok(&["stop", "ticker"]);
    init.wait_state("ticker", "exited", SECS(10));
    std::thread::sleep(Duration::from_millis(300));
    let _ = ev.kill();
    let out = ev.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"stopping\"") && text.contains("\"exited\""),
        "{text}"
    );
}

#[test]
fn a_non_root_peer_may_read_but_not_change() {
    let gid = 4242u32;
    let init = Init::start_with(
        vec![sh("svc", "exec sleep 1000")],
        &["--control-gid", &gid.to_string()],
    );
    init.wait_state("svc", "ready", SECS(20));
    nix::unistd::chown(&init.socket(), None, Some(nix::unistd::Gid::from_raw(gid))).unwrap();
    let as_user = |args: &[&str]| {
        Command::new(cli_bin())
            .env("SYSCTR_SOCKET", init.socket())
            .args(args)
            .uid(4242)
            .gid(gid)
            .output()
            .unwrap()
    };
    let ps = as_user(&["ps"]);
    assert!(
        ps.status.success(),
        "ps allowed for the sysctr group: {ps:?}"
    );
    let stop = as_user(&["stop", "svc"]);
    assert_eq!(stop.status.code(), Some(1), "{stop:?}");
    assert!(
        String::from_utf8_lossy(&stop.stderr)
            .contains("stop changes the system and needs root (peer uid 4242)"),
        "{stop:?}"
    );
    assert_eq!(init.service("svc")["state"], "ready");
    // another user is not even allowed to connect (socket mode 0660)
    let other = Command::new(cli_bin())
        .env("SYSCTR_SOCKET", init.socket())
        .args(["ps"])
        .uid(4343)
        .gid(4343)
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2), "{other:?}");
}

fn raw_exchange(init: &Init, bytes: &[u8]) -> serde_json::Value {
    let mut s = UnixStream::connect(init.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut len = [0u8; 4];
    s.read_exact(&mut len).expect("init answers");
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the connection closes after the error");
    serde_json::from_slice(&body).unwrap()
}

#[test]
fn malformed_truncated_and_oversized_requests() {
    let init = basic();
    let frame = |body: &[u8]| {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    };
    let r = raw_exchange(&init, &frame(b"{not json"));
    assert_eq!(
        (r["reply"].as_str(), r["kind"].as_str()),
        (Some("error"), Some("bad_request")),
        "{r}"
    );
    let r = raw_exchange(&init, &frame(br#"{"version":1,"op":"ps","sneaky":true}"#));
    assert_eq!(r["kind"], "bad_request", "{r}");
    let r = raw_exchange(&init, &frame(br#"{"version":99,"op":"ps"}"#));
    assert!(r["message"].as_str().unwrap().contains("version 99"), "{r}");
    let r = raw_exchange(&init, &(100u32 << 20).to_be_bytes());
    assert_eq!(r["kind"], "too_large", "{r}");
    let mut truncated = 50u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(br#"{"version":1"#);
    let r = raw_exchange(&init, &truncated);
    assert_eq!(r["kind"], "bad_request", "{r}");
    // init is unaffected
    assert_eq!(init.service("ticker")["state"], "ready");
}

#[test]
fn unreachable_init_names_the_socket() {
    let out = Command::new(cli_bin())
        .env("SYSCTR_SOCKET", "/nonexistent/control.sock")
        .arg("ps")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/control.sock"));
}

#[test]
fn dmesg_shows_and_follows_the_kernel_log() {
    let init = basic();
    let marker = format!("sysctr-it-kmsg-{}", std::process::id());
    std::fs::write("/dev/kmsg", format!("<6>{marker} before\n")).unwrap();
    assert!(init
        .cli_ok(&["dmesg", "-n", "50"])
        .contains(&format!("{marker} before")));
    let mut follow = Command::new(cli_bin())
        .env("SYSCTR_SOCKET", init.socket())
        .args(["dmesg", "-f", "-n", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = follow.stdout.take().unwrap();
    let want = format!("{marker} after");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.contains(&want) {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => text.push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        text
    });
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write("/dev/kmsg", format!("<6>{marker} after\n")).unwrap();
    let ok = wait_until(SECS(10), || reader.is_finished());
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(ok, "dmesg -f did not deliver the new kernel record");
    let text = reader.join().unwrap();
    assert!(
        text.contains(&format!("{marker} after")) && !text.contains(&format!("{marker} before")),
        "{text}"
    );
}

#[test]
fn fifty_log_followers_do_not_slow_supervision() {
    let init = Init::start(vec![
        sh(
            "chatty",
            "while true; do echo chatter chatter chatter chatter; done",
        ),
        with(
            sh("crasher", "sleep 0.2; exit 1"),
            json!({"restart": {"policy": "always", "backoff_initial_ms": 50, "crash_loop_restarts": 1000}}),
        ),
    ]);
    init.wait_state("chatty", "ready", SECS(20));
    let followers: Vec<std::process::Child> = (0..50)
        .map(|_| {
            Command::new(cli_bin())
                .env("SYSCTR_SOCKET", init.socket())
                .args(["logs", "-f", "-n", "0", "chatty"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    // Supervision goes on: the crasher keeps being restarted, ps answers promptly.
    let before = init.service("crasher")["restarts"].as_u64().unwrap_or(0);
    let t = std::time::Instant::now();
    let out = init.cli(&["ps"]);
    let ps_time = t.elapsed();
    let after = init.wait_service("crasher", SECS(10), "restarted twice more", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= before + 2
    });
    for mut f in followers {
        let _ = f.kill();
        let _ = f.wait();
    }
    assert!(out.status.success());
    eprintln!("ps with 50 log followers of a chatty service: {ps_time:?}");
    assert!(
        ps_time < Duration::from_secs(2),
        "ps took {ps_time:?} with 50 followers"
    );
    assert!(after["restarts"].as_u64().unwrap() >= before + 2);
}

/// Finding 17 of issue 16: the previous run's service logs and PID 1's own log are read
/// back after init starts again on the same log directory; bad boots, unknown services and
/// a symlink planted among the kept files are refused with a message naming them.
#[test]
fn logs_of_the_previous_boot_after_init_starts_again() {
    let keep = tempfile::tempdir().unwrap();
    let log_dir = keep.path().join("sysctr");
    let log_arg = log_dir.to_str().unwrap().to_string();
    let talker = |line: &str| sh("talker", &format!("echo {line}; exec sleep 1000"));

    let mut first = Init::start_with(
        vec![talker("said-in-the-first-run")],
        &["--log-dir", &log_arg],
    );
    first.wait_state("talker", "ready", SECS(20));
    assert!(wait_until(SECS(10), || first
        .cli_ok(&["logs", "talker"])
        .contains("said-in-the-first-run")));
    first.cli_ok(&["reboot"]);
    first.wait_exit(SECS(30));
    drop(first);

    let second = Init::start_with(
        vec![
            talker("said-in-the-second-run"),
            sh("silent", "exec sleep 1000"),
        ],
        &["--log-dir", &log_arg],
    );
    second.wait_state("talker", "ready", SECS(20));
    second.wait_state("silent", "ready", SECS(20));
    // A service of this boot that has written nothing has an empty log, not an error.
    assert_eq!(second.cli_ok(&["logs", "--boot", "0", "silent"]), "");
    assert!(wait_until(SECS(10), || second
        .cli_ok(&["logs", "--boot", "0", "talker"])
        .contains("said-in-the-second-run")));
    let prev = second.cli_ok(&["logs", "--boot", "-1", "talker"]);
    assert!(prev.contains("said-in-the-first-run"), "{prev}");
    assert!(!prev.contains("said-in-the-second-run"), "{prev}");
    // PID 1's own log of the first run, from its start to its shutdown.
    let pid1 = second.cli_ok(&["logs", "--boot", "-1", "--init", "--raw"]);
    assert!(pid1.contains("starting (test mode)"), "{pid1}");
    assert!(pid1.contains("[shutdown] Reboot"), "{pid1}");
    let boots: Vec<serde_json::Value> = second
        .cli_ok(&["logs", "--list-boots", "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(boots.len(), 2, "{boots:?}");
    assert_eq!(
        (boots[0]["index"].as_i64(), boots[1]["index"].as_i64()),
        (Some(-1), Some(0))
    );
    assert_eq!(boots[0]["services"], json!(["talker"]));

    let refused = |args: &[&str], want: &str| {
        let out = second.cli(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    };
    refused(&["logs", "--boot", "-2", "talker"], "boot -2 is not kept");
    refused(
        &["logs", "--boot", "-1", "ghost"],
        "has no log of service ghost",
    );
    refused(
        &["logs", "--boot", "-1", "../../etc/shadow"],
        "is not a service name",
    );
    // A symlink planted in the kept files is not followed.
    let planted = log_dir.join("boots/1/services/evil.log");
    std::os::unix::fs::symlink("/etc/shadow", &planted).unwrap();
    refused(&["logs", "--boot", "-1", "evil"], "a symlink is refused");
}

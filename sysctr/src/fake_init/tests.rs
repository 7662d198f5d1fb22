//! The CLI's commands end to end against [`FakeInit`]: rendering of canned replies, error
//! kinds and exit codes, protocol errors, log streams, `exec` with its descriptors and tty.

use super::*;
use crate::client::{self, ClientError};
use crate::commands::{exec, lifecycle, logs, ps, version};
use manifest::protocol::{ErrorKind, ExitStatus, LogEntry, Op, Stream};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};

fn run_err(result: anyhow::Result<i32>) -> (i32, String) {
    let err = result.expect_err("the command should fail");
    (client::exit_code_for(&err), format!("{err:#}"))
}

#[test]
fn ps_renders_the_canned_reply() {
    let services = ps::tests::sample();
    let canned = services.clone();
    let init = FakeInit::serve(move |req, fds, conn| {
        assert_eq!(req.version, protocol::PROTOCOL_VERSION);
        assert_eq!(req.op, Op::Ps {});
        assert!(fds.is_empty());
        protocol::write_frame(conn, &Response::Services { services: canned }).unwrap();
    });
    let mut out = Vec::new();
    let code = ps::run(&ps::Args { json: false }, &init.client(), &mut out, false).unwrap();
    init.join();
    assert_eq!(code, 0);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("NAME "), "{text}");
    assert!(text.contains("LAST EXIT"), "{text}");
    assert!(text.contains("SIGKILL"), "{text}");
    assert!(
        text.contains("ntpd (failed): exec /usr/sbin/ntpd"),
        "{text}"
    );
    assert!(!text.contains('\x1b'));

    let init = FakeInit::replying(vec![Response::Services {
        services: services.clone(),
    }]);
    let mut out = Vec::new();
    ps::run(&ps::Args { json: true }, &init.client(), &mut out, false).unwrap();
    init.join();
    let parsed: Vec<protocol::ServiceStatus> = serde_json::from_slice(&out).unwrap();
    assert_eq!(parsed, services);
}

#[test]
fn an_error_reply_exits_1_with_kind_and_message() {
    let init = FakeInit::replying(vec![Response::Error {
        kind: ErrorKind::PermissionDenied,
        message: "start needs root (peer uid 1000)".into(),
    }]);
    let args = lifecycle::Args {
        service: "ssh".into(),
    };
    let mut out = Vec::new();
    let (code, msg) = run_err(lifecycle::run(
        lifecycle::Action::Start,
        &args,
        &init.client(),
        &mut out,
    ));
    init.join();
    assert_eq!(code, client::EXIT_REFUSED);
    assert!(msg.contains("permission_denied"), "{msg}");
    assert!(msg.contains("start needs root (peer uid 1000)"), "{msg}");
}

#[test]
fn start_prints_inits_message() {
    let init = FakeInit::serve(|req, _, conn| {
        assert_eq!(
            req.op,
            Op::Start {
                service: "ntpd".into()
            }
        );
        protocol::write_frame(
            conn,
            &Response::Ok {
                message: String::new(),
            },
        )
        .unwrap();
    });
    let args = lifecycle::Args {
        service: "ntpd".into(),
    };
    let mut out = Vec::new();
    let code = lifecycle::run(lifecycle::Action::Start, &args, &init.client(), &mut out).unwrap();
    init.join();
    assert_eq!(code, 0);
    assert_eq!(String::from_utf8(out).unwrap(), "ntpd: started\n");
}

#[test]
fn an_unreachable_socket_names_the_path_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such.sock");
    let client = Client::new(&path);
    let mut out = Vec::new();
    let (code, msg) = run_err(version::run(
        &version::Args { json: false },
        &client,
        &mut out,
    ));
    assert_eq!(code, client::EXIT_UNREACHABLE);
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("ENOENT"), "{msg}");
    // The client's own version is printed before the failure.
    assert!(String::from_utf8(out)
        .unwrap()
        .starts_with("client: sysctr "));

    // A socket file nobody listens on.
    let dead = dir.path().join("dead.sock");
    drop(UnixListener::bind(&dead).unwrap());
    let err = Client::new(&dead).connect().unwrap_err();
    assert_eq!(err.exit_code(), client::EXIT_UNREACHABLE);
    assert!(err.to_string().contains("ECONNREFUSED"), "{err}");
}

#[test]
fn garbage_and_hangups_are_protocol_errors() {
    let init = FakeInit::serve(|_, _, conn| {
        conn.write_all(&[0, 0, 0, 5]).unwrap();
        conn.write_all(b"nope!").unwrap();
    });
    let (code, msg) = run_err(version::run(
        &version::Args { json: false },
        &init.client(),
        &mut Vec::new(),
    ));
    init.join();
    assert_eq!(code, client::EXIT_UNREACHABLE);
    assert!(msg.contains("protocol error"), "{msg}");

    let init = FakeInit::serve(|_, _, _| {});
    let (code, msg) = run_err(version::run(
        &version::Args { json: false },
        &init.client(),
        &mut Vec::new(),
    ));
    init.join();
    assert_eq!(code, client::EXIT_UNREACHABLE);
    assert!(msg.contains("closed the connection"), "{msg}");

    let init = FakeInit::replying(vec![Response::End]);
    let (code, msg) = run_err(version::run(
        &version::Args { json: false },
        &init.client(),
        &mut Vec::new(),
    ));
    init.join();
    assert_eq!(code, client::EXIT_UNREACHABLE);
    assert!(msg.contains("\"end\""), "{msg}");
}

#[test]
fn logs_stream_until_end() {
    let entry = |ms, line: &str| Response::Log {
        entry: LogEntry {
            ts_ms: ms,
            stream: Stream::Stdout,
            line: line.into(),
        },
    };
    let replies = vec![
        entry(1_795_395_723_000, "one"),
        entry(1_795_395_724_000, "two"),
        Response::End,
        entry(1_795_395_725_000, "after the end"),
    ];
    let init = FakeInit::serve(move |req, _, conn| {
        assert_eq!(
            req.op,
            Op::Logs {
                service: "ssh".into(),
                lines: Some(2),
                since_ms: None,
                follow: true,
            }
        );
        for r in &replies {
            // The client hangs up after `end`, so the last write may fail.
            let _ = protocol::write_frame(conn, r);
        }
    });
    let args = logs::Args {
        common: logs::Common {
            follow: true,
            lines: Some(2),
            raw: false,
            json: false,
        },
        since: None,
        kernel: false,
        boot: None,
        init: false,
        list_boots: false,
        service: Some("ssh".into()),
    };
    let mut out = Vec::new();
    assert_eq!(logs::run(&args, &init.client(), &mut out).unwrap(), 0);
    init.join();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "2026-11-23T01:02:03.000Z stdout one\n2026-11-23T01:02:04.000Z stdout two\n"
    );
}

#[test]
fn exec_passes_three_descriptors() {
    let init = FakeInit::serve(|req, fds, conn| {
        assert_eq!(
            req.op,
            Op::Exec {
                service: "ssh".into(),
                args: vec!["echo".into(), "hi".into()],
                env: vec!["A=1".into()],
                tty: false,
            }
        );
        assert_eq!(fds.len(), 3, "stdin, stdout and stderr");
        let mut stdout = std::fs::File::from(fds.into_iter().nth(1).unwrap());
        stdout.write_all(b"hello from the container\n").unwrap();
        drop(stdout);
        protocol::write_frame(conn, &Response::ExecStarted { pid: 42 }).unwrap();
        protocol::write_frame(
            conn,
            &Response::ExecExited {
                status: ExitStatus::Code(3),
            },
        )
        .unwrap();
    });
    let (out_r, out_w) = nix::unistd::pipe().unwrap();
    let op = Op::Exec {
        service: "ssh".into(),
        args: vec!["echo".into(), "hi".into()],
        env: vec!["A=1".into()],
        tty: false,
    };
    let stdin = std::fs::File::open("/dev/null").unwrap();
    let status = exec::run_with_fds(
        &init.client(),
        op,
        [stdin.as_raw_fd(), out_w.as_raw_fd(), 2],
    )
    .unwrap();
    init.join();
    drop(out_w);
    assert_eq!(status, ExitStatus::Code(3));
    let mut got = String::new();
    std::fs::File::from(out_r).read_to_string(&mut got).unwrap();
    assert_eq!(got, "hello from the container\n");
}

#[test]
fn exec_reports_a_signal_and_refusals() {
    let init = FakeInit::replying(vec![
        Response::ExecStarted { pid: 7 },
        Response::ExecExited {
            status: ExitStatus::Signal(9),
        },
    ]);
    let op = Op::Exec {
        service: "ssh".into(),
        args: vec!["sleep".into()],
        env: vec![],
        tty: false,
    };
    let status = exec::run_with_fds(&init.client(), op.clone(), [0, 1, 2]).unwrap();
    init.join();
    assert_eq!(status.as_shell_code(), 137);

    let init = FakeInit::replying(vec![Response::Error {
        kind: ErrorKind::Conflict,
        message: "ssh is not running".into(),
    }]);
    let err = exec::run_with_fds(&init.client(), op, [0, 1, 2]).unwrap_err();
    init.join();
    assert!(matches!(
        err,
        ClientError::Refused {
            kind: ErrorKind::Conflict,
            ..
        }
    ));
    assert_eq!(err.exit_code(), client::EXIT_REFUSED);
}

#[test]
fn exec_tty_connects_stdin_and_stdout_to_a_pty() {
    let init = FakeInit::serve(|req, fds, conn| {
        let Op::Exec { args, tty, .. } = req.op else {
            panic!("not exec: {req:?}")
        };
        assert!(tty);
        let [stdin, stdout, stderr]: [OwnedFd; 3] = fds.try_into().expect("three descriptors");
        assert!(
            nix::unistd::isatty(stdin.as_raw_fd()).unwrap(),
            "a terminal"
        );
        let mut child = std::process::Command::new(&args[0])
            .args(&args[1..])
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        protocol::write_frame(conn, &Response::ExecStarted { pid }).unwrap();
        let code = child.wait().unwrap().code().unwrap();
        let status = ExitStatus::Code(code);
        protocol::write_frame(conn, &Response::ExecExited { status }).unwrap();
    });
    let (in_r, in_w) = nix::unistd::pipe().unwrap();
    std::fs::File::from(in_w).write_all(b"hello\n").unwrap();
    let op = Op::Exec {
        service: "ssh".into(),
        args: vec![
            "/bin/sh".into(),
            "-c".into(),
            "read a; echo got:$a; exit 3".into(),
        ],
        env: vec![],
        tty: true,
    };
    let mut out = Vec::new();
    let status = exec::run_tty(&init.client(), op, in_r.as_fd(), &mut out).unwrap();
    init.join();
    assert_eq!(status, ExitStatus::Code(3));
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("got:hello\r\n"), "{text:?}");
}

#[test]
fn logs_of_the_previous_boot_and_the_boot_list() {
    use manifest::protocol::PastBoot;
    let init = FakeInit::serve(|req, _, conn| {
        assert_eq!(
            req.op,
            Op::BootLogs {
                boot: -1,
                service: None,
                lines: Some(5),
            }
        );
        let _ = protocol::write_frame(
            conn,
            &Response::Log {
                entry: LogEntry {
                    ts_ms: 1_795_395_723_000,
                    stream: Stream::Stdout,
                    line: "INFO [init] sysctr 0.1.0 starting (PID 1)".into(),
                },
            },
        );
        let _ = protocol::write_frame(conn, &Response::End);
    });
    let mut args = logs::Args {
        common: logs::Common {
            follow: false,
            lines: Some(5),
            raw: false,
            json: false,
        },
        since: None,
        kernel: false,
        boot: Some(-1),
        init: true,
        list_boots: false,
        service: None,
    };
    let mut out = Vec::new();
    assert_eq!(logs::run(&args, &init.client(), &mut out).unwrap(), 0);
    init.join();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "2026-11-23T01:02:03.000Z stdout INFO [init] sysctr 0.1.0 starting (PID 1)\n"
    );

    let init = FakeInit::serve(|req, _, conn| {
        assert_eq!(req.op, Op::ListBoots {});
        let boots = vec![
            PastBoot {
                index: -1,
                seq: 4,
                boot_id: "0b9e\x1b[2J".into(),
                started_ms: 1_795_395_723_000,
                services: vec!["net".into(), "ssh".into()],
            },
            PastBoot {
                index: 0,
                seq: 5,
                boot_id: "77aa".into(),
                started_ms: 1_795_395_724_000,
                services: vec![],
            },
        ];
        let _ = protocol::write_frame(conn, &Response::Boots { boots });
    });
    args.boot = None;
    args.init = false;
    args.list_boots = true;
    let mut out = Vec::new();
    assert_eq!(logs::run(&args, &init.client(), &mut out).unwrap(), 0);
    init.join();
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with(" BOOT   SEQ  STARTED"), "{text}");
    assert!(
        lines[1].starts_with("   -1     4  2026-11-23T01:02:03.000Z"),
        "{text}"
    );
    assert!(
        lines[1].ends_with("net,ssh") && !text.contains('\x1b'),
        "{text}"
    );
    assert!(lines[2].starts_with("    0     5"), "{text}");
}

//! The `sysctr` binary as a user runs it: exit codes, messages, and output through a pipe
//! (so no colour), against a canned server on a socket in a temporary directory. Tests
//! against a real init are in the workspace's `tests/` crate.

use manifest::protocol::{self, ErrorKind, Response, ServiceStatus, State, MAX_REQUEST_BYTES};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};

fn sysctr(socket: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sysctr"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .env_remove("SYSCTR_SOCKET")
        .output()
        .unwrap()
}

/// Answers one connection with `reply`, in a thread.
fn serve_once(path: &Path, reply: Response) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let body = protocol::read_frame(&mut conn, MAX_REQUEST_BYTES)
            .unwrap()
            .unwrap();
        protocol::decode_request(&body).unwrap();
        let _ = protocol::write_frame(&mut conn, &reply);
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn unreachable_init_is_exit_2_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let out = sysctr(&sock, &["ps"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&sock.display().to_string()), "{err}");
    assert!(err.contains("ENOENT"), "{err}");

    let out = sysctr(&sock, &["version"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stdout).starts_with("client: sysctr "));
}

#[test]
fn usage_errors_are_exit_64_and_help_is_0() {
    let sock = Path::new("/nonexistent/control.sock");
    assert_eq!(sysctr(sock, &["logs"]).status.code(), Some(64));
    assert_eq!(sysctr(sock, &["frobnicate"]).status.code(), Some(64));
    assert_eq!(
        sysctr(sock, &["logs", "--since", "soon", "ssh"])
            .status
            .code(),
        Some(64)
    );
    let help = sysctr(sock, &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    assert!(text(&help.stdout).contains("Exit codes:"));
    let help = sysctr(sock, &["exec", "--help"]);
    assert!(text(&help.stdout).contains("Examples:"));
}

#[test]
fn ps_through_a_pipe_has_no_colour() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let status = ServiceStatus {
        restarts: 3,
        last_exit: Some(protocol::ExitStatus::Code(1)),
        last_error: Some("exec /usr/sbin/ntpd: not found".into()),
        ..ServiceStatus::new("ntpd", manifest::Kind::Service, State::Failed)
    };
    let server = serve_once(
        &sock,
        Response::Services {
            services: vec![status],
        },
    );
    let out = sysctr(&sock, &["ps"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("ntpd (failed): exec /usr/sbin/ntpd: not found"));
    assert!(!table.contains('\x1b'), "{table:?}");
}

#[test]
fn an_error_reply_is_exit_1_with_kind_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("control.sock");
    let server = serve_once(
        &sock,
        Response::Error {
            kind: ErrorKind::PermissionDenied,
            message: "stop changes the system and needs root (peer uid 1000)".into(),
        },
    );
    let out = sysctr(&sock, &["stop", "ssh"]);
    server.join().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("permission_denied"), "{err}");
    assert!(err.contains("needs root (peer uid 1000)"), "{err}");
}

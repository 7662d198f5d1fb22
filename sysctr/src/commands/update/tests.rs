//! Unit tests of `update.rs`.

use super::*;
use crate::client;
use crate::fake_init::FakeInit;
use manifest::protocol::{self, ErrorKind};
use manifest::protocol_update::{LastUpdate, Slot, SlotStatus};
use std::io::{Read, Seek};

fn args(bundle: &str) -> Args {
    Args {
        status: None,
        bundle: Some(bundle.into()),
        allow_downgrade: true,
        reboot: false,
        json: false,
    }
}

#[test]
fn install_passes_the_bundle_descriptor_and_follows_progress() {
    let mut bundle = tempfile::tempfile().unwrap();
    bundle.write_all(b"SYSCTRUP and the rest").unwrap();
    bundle.rewind().unwrap();
    let fake = FakeInit::serve_update(|req, fds, conn| {
        assert_eq!(
            req.op,
            UpdateOp::Update {
                allow_downgrade: true,
                reboot: false
            }
        );
        assert_eq!(fds.len(), 1);
        let mut got = String::new();
        File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut got)
            .unwrap();
        assert_eq!(
            got, "SYSCTRUP and the rest",
            "init reads the bundle through the fd"
        );
        for (phase, done) in [(Phase::Verifying, 0), (Phase::WritingSlot, 50)] {
            let progress = Progress {
                phase,
                done,
                total: if done > 0 { 100 } else { 0 },
            };
            protocol::write_frame(conn, &UpdateReply::UpdateProgress { progress }).unwrap();
        }
        let installed = Installed {
            version: "1.4.0".into(),
            slot: Slot::B,
            entry: "EFI/Linux/sysctr-b-1.4.0+3.efi".into(),
            key_id: "DB070B3F9EF07E44".into(),
            rebooting: false,
        };
        protocol::write_frame(conn, &UpdateReply::UpdateDone { installed }).unwrap();
    });
    let mut seen = Vec::new();
    let installed = install(&args("x"), &fake.client(), bundle.as_raw_fd(), &mut |p| {
        seen.push(p)
    })
    .unwrap();
    fake.join();
    assert_eq!(installed.slot, Slot::B);
    assert_eq!(seen.len(), 2);
    assert_eq!(
        progress_line(&seen[1]),
        "update: writing slot 50B / 100B (50%)"
    );
    assert_eq!(progress_line(&seen[0]), "update: verifying");
}

#[test]
fn a_refusal_is_exit_1_with_init_s_message() {
    let fake = FakeInit::serve_update(|_, _, conn| {
        let reply = UpdateReply::Error {
            kind: ErrorKind::Failed,
            message: "bundle is for \"other\", this system is \"sysctr-x86_64\"".into(),
        };
        protocol::write_frame(conn, &reply).unwrap();
    });
    let f = tempfile::tempfile().unwrap();
    let err = install(&args("x"), &fake.client(), f.as_raw_fd(), &mut |_| {}).unwrap_err();
    fake.join();
    assert_eq!(client::exit_code_for(&err), client::EXIT_REFUSED);
    assert!(format!("{err:#}").contains("this system is"), "{err:#}");
}

#[test]
fn status_renders_both_slots_and_the_last_result() {
    let status = UpdateStatus {
        booted: Some(Slot::A),
        compatible: Some("sysctr-x86_64".into()),
        slots: vec![
            SlotStatus {
                slot: Slot::A,
                version: Some("1.3.0".into()),
                state: SlotState::Good,
                tries_left: None,
                tries_done: None,
                next_boot: true,
            },
            SlotStatus {
                slot: Slot::B,
                version: Some("1.4.0".into()),
                state: SlotState::Bad,
                tries_left: Some(0),
                tries_done: Some(3),
                next_boot: false,
            },
        ],
        last: Some(LastUpdate {
            version: Some("1.4.0".into()),
            slot: Some(Slot::B),
            result: UpdateResult::RolledBack,
            reason: Some("service web never became ready within 120s".into()),
            at_ms: 1_767_225_600_000,
        }),
    };
    let canned = status.clone();
    let fake = FakeInit::serve_update(move |req, fds, conn| {
        assert_eq!(req.op, UpdateOp::UpdateStatus {});
        assert!(fds.is_empty());
        protocol::write_frame(conn, &UpdateReply::UpdateStatus { status: canned }).unwrap();
    });
    let mut out = Vec::new();
    run_status(&StatusArgs { json: false }, &fake.client(), &mut out).unwrap();
    fake.join();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("SLOT   VERSION   STATE   TRIES LEFT"),
        "{text}"
    );
    assert!(
        text.contains("a      1.3.0     good    -            booted, next boot"),
        "{text}"
    );
    assert!(text.contains("b      1.4.0     bad     0"), "{text}");
    assert!(
            text.contains("last update: rolled back 1.4.0 (slot b) at 2026-01-01T00:00:00.000Z: service web never became ready"),
            "{text}"
        );

    let canned = status.clone();
    let fake = FakeInit::serve_update(move |_, _, conn| {
        protocol::write_frame(conn, &UpdateReply::UpdateStatus { status: canned }).unwrap();
    });
    let mut out = Vec::new();
    run_status(&StatusArgs { json: true }, &fake.client(), &mut out).unwrap();
    fake.join();
    assert_eq!(
        serde_json::from_slice::<UpdateStatus>(&out).unwrap(),
        status
    );
}

#[test]
fn the_command_line_tells_status_from_a_bundle() {
    use crate::commands::{Cli, Command};
    use clap::Parser;
    let parse = |argv: &[&str]| match Cli::try_parse_from(argv).map(|c| c.command) {
        Ok(Command::Update(a)) => Ok(a),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    };
    let a = parse(&["sysctr", "update", "status", "--json"]).unwrap();
    assert!(matches!(
        a.status,
        Some(StatusCommand::Status(StatusArgs { json: true }))
    ));
    let a = parse(&["sysctr", "update", "--allow-downgrade", "--reboot", "-"]).unwrap();
    assert_eq!(a.bundle.as_deref(), Some("-"));
    assert!(a.allow_downgrade && a.reboot && a.status.is_none());
    let a = parse(&["sysctr", "update", "./status"]).unwrap();
    assert_eq!(a.bundle.as_deref(), Some("./status"));
    assert!(parse(&["sysctr", "update", "a.bundle", "b.bundle"]).is_err());
    assert!(parse(&["sysctr", "update", "--nope", "a.bundle"]).is_err());
    // No bundle: a clear message, before init is contacted.
    let a = parse(&["sysctr", "update"]).unwrap();
    let err = run(
        &a,
        &Client::new("/nonexistent/control.sock"),
        &mut Vec::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("give a bundle file"), "{err}");
    assert!(matches!(
        Cli::try_parse_from(["sysctr", "rollback"]).unwrap().command,
        Command::Rollback(_)
    ));
}

#[test]
fn rollback_prints_init_s_answer() {
    let fake = FakeInit::serve_update(|req, _, conn| {
        assert_eq!(req.op, UpdateOp::Rollback {});
        let reply = UpdateReply::Ok {
            message: "slot a (1.3.0) boots next time".into(),
        };
        protocol::write_frame(conn, &reply).unwrap();
    });
    let mut out = Vec::new();
    run_rollback(&RollbackArgs {}, &fake.client(), &mut out).unwrap();
    fake.join();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "slot a (1.3.0) boots next time\n"
    );
}

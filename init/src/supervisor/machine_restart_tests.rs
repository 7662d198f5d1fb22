//! The machine's restart paths: policies, backoff, crash loop, failed starts.

use super::*;

#[test]
fn exit_restarts_with_backoff_until_the_crash_loop_limit() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Always);
    run(&mut m, 10, t);
    let exit = Input::Exited {
        status: ExitStatus::Code(3),
        oom: false,
    };
    // First restart in a row: at once.
    let fx = m.step(exit.clone(), t);
    assert_eq!(states(&fx), [State::Pending, State::Starting]);
    assert_eq!(
        detail_of(&fx, State::Pending),
        "exit 3 after 0 ms; restarting"
    );
    assert!(fx.contains(&Effect::Launch));
    m.step(Input::Started { pid: 11 }, t);
    // Second: after the initial backoff, then doubled.
    for (pid, delay) in [(12, 100), (13, 200)] {
        let fx = m.step(exit.clone(), t);
        assert_eq!(states(&fx), [State::Backoff]);
        assert_eq!(armed(&fx, TimerKind::Restart), Some(MS(delay)));
        let fx = m.step(
            Input::Timer {
                timer: TimerKind::Restart,
                run: m.run(),
            },
            t,
        );
        assert_eq!(states(&fx), [State::Starting]);
        m.step(Input::Started { pid }, t);
    }
    assert_eq!(m.restarts(), 3);
    let fx = m.step(exit, t);
    assert_eq!(states(&fx), [State::Failed]);
    assert!(
        m.last_error()
            .unwrap()
            .starts_with("crash loop: 3 restarts within 60 s"),
        "{:?}",
        m.last_error()
    );
}

#[test]
fn a_stable_run_makes_the_next_restart_immediate() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Always);
    run(&mut m, 1, t);
    let exit = Input::Exited {
        status: ExitStatus::Code(1),
        oom: false,
    };
    m.step(exit.clone(), t); // immediate
    m.step(Input::Started { pid: 2 }, t);
    m.step(
        Input::Timer {
            timer: TimerKind::Stable,
            run: m.run(),
        },
        t + STABLE_AFTER,
    );
    let fx = m.step(exit, t + STABLE_AFTER);
    assert_eq!(states(&fx), [State::Pending, State::Starting]);
}

#[test]
fn restart_policies_on_success_and_failure() {
    let t = Instant::now();
    let cases = [
        (RestartPolicy::Always, 0, State::Pending),
        (RestartPolicy::Always, 1, State::Pending),
        (RestartPolicy::OnFailure, 0, State::Exited),
        (RestartPolicy::OnFailure, 1, State::Pending),
        (RestartPolicy::Never, 0, State::Exited),
        (RestartPolicy::Never, 1, State::Failed),
    ];
    for (policy, code, want) in cases {
        let mut m = service(Check::Started, policy);
        run(&mut m, 5, t);
        let fx = m.step(
            Input::Exited {
                status: ExitStatus::Code(code),
                oom: false,
            },
            t,
        );
        assert_eq!(states(&fx)[0], want, "{policy:?} exit {code}: {fx:?}");
        assert_eq!(m.last_error().is_some(), want == State::Failed);
    }
}

#[test]
fn a_failed_start_goes_through_the_policy_with_backoff() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Always);
    m.step(Input::Launch, t);
    let fx = m.step(
        Input::StartFailed {
            error: "image root /x does not exist".into(),
        },
        t,
    );
    assert!(fx.contains(&Effect::Cleanup { exited: false }));
    assert_eq!(states(&fx), [State::Backoff], "{fx:?}");
    // Even the first retry waits: a start failure is not fixed in zero ms.
    assert_eq!(armed(&fx, TimerKind::Restart), Some(MS(100)));
    assert_eq!(m.last_error(), Some("image root /x does not exist"));
    let fx = m.step(
        Input::Timer {
            timer: TimerKind::Restart,
            run: m.run(),
        },
        t + MS(100),
    );
    assert_eq!(fx.last(), Some(&Effect::Launch));
    let fx = m.step(Input::Started { pid: 3 }, t + MS(100));
    assert_eq!(states(&fx), [State::Running, State::Ready]);
    assert_eq!(m.last_error(), None);
}

#[test]
fn failed_starts_end_in_a_crash_loop() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::OnFailure);
    for _ in 0..3 {
        m.step(Input::Launch, t);
        let fx = m.step(
            Input::StartFailed {
                error: "EMFILE".into(),
            },
            t,
        );
        assert_eq!(states(&fx), [State::Backoff]);
    }
    m.step(Input::Launch, t);
    let fx = m.step(
        Input::StartFailed {
            error: "EMFILE".into(),
        },
        t,
    );
    assert_eq!(states(&fx), [State::Failed]);
    assert!(m
        .last_error()
        .unwrap()
        .contains("last cannot start: EMFILE"));
}

#[test]
fn a_failed_start_with_policy_never_fails() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Never);
    m.step(Input::Launch, t);
    let fx = m.step(
        Input::StartFailed {
            error: "timeout".into(),
        },
        t,
    );
    assert_eq!(states(&fx), [State::Failed]);
    assert_eq!(detail_of(&fx, State::Failed), "timeout");
}

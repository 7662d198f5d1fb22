//! Every transition of [`Machine`], without root: inputs in, effects out.

use super::*;
use crate::supervisor::restart::Limits;

#[path = "machine_restart_tests.rs"]
mod restart;
use manifest::RestartPolicy;

const MS: fn(u64) -> Duration = Duration::from_millis;

fn policy(kind: Kind, check: Check, restart: RestartPolicy) -> Policy {
    Policy {
        kind,
        check,
        check_name: match check {
            Check::Started => "started",
            Check::Notify => "notify",
            Check::Poll { .. } => "file",
        },
        ready_timeout: Duration::from_secs(5),
        restart: Limits {
            policy: restart,
            backoff_initial: MS(100),
            backoff_max: MS(1000),
            crash_loop_restarts: 3,
            crash_loop_window: Duration::from_secs(60),
        },
        stop_signal: libc::SIGTERM,
        stop_signal_name: "SIGTERM".into(),
        stop_timeout: Duration::from_secs(2),
    }
}

#[test]
fn a_deferred_start_waits_in_backoff_without_counting_a_restart() {
    let mut m = service(Check::Started, RestartPolicy::Always);
    let now = Instant::now();
    let fx = m.step(Input::Launch, now);
    assert!(fx.contains(&Effect::Launch));
    let fx = m.step(Input::Deferred, now);
    assert_eq!(states(&fx), vec![State::Backoff]);
    assert_eq!(armed(&fx, TimerKind::Restart), Some(Duration::ZERO));
    assert_eq!(m.restarts(), 0);
    let run = m.run();
    let fx = m.step(
        Input::Timer {
            timer: TimerKind::Restart,
            run,
        },
        now,
    );
    assert!(fx.contains(&Effect::Launch), "{fx:?}");
    assert_eq!(m.state(), State::Starting);
    // Deferred means nothing once the start was made.
    let fx = m.step(Input::Started { pid: 7 }, now);
    assert!(!fx.is_empty());
    assert!(m.step(Input::Deferred, now).is_empty());
}

fn service(check: Check, restart: RestartPolicy) -> Machine {
    Machine::new(policy(Kind::Service, check, restart))
}

/// The states announced by a list of effects, in order.
fn states(fx: &[Effect]) -> Vec<State> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::State { state, .. } => Some(*state),
            _ => None,
        })
        .collect()
}

fn detail_of(fx: &[Effect], want: State) -> String {
    fx.iter()
        .find_map(|e| match e {
            Effect::State { state, detail } if *state == want => Some(detail.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no {want:?} in {fx:?}"))
}

fn armed(fx: &[Effect], timer: TimerKind) -> Option<Duration> {
    fx.iter().find_map(|e| match e {
        Effect::Arm {
            after, timer: t, ..
        } if *t == timer => Some(*after),
        _ => None,
    })
}

/// Launches and starts with `pid`; returns the effects of the start.
fn run(m: &mut Machine, pid: i32, t: Instant) -> Vec<Effect> {
    let fx = m.step(Input::Launch, t);
    assert_eq!(states(&fx), [State::Starting]);
    assert!(fx.contains(&Effect::Launch));
    m.step(Input::Started { pid }, t)
}

#[test]
fn started_readiness_is_ready_at_once() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Always);
    let fx = run(&mut m, 42, t);
    assert_eq!(states(&fx), [State::Running, State::Ready]);
    assert_eq!(detail_of(&fx, State::Running), "pid 42");
    assert_eq!(detail_of(&fx, State::Ready), "started after 0 ms");
    assert_eq!(armed(&fx, TimerKind::Stable), Some(STABLE_AFTER));
    assert_eq!(armed(&fx, TimerKind::ReadyTimeout), None);
    assert_eq!(m.pid(), Some(42));
}

#[test]
fn polled_readiness_probes_until_it_passes() {
    let t = Instant::now();
    let mut m = service(Check::Poll { interval: MS(50) }, RestartPolicy::Always);
    let fx = run(&mut m, 7, t);
    assert_eq!(states(&fx), [State::Running]);
    assert_eq!(
        armed(&fx, TimerKind::ReadyTimeout),
        Some(Duration::from_secs(5))
    );
    assert_eq!(armed(&fx, TimerKind::ReadyPoll), Some(Duration::ZERO));
    let run_id = m.run();
    let fx = m.step(
        Input::Timer {
            timer: TimerKind::ReadyPoll,
            run: run_id,
        },
        t,
    );
    assert_eq!(fx, [Effect::Probe]);
    let fx = m.step(Input::CheckPending, t);
    assert_eq!(armed(&fx, TimerKind::ReadyPoll), Some(MS(50)));
    let fx = m.step(Input::CheckPassed, t + MS(120));
    assert_eq!(detail_of(&fx, State::Ready), "file after 120 ms");
    // A second pass changes nothing.
    assert!(m.step(Input::CheckPassed, t + MS(200)).is_empty());
}

#[test]
fn notify_readiness_waits_for_the_datagram_only() {
    let t = Instant::now();
    let mut m = service(Check::Notify, RestartPolicy::Always);
    let fx = run(&mut m, 7, t);
    assert_eq!(
        armed(&fx, TimerKind::ReadyPoll),
        None,
        "notify is not polled"
    );
    assert!(armed(&fx, TimerKind::ReadyTimeout).is_some());
    assert_eq!(states(&m.step(Input::CheckPassed, t)), [State::Ready]);
}

#[test]
fn readiness_timeout_kills_and_fails_without_restart() {
    let t = Instant::now();
    let mut m = service(Check::Notify, RestartPolicy::Always);
    run(&mut m, 9, t);
    let fx = m.step(
        Input::Timer {
            timer: TimerKind::ReadyTimeout,
            run: m.run(),
        },
        t + Duration::from_secs(5),
    );
    assert_eq!(states(&fx), [State::Stopping]);
    assert!(fx.contains(&Effect::Signal {
        pid: 9,
        signal: libc::SIGKILL
    }));
    assert_eq!(m.last_error(), Some("not ready after 5 s (notify check)"));
    let fx = m.step(
        Input::Exited {
            status: ExitStatus::Signal(libc::SIGKILL),
            oom: false,
        },
        t + Duration::from_secs(5),
    );
    assert_eq!(states(&fx), [State::Failed]);
    assert!(detail_of(&fx, State::Failed).starts_with("not ready after 5 s"));
    assert!(fx.contains(&Effect::Cleanup { exited: true }));
    assert_eq!(m.restarts(), 0, "a readiness failure is not restarted");
}

#[test]
fn timers_of_an_older_run_are_ignored() {
    let t = Instant::now();
    let mut m = service(Check::Notify, RestartPolicy::Always);
    run(&mut m, 1, t);
    let old = m.run();
    m.step(
        Input::Exited {
            status: ExitStatus::Code(1),
            oom: false,
        },
        t,
    );
    m.step(Input::Started { pid: 2 }, t);
    assert_eq!(m.run(), old + 1);
    let fx = m.step(
        Input::Timer {
            timer: TimerKind::ReadyTimeout,
            run: old,
        },
        t,
    );
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(m.state(), State::Running);
}

#[test]
fn onboot_tasks_finish_once_and_are_not_restarted() {
    let t = Instant::now();
    let mut m = Machine::new(policy(Kind::Onboot, Check::Started, RestartPolicy::Always));
    let fx = run(&mut m, 4, t);
    assert_eq!(
        states(&fx),
        [State::Running],
        "onboot tasks have no readiness"
    );
    let fx = m.step(
        Input::Exited {
            status: ExitStatus::Code(0),
            oom: false,
        },
        t,
    );
    assert_eq!(states(&fx), [State::Exited]);
    assert!(fx.contains(&Effect::OnbootDone { ok: true }));
    let mut m = Machine::new(policy(Kind::Onboot, Check::Started, RestartPolicy::Always));
    m.step(Input::Launch, t);
    let fx = m.step(Input::StartFailed { error: "no".into() }, t);
    assert_eq!(states(&fx), [State::Failed]);
    assert!(fx.contains(&Effect::OnbootDone { ok: false }));
}

#[test]
fn stop_then_stop_timeout_sends_sigkill() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Always);
    run(&mut m, 20, t);
    let fx = m.step(
        Input::Stop {
            then: AfterStop::StayDown,
        },
        t,
    );
    assert_eq!(states(&fx), [State::Stopping]);
    assert_eq!(detail_of(&fx, State::Stopping), "sent SIGTERM");
    assert!(fx.contains(&Effect::Signal {
        pid: 20,
        signal: libc::SIGTERM
    }));
    assert_eq!(
        armed(&fx, TimerKind::StopKill),
        Some(Duration::from_secs(2))
    );
    // A second stop request does not signal again.
    assert!(m
        .step(
            Input::Stop {
                then: AfterStop::StayDown
            },
            t
        )
        .is_empty());
    let fx = m.step(
        Input::Timer {
            timer: TimerKind::StopKill,
            run: m.run(),
        },
        t + Duration::from_secs(2),
    );
    assert!(fx.contains(&Effect::Signal {
        pid: 20,
        signal: libc::SIGKILL
    }));
    let fx = m.step(
        Input::Exited {
            status: ExitStatus::Signal(libc::SIGKILL),
            oom: false,
        },
        t,
    );
    assert_eq!(states(&fx), [State::Exited]);
    assert!(detail_of(&fx, State::Exited).starts_with("stopped (SIGKILL"));
    assert_eq!(m.restarts(), 0);
}

#[test]
fn restart_request_starts_again_after_the_exit() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Never);
    run(&mut m, 1, t);
    m.step(
        Input::Stop {
            then: AfterStop::Start,
        },
        t,
    );
    let fx = m.step(
        Input::Exited {
            status: ExitStatus::Code(0),
            oom: false,
        },
        t,
    );
    assert_eq!(states(&fx), [State::Starting]);
    assert!(fx.contains(&Effect::Launch));
}

#[test]
fn stop_before_start_and_reset() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Always);
    let fx = m.step(
        Input::Stop {
            then: AfterStop::StayDown,
        },
        t,
    );
    assert_eq!(states(&fx), [State::Exited]);
    assert_eq!(detail_of(&fx, State::Exited), "stopped before it started");
    m.step(Input::Reset, t);
    assert_eq!(m.state(), State::Pending);
    // Reset only applies to a service that is down.
    run(&mut m, 3, t);
    m.step(Input::Reset, t);
    assert_eq!(m.state(), State::Ready);
}

#[test]
fn oom_kill_is_named() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Never);
    run(&mut m, 1, t);
    let fx = m.step(
        Input::Exited {
            status: ExitStatus::Signal(libc::SIGKILL),
            oom: true,
        },
        t,
    );
    assert!(detail_of(&fx, State::Failed).contains("out of memory"));
}

#[test]
fn shutdown_stops_restarts_and_keeps_everything_down() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Always);
    run(&mut m, 1, t);
    assert!(m.step(Input::Shutdown, t).is_empty());
    // An exit during shutdown stays down whatever the policy.
    let fx = m.step(
        Input::Exited {
            status: ExitStatus::Code(1),
            oom: false,
        },
        t,
    );
    assert_eq!(states(&fx), [State::Exited]);
    assert!(m.step(Input::Launch, t).is_empty());
    // A service waiting in backoff is just marked down.
    let mut b = service(Check::Started, RestartPolicy::Always);
    b.step(Input::Launch, t);
    b.step(Input::StartFailed { error: "x".into() }, t);
    assert_eq!(b.state(), State::Backoff);
    b.step(Input::Shutdown, t);
    assert_eq!(b.state(), State::Exited);
    let fx = b.step(
        Input::Timer {
            timer: TimerKind::Restart,
            run: b.run(),
        },
        t,
    );
    assert!(fx.is_empty());
}

#[test]
fn inputs_that_do_not_apply_change_nothing() {
    let t = Instant::now();
    let mut m = service(Check::Started, RestartPolicy::Always);
    for input in [
        Input::Started { pid: 1 },
        Input::StartFailed { error: "x".into() },
        Input::CheckPassed,
        Input::Exited {
            status: ExitStatus::Code(0),
            oom: false,
        },
        Input::Stop {
            then: AfterStop::Start,
        },
    ] {
        let mut fresh = m.clone();
        let before = fresh.state();
        let _ = fresh.step(input.clone(), t);
        if !matches!(input, Input::Stop { .. }) {
            assert_eq!(fresh.state(), before, "{input:?}");
        }
    }
    run(&mut m, 1, t);
    assert!(
        m.step(Input::Launch, t).is_empty(),
        "a running service is not launched twice"
    );
}

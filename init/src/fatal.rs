//! Why PID 1 takes the fatal path: the one type every fatal cause becomes, from a required
//! boot step to an `on_failure: halt` onboot task, so the shutdown path and its log line
//! get the cause with its context (step, task, what failed) rather than a formatted string.
//! What the fatal path then does (`sysctr.fatal=`: reboot by default) is `shutdown.rs`'s.

use crate::boot::StepError;

#[derive(Debug, thiserror::Error)]
pub enum Fatal {
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] nix::Error),
    #[error("required boot step {step} failed: {source}")]
    BootStep {
        step: String,
        #[source]
        source: StepError,
    },
    #[error("epoll: {0}")]
    Epoll(#[source] nix::Error),
    #[error("watch signalfd: {0}")]
    WatchSignals(#[source] nix::Error),
    #[error("onboot task {task} failed: {error}")]
    OnbootFailed { task: String, error: String },
    #[error("PID 1 panicked")]
    Panicked,
    #[error("internal: {0}")]
    Internal(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_names_what_failed() {
        let step = Fatal::BootStep {
            step: "proc".into(),
            source: StepError::Other("no /proc".into()),
        };
        assert_eq!(step.to_string(), "required boot step proc failed: no /proc");
        let task = Fatal::OnbootFailed {
            task: "prepare".into(),
            error: "exited with status 3".into(),
        };
        assert_eq!(
            task.to_string(),
            "onboot task prepare failed: exited with status 3"
        );
        assert_eq!(
            Fatal::Signals(nix::Error::EPERM).to_string(),
            "cannot set up signal handling: EPERM: Operation not permitted"
        );
    }
}

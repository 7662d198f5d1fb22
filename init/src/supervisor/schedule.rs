//! The schedule: which service starts next. Onboot tasks run one at a time in manifest
//! order, before any service; a service starts once everything it depends on is Ready (an
//! onboot task counts when it has Exited); the boot report is printed once every service
//! has settled. Pure decisions over the services' states; the supervisor acts on them.

use manifest::protocol::State;
use manifest::Kind;
use std::collections::VecDeque;

/// The onboot tasks still to run, in order, and the one running now.
#[derive(Debug, Default)]
pub struct Onboot {
    queue: VecDeque<usize>,
    running: Option<usize>,
}

impl Onboot {
    pub fn new(tasks: impl IntoIterator<Item = usize>) -> Onboot {
        Onboot {
            queue: tasks.into_iter().collect(),
            running: None,
        }
    }

    /// The next task to launch, if none is running; it counts as running from now on.
    pub fn next(&mut self) -> Option<usize> {
        if self.running.is_some() {
            return None;
        }
        self.running = self.queue.pop_front();
        self.running
    }

    /// Whether [`Onboot::next`] would give a task now.
    pub fn launchable(&self) -> bool {
        self.running.is_none() && !self.queue.is_empty()
    }

    /// Task `i` finished (or failed to start).
    pub fn done(&mut self, i: usize) {
        if self.running == Some(i) {
            self.running = None;
        }
    }

    /// Whether every onboot task has finished: services may start.
    pub fn finished(&self) -> bool {
        self.running.is_none() && self.queue.is_empty()
    }
}

/// Whether a service may start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Go,
    /// Waiting for a dependency; the text is shown as the service's status.
    Wait(String),
}

/// The dependency gate: `lookup` gives the kind and state of a service by name.
pub fn gate(depends_on: &[String], lookup: impl Fn(&str) -> Option<(Kind, State)>) -> Gate {
    let mut waiting = None;
    for dep in depends_on {
        match lookup(dep) {
            Some((_, State::Ready)) => {}
            Some((Kind::Onboot, State::Exited)) => {}
            Some((_, state)) => waiting = Some(format!("waiting for {dep} ({})", state.as_str())),
            None => waiting = Some(format!("waiting for {dep} (unknown)")),
        }
    }
    match waiting {
        None => Gate::Go,
        Some(why) => Gate::Wait(why),
    }
}

/// The boot marker's text once every service (not onboot task) has settled — Ready,
/// Failed or Exited — else None. `ms` is the time since boot.
pub fn boot_report(services: &[(&str, Kind, State)], ms: u64) -> Option<String> {
    let svcs: Vec<&(&str, Kind, State)> =
        services.iter().filter(|s| s.1 == Kind::Service).collect();
    if svcs
        .iter()
        .any(|s| !matches!(s.2, State::Ready | State::Failed | State::Exited))
    {
        return None;
    }
    let named =
        |state: State| -> Vec<&str> { svcs.iter().filter(|s| s.2 == state).map(|s| s.0).collect() };
    let (failed, exited) = (named(State::Failed), named(State::Exited));
    if failed.is_empty() && exited.is_empty() {
        return Some(format!(
            "all services ready ({} services, {ms} ms since boot)",
            svcs.len()
        ));
    }
    let mut text = format!(
        "boot complete: {} ready",
        svcs.len() - failed.len() - exited.len()
    );
    if !failed.is_empty() {
        text.push_str(&format!(", {} failed: {}", failed.len(), failed.join(", ")));
    }
    if !exited.is_empty() {
        text.push_str(&format!(", {} exited: {}", exited.len(), exited.join(", ")));
    }
    Some(format!("{text} ({ms} ms since boot)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn onboot_tasks_run_one_at_a_time_in_order() {
        let mut o = Onboot::new([3, 1]);
        assert!(!o.finished());
        assert!(o.launchable());
        assert_eq!(o.next(), Some(3));
        assert!(!o.launchable());
        assert_eq!(o.next(), None, "one at a time");
        o.done(1); // not the running one: nothing changes
        assert_eq!(o.next(), None);
        o.done(3);
        assert_eq!(o.next(), Some(1));
        o.done(1);
        assert!(o.finished());
        assert_eq!(o.next(), None);
    }

    #[test]
    fn dependencies_gate_the_start() {
        let states = |name: &str| match name {
            "net" => Some((Kind::Service, State::Ready)),
            "fsck" => Some((Kind::Onboot, State::Exited)),
            "db" => Some((Kind::Service, State::Running)),
            "broken" => Some((Kind::Service, State::Failed)),
            "exited-svc" => Some((Kind::Service, State::Exited)),
            _ => None,
        };
        assert_eq!(gate(&deps(&["net", "fsck"]), states), Gate::Go);
        assert_eq!(gate(&[], states), Gate::Go);
        assert_eq!(
            gate(&deps(&["net", "db"]), states),
            Gate::Wait("waiting for db (running)".into())
        );
        assert_eq!(
            gate(&deps(&["nope"]), states),
            Gate::Wait("waiting for nope (unknown)".into())
        );
        // A service that exited is not Ready, unlike an onboot task that did.
        assert_eq!(
            gate(&deps(&["exited-svc"]), states),
            Gate::Wait("waiting for exited-svc (exited)".into())
        );
    }

    #[test]
    fn a_dependency_that_failed_keeps_its_dependents_waiting() {
        let states = |name: &str| (name == "broken").then_some((Kind::Service, State::Failed));
        assert_eq!(
            gate(&deps(&["broken"]), states),
            Gate::Wait("waiting for broken (failed)".into())
        );
    }

    #[test]
    fn boot_report_waits_for_every_service_to_settle() {
        let mut s = vec![
            ("fsck", Kind::Onboot, State::Failed),
            ("a", Kind::Service, State::Ready),
            ("b", Kind::Service, State::Running),
        ];
        assert_eq!(boot_report(&s, 5), None);
        s[2].2 = State::Ready;
        assert_eq!(
            boot_report(&s, 5).unwrap(),
            "all services ready (2 services, 5 ms since boot)"
        );
        s.push(("c", Kind::Service, State::Failed));
        s.push(("d", Kind::Service, State::Exited));
        assert_eq!(
            boot_report(&s, 9).unwrap(),
            "boot complete: 2 ready, 1 failed: c, 1 exited: d (9 ms since boot)"
        );
    }
}

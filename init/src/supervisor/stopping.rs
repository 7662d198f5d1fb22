//! What shutdown asks of the supervisor ([`crate::shutdown`] runs the loop): stop every
//! service whose dependents are all gone, so services stop in parallel in reverse
//! dependency order; and SIGKILL whatever is left when the overall bound has passed.

use super::machine::{AfterStop, Input};
use super::Supervisor;
use crate::reactor::Reactor;
use std::time::Duration;

/// Which of `services` (name, dependencies, alive) may get their stop signal now: the
/// alive ones that no alive service depends on.
pub fn stoppable(services: &[(&str, &[String], bool)]) -> Vec<usize> {
    (0..services.len())
        .filter(|&i| services[i].2)
        .filter(|&i| {
            let name = services[i].0;
            !services
                .iter()
                .any(|(_, deps, alive)| *alive && deps.iter().any(|d| d == name))
        })
        .collect()
}

impl Supervisor {
    /// Shutdown has begun: nothing starts any more, and every exit stays down.
    pub fn begin_shutdown(&mut self, r: &mut Reactor) {
        self.shutting_down = true;
        for i in 0..self.services.len() {
            self.step(i, Input::Shutdown, r);
        }
    }

    /// The longest stop timeout of a service still running: the bound for stopping all.
    pub fn longest_stop_timeout(&self) -> Duration {
        self.services
            .iter()
            .filter(|s| s.pid().is_some())
            .map(|s| s.machine.policy().stop_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Whether any service process is still alive.
    pub fn any_alive(&self) -> bool {
        self.services.iter().any(|s| s.pid().is_some())
    }

    /// Sends the stop signal to every service that no running service depends on.
    pub fn stop_unblocked(&mut self, r: &mut Reactor) {
        let view: Vec<(&str, &[String], bool)> = self
            .services
            .iter()
            .map(|s| {
                let deps = s
                    .def
                    .as_ref()
                    .map(|d| d.depends_on.as_slice())
                    .unwrap_or(&[]);
                (s.name.as_str(), deps, s.pid().is_some())
            })
            .collect();
        let ready = stoppable(&view);
        for i in ready {
            if !self.services[i].machine.is_stopping() {
                let s = &self.services[i];
                crate::info!(
                    &s.name,
                    "shutdown: sending {}",
                    s.machine.policy().stop_signal_name
                );
                self.step(
                    i,
                    Input::Stop {
                        then: AfterStop::StayDown,
                    },
                    r,
                );
            }
        }
    }

    /// The overall bound passed: SIGKILL to every service still alive.
    pub fn kill_remaining(&mut self, waited: Duration) {
        for s in &self.services {
            if let Some(pid) = s.pid() {
                crate::warn!(
                    &s.name,
                    "shutdown: no exit after {} s, SIGKILL",
                    waited.as_secs()
                );
                self.fx.kill(pid, libc::SIGKILL);
            }
        }
    }

    /// Names of the services still alive (for the last error line).
    pub fn alive_names(&self) -> Vec<&str> {
        self.services
            .iter()
            .filter(|s| s.pid().is_some())
            .map(|s| s.name.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependents_stop_first_and_independent_services_together() {
        let none: Vec<String> = vec![];
        let on_db = vec!["db".to_string()];
        let on_web = vec!["web".to_string()];
        // web → db, proxy → web; log independent.
        let mut view = vec![
            ("db", none.as_slice(), true),
            ("web", on_db.as_slice(), true),
            ("proxy", on_web.as_slice(), true),
            ("log", none.as_slice(), true),
        ];
        assert_eq!(
            stoppable(&view),
            [2, 3],
            "proxy and log at once, not db or web"
        );
        view[2].2 = false;
        assert_eq!(stoppable(&view), [1, 3]);
        view[1].2 = false;
        assert_eq!(stoppable(&view), [0, 3]);
        view[0].2 = false;
        view[3].2 = false;
        assert!(stoppable(&view).is_empty());
    }
}

//! Carrying out an apply's plan on the running services: new entries are added (the
//! schedule starts them once their dependencies are Ready), changed ones are stopped and
//! go back to Pending with their new entry (so they restart in dependency order), removed
//! ones are stopped and hidden. Unchanged services are not touched: same run, same pid.
//! The plan itself, and every check before it, are in `manifest::applied`.

use super::machine::{AfterStop, Input, Policy};
use super::{Supervisor, Svc};
use crate::reactor::Reactor;
use manifest::applied::Plan;
use manifest::Service;
use std::collections::BTreeMap;

impl Supervisor {
    /// The applied services in force (from the state partition), in the order they came.
    pub fn applied_services(&self) -> Vec<Service> {
        self.services
            .iter()
            .filter(|s| s.applied && !s.removed)
            .filter_map(|s| s.def.clone())
            .collect()
    }

    /// Whether `name` is a service of the image's manifest (not applied).
    pub fn is_system_service(&self, name: &str) -> bool {
        self.find(name).is_some_and(|i| !self.services[i].applied)
    }

    /// Makes `new` the applied set, as `plan` (made from [`Self::applied_services`] and
    /// `new`) says.
    pub fn apply_plan(&mut self, new: &[Service], plan: &Plan, r: &mut Reactor) {
        let by_name: BTreeMap<&str, &Service> = new.iter().map(|s| (s.name.as_str(), s)).collect();
        for name in &plan.remove {
            if let Some(i) = self.find(name) {
                if self.services[i].applied {
                    crate::info!(name, "removed by apply");
                    self.remove_applied(i, r);
                }
            }
        }
        for name in &plan.change {
            let (Some(i), Some(def)) = (self.find(name), by_name.get(name.as_str())) else {
                continue;
            };
            crate::info!(name, "changed by apply: restarting with the new entry");
            self.replace_def(i, (*def).clone(), r);
        }
        for name in &plan.add {
            let Some(def) = by_name.get(name.as_str()) else {
                continue;
            };
            crate::info!(name, "added by apply");
            self.add_applied((*def).clone(), r);
        }
        self.schedule(r);
    }

    /// Adds one applied service at the end (Pending). A removed entry of the same name
    /// still in the table (its stop may be in flight) is taken over instead, so the old
    /// run's exit and the new start never share a container name.
    fn add_applied(&mut self, def: Service, r: &mut Reactor) {
        if let Some(i) = self
            .services
            .iter()
            .position(|s| s.removed && s.name == def.name)
        {
            self.services[i].removed = false;
            self.replace_def(i, def, r);
            return;
        }
        let mut svc = Svc::from_def(def, self.var_log_dir.as_deref());
        svc.applied = true;
        self.services.push(svc);
    }

    /// Stops service `i` (if it runs) and gives it `def`; it goes back to Pending and the
    /// schedule starts it again.
    fn replace_def(&mut self, i: usize, def: Service, r: &mut Reactor) {
        // The stop goes out with the old entry's signal and timeout; the next run has the
        // new policy.
        self.step(
            i,
            Input::Stop {
                then: AfterStop::Pending,
            },
            r,
        );
        let s = &mut self.services[i];
        s.machine.set_policy(Policy::from_service(&def));
        s.def = Some(def);
        s.applied = true;
        s.status_text = None;
    }

    /// Stops applied service `i` for good and hides it from every listing and lookup.
    pub(super) fn remove_applied(&mut self, i: usize, r: &mut Reactor) {
        self.step(
            i,
            Input::Stop {
                then: AfterStop::StayDown,
            },
            r,
        );
        self.services[i].removed = true;
        self.services[i].status_text = None;
    }
}

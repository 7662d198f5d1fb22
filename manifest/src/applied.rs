//! Services applied at run time (`sysctr apply`), kept on the state partition beside the
//! image's read-only manifest: how the two sets are joined, the same way at boot and for an
//! apply, and the plan that turns the set in force into a new one.
//!
//! The applied set is a manifest file of its own (same format, same per-service checks as
//! [`crate::load_str`]). Joining it to the image's manifest adds the checks between the
//! two: a name of the image's manifest cannot be taken (system services cannot be
//! replaced), an applied service may depend on a system service, a dependency cycle through
//! both sets is found, an `image` must be in the store, and an applied entry cannot be an
//! onboot task (those run once, at boot, from the image). At boot a bad applied entry is
//! rejected alone (it shows as Failed); an apply with any problem changes nothing.

use crate::load::{load_str_beside, LoadError, Loaded, Rejected};
use crate::schema::{Kind, Manifest, Service, MANIFEST_VERSION};
use crate::validate::Problem;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Where PID 1 keeps the applied set (on the state partition).
pub const APPLIED_DIR: &str = "/var/lib/sysctr/manifest.d";
/// The one file of [`APPLIED_DIR`]: written whole by every apply (write, fsync, rename).
pub const APPLIED_FILE: &str = "applied.json";

/// The applied set joined to the image's manifest: the applied services that can run, and
/// the ones that cannot (each with every reason).
#[derive(Debug, Clone, Default)]
pub struct Joined {
    pub services: Vec<Service>,
    pub rejected: Vec<Rejected>,
}

impl Joined {
    /// Every problem of every rejected entry, one line each, naming `file`.
    pub fn describe(&self, file: &str) -> String {
        self.rejected
            .iter()
            .map(|r| r.describe(file))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Loads the applied set from `text` (its file `path`) and joins it to the image's manifest
/// `system`. `image_known` says whether an `image` reference is in the store. A syntax
/// error or a bad top level rejects the whole file.
pub fn join(
    system: &Loaded,
    text: &str,
    path: &str,
    image_known: &dyn Fn(&str) -> bool,
) -> Result<Joined, LoadError> {
    let system_names: BTreeSet<String> = system
        .manifest
        .services
        .iter()
        .map(|s| s.name.clone())
        .chain(system.rejected.iter().map(|r| r.name.clone()))
        .collect();
    let applied = load_str_beside(text, path, &system_names)?;
    let mut rejected = Vec::new();
    for r in applied.rejected {
        if system_names.contains(&r.name) {
            // The clash first: it alone rejects the entry.
            let mut p = vec![clash(&r.name, &system.path)];
            p.extend(r.problems);
            rejected.push(Rejected { problems: p, ..r });
        } else {
            rejected.push(r);
        }
    }
    let mut services = Vec::new();
    for svc in applied.manifest.services {
        let mut problems = Vec::new();
        if system_names.contains(&svc.name) {
            problems.push(clash(&svc.name, &system.path));
        }
        if svc.kind == Kind::Onboot {
            problems.push(Problem::new(
                &svc.name,
                "kind",
                "onboot tasks run once at boot from the image's manifest; an applied entry must be a service",
            ));
        }
        if let Some(image) = &svc.image {
            if !image_known(image) {
                problems.push(Problem::new(
                    &svc.name,
                    "image",
                    format!("no image {image:?} in the store (sysctr image import it first; sysctr image ls lists them)"),
                ));
            }
        }
        if problems.is_empty() {
            services.push(svc);
        } else {
            rejected.push(Rejected {
                name: svc.name,
                kind: svc.kind,
                problems,
            });
        }
    }
    // A service that depends on a rejected one cannot start either; the schedule shows it
    // waiting, as for a rejected system service.
    Ok(Joined { services, rejected })
}

fn clash(name: &str, system_path: &str) -> Problem {
    Problem::new(
        name,
        "name",
        format!("{name:?} is a service of the image's manifest ({system_path}); system services cannot be replaced or removed by an apply"),
    )
}

/// What an apply does to each service, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// In the new set only: started.
    pub add: Vec<String>,
    /// In both, with a different entry: restarted with the new entry, in dependency order.
    pub change: Vec<String>,
    /// In the set in force only: stopped and forgotten.
    pub remove: Vec<String>,
    /// The same entry in both: left running, same pid.
    pub unchanged: Vec<String>,
}

impl Plan {
    /// Whether the apply changes nothing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.change.is_empty() && self.remove.is_empty()
    }
}

/// The plan from the applied set in force `current` to `new`. Added and changed services
/// are listed in dependency order (a service after what it depends on), removed ones in
/// reverse (dependents first), unchanged ones by name.
pub fn plan(current: &[Service], new: &[Service]) -> Plan {
    let old: BTreeMap<&str, &Service> = current.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut p = Plan::default();
    for name in dependency_order(new) {
        let svc = new.iter().find(|s| s.name == name).expect("from new");
        match old.get(name.as_str()) {
            None => p.add.push(name),
            Some(o) if *o == svc => p.unchanged.push(name),
            Some(_) => p.change.push(name),
        }
    }
    let new_names: BTreeSet<&str> = new.iter().map(|s| s.name.as_str()).collect();
    p.remove = dependency_order(current)
        .into_iter()
        .rev()
        .filter(|n| !new_names.contains(n.as_str()))
        .collect();
    p.unchanged.sort();
    p
}

/// Names of `services` so that each comes after the ones of the set it depends on (ties by
/// name). Dependencies outside the set are ignored; a cycle (refused by validation before a
/// plan is made) leaves its members in name order at the end.
pub fn dependency_order(services: &[Service]) -> Vec<String> {
    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let mut deps: BTreeMap<&str, BTreeSet<&str>> = services
        .iter()
        .map(|s| {
            let d = s
                .depends_on
                .iter()
                .map(String::as_str)
                .filter(|d| names.contains(d) && *d != s.name)
                .collect();
            (s.name.as_str(), d)
        })
        .collect();
    let mut out: Vec<String> = Vec::new();
    while !deps.is_empty() {
        let ready: Vec<&str> = deps
            .iter()
            .filter(|(_, d)| d.is_empty())
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            out.extend(deps.keys().map(|n| n.to_string()));
            break;
        }
        for n in ready {
            deps.remove(n);
            for d in deps.values_mut() {
                d.remove(n);
            }
            out.push(n.to_string());
        }
    }
    out
}

/// The applied set as the text of its file: a manifest of its services.
pub fn to_file_text(services: &[Service]) -> String {
    let m = Manifest {
        version: MANIFEST_VERSION,
        services: services.to_vec(),
    };
    let mut s = serde_json::to_string_pretty(&m).expect("a manifest always serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests;

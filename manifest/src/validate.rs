//! Semantic checks over a parsed manifest. Every problem is reported, not just the first,
//! each naming the service and the field, so an operator fixes a manifest in one pass.

use crate::schema::{Kind, Manifest, Mount, Readiness, Service};
use crate::units::{parse_size, signal_number, CAPABILITIES};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One thing wrong with one service (or, with an empty service, with the whole manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub service: String,
    pub field: String,
    pub message: String,
}

impl Problem {
    pub fn new(service: &str, field: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            service: service.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// The full report line: file, service, field, message.
    pub fn describe(&self, file: &str) -> String {
        if self.service.is_empty() {
            format!("{file}: {}: {}", self.field, self.message)
        } else {
            format!(
                "{file}: service {:?}: {}: {}",
                self.service, self.field, self.message
            )
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.service.is_empty() {
            write!(f, "{}: {}", self.field, self.message)
        } else {
            write!(
                f,
                "service {:?}: {}: {}",
                self.service, self.field, self.message
            )
        }
    }
}

/// Checks everything serde cannot: names, references between services, value ranges and
/// paths. `known` lists service names that exist in the file but failed to parse, so that a
/// dependency on them is not reported as unknown a second time.
pub fn validate_with(manifest: &Manifest, known: &BTreeSet<String>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for svc in &manifest.services {
        if !seen.insert(svc.name.as_str()) {
            problems.push(Problem::new(
                &svc.name,
                "name",
                "duplicate service name (names must be unique)",
            ));
        }
        check_service(svc, &mut problems);
    }
    let names: BTreeSet<&str> = manifest
        .services
        .iter()
        .map(|s| s.name.as_str())
        .chain(known.iter().map(String::as_str))
        .collect();
    for svc in &manifest.services {
        for dep in &svc.depends_on {
            if dep == &svc.name {
                problems.push(Problem::new(
                    &svc.name,
                    "depends_on",
                    "a service cannot depend on itself",
                ));
            } else if !names.contains(dep.as_str()) {
                problems.push(Problem::new(
                    &svc.name,
                    "depends_on",
                    format!("unknown dependency {dep:?}"),
                ));
            }
        }
    }
    for cycle in find_cycles(manifest) {
        let text = cycle.join(" -> ");
        for name in &cycle[..cycle.len() - 1] {
            problems.push(Problem::new(
                name,
                "depends_on",
                format!("dependency cycle: {text}"),
            ));
        }
    }
    problems
}

/// [`validate_with`] for a manifest that parsed completely.
pub fn validate(manifest: &Manifest) -> Vec<Problem> {
    validate_with(manifest, &BTreeSet::new())
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

fn absolute(problems: &mut Vec<Problem>, svc: &str, field: &str, path: &str) {
    if !path.starts_with('/') {
        problems.push(Problem::new(
            svc,
            field,
            format!("{path:?} must be an absolute path"),
        ));
    } else if path.split('/').any(|c| c == "..") {
        problems.push(Problem::new(
            svc,
            field,
            format!("{path:?} must not contain \"..\""),
        ));
    }
}

fn check_service(svc: &Service, problems: &mut Vec<Problem>) {
    let n = svc.name.as_str();
    if !valid_name(n) {
        problems.push(Problem::new(
            n,
            "name",
            "must be 1-63 characters of a-z, 0-9, '_', '.', '-', starting with a letter or digit",
        ));
    }
    absolute(problems, n, "root", &svc.root);
    absolute(problems, n, "cwd", &svc.cwd);
    if svc.args.is_empty() || svc.args[0].is_empty() {
        problems.push(Problem::new(n, "args", "must name a command"));
    }
    for (i, e) in svc.env.iter().enumerate() {
        match e.split_once('=') {
            Some((k, _)) if !k.is_empty() => {}
            _ => problems.push(Problem::new(
                n,
                format!("env[{i}]"),
                format!("{e:?} is not KEY=VALUE"),
            )),
        }
    }
    for (i, cap) in svc.capabilities.iter().enumerate() {
        if !CAPABILITIES.contains(&cap.as_str()) {
            problems.push(Problem::new(
                n,
                format!("capabilities[{i}]"),
                format!("unknown capability {cap:?}"),
            ));
        }
    }
    for (i, m) in svc.mounts.iter().enumerate() {
        check_mount(n, i, m, problems);
    }
    for (i, d) in svc.devices.iter().enumerate() {
        absolute(problems, n, &format!("devices[{i}]"), d);
    }
    if let Some(mem) = &svc.resources.memory_max {
        match parse_size(mem) {
            Ok(v) if v < 1 << 20 => problems.push(Problem::new(
                n,
                "resources.memory_max",
                format!("{mem:?} is below the 1M minimum"),
            )),
            Ok(_) => {}
            Err(e) => problems.push(Problem::new(n, "resources.memory_max", e)),
        }
    }
    if svc.resources.pids_max == Some(0) {
        problems.push(Problem::new(n, "resources.pids_max", "must be at least 1"));
    }
    if let Some(w) = svc.resources.cpu_weight {
        if !(1..=10000).contains(&w) {
            problems.push(Problem::new(
                n,
                "resources.cpu_weight",
                format!("{w} is outside 1..=10000"),
            ));
        }
    }
    let r = &svc.restart;
    if r.backoff_initial_ms > r.backoff_max_ms {
        problems.push(Problem::new(
            n,
            "restart.backoff_initial_ms",
            format!(
                "{} is larger than restart.backoff_max_ms ({})",
                r.backoff_initial_ms, r.backoff_max_ms
            ),
        ));
    }
    if r.crash_loop_window_secs == 0 {
        problems.push(Problem::new(
            n,
            "restart.crash_loop_window_secs",
            "must be at least 1",
        ));
    }
    if signal_number(&svc.stop.signal).is_none() {
        problems.push(Problem::new(
            n,
            "stop.signal",
            format!("unknown signal {:?}", svc.stop.signal),
        ));
    }
    if let Some(lb) = &svc.log_buffer {
        match parse_size(lb) {
            Ok(v) if v < 4096 => problems.push(Problem::new(
                n,
                "log_buffer",
                format!("{lb:?} is below the 4K minimum"),
            )),
            Ok(_) => {}
            Err(e) => problems.push(Problem::new(n, "log_buffer", e)),
        }
    }
    match &svc.readiness {
        Readiness::Exec { command, .. } if command.is_empty() => {
            problems.push(Problem::new(n, "readiness.command", "must name a command"))
        }
        Readiness::File { path, .. } => absolute(problems, n, "readiness.path", path),
        Readiness::Tcp { port: 0, .. } => {
            problems.push(Problem::new(n, "readiness.port", "must be 1-65535"))
        }
        _ => {}
    }
    if svc.kind == Kind::Onboot && svc.readiness != Readiness::Started {
        problems.push(Problem::new(
            n,
            "readiness",
            "onboot tasks run to completion; readiness applies to services only",
        ));
    }
}

fn check_mount(n: &str, i: usize, m: &Mount, problems: &mut Vec<Problem>) {
    absolute(
        problems,
        n,
        &format!("mounts[{i}].destination"),
        &m.destination,
    );
    if m.kind == "bind" {
        absolute(problems, n, &format!("mounts[{i}].source"), &m.source);
    }
}

/// Every dependency cycle, each as the list of names with the first repeated at the end.
fn find_cycles(manifest: &Manifest) -> Vec<Vec<String>> {
    let deps: BTreeMap<&str, &[String]> = manifest
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.depends_on.as_slice()))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done
    let mut color: BTreeMap<&str, u8> = BTreeMap::new();
    let mut cycles = Vec::new();
    fn visit<'a>(
        node: &'a str,
        deps: &BTreeMap<&'a str, &'a [String]>,
        color: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<Vec<String>>,
    ) {
        color.insert(node, 1);
        stack.push(node);
        for dep in deps.get(node).copied().unwrap_or_default() {
            let dep = dep.as_str();
            if dep == node || !deps.contains_key(dep) {
                continue; // self-dependency and unknown names are reported on their own
            }
            match color.get(dep).copied().unwrap_or(0) {
                0 => visit(dep, deps, color, stack, cycles),
                1 => {
                    let start = stack.iter().position(|s| *s == dep).unwrap_or(0);
                    let mut cycle: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(dep.to_string());
                    cycles.push(cycle);
                }
                _ => {}
            }
        }
        stack.pop();
        color.insert(node, 2);
    }
    for name in deps.keys() {
        if color.get(name).copied().unwrap_or(0) == 0 {
            visit(name, &deps, &mut color, &mut Vec::new(), &mut cycles);
        }
    }
    cycles
}

//! Semantic checks over a parsed manifest. Every problem is reported, not just the first,
//! each naming the service and the field, so an operator fixes a manifest in one pass.

mod cycles;
mod fields;
mod mounts;

use crate::schema::{Kind, Manifest, Readiness, Service};
use cycles::find_cycles;
use fields::{absolute, check_args, check_env, count, id, range, text};
use mounts::{check_host_dir, check_mount};
pub use mounts::{
    normalize, refused_bind_source, HOST_DIR_BASES, PROTECTED_DIRS, PROTECTED_SOURCES,
    UNPRIVILEGED_MOUNT_TYPES,
};
use std::collections::BTreeSet;
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

/// An image reference of the store: `NAME:TAG`, NAME of `[a-z0-9][a-z0-9_.-/]*` (at most
/// 128 bytes), TAG of `[A-Za-z0-9_][A-Za-z0-9_.-]*` (at most 128 bytes).
pub fn check_image_ref(image: &str) -> Result<(), String> {
    let Some((name, tag)) = image.rsplit_once(':') else {
        return Err(format!("{image:?} must be NAME:TAG"));
    };
    let name_ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && !name.contains("..")
        && !name.ends_with('/')
        && !name.contains("//")
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-/".contains(&b));
    if !name_ok {
        return Err(format!(
            "{image:?}: image name {name:?} must be 1-128 characters of a-z, 0-9, '_', '.', '-', '/', starting with a letter or digit"
        ));
    }
    let tag_ok = !tag.is_empty()
        && tag.len() <= 128
        && (tag.as_bytes()[0].is_ascii_alphanumeric() || tag.as_bytes()[0] == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if !tag_ok {
        return Err(format!(
            "{image:?}: tag {tag:?} must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', '-'"
        ));
    }
    Ok(())
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_.-".contains(c))
}

pub mod limits;

/// Checks the `args` and `env` of an `exec` request the way a service's are checked, so a
/// bad entry is refused before it reaches the container runtime.
pub fn exec_request(args: &[String], env: &[String]) -> Result<(), Problem> {
    let mut problems = Vec::new();
    check_args(&mut problems, "", "args", args);
    check_env(&mut problems, "", "env", env);
    match problems.into_iter().next() {
        Some(p) => Err(p),
        None => Ok(()),
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
    match &svc.image {
        Some(image) => {
            if !svc.root.is_empty() {
                problems.push(Problem::new(
                    n,
                    "image",
                    "give either \"root\" or \"image\", not both",
                ));
            }
            if let Err(why) = check_image_ref(image) {
                problems.push(Problem::new(n, "image", why));
            }
        }
        None if svc.root.is_empty() => problems.push(Problem::new(
            n,
            "root",
            "required field is missing (or name an \"image\" of the store instead)",
        )),
        None => absolute(problems, n, "root", &svc.root),
    }
    if svc.root.starts_with('/') && normalize(&svc.root) == "/" {
        problems.push(Problem::new(
            n,
            "root",
            "the host's root directory cannot be a container's root filesystem",
        ));
    } else if !svc.privileged && svc.root.starts_with('/') && !svc.root.contains('\0') {
        if let Some(why) = refused_bind_source(&svc.root, &[]) {
            problems.push(Problem::new(n, "root", why));
        }
    }
    absolute(problems, n, "cwd", &svc.cwd);
    check_args(problems, n, "args", &svc.args);
    check_env(problems, n, "env", &svc.env);
    count(problems, n, "capabilities", svc.capabilities.len());
    id(problems, n, "user.uid", svc.user.uid);
    id(problems, n, "user.gid", svc.user.gid);
    count(
        problems,
        n,
        "user.additional_gids",
        svc.user.additional_gids.len(),
    );
    for (i, g) in svc.user.additional_gids.iter().enumerate() {
        id(problems, n, &format!("user.additional_gids[{i}]"), *g);
    }
    count(problems, n, "mounts", svc.mounts.len());
    for (i, m) in svc.mounts.iter().enumerate() {
        check_mount(n, i, m, svc.privileged, problems);
    }
    count(problems, n, "host_dirs", svc.host_dirs.len());
    for (i, d) in svc.host_dirs.iter().enumerate() {
        check_host_dir(n, &format!("host_dirs[{i}]"), d, problems);
    }
    count(problems, n, "devices", svc.devices.len());
    for (i, d) in svc.devices.iter().enumerate() {
        absolute(problems, n, &format!("devices[{i}]"), d);
    }
    count(problems, n, "depends_on", svc.depends_on.len());
    count(problems, n, "sysctl", svc.sysctl.len());
    for (k, v) in &svc.sysctl {
        text(problems, n, &format!("sysctl.{k}"), k);
        text(problems, n, &format!("sysctl.{k}"), v);
    }
    count(problems, n, "annotations", svc.annotations.len());
    for (k, v) in &svc.annotations {
        text(problems, n, &format!("annotations.{k}"), k);
        text(problems, n, &format!("annotations.{k}"), v);
    }
    if let Some(h) = &svc.hostname {
        text(problems, n, "hostname", h);
        if h.is_empty() || h.len() > 64 {
            problems.push(Problem::new(n, "hostname", "must be 1-64 bytes"));
        }
    }
    if let Some(mem) = &svc.resources.memory_max {
        let v = mem.bytes();
        if v < limits::MEMORY_MIN {
            problems.push(Problem::new(
                n,
                "resources.memory_max",
                format!("{mem:?} is below the 1M minimum", mem = mem.to_string()),
            ));
        } else if v > limits::MEMORY_MAX {
            problems.push(Problem::new(
                n,
                "resources.memory_max",
                format!(
                    "{:?} is above the maximum of 64T ({} bytes)",
                    mem.to_string(),
                    limits::MEMORY_MAX
                ),
            ));
        }
    }
    if let Some(p) = svc.resources.pids_max {
        range(problems, n, "resources.pids_max", p, 1, limits::PIDS_MAX);
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
    // 0 is allowed: every restart at once, bounded by the crash-loop limit.
    range(
        problems,
        n,
        "restart.backoff_initial_ms",
        r.backoff_initial_ms,
        0,
        limits::BACKOFF_MS,
    );
    range(
        problems,
        n,
        "restart.backoff_max_ms",
        r.backoff_max_ms,
        0,
        limits::BACKOFF_MS,
    );
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
    range(
        problems,
        n,
        "restart.crash_loop_restarts",
        u64::from(r.crash_loop_restarts),
        1,
        u64::from(limits::CRASH_LOOP_RESTARTS),
    );
    range(
        problems,
        n,
        "restart.crash_loop_window_secs",
        r.crash_loop_window_secs,
        1,
        limits::CRASH_LOOP_WINDOW_SECS,
    );
    range(
        problems,
        n,
        "stop.timeout_secs",
        svc.stop.timeout_secs,
        1,
        limits::STOP_TIMEOUT_SECS,
    );
    if let Some(lb) = &svc.log_buffer {
        let v = lb.bytes();
        if v < limits::LOG_BUFFER_MIN {
            problems.push(Problem::new(
                n,
                "log_buffer",
                format!("{:?} is below the 4K minimum", lb.to_string()),
            ));
        } else if v > limits::LOG_BUFFER_MAX {
            problems.push(Problem::new(
                n,
                "log_buffer",
                format!("{:?} is above the 64M maximum", lb.to_string()),
            ));
        }
    }
    let (timeout, interval) = match &svc.readiness {
        Readiness::Started => (None, None),
        Readiness::Notify { timeout_secs } => (*timeout_secs, None),
        Readiness::Exec {
            command,
            interval_ms,
            timeout_secs,
        } => {
            check_args(problems, n, "readiness.command", command);
            (*timeout_secs, *interval_ms)
        }
        Readiness::File {
            path,
            interval_ms,
            timeout_secs,
        } => {
            absolute(problems, n, "readiness.path", path);
            (*timeout_secs, *interval_ms)
        }
        Readiness::Tcp {
            port,
            host,
            interval_ms,
            timeout_secs,
        } => {
            if *port == 0 {
                problems.push(Problem::new(n, "readiness.port", "must be 1-65535"));
            }
            if let Some(h) = host {
                if h.parse::<std::net::IpAddr>().is_err() {
                    problems.push(Problem::new(
                        n,
                        "readiness.host",
                        format!("{h:?} is not an IP address"),
                    ));
                }
            }
            (*timeout_secs, *interval_ms)
        }
    };
    if let Some(t) = timeout {
        range(
            problems,
            n,
            "readiness.timeout_secs",
            t,
            1,
            limits::READY_TIMEOUT_SECS,
        );
    }
    if let Some(i) = interval {
        range(
            problems,
            n,
            "readiness.interval_ms",
            i,
            limits::INTERVAL_MS_MIN,
            limits::INTERVAL_MS_MAX,
        );
    }
    if svc.kind == Kind::Onboot && svc.readiness != Readiness::Started {
        problems.push(Problem::new(
            n,
            "readiness",
            "onboot tasks run to completion; readiness applies to services only",
        ));
    }
}

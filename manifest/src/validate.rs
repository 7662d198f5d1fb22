//! Semantic checks over a parsed manifest. Every problem is reported, not just the first,
//! each naming the service and the field, so an operator fixes a manifest in one pass.

use crate::schema::{Kind, Manifest, Mount, Readiness, Service};
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

/// Every bound a manifest value has: nothing a manifest sets is unbounded, so no entry can
/// make PID 1 allocate or wait without limit (docs/architecture.md, invariant 12).
/// `docs/manifest.md` lists them.
pub mod limits {
    /// Services in one manifest.
    pub const SERVICES: usize = 1024;
    /// Entries in `args`, `env` and `readiness.command`.
    pub const ARGS: usize = 1024;
    /// Bytes of one argument or environment entry.
    pub const ARG_BYTES: usize = 32 << 10;
    /// Entries in `mounts`, `devices`, `depends_on`, `sysctl`, `annotations`, `capabilities`,
    /// `user.additional_gids`.
    pub const LIST: usize = 256;
    /// Bytes of a path or of any other string field.
    pub const PATH_BYTES: usize = 4096;
    /// `readiness.timeout_secs`: 1 s to one day.
    pub const READY_TIMEOUT_SECS: u64 = 86_400;
    /// `readiness.interval_ms`: a check runs at most every 10 ms and at least once a minute.
    pub const INTERVAL_MS_MIN: u64 = 10;
    pub const INTERVAL_MS_MAX: u64 = 60_000;
    /// `stop.timeout_secs`: 1 s to ten minutes (shutdown waits for it).
    pub const STOP_TIMEOUT_SECS: u64 = 600;
    /// `restart.backoff_initial_ms` and `backoff_max_ms`: at most one hour (0: at once).
    pub const BACKOFF_MS: u64 = 3_600_000;
    /// `restart.crash_loop_restarts`: 1 to 10000.
    pub const CRASH_LOOP_RESTARTS: u32 = 10_000;
    /// `restart.crash_loop_window_secs`: 1 s to one day.
    pub const CRASH_LOOP_WINDOW_SECS: u64 = 86_400;
    /// `resources.pids_max`: the kernel's PID_MAX_LIMIT.
    pub const PIDS_MAX: u64 = 4 << 20;
    /// `resources.memory_max`: 1 MiB to 64 TiB.
    pub const MEMORY_MIN: u64 = 1 << 20;
    pub const MEMORY_MAX: u64 = 1 << 46;
    /// `log_buffer`: 4 KiB to 64 MiB (it lives in PID 1's memory).
    pub const LOG_BUFFER_MIN: u64 = 4 << 10;
    pub const LOG_BUFFER_MAX: u64 = 64 << 20;
    /// The id `(uid_t)-1`, which setuid(2) and chown(2) read as "no change".
    pub const NO_ID: u32 = u32::MAX;
}

/// Host paths a service that is not `privileged` may not use as a bind-mount source: the
/// kernel's interfaces and PID 1's own files. Anything below them, and any directory
/// above them (which would expose them too, `/` first of all), is refused as well.
pub const PROTECTED_SOURCES: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/sbin/init",
    "/etc/sysctr",
    "/var/log/sysctr",
    "/run/sysctr/control.sock",
    "/run/sysctr/notify",
    "/run/sysctr/bundles",
    "/run/sysctr/containers",
    "/run/sysctr/etc",
    "/run/sysctr/esp",
    "/var/lib/sysctr/boot",
];

/// Directories that may not be bind-mounted themselves, though entries below them may:
/// `/run/sysctr/<dir>` and `/var/lib/sysctr/<dir>` are where services share data.
pub const PROTECTED_DIRS: &[&str] = &["/run/sysctr", "/var/lib/sysctr"];

/// Mount types a service that is not `privileged` may use. Any other type (proc, sysfs,
/// devtmpfs, a disk's filesystem, overlay with host layers) reaches host state.
pub const UNPRIVILEGED_MOUNT_TYPES: &[&str] = &["bind", "tmpfs", "mqueue"];

/// `/a//b/./c/` → `/a/b/c`; the path is absolute and free of `..` (checked before).
pub fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn within(path: &str, base: &str) -> bool {
    path == base || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

/// Why `source` may not be bind-mounted into a service that is not privileged, if it may
/// not. `extra` are further protected paths known only at run time (PID 1's run and log
/// directories in test mode).
pub fn refused_bind_source(source: &str, extra: &[&str]) -> Option<String> {
    let p = normalize(source);
    if p == "/" {
        return Some("the host's root directory may not be mounted (it exposes everything, PID 1's files included)".into());
    }
    for base in PROTECTED_SOURCES
        .iter()
        .copied()
        .chain(extra.iter().copied())
    {
        let base = normalize(base);
        if within(&p, &base) {
            return Some(format!("{base} belongs to the kernel or PID 1 and may not be mounted into a service that is not privileged"));
        }
        if within(&base, &p) {
            return Some(format!("{p} contains {base}, which belongs to the kernel or PID 1; mount a directory below it instead"));
        }
    }
    for base in PROTECTED_DIRS {
        if within(base, &p) {
            return Some(format!(
                "{base} is PID 1's; mount one of the directories below it instead"
            ));
        }
    }
    None
}

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

fn check_args(problems: &mut Vec<Problem>, svc: &str, field: &str, args: &[String]) {
    if args.is_empty() || args[0].is_empty() {
        problems.push(Problem::new(svc, field, "must name a command"));
    }
    if args.len() > limits::ARGS {
        problems.push(Problem::new(
            svc,
            field,
            format!(
                "{} entries is above the maximum of {}",
                args.len(),
                limits::ARGS
            ),
        ));
        return;
    }
    for (i, a) in args.iter().enumerate() {
        if a.contains('\0') {
            problems.push(Problem::new(
                svc,
                format!("{field}[{i}]"),
                "contains a NUL byte",
            ));
        } else if a.len() > limits::ARG_BYTES {
            problems.push(Problem::new(
                svc,
                format!("{field}[{i}]"),
                format!(
                    "{} bytes is above the maximum of {}",
                    a.len(),
                    limits::ARG_BYTES
                ),
            ));
        }
    }
}

fn check_env(problems: &mut Vec<Problem>, svc: &str, field: &str, env: &[String]) {
    if env.len() > limits::ARGS {
        problems.push(Problem::new(
            svc,
            field,
            format!(
                "{} entries is above the maximum of {}",
                env.len(),
                limits::ARGS
            ),
        ));
        return;
    }
    for (i, e) in env.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if e.contains('\0') {
            problems.push(Problem::new(svc, f, format!("{e:?} contains a NUL byte")));
        } else if e.len() > limits::ARG_BYTES {
            problems.push(Problem::new(
                svc,
                f,
                format!(
                    "{} bytes is above the maximum of {}",
                    e.len(),
                    limits::ARG_BYTES
                ),
            ));
        } else {
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() => {}
                Some(_) => problems.push(Problem::new(svc, f, format!("{e:?} has an empty name"))),
                None => problems.push(Problem::new(svc, f, format!("{e:?} is not KEY=VALUE"))),
            }
        }
    }
}

fn absolute(problems: &mut Vec<Problem>, svc: &str, field: &str, path: &str) {
    if path.contains('\0') {
        problems.push(Problem::new(
            svc,
            field,
            format!("{path:?} contains a NUL byte"),
        ));
    } else if path.len() > limits::PATH_BYTES {
        problems.push(Problem::new(
            svc,
            field,
            format!(
                "{} bytes is above the maximum of {}",
                path.len(),
                limits::PATH_BYTES
            ),
        ));
    } else if !path.starts_with('/') {
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

/// A plain string field: no NUL byte (the kernel cuts there), bounded length.
fn text(problems: &mut Vec<Problem>, svc: &str, field: &str, value: &str) {
    if value.contains('\0') {
        problems.push(Problem::new(
            svc,
            field,
            format!("{value:?} contains a NUL byte"),
        ));
    } else if value.len() > limits::PATH_BYTES {
        problems.push(Problem::new(
            svc,
            field,
            format!(
                "{} bytes is above the maximum of {}",
                value.len(),
                limits::PATH_BYTES
            ),
        ));
    }
}

fn count(problems: &mut Vec<Problem>, svc: &str, field: &str, n: usize) {
    if n > limits::LIST {
        problems.push(Problem::new(
            svc,
            field,
            format!("{n} entries is above the maximum of {}", limits::LIST),
        ));
    }
}

/// `value` must lie in `min..=max`; the message names both ends.
fn range(problems: &mut Vec<Problem>, svc: &str, field: &str, value: u64, min: u64, max: u64) {
    if value < min {
        problems.push(Problem::new(
            svc,
            field,
            format!("{value} is below the minimum of {min}"),
        ));
    } else if value > max {
        problems.push(Problem::new(
            svc,
            field,
            format!("{value} is above the maximum of {max}"),
        ));
    }
}

fn id(problems: &mut Vec<Problem>, svc: &str, field: &str, value: u32) {
    if value == limits::NO_ID {
        problems.push(Problem::new(
            svc,
            field,
            format!("{value} is (uid_t)-1, which the kernel reads as \"no change\" (the service would stay root)"),
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

/// Where PID 1 may create a service's `host_dirs`: the writable trees of the host.
pub const HOST_DIR_BASES: &[&str] = &["/run", "/var"];

/// A `host_dirs` entry: absolute, no `..`, strictly below one of [`HOST_DIR_BASES`], and
/// not at or inside a path of the kernel or PID 1 (the control socket, the state of the
/// containers, init's logs), nor above one of them.
fn check_host_dir(n: &str, field: &str, dir: &str, problems: &mut Vec<Problem>) {
    let before = problems.len();
    absolute(problems, n, field, dir);
    if problems.len() > before {
        return;
    }
    let p = normalize(dir);
    if !HOST_DIR_BASES.iter().any(|b| p != *b && within(&p, b)) {
        problems.push(Problem::new(
            n,
            field,
            format!("{dir:?} must be below {}", HOST_DIR_BASES.join(" or ")),
        ));
    } else if let Some(why) = refused_bind_source(&p, &[]) {
        problems.push(Problem::new(n, field, format!("{dir:?}: {why}")));
    }
}

fn check_mount(n: &str, i: usize, m: &Mount, privileged: bool, problems: &mut Vec<Problem>) {
    absolute(
        problems,
        n,
        &format!("mounts[{i}].destination"),
        &m.destination,
    );
    for (j, o) in m.options.iter().enumerate() {
        text(problems, n, &format!("mounts[{i}].options[{j}]"), o);
    }
    text(problems, n, &format!("mounts[{i}].type"), &m.kind);
    if m.kind == "bind" {
        let field = format!("mounts[{i}].source");
        let before = problems.len();
        absolute(problems, n, &field, &m.source);
        if !privileged && problems.len() == before {
            if let Some(why) = refused_bind_source(&m.source, &[]) {
                problems.push(Problem::new(n, field, why));
            }
        }
    } else {
        text(problems, n, &format!("mounts[{i}].source"), &m.source);
        if !privileged && !UNPRIVILEGED_MOUNT_TYPES.contains(&m.kind.as_str()) {
            problems.push(Problem::new(
                n,
                format!("mounts[{i}].type"),
                format!(
                    "{:?} mounts need \"privileged\": true (allowed otherwise: {})",
                    m.kind,
                    UNPRIVILEGED_MOUNT_TYPES.join(", ")
                ),
            ));
        }
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

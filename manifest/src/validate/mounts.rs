//! What a service may mount: the host paths a service that is not `privileged` may not
//! bind-mount, the mount types it may use, and the check of one `mounts` entry.

use super::fields::{absolute, text};
use super::Problem;
use crate::schema::Mount;

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

pub(super) fn check_mount(
    n: &str,
    i: usize,
    m: &Mount,
    privileged: bool,
    problems: &mut Vec<Problem>,
) {
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

/// Where PID 1 may create a service's `host_dirs`: the writable trees of the host.
pub const HOST_DIR_BASES: &[&str] = &["/run", "/var"];

/// A `host_dirs` entry: absolute, no `..`, strictly below one of [`HOST_DIR_BASES`], and
/// not at or inside a path of the kernel or PID 1 (the control socket, the state of the
/// containers, init's logs), nor above one of them.
pub(super) fn check_host_dir(n: &str, field: &str, dir: &str, problems: &mut Vec<Problem>) {
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

//! cgroup v2 for services: enabling the controllers at boot, where each service's cgroup
//! lives (`/sys/fs/cgroup/<prefix>/<name>`), reading its usage for `sysctr ps`, and
//! removing it after the container is deleted. libcontainer creates the cgroup and writes
//! the limits from the OCI spec; on a host with cgroup v1 (the test machines) the same spec
//! lands in the v1 hierarchies and the usage is read from there.

use std::collections::hash_map::{Entry, HashMap};
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub mod devices;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Controllers services need: limits in the manifest are written to them.
const CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];
/// Enabled when the kernel has them; their absence is not an error. `cpuset` is in the node
/// kernel only (kernel-config/node), for a container engine or kubelet in a delegated subtree.
const OPTIONAL_CONTROLLERS: &[&str] = &["io", "cpuset"];

/// The leaf PID 1 moves itself into (`/sys/fs/cgroup/<prefix>.init`). cgroup v2 lets a
/// non-root cgroup with controllers enabled for its children hold no processes; with init in
/// a leaf of its own, every service cgroup (`<prefix>/<name>`) can be handed whole to the
/// program inside it, which does the same (moves itself into a leaf) and delegates the rest,
/// as the node image's container engine does (docs/cluster.md).
pub fn init_leaf(prefix: &str) -> String {
    format!("{prefix}.init")
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("enable {controllers} in {path}: {source}")]
    Enable {
        controllers: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("create {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel lacks controllers: {}", .0.join(", "))]
    Missing(Vec<&'static str>),
}

/// Moves PID 1 into its leaf, enables the controllers for children of the root and creates
/// the services' subtree.
pub fn setup_v2(root: &Path, prefix: &str) -> Result<(), CgroupError> {
    let list = root.join("cgroup.controllers");
    let available = fs::read_to_string(&list).map_err(|source| CgroupError::Read {
        path: list.display().to_string(),
        source,
    })?;
    let leaf = root.join(init_leaf(prefix));
    fs::create_dir_all(&leaf).map_err(|source| CgroupError::Create {
        path: leaf.display().to_string(),
        source,
    })?;
    let procs = leaf.join("cgroup.procs");
    fs::write(&procs, std::process::id().to_string()).map_err(|source| CgroupError::Create {
        path: procs.display().to_string(),
        source,
    })?;
    let has = |c: &str| available.split_whitespace().any(|a| a == c);
    let wanted: Vec<&str> = CONTROLLERS
        .iter()
        .chain(OPTIONAL_CONTROLLERS)
        .copied()
        .filter(|c| has(c))
        .collect();
    let missing: Vec<&'static str> = CONTROLLERS.iter().copied().filter(|c| !has(c)).collect();
    let enable = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let write = |dir: &Path| {
        fs::write(dir.join("cgroup.subtree_control"), &enable).map_err(|source| {
            CgroupError::Enable {
                controllers: enable.clone(),
                path: dir.display().to_string(),
                source,
            }
        })
    };
    let sub = root.join(prefix);
    write(root)?;
    fs::create_dir_all(&sub).map_err(|source| CgroupError::Create {
        path: sub.display().to_string(),
        source,
    })?;
    write(&sub)?;
    if !missing.is_empty() {
        return Err(CgroupError::Missing(missing));
    }
    Ok(())
}

/// Whether the unified (v2-only) hierarchy is mounted at /sys/fs/cgroup. Asked once the
/// cgroup filesystem is mounted (the answer does not change afterwards): `sysctr ps` asks
/// it for every service.
pub fn is_v2() -> bool {
    static V2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *V2.get_or_init(|| Path::new(CGROUP_ROOT).join("cgroup.controllers").exists())
}

/// The cgroup path libcontainer is given in the spec (`/<prefix>/<name>`).
pub fn spec_path(prefix: &str, name: &str) -> String {
    format!("/{prefix}/{name}")
}

/// Where the service's cgroup lives for a controller (v2: one directory).
pub fn dir(prefix: &str, name: &str, v1_controller: &str) -> PathBuf {
    if is_v2() {
        Path::new(CGROUP_ROOT).join(prefix).join(name)
    } else {
        Path::new(CGROUP_ROOT)
            .join(v1_controller)
            .join(prefix)
            .join(name)
    }
}

/// A usage figure `sysctr ps` shows for a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Usage {
    /// Current memory use in bytes.
    Memory,
    /// CPU time used in microseconds.
    Cpu,
}

/// The file that holds `what` for the service's cgroup.
pub fn usage_path(prefix: &str, name: &str, what: Usage) -> PathBuf {
    match (what, is_v2()) {
        (Usage::Memory, true) => dir(prefix, name, "").join("memory.current"),
        (Usage::Memory, false) => dir(prefix, name, "memory").join("memory.usage_in_bytes"),
        (Usage::Cpu, true) => dir(prefix, name, "").join("cpu.stat"),
        (Usage::Cpu, false) => dir(prefix, name, "cpuacct").join("cpuacct.usage"),
    }
}

/// The figure in the text of [`usage_path`]'s file (v2 `cpu.stat`: its `usage_usec` line;
/// v1 `cpuacct.usage` counts nanoseconds).
fn parse_usage(what: Usage, text: &str) -> Option<u64> {
    match (what, is_v2()) {
        (Usage::Cpu, true) => parse_cpu_stat(text),
        (Usage::Cpu, false) => text.trim().parse::<u64>().ok().map(|ns| ns / 1000),
        (Usage::Memory, _) => text.trim().parse().ok(),
    }
}

/// The usage files of running services, each opened on its first read and read again
/// from offset 0 afterwards (a cgroup file yields fresh contents on every read at 0): a
/// `ps` at 100 services is then 200 preads, not 200 opens, stats, reads and closes.
/// [`UsageFiles::forget`] closes a service's files before its cgroup is removed, so a
/// new run's cgroup of the same name is opened afresh and no removed cgroup stays pinned.
#[derive(Default)]
pub struct UsageFiles {
    open: HashMap<(String, Usage), fs::File>,
}

impl UsageFiles {
    /// `what` for service `name`, whose file is at `path` (asked only when not open yet).
    /// A read that fails closes the file, and the next read opens it again.
    pub fn read(&mut self, name: &str, what: Usage, path: impl FnOnce() -> PathBuf) -> Option<u64> {
        let key = (name.to_string(), what);
        let file = match self.open.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(fs::File::open(path()).ok()?),
        };
        // v2 cpu.stat is a few hundred bytes; its usage_usec line comes first.
        let mut buf = [0u8; 1024];
        let value = file
            .read_at(&mut buf, 0)
            .ok()
            .and_then(|n| std::str::from_utf8(&buf[..n]).ok())
            .and_then(|text| parse_usage(what, text));
        if value.is_none() {
            self.open.remove(&(name.to_string(), what));
        }
        value
    }

    /// Closes the files of service `name` (its cgroup is about to be removed).
    pub fn forget(&mut self, name: &str) {
        self.open.retain(|(n, _), _| n != name);
    }

    /// How many files are open (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.open.len()
    }
}

fn parse_cpu_stat(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

/// How many times the OOM killer fired in the service's cgroup (v2 memory.events).
pub fn oom_kills(prefix: &str, name: &str) -> Option<u64> {
    let text = fs::read_to_string(dir(prefix, name, "memory").join(if is_v2() {
        "memory.events"
    } else {
        "memory.oom_control"
    }))
    .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// Removes the service's cgroup directories if they are empty. True when none is left; a
/// cgroup that still holds processes stays (rmdir fails with EBUSY). On cgroup v2 the
/// cgroups a service made below its own (a delegated subtree: the node's engine makes
/// `engine/` and one per container) go first, deepest first: left behind, they would keep
/// the service's cgroup, its controllers enabled for children, from ever holding the next
/// start's process (EBUSY writing cgroup.procs).
pub fn remove(prefix: &str, name: &str) -> bool {
    if is_v2() {
        remove_tree(&dir(prefix, name, ""))
    } else {
        fs::read_dir(CGROUP_ROOT)
            .map(|entries| {
                // Every hierarchy is tried, whatever the ones before it gave.
                let results: Vec<bool> = entries
                    .flatten()
                    .map(|e| rmdir_gone(&e.path().join(prefix).join(name)))
                    .collect();
                results.into_iter().all(|g| g)
            })
            .unwrap_or(true)
    }
}

/// Removes the cgroup `dir` and every cgroup below it, deepest first. True when `dir` is
/// gone (or never was); a cgroup still holding processes stays, and so do its ancestors.
fn remove_tree(dir: &Path) -> bool {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            // DirEntry::file_type does not follow symlinks (cgroupfs has none anyway).
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    rmdir_gone(dir)
}

/// Removes the (empty) cgroup `dir`: true when it is gone, or never was.
fn rmdir_gone(dir: &Path) -> bool {
    match fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

/// Removes the (empty) services' subtree and whatever service cgroups are left in it.
pub fn remove_prefix(prefix: &str) {
    if prefix.is_empty() || prefix.contains('/') {
        return;
    }
    let roots: Vec<PathBuf> = if is_v2() {
        vec![PathBuf::from(CGROUP_ROOT)]
    } else {
        fs::read_dir(CGROUP_ROOT)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    for root in roots {
        let dir = root.join(prefix);
        remove_tree(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delegated_subtree_is_removed_deepest_first() {
        // cgroupfs lets an empty cgroup be rmdir'ed with its control files in it; a plain
        // directory stands in for an empty cgroup, a file in it for one that holds processes.
        let root = tempfile::tempdir().unwrap();
        let svc = root.path().join("sysctr/docker");
        fs::create_dir_all(svc.join("engine")).unwrap();
        fs::create_dir_all(svc.join("docker/4f2a/sub")).unwrap();
        assert!(remove_tree(&svc));
        assert!(!svc.exists());
        assert!(
            root.path().join("sysctr").exists(),
            "only the service's cgroup goes"
        );
        // a busy leaf keeps itself and its ancestors; its empty siblings still go
        fs::create_dir_all(svc.join("engine")).unwrap();
        fs::create_dir_all(svc.join("docker/busy")).unwrap();
        fs::write(svc.join("docker/busy/cgroup.procs"), "42\n").unwrap();
        assert!(!remove_tree(&svc));
        assert!(svc.join("docker/busy").exists());
        assert!(!svc.join("engine").exists());
        // one that is not there is gone already
        assert!(remove_tree(&root.path().join("sysctr/never")));
    }

    #[test]
    fn enables_controllers_in_a_fake_cgroupfs() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        setup_v2(dir.path(), "sysctr").unwrap();
        // cpuset is enabled when the kernel has it (the node kernel)
        assert_eq!(
            fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids +io +cpuset"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("sysctr/cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids +io +cpuset"
        );
        // init moved itself into its own leaf, out of the delegatable tree
        assert_eq!(
            fs::read_to_string(dir.path().join("sysctr.init/cgroup.procs")).unwrap(),
            std::process::id().to_string()
        );
        fs::write(dir.path().join("cgroup.controllers"), "memory pids\n").unwrap();
        assert_eq!(
            setup_v2(dir.path(), "sysctr").unwrap_err().to_string(),
            "kernel lacks controllers: cpu"
        );
        // io is optional: without it the setup succeeds with the rest.
        fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        setup_v2(dir.path(), "sysctr").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("cgroup.subtree_control")).unwrap(),
            "+cpu +memory +pids"
        );
    }

    #[test]
    fn usage_files_are_opened_once_and_reread_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.current");
        fs::write(&path, "4096\n").unwrap();
        let mut files = UsageFiles::default();
        let opened = std::cell::Cell::new(0);
        let at = || {
            opened.set(opened.get() + 1);
            path.clone()
        };
        assert_eq!(files.read("web", Usage::Memory, at), Some(4096));
        // The same inode with new contents (as a cgroup file changes): no second open.
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap()
            .write_all_at(b"8192\n", 0)
            .unwrap();
        assert_eq!(files.read("web", Usage::Memory, at), Some(8192));
        assert_eq!(opened.get(), 1, "read again from the open file");
        // A service's files go when it is forgotten; another service's stay.
        assert_eq!(files.read("db", Usage::Memory, at), Some(8192));
        files.forget("web");
        assert_eq!(files.len(), 1);
        assert_eq!(files.read("web", Usage::Memory, at), Some(8192));
        assert_eq!(opened.get(), 3, "opened afresh after forget");
    }

    #[test]
    fn a_usage_read_that_fails_closes_the_file_and_the_next_opens_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.current");
        fs::write(&path, "not a number\n").unwrap();
        let mut files = UsageFiles::default();
        assert_eq!(files.read("web", Usage::Memory, || path.clone()), None);
        assert_eq!(files.len(), 0, "a bad read leaves nothing open");
        let missing = dir.path().join("gone");
        assert_eq!(files.read("web", Usage::Memory, || missing.clone()), None);
        assert_eq!(files.len(), 0);
        fs::write(&path, "12\n").unwrap();
        assert_eq!(files.read("web", Usage::Memory, || path.clone()), Some(12));
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn cpu_stat() {
        assert_eq!(
            parse_cpu_stat("usage_usec 1234\nuser_usec 1000\n"),
            Some(1234)
        );
        assert_eq!(parse_cpu_stat("nothing 1\n"), None);
    }
}

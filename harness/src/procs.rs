//! The process tree and cgroups as the host sees them: descendants of a process, zombies
//! among them, the host pid of a process known by its pid inside a pid namespace, and the
//! cleanup of cgroups a killed test namespace left behind.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `(pid, parent pid, state letter)` of every process, from /proc/*/stat. Processes that end
/// while /proc is read are skipped.
fn process_table() -> Vec<(i32, i32, char)> {
    let mut table = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name is in parentheses and may contain spaces: fields start after it.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if let Some(ppid) = fields.next().and_then(|v| v.parse::<i32>().ok()) {
            table.push((pid, ppid, state));
        }
    }
    table
}

/// Every process below `root` (not `root` itself), parents before their children.
pub fn descendants(root: i32) -> Vec<i32> {
    let table = process_table();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            table
                .iter()
                .filter(|(_, pp, _)| *pp == p)
                .map(|(c, _, _)| *c),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// The zombie processes below `root`.
pub fn zombies_below(root: i32) -> Vec<i32> {
    let below = descendants(root);
    process_table()
        .into_iter()
        .filter(|(pid, _, state)| *state == 'Z' && below.contains(pid))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// The first child of `pid` (unshare's one child: the namespace's PID 1).
pub fn first_child(pid: i32) -> Option<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
}

/// The pid of `pid` one level down its pid namespaces (the second `NSpid:` field): its pid
/// as the namespace's init sees it.
pub fn pid_in_child_namespace(pid: i32) -> Option<i64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
}

/// The host pid of the process below `ns_init` (a namespace's PID 1, by host pid) whose pid
/// inside that namespace is `ns_pid`.
pub fn host_pid_of(ns_init: i32, ns_pid: i64) -> Option<i32> {
    descendants(ns_init)
        .into_iter()
        .find(|pid| pid_in_child_namespace(*pid) == Some(ns_pid))
}

/// Polls `f` every 25 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// Removes a cgroup directory and every cgroup below it, children first (a cgroup goes
/// with rmdir, and only once it has no children and no processes).
pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Removes the cgroup `prefix` (init's `--cgroup-prefix`) and everything below it, in the
/// unified hierarchy and in every v1 hierarchy. True when none is left.
pub fn remove_cgroups(prefix: &str) -> bool {
    let base = PathBuf::from("/sys/fs/cgroup");
    let roots = fs::read_dir(&base)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .chain([base.clone()]);
    let mut left = false;
    for root in roots {
        let dir = root.join(prefix);
        if dir.is_dir() {
            remove_cgroup_tree(&dir);
            left |= dir.exists();
        }
    }
    !left
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_shells_background_child_is_its_descendant_and_first_child() {
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .unwrap();
        let me = child.id() as i32;
        let ok = wait_until(Duration::from_secs(5), || descendants(me).len() == 1);
        let below = descendants(me);
        let first = first_child(me);
        child.kill().unwrap();
        let _ = child.wait();
        assert!(ok, "sh's sleep never showed up below it: {below:?}");
        assert_eq!(first, below.first().copied());
        assert!(zombies_below(me).is_empty());
    }

    #[test]
    fn a_dead_unreaped_child_is_a_zombie_below_its_parent() {
        let mut child = Command::new("true").spawn().unwrap();
        let me = std::process::id() as i32;
        let pid = child.id() as i32;
        let ok = wait_until(Duration::from_secs(5), || zombies_below(me).contains(&pid));
        child.wait().unwrap();
        assert!(
            ok,
            "the exited, unreaped child {pid} was not seen as a zombie"
        );
    }

    #[test]
    fn a_missing_cgroup_prefix_counts_as_removed() {
        assert!(remove_cgroups("sysctr-harness-no-such-prefix"));
    }
}

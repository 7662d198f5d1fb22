//! The bench's scratch space: a busybox root filesystem, bundles and init run directories
//! on a tmpfs, and the cleanup of what an earlier, killed run left behind.

use super::*;

/// Where the scratch directories live. Each one gets a tmpfs of its own mounted on it
/// ([`Scratch::new`]), because in the guest init's run dir (bundles, container state) is on
/// tmpfs, and a disk filesystem here mounted with `discard` makes every file removal wait
/// for the device. Not /dev/shm itself: init refuses a service root below /dev.
pub(super) fn scratch_base() -> PathBuf {
    std::env::temp_dir()
}

/// Mounts a private tmpfs on `dir` (the bench runs as root); on a kernel or sandbox that
/// refuses, the directory stays on the disk filesystem and the bench says so.
fn mount_tmpfs(dir: &Path) {
    use nix::mount::{mount, MsFlags};
    if let Err(e) = mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    ) {
        eprintln!(
            "xtask: bench: no tmpfs on {} ({e}); scratch stays on the disk filesystem",
            dir.display()
        );
    }
}

/// Removes a scratch directory and the tmpfs on it, if any.
fn remove_scratch(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
    let _ = fs::remove_dir_all(dir);
}

pub(super) struct Scratch {
    pub(super) dir: PathBuf,
    pub(super) rootfs: PathBuf,
}

impl Scratch {
    pub(super) fn new() -> Result<Scratch> {
        let dir = scratch_base().join(format!("sysctr-bench-{}", std::process::id()));
        remove_scratch(&dir);
        fs::create_dir_all(&dir)?;
        mount_tmpfs(&dir);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
        let rootfs = dir.join("rootfs");
        harness::rootfs::busybox(&rootfs, &[])?;
        Ok(Scratch { dir, rootfs })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        remove_scratch(&self.dir);
    }
}

/// A long-running busybox service that stops at once (SIGKILL; a shell-less `sleep` as the
/// container's PID 1 would ignore SIGTERM).
pub(super) fn sleep_service(name: &str, rootfs: &Path) -> Value {
    json!({
        "name": name,
        "root": rootfs.display().to_string(),
        "args": ["/bin/sleep", "1000000"],
        "stop": {"signal": "SIGKILL", "timeout_secs": 2}
    })
}

/// Removes a cgroup directory tree (children first), in every hierarchy.
pub(super) fn remove_cgroups(prefix: &str) {
    harness::procs::remove_cgroups(prefix);
}

/// Leftovers of an earlier run that was killed (containers, cgroups, scratch directories),
/// so the bench can always be run again.
pub(super) fn cleanup_stale() {
    for e in [scratch_base(), PathBuf::from("/dev/shm")]
        .iter()
        .flat_map(fs::read_dir)
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        // Profiler output files of a killed run: sysctr-bench-<tool>-<pid>.
        if let Some((tool, pid)) = name
            .strip_prefix("sysctr-bench-")
            .and_then(|r| r.split_once('-'))
        {
            if ["perf", "offcpu", "trace", "strace"].contains(&tool)
                && pid
                    .parse::<i32>()
                    .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists())
            {
                let _ = fs::remove_file(e.path());
            }
            continue;
        }
        let Some(pid) = name
            .strip_prefix("sysctr-bench-")
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        eprintln!("xtask: bench: cleaning up after an interrupted run ({name})");
        // An init namespace of that run: its unshare has the scratch dir on its command line.
        let marker = format!("{}/", e.path().display());
        for p in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let cmdline = fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline);
            if cmdline.starts_with("unshare\0") && cmdline.contains(&marker) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        for rt in ["runc", "crun"] {
            let root = e.path().join(format!("{rt}-state"));
            if root.is_dir() {
                let _ = Command::new(rt)
                    .arg("--root")
                    .arg(&root)
                    .args(["delete", "-f", &name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        remove_scratch(&e.path());
        for tag in [
            "peer", "start", "v2", "mem0", "mem1", "mem10", "mem50", "mem100",
        ] {
            remove_cgroups(&format!("{name}-{tag}"));
        }
    }
}

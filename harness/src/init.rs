//! The real `init` binary under test on the host: in test mode, as PID 1 of fresh pid and
//! mount namespaces (`unshare --pid --fork --mount --kill-child`) or as a plain subreaper,
//! with its own manifest, run directory (control socket, bundles) and cgroup prefix.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How to launch one init under test; [`Launch::command`] builds the command line.
#[derive(Clone, Debug)]
pub struct Launch {
    pub init: PathBuf,
    pub manifest: PathBuf,
    pub run_dir: PathBuf,
    /// init's `--cgroup-prefix`: the cgroup its services go under, removed after the test.
    pub cgroup_prefix: String,
    /// PID 1 of new pid and mount namespaces (else a subreaper in the caller's).
    pub namespaces: bool,
    /// `prlimit --nofile=SOFT:HARD` around it (the limits the kernel gives a machine's init).
    pub nofile: Option<String>,
    /// A shell command run inside the new namespaces before init is exec'ed (a bind mount
    /// over /sys/fs/cgroup). Only with `namespaces`.
    pub prelude: Option<String>,
    /// More arguments for init.
    pub extra: Vec<String>,
}

impl Launch {
    /// PID 1 of new namespaces, with no prelude, no descriptor limits and no extra arguments.
    pub fn new(init: &Path, manifest: &Path, run_dir: &Path, cgroup_prefix: &str) -> Launch {
        Launch {
            init: init.to_path_buf(),
            manifest: manifest.to_path_buf(),
            run_dir: run_dir.to_path_buf(),
            cgroup_prefix: cgroup_prefix.to_string(),
            namespaces: true,
            nofile: None,
            prelude: None,
            extra: Vec::new(),
        }
    }

    /// The command (stdio left to the caller).
    pub fn command(&self) -> Command {
        let mut words: Vec<String> = Vec::new();
        if let Some(nofile) = &self.nofile {
            words.extend(["prlimit".into(), format!("--nofile={nofile}"), "--".into()]);
        }
        if self.namespaces {
            words.extend(
                ["unshare", "--pid", "--fork", "--mount", "--kill-child"].map(String::from),
            );
            if let Some(prelude) = &self.prelude {
                words.extend([
                    "sh".into(),
                    "-c".into(),
                    format!("{prelude} && exec \"$0\" \"$@\""),
                ]);
            }
        }
        let mut cmd = match words.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&self.init);
                c
            }
            None => Command::new(&self.init),
        };
        cmd.arg("--test-mode")
            .arg("--manifest")
            .arg(&self.manifest)
            .arg("--run-dir")
            .arg(&self.run_dir)
            .args(["--cgroup-prefix", &self.cgroup_prefix])
            .args(&self.extra);
        cmd
    }

    /// The control socket init listens on.
    pub fn socket(&self) -> PathBuf {
        socket(&self.run_dir)
    }
}

/// The control socket of an init whose run directory is `run_dir`.
pub fn socket(run_dir: &Path) -> PathBuf {
    run_dir.join("control.sock")
}

/// The manifest document for these service entries.
pub fn manifest(services: &[serde_json::Value]) -> serde_json::Value {
    serde_json::json!({ "version": 1, "services": services })
}

/// The host pid of init itself, given the pid of the process launched by
/// [`Launch::command`]: unshare's child in namespaces (once it exists), else that process.
pub fn init_pid(launched: i32, namespaces: bool) -> Option<i32> {
    if namespaces {
        crate::procs::first_child(launched)
    } else {
        Some(launched)
    }
}

/// The milliseconds of init's "services stopped in N ms" line in `log` (its console or log
/// file), or None when there is no such line.
pub fn services_stopped_ms(log: &str) -> Option<u64> {
    log.split("services stopped in ")
        .nth(1)?
        .split(" ms")
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inits_stop_time_from_its_log() {
        let log = "[   9.1] sysctr: INFO [shutdown] Poweroff: requested\n\
                   [   9.4] sysctr: INFO [shutdown] services stopped in 312 ms\n";
        assert_eq!(services_stopped_ms(log), Some(312));
        assert_eq!(
            services_stopped_ms("sysctr: INFO [shutdown] Poweroff: requested\n"),
            None
        );
        assert_eq!(services_stopped_ms("services stopped in soon"), None);
    }

    fn words(cmd: &Command) -> Vec<String> {
        std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|s| s.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn namespaced_init_runs_under_unshare_with_its_prefix_and_run_dir() {
        let l = Launch::new(
            Path::new("/b/init"),
            Path::new("/t/m.json"),
            Path::new("/t/run"),
            "p1",
        );
        assert_eq!(
            words(&l.command()),
            [
                "unshare",
                "--pid",
                "--fork",
                "--mount",
                "--kill-child",
                "/b/init",
                "--test-mode",
                "--manifest",
                "/t/m.json",
                "--run-dir",
                "/t/run",
                "--cgroup-prefix",
                "p1"
            ]
        );
        assert_eq!(l.socket(), Path::new("/t/run/control.sock"));
    }

    #[test]
    fn limits_prelude_and_extra_arguments_wrap_init_in_order() {
        let mut l = Launch::new(Path::new("/i"), Path::new("/m"), Path::new("/r"), "p");
        l.nofile = Some("1024:4096".into());
        l.prelude = Some("mount --bind /a /b".into());
        l.extra = vec!["--x".into()];
        let w = words(&l.command());
        assert_eq!(&w[..3], ["prlimit", "--nofile=1024:4096", "--"]);
        assert_eq!(
            w[8..11],
            ["sh", "-c", "mount --bind /a /b && exec \"$0\" \"$@\""]
        );
        assert_eq!(w[11], "/i");
        assert_eq!(w.last().unwrap(), "--x");
    }

    #[test]
    fn a_subreaper_is_init_itself_without_a_prelude() {
        let mut l = Launch::new(Path::new("/i"), Path::new("/m"), Path::new("/r"), "p");
        l.namespaces = false;
        l.prelude = Some("ignored".into());
        let w = words(&l.command());
        assert_eq!(w[0], "/i");
        assert!(!w.iter().any(|x| x.contains("ignored")));
        assert_eq!(init_pid(42, false), Some(42));
    }
}

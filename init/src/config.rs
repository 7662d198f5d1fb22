//! How this PID 1 runs: as the machine's init (reading the kernel command line) or in test
//! mode (a subreaper or the init of a fresh pid namespace, driven by command-line flags,
//! never touching the host's mounts and never rebooting the host).

use crate::log::Level;
use std::path::PathBuf;

pub use manifest::protocol::PowerAction;

pub fn parse_action(s: &str) -> Option<PowerAction> {
    match s {
        "reboot" => Some(PowerAction::Reboot),
        "poweroff" => Some(PowerAction::Poweroff),
        "halt" => Some(PowerAction::Halt),
        _ => None,
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Test mode: skip host mounts, use the paths below, log to stderr.
    pub test_mode: bool,
    pub manifest: PathBuf,
    /// Runtime state: bundles, container state, control socket (`/run/sysctr`).
    pub run_dir: PathBuf,
    /// cgroup path prefix for services (`sysctr` → `/sys/fs/cgroup/sysctr/<name>`).
    pub cgroup_prefix: String,
    /// Where persistent service logs go when /var is persistent (`/var/log/sysctr`).
    pub log_dir: Option<PathBuf>,
    pub log_level: Level,
    /// What the fatal path (panic, required step failed) does at the end.
    pub fatal_action: PowerAction,
    /// Test mode only: make the named boot step fail, to exercise the fatal/warn paths.
    pub fail_step: Option<String>,
    /// Test mode only: panic once boot has finished, to exercise the panic path.
    pub panic_after_boot: bool,
    /// Group allowed read-only control requests (the `sysctr` group), if it exists.
    pub control_gid: Option<u32>,
    /// How long one container create+start (or exec) may take before it is abandoned.
    pub start_timeout_secs: u64,
}

impl Config {
    /// The machine's init: everything from the kernel command line.
    pub fn from_cmdline(cmdline: &str) -> Config {
        let mut cfg = Config {
            test_mode: false,
            manifest: PathBuf::from("/etc/sysctr/manifest.json"),
            run_dir: PathBuf::from("/run/sysctr"),
            cgroup_prefix: "sysctr".into(),
            log_dir: Some(PathBuf::from("/var/log/sysctr")),
            log_level: Level::Info,
            fatal_action: PowerAction::Reboot,
            fail_step: None,
            panic_after_boot: false,
            control_gid: None,
            start_timeout_secs: 30,
        };
        cfg.apply_cmdline(cmdline);
        cfg
    }

    fn apply_cmdline(&mut self, cmdline: &str) {
        for word in cmdline.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "sysctr.log" => {
                    if let Some(l) = Level::parse(value) {
                        self.log_level = l;
                    }
                }
                "sysctr.fatal" => {
                    if let Some(a) = parse_action(value) {
                        self.fatal_action = a;
                    }
                }
                "sysctr.manifest" if value.starts_with('/') => self.manifest = value.into(),
                "sysctr.start_timeout" => {
                    if let Ok(n) = value.parse::<u64>() {
                        self.start_timeout_secs = n.max(1);
                    }
                }
                _ => {}
            }
        }
    }

    /// Test mode: `init --test-mode --manifest M --run-dir D [--cgroup-prefix P]
    /// [--log-dir L] [--log debug] [--fatal halt] [--fail-step NAME] [--panic-after-boot]`.
    pub fn from_args(args: &[String]) -> Result<Config, String> {
        let mut cfg = Config::from_cmdline("");
        cfg.test_mode = true;
        cfg.log_dir = None;
        cfg.cgroup_prefix = format!("sysctr-test-{}", std::process::id());
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match a.as_str() {
                "--test-mode" => {}
                "--manifest" => cfg.manifest = val(a)?.into(),
                "--run-dir" => cfg.run_dir = val(a)?.into(),
                "--cgroup-prefix" => cfg.cgroup_prefix = val(a)?,
                "--log-dir" => cfg.log_dir = Some(val(a)?.into()),
                "--log" => {
                    let v = val(a)?;
                    cfg.log_level = Level::parse(&v).ok_or(format!("bad --log {v}"))?
                }
                "--fatal" => {
                    let v = val(a)?;
                    cfg.fatal_action = parse_action(&v).ok_or(format!("bad --fatal {v}"))?
                }
                "--fail-step" => cfg.fail_step = Some(val(a)?),
                "--panic-after-boot" => cfg.panic_after_boot = true,
                "--start-timeout" => {
                    let v = val(a)?;
                    cfg.start_timeout_secs =
                        v.parse().map_err(|_| format!("bad --start-timeout {v}"))?
                }
                "--control-gid" => {
                    let v = val(a)?;
                    cfg.control_gid = Some(v.parse().map_err(|_| format!("bad gid {v}"))?)
                }
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(cfg)
    }

    pub fn socket_path(&self) -> PathBuf {
        self.run_dir.join("control.sock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_knobs() {
        let c = Config::from_cmdline("console=ttyS0 sysctr.log=debug sysctr.fatal=halt ro");
        assert_eq!(c.log_level, Level::Debug);
        assert_eq!(c.fatal_action, PowerAction::Halt);
        assert!(!c.test_mode);
        let c = Config::from_cmdline("sysctr.log=loud sysctr.fatal=explode");
        assert_eq!(c.log_level, Level::Info);
        assert_eq!(c.fatal_action, PowerAction::Reboot);
    }

    #[test]
    fn test_mode_args() {
        let args: Vec<String> = [
            "--test-mode",
            "--manifest",
            "/m.json",
            "--run-dir",
            "/r",
            "--fail-step",
            "tmp",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = Config::from_args(&args).unwrap();
        assert!(c.test_mode);
        assert_eq!(c.manifest, PathBuf::from("/m.json"));
        assert_eq!(c.fail_step.as_deref(), Some("tmp"));
        assert!(Config::from_args(&["--bogus".to_string()]).is_err());
    }
}

//! How this PID 1 runs: as the machine's init (reading the kernel command line) or in test
//! mode (a subreaper or the init of a fresh pid namespace, driven by command-line flags,
//! never touching the host's mounts and never rebooting the host).

use crate::log::Level;
use std::path::PathBuf;

pub use manifest::protocol::PowerAction;

/// A setting of this PID 1 that cannot be taken: on the kernel command line (a warning; the
/// default stays) or among the test-mode flags (init refuses to start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} needs a value")]
    MissingValue { flag: String },
    #[error("{flag}={value}: expected {expected}")]
    BadValue {
        flag: String,
        value: String,
        expected: &'static str,
    },
    #[error("unknown argument {0:?}")]
    UnknownArgument(String),
}

impl ConfigError {
    fn bad(flag: &str, value: &str, expected: &'static str) -> ConfigError {
        ConfigError::BadValue {
            flag: flag.to_string(),
            value: value.to_string(),
            expected,
        }
    }
}

const LEVELS: &str = "error, warn, info or debug";
const ACTIONS: &str = "reboot, poweroff or halt";
const START_TIMEOUT: &str = "a whole number of seconds, at least 1";
const MANIFEST_PATH: &str = "an absolute path";

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
    /// PID 1's state on the persistent partition (`/var/lib/sysctr`): the applied set and
    /// the image store. None in test mode without `--state-dir`.
    pub state_dir: Option<PathBuf>,
}

impl Config {
    /// The machine's init: everything from the kernel command line. A `sysctr.*` value
    /// that cannot be taken keeps its default; [`Config::parse_cmdline`] says which.
    pub fn from_cmdline(cmdline: &str) -> Config {
        Config::parse_cmdline(cmdline).0
    }

    /// [`Config::from_cmdline`], with the words it could not take (each keeps its default):
    /// PID 1 logs them rather than refusing to boot.
    pub fn parse_cmdline(cmdline: &str) -> (Config, Vec<ConfigError>) {
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
            state_dir: Some(PathBuf::from("/var/lib/sysctr")),
        };
        let problems = cfg.apply_cmdline(cmdline);
        (cfg, problems)
    }

    fn apply_cmdline(&mut self, cmdline: &str) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        for word in cmdline.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            let taken = match key {
                "sysctr.log" => Level::parse(value)
                    .map(|l| self.log_level = l)
                    .ok_or(LEVELS),
                "sysctr.fatal" => parse_action(value)
                    .map(|a| self.fatal_action = a)
                    .ok_or(ACTIONS),
                "sysctr.manifest" => value
                    .starts_with('/')
                    .then(|| self.manifest = value.into())
                    .ok_or(MANIFEST_PATH),
                "sysctr.start_timeout" => parse_start_timeout(value)
                    .map(|n| self.start_timeout_secs = n)
                    .ok_or(START_TIMEOUT),
                _ => Ok(()),
            };
            if let Err(expected) = taken {
                problems.push(ConfigError::bad(key, value, expected));
            }
        }
        problems
    }

    /// Test mode: `init --test-mode --manifest M --run-dir D [--cgroup-prefix P]
    /// [--log-dir L] [--state-dir S] [--log debug] [--fatal halt] [--fail-step NAME] [--panic-after-boot]`.
    pub fn from_args(args: &[String]) -> Result<Config, ConfigError> {
        let mut cfg = Config::from_cmdline("");
        cfg.test_mode = true;
        cfg.log_dir = None;
        cfg.state_dir = None;
        cfg.cgroup_prefix = format!("sysctr-test-{}", std::process::id());
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let flag = a.as_str();
            let mut val = || {
                it.next().cloned().ok_or_else(|| ConfigError::MissingValue {
                    flag: flag.to_string(),
                })
            };
            match flag {
                "--test-mode" => {}
                "--manifest" => cfg.manifest = val()?.into(),
                "--run-dir" => cfg.run_dir = val()?.into(),
                "--cgroup-prefix" => cfg.cgroup_prefix = val()?,
                "--log-dir" => cfg.log_dir = Some(val()?.into()),
                "--state-dir" => cfg.state_dir = Some(val()?.into()),
                "--log" => {
                    let v = val()?;
                    cfg.log_level = Level::parse(&v).ok_or(ConfigError::bad(flag, &v, LEVELS))?
                }
                "--fatal" => {
                    let v = val()?;
                    cfg.fatal_action =
                        parse_action(&v).ok_or(ConfigError::bad(flag, &v, ACTIONS))?
                }
                "--fail-step" => cfg.fail_step = Some(val()?),
                "--panic-after-boot" => cfg.panic_after_boot = true,
                "--start-timeout" => {
                    let v = val()?;
                    cfg.start_timeout_secs =
                        parse_start_timeout(&v).ok_or(ConfigError::bad(flag, &v, START_TIMEOUT))?
                }
                "--control-gid" => {
                    let v = val()?;
                    cfg.control_gid = Some(
                        v.parse()
                            .map_err(|_| ConfigError::bad(flag, &v, "a numeric group id"))?,
                    )
                }
                other => return Err(ConfigError::UnknownArgument(other.to_string())),
            }
        }
        Ok(cfg)
    }

    pub fn socket_path(&self) -> PathBuf {
        self.run_dir.join("control.sock")
    }
}

/// A start timeout: whole seconds, at least 1.
fn parse_start_timeout(v: &str) -> Option<u64> {
    v.parse::<u64>().ok().filter(|n| *n >= 1)
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
    fn every_bad_cmdline_value_is_reported_by_key_and_keeps_its_default() {
        let (c, problems) = Config::parse_cmdline(
            "sysctr.log=loud sysctr.fatal=explode sysctr.manifest=rel.json \
             sysctr.start_timeout=0 sysctr.start_timeout=soon sysctr.other=x root=/dev/vda",
        );
        assert_eq!(c.log_level, Level::Info);
        assert_eq!(c.fatal_action, PowerAction::Reboot);
        assert_eq!(c.manifest, PathBuf::from("/etc/sysctr/manifest.json"));
        assert_eq!(c.start_timeout_secs, 30);
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "sysctr.log=loud: expected error, warn, info or debug",
                "sysctr.fatal=explode: expected reboot, poweroff or halt",
                "sysctr.manifest=rel.json: expected an absolute path",
                "sysctr.start_timeout=0: expected a whole number of seconds, at least 1",
                "sysctr.start_timeout=soon: expected a whole number of seconds, at least 1",
            ]
        );
        let (c, problems) = Config::parse_cmdline("sysctr.start_timeout=5 sysctr.manifest=/m");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((c.start_timeout_secs, c.manifest), (5, PathBuf::from("/m")));
    }

    #[test]
    fn bad_test_mode_flags_name_the_flag_and_the_value() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            Config::from_args(&args(&["--manifest"])).unwrap_err(),
            ConfigError::MissingValue {
                flag: "--manifest".into()
            }
        );
        assert_eq!(
            Config::from_args(&args(&["--fatal", "explode"]))
                .unwrap_err()
                .to_string(),
            "--fatal=explode: expected reboot, poweroff or halt"
        );
        assert_eq!(
            Config::from_args(&args(&["--start-timeout", "0"]))
                .unwrap_err()
                .to_string(),
            "--start-timeout=0: expected a whole number of seconds, at least 1"
        );
        assert_eq!(
            Config::from_args(&args(&["--control-gid", "wheel"]))
                .unwrap_err()
                .to_string(),
            "--control-gid=wheel: expected a numeric group id"
        );
        assert_eq!(
            Config::from_args(&args(&["--bogus"])).unwrap_err(),
            ConfigError::UnknownArgument("--bogus".into())
        );
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

//! Boot configuration from outside the image: hostname, ssh authorized keys and network
//! settings. The image holds no secrets (one image serves every machine, and anyone may read
//! it; docs/architecture.md, invariant 7): they arrive at boot and are written under `/run/sysctr/bootconfig/` for the containers that bind-mount it.
//!
//! Sources, each optional, merged field by field, a later one overriding what an earlier one
//! sets (`rootfs/README.md` documents the order for users):
//! 1. `sysctr/config.json` on the ESP — a person writes the image to a stick and edits it;
//! 2. QEMU's fw_cfg `opt/sysctr/config` — what `cargo xtask run` and the tests pass;
//! 3. the kernel command line: `sysctr.hostname=NAME`, `sysctr.ip=dhcp` or
//!    `sysctr.ip=ADDRESS/PREFIX[,GATEWAY[,DNS…]]`, `sysctr.swarm.{role,manager,advertise}=`
//!    (never the join token: see [`swarm`]).
//!
//! A malformed source is reported (file, field) and skipped; the others still apply.

use serde::Deserialize;
use std::fs;
use std::path::Path;

pub mod swarm;
pub use swarm::{Swarm, SwarmValueError};

/// Where QEMU's `-fw_cfg name=opt/sysctr/config,file=…` appears in sysfs.
pub const FW_CFG_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/sysctr/config/raw";

/// The boot config file on the ESP, relative to its root.
pub const ESP_CONFIG: &str = "sysctr/config.json";

#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub authorized_keys: Option<Vec<String>>,
    #[serde(default)]
    pub network: Option<Network>,
    /// How a node image joins a Docker Swarm (docs/cluster.md); merged field by field.
    #[serde(default)]
    pub swarm: Option<Swarm>,
}

impl BootConfig {
    /// Takes every field `later` sets.
    pub fn merge(&mut self, later: BootConfig) {
        if later.hostname.is_some() {
            self.hostname = later.hostname;
        }
        if later.authorized_keys.is_some() {
            self.authorized_keys = later.authorized_keys;
        }
        if later.network.is_some() {
            self.network = later.network;
        }
        if let Some(s) = later.swarm {
            self.swarm.get_or_insert_with(Swarm::default).merge(s);
        }
    }

    /// Once every source is merged: a swarm that fails the checks across its fields (a
    /// worker without a token, …) is dropped, and the reason returned for the console. The
    /// node then joins no swarm; the rest of the boot config still applies.
    pub fn drop_invalid_swarm(&mut self) -> Option<BootConfigError> {
        let err = self.swarm.as_ref()?.check().err()?;
        self.swarm = None;
        Some(err)
    }

    /// The simple keys of the kernel command line; a malformed `sysctr.ip=` is an error.
    pub fn from_cmdline(cmdline: &str) -> Result<BootConfig, BootConfigError> {
        let mut cfg = BootConfig::default();
        let mut swarm = Swarm::default();
        for word in cmdline.split_whitespace() {
            if swarm.set_from_cmdline(word)? {
                continue;
            }
            if let Some(h) = word.strip_prefix("sysctr.hostname=") {
                cfg.hostname = Some(h.to_string());
            } else if let Some(ip) = word.strip_prefix("sysctr.ip=") {
                cfg.network = Some(if ip == "dhcp" {
                    Network::Dhcp
                } else {
                    let mut parts = ip.split(',');
                    let address = parts.next().unwrap_or_default().to_string();
                    if !address.contains('/') {
                        return Err(BootConfigError::Cmdline {
                            word: word.to_string(),
                            expected: "dhcp or ADDRESS/PREFIX[,GATEWAY[,DNS...]]",
                        });
                    }
                    let gateway = parts.next().filter(|g| !g.is_empty()).map(String::from);
                    Network::Static {
                        address,
                        gateway,
                        dns: parts.map(String::from).collect(),
                    }
                });
            }
        }
        if swarm != Swarm::default() {
            cfg.swarm = Some(swarm);
        }
        Ok(cfg)
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Network {
    Dhcp,
    Static {
        address: String,
        #[serde(default)]
        gateway: Option<String>,
        #[serde(default)]
        dns: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BootConfigError {
    #[error("kernel command line: {word}: expected {expected}")]
    Cmdline {
        word: String,
        expected: &'static str,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// A bad `sysctr.swarm.KEY=VALUE` word; the value itself is in `reason`.
    #[error("kernel command line: sysctr.swarm.{key}: {reason}")]
    SwarmCmdline {
        key: &'static str,
        #[source]
        reason: SwarmValueError,
    },
    #[error(
        "kernel command line: sysctr.swarm.token: a join token may not be on the kernel command line (every container can read /proc/cmdline); put it in the boot config's swarm.token (ESP sysctr/config.json or fw_cfg opt/sysctr/config)"
    )]
    SwarmTokenOnCmdline,
    #[error(
        "kernel command line: sysctr.swarm.{key}: unknown swarm setting (expected role, manager or advertise)"
    )]
    SwarmUnknownSetting { key: String },
    /// The checks across the merged swarm fields (swarm::Swarm::check).
    #[error(
        "swarm.role: missing (expected \"manager\", which initialises a swarm, or \"worker\", which joins one)"
    )]
    SwarmNoRole,
    #[error(
        "swarm: role worker needs {} (the manager's ADDR[:PORT] and `docker swarm join-token -q worker`)",
        fields(missing)
    )]
    SwarmWorkerNeeds { missing: Vec<&'static str> },
    #[error(
        "swarm: role manager initialises a swarm; {} only apply to role worker",
        fields(extra)
    )]
    SwarmManagerGiven { extra: Vec<&'static str> },
    #[error("write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// `swarm.manager and swarm.token`: the fields a swarm error names.
fn fields(names: &[&'static str]) -> String {
    names
        .iter()
        .map(|n| format!("swarm.{n}"))
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Reads a boot config file; a missing file is not an error (None). The error of a
/// malformed one names the file and the field (`network.address: …`).
pub fn read(path: &Path) -> Result<Option<BootConfig>, BootConfigError> {
    match fs::read(path) {
        Ok(bytes) => parse(&bytes, &path.display().to_string()).map(Some),
        Err(_) => Ok(None),
    }
}

/// Parses boot config JSON; `path` names it in errors.
pub fn parse(bytes: &[u8], path: &str) -> Result<BootConfig, BootConfigError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        BootConfigError::Parse {
            path: if field == "." {
                path.to_string()
            } else {
                format!("{path}: field {field}")
            },
            source: e.into_inner(),
        }
    })
}

/// Writes the files containers consume: `hostname`, `authorized_keys`, `network.env` and,
/// with a swarm, `swarm.env` (mode 600: it holds the join token).
pub fn write_out(cfg: &BootConfig, dir: &Path) -> Result<(), BootConfigError> {
    let put = |name: &str, text: String, mode: u32| {
        let path = dir.join(name);
        let res = fs::create_dir_all(dir)
            .and_then(|_| fs::write(&path, text))
            .and_then(|_| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            });
        res.map_err(|source| BootConfigError::Write {
            path: path.display().to_string(),
            source,
        })
    };
    if let Some(h) = &cfg.hostname {
        put("hostname", format!("{h}\n"), 0o644)?;
    }
    let mut keys = cfg.authorized_keys.clone().unwrap_or_default().join("\n");
    if !keys.is_empty() {
        keys.push('\n');
    }
    put("authorized_keys", keys, 0o600)?;
    let env = match &cfg.network {
        None | Some(Network::Dhcp) => "MODE=dhcp\n".to_string(),
        Some(Network::Static {
            address,
            gateway,
            dns,
        }) => format!(
            "MODE=static\nADDRESS={}\nGATEWAY={}\nDNS=\"{}\"\n",
            address,
            gateway.as_deref().unwrap_or(""),
            dns.join(" ")
        ),
    };
    put("network.env", env, 0o644)?;
    if let Some(s) = &cfg.swarm {
        put("swarm.env", s.env(), 0o600)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_files_for_containers() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("config.json");
        fs::write(
            &src,
            r#"{"hostname":"edge1","authorized_keys":["ssh-ed25519 AAAA test"],
               "network":{"mode":"static","address":"10.0.2.20/24","gateway":"10.0.2.2","dns":["10.0.2.3"]}}"#,
        )
        .unwrap();
        let cfg = read(&src).unwrap().unwrap();
        let out = dir.path().join("out");
        write_out(&cfg, &out).unwrap();
        assert_eq!(fs::read_to_string(out.join("hostname")).unwrap(), "edge1\n");
        assert_eq!(
            fs::read_to_string(out.join("authorized_keys")).unwrap(),
            "ssh-ed25519 AAAA test\n"
        );
        assert_eq!(
            fs::read_to_string(out.join("network.env")).unwrap(),
            "MODE=static\nADDRESS=10.0.2.20/24\nGATEWAY=10.0.2.2\nDNS=\"10.0.2.3\"\n"
        );
        assert_eq!(read(&dir.path().join("missing")).unwrap(), None);
        fs::write(&src, r#"{"hostnme":"typo"}"#).unwrap();
        assert!(read(&src)
            .unwrap_err()
            .to_string()
            .contains("unknown field `hostnme`"));
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse(
            br#"{"network":{"mode":"static","address":7}}"#,
            "ESP sysctr/config.json",
        )
        .unwrap_err()
        .to_string();
        assert!(
            // serde loses the path inside an internally tagged enum: the field is `network`
            err.starts_with("ESP sysctr/config.json: field network: invalid type"),
            "{err}"
        );
        let err = parse(b"{\"hostname\": ", "f").unwrap_err().to_string();
        assert!(err.starts_with("f: field hostname: EOF"), "{err}");
    }

    #[test]
    fn later_sources_override_field_by_field() {
        let mut cfg = parse(
            br#"{"hostname":"from-esp","authorized_keys":["k1"],"network":{"mode":"dhcp"}}"#,
            "esp",
        )
        .unwrap();
        cfg.merge(parse(br#"{"authorized_keys":["k2"]}"#, "fw_cfg").unwrap());
        cfg.merge(
            BootConfig::from_cmdline(
                "ro sysctr.hostname=edge7 sysctr.ip=10.0.2.20/24,10.0.2.2,10.0.2.3",
            )
            .unwrap(),
        );
        assert_eq!(cfg.hostname.as_deref(), Some("edge7"));
        assert_eq!(cfg.authorized_keys, Some(vec!["k2".to_string()]));
        assert_eq!(
            cfg.network,
            Some(Network::Static {
                address: "10.0.2.20/24".into(),
                gateway: Some("10.0.2.2".into()),
                dns: vec!["10.0.2.3".into()],
            })
        );
        assert_eq!(
            BootConfig::from_cmdline("sysctr.ip=10.0.2.20")
                .unwrap_err()
                .to_string(),
            "kernel command line: sysctr.ip=10.0.2.20: expected dhcp or \
             ADDRESS/PREFIX[,GATEWAY[,DNS...]]"
        );
        assert_eq!(
            BootConfig::from_cmdline("quiet").unwrap(),
            BootConfig::default()
        );
    }
}

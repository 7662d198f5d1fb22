//! Boot configuration from outside the image: hostname, ssh authorized keys and network
//! settings. The image holds no secrets (DESIGN.md invariant 7); they arrive at boot from
//! QEMU's fw_cfg (`opt/sysctr/config`) and are written under `/run/sysctr/bootconfig/`
//! for the containers that bind-mount it.

use serde::Deserialize;
use std::fs;
use std::path::Path;

/// Where QEMU's `-fw_cfg name=opt/sysctr/config,file=…` appears in sysfs.
pub const FW_CFG_PATH: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/sysctr/config/raw";

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    #[serde(default)]
    pub network: Option<Network>,
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
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
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Reads the boot config; a missing source is not an error (an empty config).
pub fn read(path: &Path) -> Result<BootConfig, BootConfigError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| BootConfigError::Parse {
            path: path.display().to_string(),
            source,
        }),
        Err(_) => Ok(BootConfig::default()),
    }
}

/// Writes the files containers consume: `hostname`, `authorized_keys`, `network.env`.
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
    let mut keys = cfg.authorized_keys.join("\n");
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
    put("network.env", env, 0o644)
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
        let cfg = read(&src).unwrap();
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
        assert_eq!(
            read(&dir.path().join("missing")).unwrap(),
            BootConfig::default()
        );
        fs::write(&src, r#"{"hostnme":"typo"}"#).unwrap();
        assert!(read(&src)
            .unwrap_err()
            .to_string()
            .contains("unknown field `hostnme`"));
    }
}

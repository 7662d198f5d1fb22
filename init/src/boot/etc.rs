//! The steps that give the machine its configuration: the merged boot config
//! (`bootconfig`), a writable /etc (`mount-etc`) and the hostname (`hostname`).

use super::{Ctx, StepError};
use nix::mount::MsFlags;
use std::path::Path;

const BOOTCONFIG_DIR: &str = "/run/sysctr/bootconfig";

/// Merges the boot config sources (see [`crate::bootconfig`]) and writes the result out. A
/// malformed source is reported on the console, naming file and field, and skipped.
pub(super) fn read_bootconfig() -> Result<(), StepError> {
    use crate::bootconfig::{self, BootConfig, ESP_CONFIG};
    let mut cfg = BootConfig::default();
    let mut used = Vec::new();
    let esp = crate::bootslot::with_esp(false, |esp| {
        bootconfig::read(&esp.join(ESP_CONFIG)).map_err(|e| e.to_string())
    });
    match esp {
        Ok(Some(c)) => {
            cfg.merge(c);
            used.push("ESP sysctr/config.json");
        }
        Ok(None) => {}
        Err(e) => crate::error!("bootconfig", "{e}; this source is ignored"),
    }
    match bootconfig::read(Path::new(bootconfig::FW_CFG_PATH)) {
        Ok(Some(c)) => {
            cfg.merge(c);
            used.push("fw_cfg");
        }
        Ok(None) => {}
        Err(e) => crate::error!("bootconfig", "{e}; this source is ignored"),
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    match BootConfig::from_cmdline(&cmdline) {
        Ok(c) if c != BootConfig::default() => {
            cfg.merge(c);
            used.push("kernel command line");
        }
        Ok(_) => {}
        Err(e) => crate::error!("bootconfig", "{e}; this source is ignored"),
    }
    if let Some(e) = cfg.drop_invalid_swarm() {
        crate::error!("bootconfig", "{e}; this node joins no swarm");
    }
    crate::info!(
        "bootconfig",
        "from {}",
        if used.is_empty() {
            "defaults only".to_string()
        } else {
            used.join(" + ")
        }
    );
    bootconfig::write_out(&cfg, Path::new(BOOTCONFIG_DIR))
        .map_err(|e| StepError::Other(e.to_string()))
}

/// /etc becomes writable (hostname, resolv.conf) as an overlay on the read-only copy.
pub(super) fn mount_etc(c: &mut Ctx) -> Result<(), StepError> {
    let base = Path::new("/run/sysctr/etc");
    for d in ["upper", "work"] {
        std::fs::create_dir_all(base.join(d)).map_err(|source| StepError::Io {
            what: format!("create {}", base.join(d).display()),
            source,
        })?;
    }
    c.mount(
        "overlay",
        "/etc",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("lowerdir=/etc,upperdir=/run/sysctr/etc/upper,workdir=/run/sysctr/etc/work"),
    )
}

pub(super) fn set_hostname() -> Result<(), StepError> {
    let name = std::fs::read_to_string(Path::new(BOOTCONFIG_DIR).join("hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "sysctr".to_string());
    nix::unistd::sethostname(&name)
        .map_err(|e| StepError::Other(format!("sethostname {name}: {e}")))?;
    crate::info!("hostname", "{name}");
    Ok(())
}

//! The slot UKIs a bundle carries, read and checked against the bundle before it is
//! built: size, the os-release's slot and version, the dm-verity root hash on the command
//! line.

use anyhow::{bail, Context, Result};
use manifest::bundle::{self, pe};
use manifest::protocol_update::Slot;
use std::fs;
use std::path::{Path, PathBuf};

/// A UKI as read for checking: its bytes, command line and os-release.
pub(super) struct Uki {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub cmdline: Option<String>,
    pub osrel: Option<String>,
}

pub(super) fn read_uki(path: &Path) -> Result<Uki> {
    let bytes = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.is_empty() || bytes.len() as u64 > bundle::MAX_UKI_BYTES {
        bail!("{}: {} bytes is not a UKI", path.display(), bytes.len());
    }
    let text = |name| {
        pe::section(&mut std::io::Cursor::new(&bytes), name)
            .ok()
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    };
    Ok(Uki {
        path: path.to_path_buf(),
        cmdline: text(".cmdline"),
        osrel: text(".osrel"),
        bytes,
    })
}

/// Checks a slot's UKI against the bundle: its os-release names this slot and version, and
/// the dm-verity table in its command line (if any) names this root hash.
pub(super) fn check_uki(uki: &Uki, slot: Slot, version: &str, root_hash: &str) -> Result<()> {
    let name = uki.path.display();
    if let Some(osrel) = &uki.osrel {
        if let Some(s) = pe::os_release_value(osrel, "SYSCTR_SLOT") {
            if s != slot.as_str() {
                bail!("{name}: its os-release says SYSCTR_SLOT={s}, but it is given as slot {slot}'s UKI");
            }
        }
        if let Some(v) = pe::os_release_value(osrel, "SYSCTR_VERSION") {
            if v != version {
                bail!("{name}: its os-release says SYSCTR_VERSION={v}, the bundle is --version {version}");
            }
        }
    }
    match (uki.cmdline.as_deref().and_then(cmdline_verity), &uki.cmdline) {
        (Some((h, _)), _) if h != root_hash => bail!(
            "{name}: its command line names dm-verity root {h}, the root filesystem's is {root_hash}: this UKI would not boot this root"
        ),
        (Some(_), _) => {}
        (None, Some(_)) => eprintln!(
            "xtask: bundle: warning: {name}'s command line has no dm-verity table to check the root hash against"
        ),
        (None, None) => eprintln!(
            "xtask: bundle: warning: {name} has no .cmdline section; the root hash is not checked against it"
        ),
    }
    Ok(())
}

/// A dm-verity table's `sha256 <root hash> <salt>` in a kernel command line.
pub(super) fn cmdline_verity(cmdline: &str) -> Option<(String, String)> {
    let words: Vec<&str> = cmdline
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .collect();
    let i = words.iter().position(|w| *w == "sha256")?;
    let hash = words.get(i + 1)?.to_string();
    let salt = words.get(i + 2)?.to_string();
    (hash.len() == 64 && bundle::from_hex(&hash).is_ok()).then_some((hash, salt))
}

//! What the image says about itself to the updater: `/etc/sysctr/release.json` (name,
//! version, `compatible`) and the trusted update keys.

use crate::util::workspace_root;
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// `/etc/sysctr/release.json`: name, version and `compatible` of this image; the update
/// helper refuses bundles for another `compatible` and (without --allow-downgrade) versions
/// that are not newer.
pub(super) fn write_release(
    stage: &Path,
    name: &str,
    version: &str,
    compatible: &str,
    test_hook: Option<&str>,
) -> Result<()> {
    let mut release = serde_json::json!({
        "name": name,
        "version": version,
        "compatible": compatible,
    });
    if let Some(hook) = test_hook {
        eprintln!("xtask: image: TEST IMAGE: release.json carries test_hook {hook:?}");
        release["test_hook"] = hook.into();
    }
    let text = serde_json::to_string_pretty(&release)?;
    rootfs::assemble::write_text(&stage.join("etc/sysctr/release.json"), &(text + "\n"))
}

/// `/etc/sysctr/update-keys/*.pub`: the minisign public keys update bundles must be signed
/// with. Without `--update-key` the repository's test-only key is trusted, which is for
/// development images only: its secret half is public.
pub(super) fn install_update_keys(stage: &Path, keys: &[PathBuf]) -> Result<()> {
    let dir = stage.join("etc/sysctr/update-keys");
    fs::create_dir_all(&dir)?;
    let keys: Vec<PathBuf> = if keys.is_empty() {
        eprintln!(
            "xtask: image: WARNING: the image trusts keys/test-only.pub for updates (its secret \
             key is in the repository); pass --update-key FILE for a real deployment"
        );
        vec![workspace_root().join("keys/test-only.pub")]
    } else {
        keys.to_vec()
    };
    for (i, k) in keys.iter().enumerate() {
        let text = fs::read_to_string(k)
            .with_context(|| format!("cannot read update key {}", k.display()))?;
        manifest::bundle::signature::TrustedKey::parse(&text, &k.display().to_string())
            .map_err(|e| anyhow::anyhow!("{}: not a minisign public key: {e}", k.display()))?;
        rootfs::assemble::write_text(&dir.join(format!("key{i}.pub")), &text)?;
    }
    Ok(())
}

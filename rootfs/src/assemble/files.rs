//! The file operations of the assembly, each error naming the path: directories, text
//! files, copies with their mode, sizes, JSON files, paths inside a container root.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// `path` (absolute, as seen in the container) under `root`, refusing `..`.
pub(super) fn inside(root: &Path, path: &str) -> Result<PathBuf> {
    let rel = Path::new(path);
    if !rel.is_absolute() || rel.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("path {path:?} must be absolute without ..");
    }
    Ok(root.join(rel.strip_prefix("/")?))
}

pub fn mkdir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

pub fn write_text(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir(parent)?;
    }
    let _ = fs::remove_file(path);
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

/// Copies a file with `mode`, or 755/644 by whether the source is executable.
pub fn copy_file(src: &Path, dest: &Path, mode: Option<u32>) -> Result<()> {
    if let Some(parent) = dest.parent() {
        mkdir(parent)?;
    }
    let _ = fs::remove_file(dest);
    fs::copy(src, dest)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dest.display()))?;
    let mode = match mode {
        Some(m) => m,
        None => {
            let m = fs::metadata(src)?.permissions().mode();
            if m & 0o111 != 0 {
                0o755
            } else {
                0o644
            }
        }
    };
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Makes every directory under `dir` writable again, so a stage can be removed.
pub fn make_writable(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o755))?;
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// The `"services"` list of a file of extra services (a manifest fragment).
pub(super) fn services_in(file: &Path) -> Result<Vec<Value>> {
    let mut v: Value = read_json(file)?;
    match v.get_mut("services").map(Value::take) {
        Some(Value::Array(list)) => Ok(list),
        _ => bail!("{}: no \"services\" list", file.display()),
    }
}

/// Apparent size of the regular files in a tree (symlinks and directories not counted).
pub fn tree_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let ft = entry.file_type()?;
        if ft.is_dir() {
            total += tree_size(&entry.path())?;
        } else if ft.is_file() {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

pub(super) fn read_json(path: &Path) -> Result<Value> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))
}

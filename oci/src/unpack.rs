//! Applying layer tars, in order, to one directory: the container's root as the image
//! describes it.
//!
//! Safety rules (every entry is checked; the first bad one fails the import):
//! - an entry name that is absolute or has a `..` component is refused;
//! - each parent directory is resolved one component at a time with `lstat`, never by the
//!   host's path lookup: a symlink met on the way is followed *inside* the root (an absolute
//!   target starts again at the root, as the container would see it), and one whose target
//!   leads above the root is refused, as is a parent that is a regular file;
//! - the entry itself is never written through: an existing file, symlink or directory at its
//!   path is removed first, and files are created with `O_EXCL`;
//! - a hard link must name an existing non-directory inside the root, resolved the same way;
//! - character and block devices and fifos are skipped with a warning (the runtime mounts its
//!   own `/dev`, and a read-only root has no use for a fifo);
//! - whiteouts (`.wh.NAME`) remove NAME from lower layers, opaque markers (`.wh..wh..opq`)
//!   hide everything the lower layers had in that directory; neither removes what the same
//!   layer added, and a whiteout of `.` or `..` is refused.
//!
//! Ownership is not kept: the OS root is packed with every file owned by root.

use super::error::{OciError, Result};
use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// Symlinks followed while resolving one path, as the kernel's limit.
const MAX_HOPS: usize = 40;

/// Applies layers to `root` (which must exist and be empty before the first layer).
pub struct Unpacker {
    root: PathBuf,
    image: String,
    /// Directory modes, set when all layers are in (a read-only directory would stop later
    /// layers from writing into it).
    dir_modes: BTreeMap<PathBuf, u32>,
    pub warnings: Vec<String>,
}

/// Why one entry is refused (turned into [`OciError::Entry`] with image, layer and path).
type Refusal = String;

impl Unpacker {
    pub fn new(root: &Path, image: &str) -> Unpacker {
        Unpacker {
            root: root.to_path_buf(),
            image: image.to_string(),
            dir_modes: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Continues on a root that already holds lower layers (a copy of them with writable
    /// directories): `modes` are those directories' own modes, set by [`Unpacker::finish`].
    pub fn with_dir_modes(mut self, modes: BTreeMap<PathBuf, u32>) -> Unpacker {
        self.dir_modes = modes;
        self
    }

    /// Applies one uncompressed layer tar. `layer` names it in messages (its digest).
    pub fn apply(&mut self, tar: impl Read, layer: &str) -> Result<()> {
        let mut archive = tar::Archive::new(tar);
        let corrupt = |e: io::Error| OciError::Layer {
            image: self.image.clone(),
            digest: layer.to_string(),
            message: e.to_string(),
        };
        // Paths (relative to the root, symlinks resolved) this layer created: whiteouts and
        // opaque markers hide only what lower layers had.
        let mut added: HashSet<PathBuf> = HashSet::new();
        let entries = archive.entries().map_err(corrupt)?;
        for entry in entries {
            let mut entry = entry.map_err(corrupt)?;
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let entry_err = |reason: Refusal| OciError::Entry {
                image: self.image.clone(),
                digest: layer.to_string(),
                path: shown.clone(),
                reason,
            };
            let write_err = |source: io::Error| OciError::Write {
                image: self.image.clone(),
                digest: layer.to_string(),
                path: shown.clone(),
                source,
            };
            let kind = entry.header().entry_type();
            if kind == tar::EntryType::XGlobalHeader {
                continue;
            }
            let comps = normalize(&raw).map_err(entry_err)?;
            let Some((name, parents)) = comps.split_last() else {
                // The root itself (`./`): keep its mode.
                if kind.is_dir() {
                    let mode = entry.header().mode().map_err(corrupt)?;
                    self.dir_modes.insert(PathBuf::new(), mode & 0o7777);
                }
                continue;
            };
            let name_str = name.to_string_lossy();
            if let Some(hidden) = name_str.strip_prefix(WHITEOUT) {
                if name_str == OPAQUE {
                    if let Some(dir) = self.resolve_dir(parents, None).map_err(entry_err)? {
                        self.hide_lower(&dir, &added).map_err(write_err)?;
                    }
                } else if hidden.starts_with(".wh.") {
                    // aufs bookkeeping (`.wh..wh.plnk`, …): no file of the image.
                    continue;
                } else {
                    if hidden.is_empty() || hidden == "." || hidden == ".." {
                        return Err(entry_err(format!(
                            "whiteout of {hidden:?} would remove a parent directory"
                        )));
                    }
                    if let Some(dir) = self.resolve_dir(parents, None).map_err(entry_err)? {
                        let target = dir.join(hidden);
                        if !added.contains(&target) {
                            remove_existing(&self.root.join(&target)).map_err(write_err)?;
                        }
                    }
                }
                continue;
            }

            let dir = self
                .resolve_dir(parents, Some(&mut added))
                .map_err(entry_err)?
                .expect("created when missing");
            let rel = dir.join(name);
            let host = self.root.join(&rel);
            // Symlinks and hard links have no mode of their own; only read it where used.
            let mode = || entry.header().mode().map(|m| m & 0o7777).map_err(corrupt);
            match kind {
                tar::EntryType::Directory => {
                    match fs::symlink_metadata(&host) {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => {
                            remove_existing(&host).map_err(write_err)?;
                            make_dir(&host).map_err(write_err)?;
                        }
                        Err(_) => make_dir(&host).map_err(write_err)?,
                    }
                    let mode = mode()?;
                    self.dir_modes.insert(rel.clone(), mode);
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let mode = mode()?;
                    remove_existing(&host).map_err(write_err)?;
                    let mut f = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&host)
                        .map_err(write_err)?;
                    io::copy(&mut entry, &mut f).map_err(corrupt)?;
                    f.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(write_err)?;
                }
                tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| entry_err("symlink without a target".into()))?;
                    remove_existing(&host).map_err(write_err)?;
                    symlink(OsStr::from_bytes(&target), &host).map_err(write_err)?;
                }
                tar::EntryType::Link => {
                    let target = entry
                        .link_name_bytes()
                        .ok_or_else(|| entry_err("hard link without a target".into()))?
                        .into_owned();
                    let source = self.hard_link_target(&target).map_err(entry_err)?;
                    if source != rel {
                        remove_existing(&host).map_err(write_err)?;
                        fs::hard_link(self.root.join(&source), &host).map_err(write_err)?;
                    }
                }
                tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                    let what = match kind {
                        tar::EntryType::Char => "character device",
                        tar::EntryType::Block => "block device",
                        _ => "fifo",
                    };
                    self.warnings.push(format!(
                        "image {}: layer {layer}: skipped {what} {shown:?} (device nodes and fifos are not copied; the runtime provides /dev)",
                        self.image
                    ));
                    continue;
                }
                other => {
                    return Err(entry_err(format!("unsupported tar entry type {other:?}")));
                }
            }
            added.insert(rel);
        }
        Ok(())
    }

    /// Sets the directory modes the layers asked for; call once, after the last layer.
    pub fn finish(self) -> Result<Vec<String>> {
        let mut dirs: Vec<(&PathBuf, &u32)> = self.dir_modes.iter().collect();
        // Deepest first, so a read-only parent does not stop its children being set.
        dirs.sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (rel, mode) in dirs {
            let host = self.root.join(rel);
            if fs::symlink_metadata(&host).is_ok_and(|m| m.is_dir()) {
                fs::set_permissions(&host, fs::Permissions::from_mode(*mode)).map_err(|e| {
                    OciError::Output {
                        path: host.clone(),
                        message: format!("cannot set mode: {e}"),
                    }
                })?;
            }
        }
        Ok(self.warnings)
    }

    /// Resolves parent components to a real directory under the root (relative path, no
    /// symlinks in it). With `create`, missing directories are made (and recorded as added by
    /// this layer); without, a missing one gives `None`.
    fn resolve_dir(
        &self,
        comps: &[OsString],
        mut create: Option<&mut HashSet<PathBuf>>,
    ) -> Result<Option<PathBuf>, Refusal> {
        let mut cur: Vec<OsString> = Vec::new();
        let mut pending: Vec<OsString> = comps.iter().rev().cloned().collect();
        let mut hops = 0;
        while let Some(c) = pending.pop() {
            match c.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    if cur.pop().is_none() {
                        return Err("a symlink on its path leads out of the root".into());
                    }
                    continue;
                }
                _ => {}
            }
            let rel: PathBuf = cur.iter().chain(std::iter::once(&c)).collect();
            let host = self.root.join(&rel);
            match fs::symlink_metadata(&host) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => match create.as_deref_mut() {
                    Some(added) => {
                        make_dir(&host).map_err(|e| format!("cannot create {rel:?}: {e}"))?;
                        added.insert(rel);
                        cur.push(c);
                    }
                    None => return Ok(None),
                },
                Err(e) => return Err(format!("cannot inspect {rel:?}: {e}")),
                Ok(m) if m.is_dir() => cur.push(c),
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return Err("too many levels of symlinks on its path".into());
                    }
                    let target =
                        fs::read_link(&host).map_err(|e| format!("cannot read {rel:?}: {e}"))?;
                    let bytes = target.as_os_str().as_bytes();
                    if bytes.starts_with(b"/") {
                        cur.clear();
                    }
                    for part in bytes.split(|&b| b == b'/').rev() {
                        pending.push(OsStr::from_bytes(part).to_os_string());
                    }
                }
                Ok(_) => return Err(format!("parent {rel:?} is not a directory")),
            }
        }
        Ok(Some(cur.iter().collect()))
    }

    /// The path (relative, real) a hard link entry's target names.
    fn hard_link_target(&self, target: &[u8]) -> Result<PathBuf, Refusal> {
        let comps = normalize(target).map_err(|r| format!("hard link target: {r}"))?;
        let Some((name, parents)) = comps.split_last() else {
            return Err("hard link to the root directory".into());
        };
        let missing = || {
            format!(
                "hard link target {:?} is not in the layers so far",
                String::from_utf8_lossy(target)
            )
        };
        let dir = self
            .resolve_dir(parents, None)
            .map_err(|r| format!("hard link target: {r}"))?
            .ok_or_else(missing)?;
        let rel = dir.join(name);
        match fs::symlink_metadata(self.root.join(&rel)) {
            Ok(m) if m.is_dir() => Err("hard link to a directory".into()),
            Ok(_) => Ok(rel),
            Err(_) => Err(missing()),
        }
    }

    /// Removes what lower layers put in `dir` (an opaque directory), keeping this layer's.
    fn hide_lower(&self, dir: &Path, added: &HashSet<PathBuf>) -> io::Result<()> {
        for child in fs::read_dir(self.root.join(dir))? {
            let child = child?;
            let rel = dir.join(child.file_name());
            if added.contains(&rel) {
                if child.file_type()?.is_dir() {
                    self.hide_lower(&rel, added)?;
                }
            } else {
                remove_existing(&child.path())?;
            }
        }
        Ok(())
    }
}

/// Makes the directory `path` (absolute, as the container sees it) inside `root`, resolving
/// it as layer entries are resolved: symlinks followed only inside the root. Returns the
/// host path.
pub fn ensure_dir(root: &Path, path: &str) -> Result<PathBuf, Refusal> {
    let comps = normalize(path.trim_start_matches('/').as_bytes())?;
    let unpacker = Unpacker::new(root, "");
    let mut added = HashSet::new();
    let dir = unpacker
        .resolve_dir(&comps, Some(&mut added))?
        .expect("created when missing");
    Ok(root.join(dir))
}

/// An entry name's components, refusing absolute names and `..` (`./` and `//` are dropped).
fn normalize(raw: &[u8]) -> Result<Vec<OsString>, Refusal> {
    if raw.starts_with(b"/") {
        return Err("absolute path (entries must be relative to the layer root)".into());
    }
    let mut comps = Vec::new();
    for part in raw.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("path escapes the root (`..` component)".into()),
            p => comps.push(OsStr::from_bytes(p).to_os_string()),
        }
    }
    Ok(comps)
}

fn make_dir(path: &Path) -> io::Result<()> {
    fs::create_dir(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
}

/// Removes whatever is at `path` without following it: a directory with its contents, or
/// a file or symlink itself.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
pub(crate) mod tests;

//! A store of unpacked layers shared between images: each layer is unpacked once, on top of
//! a copy of the layers under it, into a directory named by its chain id (as containerd
//! names snapshots: the bottom layer's chain id is its diff_id, every other one the sha256
//! of `<parent chain id> <diff_id>`). Two images built on the same base layers share those
//! directories; an image's root is the directory of its top chain.
//!
//! The copy of the parent is made of hard links (directories are made anew), which is
//! safe because the unpacker never writes through an existing file: it removes the entry
//! and creates a new one. A chain is built under `.<id>.partial` and renamed into place
//! only once its layer is in, so an interrupted import leaves nothing that looks whole;
//! [`collect`] removes such leftovers with the chains no image needs.

use super::digest::Digest;
use super::error::{OciError, Result};
use super::store::{self, Source};
use super::unpack::Unpacker;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The chain id of a layer with `diff_id` on top of the chain `parent`.
pub fn chain_id(parent: Option<&Digest>, diff_id: &Digest) -> Digest {
    match parent {
        None => diff_id.clone(),
        Some(p) => Digest::of(format!("{p} {diff_id}").as_bytes()),
    }
}

/// One image imported into a layer store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The manifest's digest (or, for an old docker save, the config's).
    pub id: String,
    /// Chain ids (hex), bottom first; the last one's directory is the root.
    pub chain: Vec<String>,
    /// Layers unpacked by this import, and layers found already unpacked.
    pub unpacked: usize,
    pub shared: usize,
    /// Entries skipped (device nodes, fifos).
    pub warnings: Vec<String>,
}

/// Imports the `oci-archive` or `docker save` tar `archive` into the layer store `layers`.
/// `image` names it in messages; `tag` picks one image of an archive that holds several.
pub fn import_archive(
    archive: &Path,
    image: &str,
    tag: Option<&str>,
    layers: &Path,
) -> Result<Stored> {
    let source = Source::index_tar(image, archive)?;
    let resolved = store::resolve(source, image, tag, true)?;
    let id = match &resolved.manifest_digest {
        Some(d) => d.to_string(),
        None => {
            let cfg = serde_json::to_vec(&resolved.config).unwrap_or_default();
            Digest::of(&cfg).to_string()
        }
    };
    let out_err = |path: &Path, message: String| OciError::Output {
        path: path.to_path_buf(),
        message,
    };
    fs::create_dir_all(layers).map_err(|e| out_err(layers, format!("cannot create: {e}")))?;
    let mut parent: Option<Digest> = None;
    let mut stored = Stored {
        id,
        chain: Vec::new(),
        unpacked: 0,
        shared: 0,
        warnings: Vec::new(),
    };
    for layer in &resolved.layers {
        let chain = chain_id(parent.as_ref(), &layer.diff_id);
        let dir = layers.join(chain.hex());
        if dir.is_dir() {
            // Already unpacked from a blob with this diff_id; this image's blob is still
            // checked, so a tampered archive is refused even where nothing is unpacked.
            verify_shared(&resolved.source, image, layer)?;
            stored.shared += 1;
        } else {
            let partial = layers.join(format!(".{}.partial", chain.hex()));
            super::remove_tree(&partial);
            let result = (|| {
                let modes = match &parent {
                    Some(p) => clone_tree(&layers.join(p.hex()), &partial).map_err(|e| {
                        out_err(&partial, format!("cannot copy the parent layer: {e}"))
                    })?,
                    None => {
                        fs::create_dir(&partial)
                            .map_err(|e| out_err(&partial, format!("cannot create: {e}")))?;
                        BTreeMap::new()
                    }
                };
                let mut unpacker = Unpacker::new(&partial, image).with_dir_modes(modes);
                super::apply_layer(&resolved.source, image, layer, &mut unpacker)?;
                let warnings = unpacker.finish()?;
                fs::rename(&partial, &dir)
                    .map_err(|e| out_err(&dir, format!("cannot move the layer into place: {e}")))?;
                Ok(warnings)
            })();
            match result {
                Ok(w) => stored.warnings.extend(w),
                Err(e) => {
                    super::remove_tree(&partial);
                    return Err(e);
                }
            }
            stored.unpacked += 1;
        }
        stored.chain.push(chain.hex().to_string());
        parent = Some(chain);
    }
    if stored.chain.is_empty() {
        return Err(OciError::Format {
            image: image.into(),
            what: archive.display().to_string(),
            message: "the image has no layers".into(),
        });
    }
    Ok(stored)
}

/// Checks a layer blob that is not unpacked: against its digest and size, or (an old docker
/// save's uncompressed `layer.tar`, which has no descriptor) against its diff_id.
fn verify_shared(source: &Source, image: &str, layer: &store::Layer) -> Result<()> {
    let blob = &layer.blob;
    if blob.digest.is_some() || blob.size.is_some() {
        return store::verify_blob(source, image, blob);
    }
    let mut r = super::digest::HashingReader::new(store::open(source, image, blob)?);
    let read_err = |e: std::io::Error| OciError::Layer {
        image: image.into(),
        digest: blob.label(),
        message: e.to_string(),
    };
    std::io::copy(&mut r, &mut std::io::sink()).map_err(read_err)?;
    let (got, _) = r.finish().map_err(read_err)?;
    if got != layer.diff_id {
        return Err(OciError::DiffIdMismatch {
            image: image.into(),
            digest: blob.label(),
            expected: layer.diff_id.to_string(),
            actual: got.to_string(),
        });
    }
    Ok(())
}

/// Copies the tree `src` to `dst` (which must not exist): directories anew (mode 0755, so
/// the next layer can write into them), files and symlinks as hard links. Returns the
/// directories' own modes, relative to `dst`, for the unpacker to set at the end.
fn clone_tree(src: &Path, dst: &Path) -> std::io::Result<BTreeMap<PathBuf, u32>> {
    let mut modes = BTreeMap::new();
    fn walk(
        src: &Path,
        dst: &Path,
        rel: &Path,
        modes: &mut BTreeMap<PathBuf, u32>,
    ) -> std::io::Result<()> {
        let meta = fs::symlink_metadata(src)?;
        fs::create_dir(dst)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(0o755))?;
        modes.insert(rel.to_path_buf(), meta.permissions().mode() & 0o7777);
        for e in fs::read_dir(src)? {
            let e = e?;
            let from = e.path();
            let to = dst.join(e.file_name());
            let t = e.file_type()?;
            if t.is_dir() {
                walk(&from, &to, &rel.join(e.file_name()), modes)?;
            } else {
                fs::hard_link(&from, &to)?;
            }
        }
        Ok(())
    }
    walk(src, dst, Path::new(""), &mut modes)?;
    Ok(modes)
}

/// Removes every chain directory of `layers` not in `keep`, and any partial one. Returns the
/// chain ids removed.
pub fn collect(layers: &Path, keep: &BTreeSet<String>) -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(layers) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if keep.contains(&name) {
            continue;
        }
        super::remove_tree(&e.path());
        removed.push(name);
    }
    removed.sort();
    Ok(removed)
}

#[cfg(test)]
mod tests;

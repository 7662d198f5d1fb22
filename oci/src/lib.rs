//! OCI image import: an image (layout directory, `oci-archive` tar, `docker save` tar) becomes
//! a directory tree, the container's root, plus the run defaults its config gives.
//!
//! Every blob is checked against its descriptor's digest and size before it is used, and each
//! layer's uncompressed stream against the config's diff_id. The root is built in a sibling
//! directory and renamed into place only when every layer is in, so a bad image leaves no
//! half-written output. `unpack` holds the rules for what a layer may write.

pub mod chain;
pub mod config;
pub mod dedup;
pub mod digest;
pub mod error;
pub mod layout;
#[cfg(feature = "registry")]
pub mod registry;
pub mod store;
pub mod unpack;

pub use config::{ServiceDefaults, UserIds};
pub use error::{OciError, Result};

use digest::HashingReader;
use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use store::{Layer, Source};

/// Where an image comes from, in skopeo's transport syntax.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// `oci:DIR[:TAG]`: an OCI image layout directory.
    Layout { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE[:TAG]`: an OCI image layout in a tar.
    OciArchive { file: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE[:NAME:TAG]`: the output of `docker save`.
    DockerArchive { file: PathBuf, tag: Option<String> },
    /// `docker://HOST[:PORT]/NAME[:TAG|@DIGEST]`: pulled from a registry over plain HTTP.
    #[cfg(feature = "registry")]
    Registry(registry::Reference),
}

impl ImageRef {
    /// Parses `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:REF]`, or a
    /// bare path (a directory is a layout, a file an archive of either kind). Relative paths
    /// are taken from `base`. Paths cannot contain `:` (it starts the tag).
    pub fn parse(s: &str, base: &Path) -> std::result::Result<ImageRef, String> {
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            let (path, tag) = match rest.split_once(':') {
                Some((p, t)) if !t.is_empty() => (p, Some(t.to_string())),
                Some((p, _)) => (p, None),
                None => (rest, None),
            };
            (base.join(path), tag)
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = split(rest);
            return Ok(ImageRef::Layout { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = split(rest);
            return Ok(ImageRef::OciArchive { file, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (file, tag) = split(rest);
            return Ok(ImageRef::DockerArchive { file, tag });
        }
        #[cfg(feature = "registry")]
        if s.starts_with("docker://") {
            return registry::Reference::parse(s).map(ImageRef::Registry);
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "image {s:?}: unknown transport {scheme}:// (oci:, oci-archive:, docker-archive:, docker://)"
            ));
        }
        let path = base.join(s);
        if path.is_dir() {
            Ok(ImageRef::Layout {
                dir: path,
                tag: None,
            })
        } else if path.is_file() {
            Ok(ImageRef::DockerArchive {
                file: path,
                tag: None,
            })
        } else {
            Err(format!(
                "image {s:?}: {} does not exist (or write oci:DIR, oci-archive:FILE, docker-archive:FILE)",
                path.display()
            ))
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (transport, path, tag) = match self {
            ImageRef::Layout { dir, tag } => ("oci", dir, tag),
            ImageRef::OciArchive { file, tag } => ("oci-archive", file, tag),
            ImageRef::DockerArchive { file, tag } => ("docker-archive", file, tag),
            #[cfg(feature = "registry")]
            ImageRef::Registry(r) => return write!(f, "{r}"),
        };
        write!(f, "{transport}:{}", path.display())?;
        if let Some(t) = tag {
            write!(f, ":{t}")?;
        }
        Ok(())
    }
}

/// The outcome of one import.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Imported {
    pub image: String,
    /// The manifest used (none for an old-format docker save).
    pub manifest_digest: Option<String>,
    pub layers: usize,
    pub defaults: ServiceDefaults,
    /// Entries skipped (device nodes, fifos), one line each.
    pub warnings: Vec<String>,
}

/// Unpacks `image` into `out`, which must not exist yet (or be an empty directory).
pub fn import(image: &ImageRef, out: &Path) -> Result<Imported> {
    import_named(image, image.to_string(), out)
}

/// [`import`], with `name` as the image's name in messages.
fn import_named(image: &ImageRef, name: String, out: &Path) -> Result<Imported> {
    let (source, tag, prefer_docker) = match image {
        ImageRef::Layout { dir, tag } => {
            if !dir.is_dir() {
                return Err(OciError::Format {
                    image: name,
                    what: dir.display().to_string(),
                    message: "is not a directory".into(),
                });
            }
            (Source::Dir(dir.clone()), tag, false)
        }
        ImageRef::OciArchive { file, tag } => (Source::index_tar(&name, file)?, tag, false),
        ImageRef::DockerArchive { file, tag } => (Source::index_tar(&name, file)?, tag, true),
        #[cfg(feature = "registry")]
        ImageRef::Registry(r) => return import_from_registry(r, out),
    };
    let resolved = store::resolve(source, &name, tag.as_deref(), prefer_docker)?;
    let staging = prepare_output(out)?;
    let result = (|| {
        let mut unpacker = unpack::Unpacker::new(&staging, &name);
        for layer in &resolved.layers {
            apply_layer(&resolved.source, &name, layer, &mut unpacker)?;
        }
        let warnings = unpacker.finish()?;
        let defaults = ServiceDefaults::from_config(&name, &resolved.config, &staging)?;
        Ok((warnings, defaults))
    })();
    let (warnings, defaults) = match result {
        Ok(r) => r,
        Err(e) => {
            remove_tree(&staging);
            return Err(e);
        }
    };
    if out.exists() {
        // An empty directory, checked by prepare_output.
        let _ = fs::remove_dir(out);
    }
    fs::rename(&staging, out).map_err(|e| {
        remove_tree(&staging);
        OciError::Output {
            path: out.to_path_buf(),
            message: format!("cannot move the unpacked root into place: {e}"),
        }
    })?;
    Ok(Imported {
        image: name,
        manifest_digest: resolved.manifest_digest.map(|d| d.to_string()),
        layers: resolved.layers.len(),
        defaults,
        warnings,
    })
}

/// Pulls into a layout beside `out`, imports that, and removes it.
#[cfg(feature = "registry")]
fn import_from_registry(r: &registry::Reference, out: &Path) -> Result<Imported> {
    let pulled = sibling(out, "pull")?;
    remove_tree(&pulled);
    let result = registry::pull(r, &pulled).and_then(|()| {
        let layout = ImageRef::Layout {
            dir: pulled.clone(),
            tag: Some(registry::LOCAL_TAG.into()),
        };
        import_named(&layout, r.to_string(), out)
    });
    remove_tree(&pulled);
    result
}

/// `dir/.NAME.WHAT` beside `out`, its parent created.
fn sibling(out: &Path, what: &str) -> Result<PathBuf> {
    let output_err = |message: String| OciError::Output {
        path: out.to_path_buf(),
        message,
    };
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| output_err(format!("cannot create parent: {e}")))?;
    let file_name = out
        .file_name()
        .ok_or_else(|| output_err("has no file name".into()))?;
    Ok(parent.join(format!(".{}.{what}", file_name.to_string_lossy())))
}

/// Checks `out` and makes the staging directory beside it.
fn prepare_output(out: &Path) -> Result<PathBuf> {
    let output_err = |message: String| OciError::Output {
        path: out.to_path_buf(),
        message,
    };
    if let Ok(meta) = fs::symlink_metadata(out) {
        let empty = meta.is_dir()
            && fs::read_dir(out)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
        if !empty {
            return Err(output_err(
                "exists and is not an empty directory (remove it first)".into(),
            ));
        }
    }
    let staging = sibling(out, "partial")?;
    remove_tree(&staging);
    fs::create_dir(&staging).map_err(|e| output_err(format!("cannot create staging dir: {e}")))?;
    Ok(staging)
}

/// Removes a tree even where a layer made directories read-only.
pub fn remove_tree(dir: &Path) {
    fn open_up(dir: &Path) {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    open_up(&e.path());
                }
            }
        }
    }
    if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
        open_up(dir);
        let _ = fs::remove_dir_all(dir);
    }
}

/// A layer's uncompressed size at most (a bound on what a crafted layer can make us write).
pub const MAX_LAYER_BYTES: u64 = 16 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Unpacks one layer of `source` through `unpacker`, checking its blob digest and size and
/// its uncompressed diff_id.
pub fn apply_layer(
    source: &Source,
    image: &str,
    layer: &Layer,
    unpacker: &mut unpack::Unpacker,
) -> Result<()> {
    let blob = &layer.blob;
    if blob.digest.is_some() || blob.size.is_some() {
        store::verify_blob(source, image, blob)?;
    }
    let mut raw = BufReader::new(store::open(source, image, blob)?);
    let label = blob.label();
    let corrupt = |message: String| OciError::Layer {
        image: image.into(),
        digest: label.clone(),
        message,
    };
    let compression = match media_compression(&blob.media_type) {
        Some(c) => c,
        None if blob.media_type.is_empty() => {
            let head = raw.fill_buf().map_err(|e| corrupt(e.to_string()))?;
            if head.starts_with(&[0x1f, 0x8b]) {
                Compression::Gzip
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Compression::Zstd
            } else {
                Compression::None
            }
        }
        None => {
            return Err(OciError::MediaType {
                image: image.into(),
                digest: label,
                media_type: blob.media_type.clone(),
            })
        }
    };
    let decoded: Box<dyn Read> = match compression {
        Compression::None => Box::new(raw),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(raw)
                .map_err(|e| corrupt(format!("zstd: {e}")))?,
        ),
    };
    let mut hashing = HashingReader::with_limit(decoded, MAX_LAYER_BYTES);
    unpacker.apply(&mut hashing, &label)?;
    let (diff_id, _) = hashing
        .finish()
        .map_err(|e| corrupt(format!("after the tar's end: {e}")))?;
    if diff_id != layer.diff_id {
        return Err(OciError::DiffIdMismatch {
            image: image.into(),
            digest: label,
            expected: layer.diff_id.to_string(),
            actual: diff_id.to_string(),
        });
    }
    Ok(())
}

/// The compression a layer media type names; `None` for one that is not a layer tar.
fn media_compression(media_type: &str) -> Option<Compression> {
    const LAYER_TYPES: &[(&str, Compression)] = &[
        ("application/vnd.oci.image.layer.v1.tar", Compression::None),
        (
            "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Gzip,
        ),
        (
            "application/vnd.oci.image.layer.v1.tar+zstd",
            Compression::Zstd,
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            Compression::None,
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            Compression::Gzip,
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            Compression::Zstd,
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar",
            Compression::None,
        ),
        (
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            Compression::Gzip,
        ),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            Compression::Gzip,
        ),
    ];
    LAYER_TYPES
        .iter()
        .find(|(t, _)| *t == media_type)
        .map(|&(_, c)| c)
}

#[cfg(test)]
mod tests;

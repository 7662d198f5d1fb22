//! Where an image's files come from and how they lead to one manifest: an OCI image layout
//! directory, the same layout packed in a tar (`oci-archive`), or a `docker save` tar
//! (`manifest.json`, with either the old `<id>/layer.tar` files or an OCI layout inside).
//!
//! Tars are not unpacked to find a blob: one pass records where each member's data starts,
//! and a blob is read from that offset. Names are only looked up, never used as host paths,
//! and a layout directory's blob paths are built from checked digests, so a crafted name
//! cannot reach outside the image.

mod source;

use source::clean_name;
pub use source::Source;

use super::digest::{Digest, HashingReader};
use super::error::{OciError, Result};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use std::io::{self, Read};

/// Manifests, indexes and configs are small; anything bigger is refused before it is read.
pub const JSON_LIMIT: u64 = 8 << 20;

/// The platform picked from a multi-platform index.
pub const OS: &str = "linux";
pub const ARCH: &str = "amd64";

const TAG_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// One blob the image needs, as found in its source.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Member name in the source (`blobs/sha256/<hex>`, or `<id>/layer.tar` in old docker saves).
    pub name: String,
    /// The digest the blob's raw bytes must have; `None` for an old docker save layer, which
    /// is checked against its diff_id instead.
    pub digest: Option<Digest>,
    /// The size the descriptor gives; `None` where the format has no descriptor.
    pub size: Option<u64>,
    pub media_type: String,
}

impl Blob {
    fn from_descriptor(image: &str, d: &Descriptor) -> Result<Blob> {
        let digest = checked_digest(image, d.digest().as_ref())?;
        Ok(Blob {
            name: digest.blob_path(),
            digest: Some(digest),
            size: Some(d.size()),
            media_type: d.media_type().to_string(),
        })
    }

    /// What to call this blob in a message: its digest, or its name.
    pub fn label(&self) -> String {
        match &self.digest {
            Some(d) => d.to_string(),
            None => self.name.clone(),
        }
    }
}

pub fn checked_digest(image: &str, s: &str) -> Result<Digest> {
    Digest::parse(s).ok_or_else(|| OciError::BadDigest {
        image: image.into(),
        digest: s.into(),
    })
}

/// A layer: its blob and the digest of its uncompressed tar (the config's diff_id).
#[derive(Debug, Clone)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: Digest,
}

/// An image resolved to its config and layers, ready to unpack.
pub struct Resolved {
    pub source: Source,
    /// Digest of the manifest picked (none for an old docker save).
    pub manifest_digest: Option<Digest>,
    pub config: ImageConfiguration,
    pub layers: Vec<Layer>,
}

/// Reads a whole blob, checking its size and digest (if known) and the limit.
pub fn read_blob(source: &Source, image: &str, blob: &Blob, limit: u64) -> Result<Vec<u8>> {
    let len = source
        .size(&blob.name)
        .ok_or_else(|| OciError::MissingBlob {
            image: image.into(),
            digest: blob.label(),
        })?;
    if len > limit {
        return Err(OciError::TooLarge {
            image: image.into(),
            digest: blob.label(),
            what: "manifest, index or config",
            size: len,
            limit,
        });
    }
    let mut data = Vec::new();
    open(source, image, blob)?
        .read_to_end(&mut data)
        .map_err(|e| read_error(source, image, blob, e))?;
    check(image, blob, &Digest::of(&data), data.len() as u64)?;
    Ok(data)
}

/// Streams a blob once to check its size and digest before anything trusts it.
pub fn verify_blob(source: &Source, image: &str, blob: &Blob) -> Result<()> {
    let reader = HashingReader::new(open(source, image, blob)?);
    let (digest, len) = reader
        .finish()
        .map_err(|e| read_error(source, image, blob, e))?;
    check(image, blob, &digest, len)
}

pub fn open(source: &Source, image: &str, blob: &Blob) -> Result<Box<dyn Read>> {
    match source.open(&blob.name) {
        None => Err(OciError::MissingBlob {
            image: image.into(),
            digest: blob.label(),
        }),
        Some(r) => r.map_err(|e| read_error(source, image, blob, e)),
    }
}

fn read_error(source: &Source, image: &str, blob: &Blob, e: io::Error) -> OciError {
    OciError::Read {
        image: image.into(),
        path: source.location(&blob.name),
        source: e,
    }
}

fn check(image: &str, blob: &Blob, digest: &Digest, len: u64) -> Result<()> {
    if let Some(expected) = blob.size {
        if expected != len {
            return Err(OciError::SizeMismatch {
                image: image.into(),
                digest: blob.label(),
                expected,
                actual: len,
            });
        }
    }
    if let Some(expected) = &blob.digest {
        if expected != digest {
            return Err(OciError::DigestMismatch {
                image: image.into(),
                digest: expected.to_string(),
                actual: digest.to_string(),
            });
        }
    }
    Ok(())
}

fn format_err(image: &str, what: &str, message: impl std::fmt::Display) -> OciError {
    OciError::Format {
        image: image.into(),
        what: what.into(),
        message: message.to_string(),
    }
}

/// Reads a small member (`index.json`, `manifest.json`) whose digest nothing records.
fn read_member(source: &Source, image: &str, name: &str) -> Result<Option<Vec<u8>>> {
    let Some(len) = source.size(name) else {
        return Ok(None);
    };
    if len > JSON_LIMIT {
        return Err(format_err(
            image,
            name,
            format!("{len} bytes is more than the {JSON_LIMIT}-byte limit"),
        ));
    }
    let mut data = Vec::new();
    let mut r = match source.open(name) {
        Some(r) => r,
        None => return Ok(None),
    }
    .map_err(|e| OciError::Read {
        image: image.into(),
        path: source.location(name),
        source: e,
    })?;
    r.read_to_end(&mut data).map_err(|e| OciError::Read {
        image: image.into(),
        path: source.location(name),
        source: e,
    })?;
    Ok(Some(data))
}

/// The image in `source` tagged `tag` (or the only one). `prefer_docker`: read a docker
/// save's `manifest.json` (it knows the RepoTags) even where an OCI layout is there too, as
/// docker 25+ writes both.
pub fn resolve(
    source: Source,
    image: &str,
    tag: Option<&str>,
    prefer_docker: bool,
) -> Result<Resolved> {
    if prefer_docker && source.size("manifest.json").is_some() {
        return resolve_docker(source, image, tag);
    }
    if source.size("oci-layout").is_some() && source.size("index.json").is_some() {
        return resolve_layout(source, image, tag);
    }
    if source.size("manifest.json").is_some() {
        return resolve_docker(source, image, tag);
    }
    Err(format_err(
        image,
        "(top level)",
        "neither an OCI image layout (oci-layout + index.json) nor a docker save archive (manifest.json)",
    ))
}

fn resolve_layout(source: Source, image: &str, tag: Option<&str>) -> Result<Resolved> {
    let layout = read_member(&source, image, "oci-layout")?.unwrap_or_default();
    let layout: serde_json::Value = serde_json::from_slice(&layout)
        .map_err(|e| format_err(image, "oci-layout", format!("invalid JSON: {e}")))?;
    if layout["imageLayoutVersion"].as_str().is_none() {
        return Err(format_err(image, "oci-layout", "no imageLayoutVersion"));
    }
    let index = read_member(&source, image, "index.json")?.unwrap_or_default();
    let index: ImageIndex = serde_json::from_slice(&index)
        .map_err(|e| format_err(image, "index.json", format!("invalid: {e}")))?;
    let desc = select(image, "index.json", index.manifests(), tag)?;
    resolve_descriptor(source, image, desc, 0)
}

/// Follows a descriptor through nested indexes to a manifest, then reads the config.
fn resolve_descriptor(
    source: Source,
    image: &str,
    desc: Descriptor,
    depth: usize,
) -> Result<Resolved> {
    let blob = Blob::from_descriptor(image, &desc)?;
    let data = read_blob(&source, image, &blob, JSON_LIMIT)?;
    if is_index(&blob.media_type, &data) {
        if depth >= 4 {
            return Err(format_err(image, &blob.label(), "indexes nested too deep"));
        }
        let index: ImageIndex = serde_json::from_slice(&data)
            .map_err(|e| format_err(image, &blob.label(), format!("invalid index: {e}")))?;
        let next = select(image, &blob.label(), index.manifests(), None)?;
        return resolve_descriptor(source, image, next, depth + 1);
    }
    let manifest: ImageManifest = serde_json::from_slice(&data)
        .map_err(|e| format_err(image, &blob.label(), format!("invalid manifest: {e}")))?;
    let config_blob = Blob::from_descriptor(image, manifest.config())?;
    let config = read_config(&source, image, &config_blob)?;
    let diff_ids = diff_ids(image, &config)?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(OciError::LayerCount {
            image: image.into(),
            layers: manifest.layers().len(),
            diff_ids: diff_ids.len(),
        });
    }
    let layers = manifest
        .layers()
        .iter()
        .zip(diff_ids)
        .map(|(d, diff_id)| {
            Ok(Layer {
                blob: Blob::from_descriptor(image, d)?,
                diff_id,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Resolved {
        source,
        manifest_digest: blob.digest,
        config,
        layers,
    })
}

fn is_index(media_type: &str, data: &[u8]) -> bool {
    if media_type.contains("image.index") || media_type.contains("manifest.list") {
        return true;
    }
    // A descriptor's media type may be generic; the document's own fields decide then.
    serde_json::from_slice::<serde_json::Value>(data)
        .map(|v| v.get("manifests").is_some() && v.get("layers").is_none())
        .unwrap_or(false)
}

fn read_config(source: &Source, image: &str, blob: &Blob) -> Result<ImageConfiguration> {
    let data = read_blob(source, image, blob, JSON_LIMIT)?;
    serde_json::from_slice(&data)
        .map_err(|e| format_err(image, &blob.label(), format!("invalid image config: {e}")))
}

fn diff_ids(image: &str, config: &ImageConfiguration) -> Result<Vec<Digest>> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| checked_digest(image, d))
        .collect()
}

/// Picks one manifest: by tag if given, else the only one; several left → linux/amd64.
pub(crate) fn select(
    image: &str,
    what: &str,
    manifests: &[Descriptor],
    tag: Option<&str>,
) -> Result<Descriptor> {
    let tag_of = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(TAG_ANNOTATION))
            .cloned()
    };
    let mut candidates: Vec<&Descriptor> = match tag {
        Some(t) => manifests
            .iter()
            .filter(|d| tag_of(d).as_deref() == Some(t))
            .collect(),
        None => manifests.iter().collect(),
    };
    if candidates.is_empty() {
        let tags: Vec<String> = manifests.iter().filter_map(tag_of).collect();
        return Err(OciError::Select {
            image: image.into(),
            message: match tag {
                Some(t) => format!("{what}: no manifest tagged {t:?} (tags: {tags:?})"),
                None => format!("{what}: lists no manifests"),
            },
        });
    }
    if candidates.len() > 1 {
        candidates.retain(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| p.os().to_string() == OS && p.architecture().to_string() == ARCH)
        });
        match candidates.len() {
            1 => {}
            0 => {
                return Err(OciError::Select {
                    image: image.into(),
                    message: format!("{what}: several manifests and none for {OS}/{ARCH}"),
                })
            }
            _ if tag.is_none() && manifests.iter().any(|d| tag_of(d).is_some()) => {
                let tags: Vec<String> = manifests.iter().filter_map(tag_of).collect();
                return Err(OciError::Select {
                    image: image.into(),
                    message: format!("{what}: several images; name one by tag ({tags:?})"),
                });
            }
            _ => {
                return Err(OciError::Select {
                    image: image.into(),
                    message: format!("{what}: several manifests for {OS}/{ARCH}"),
                })
            }
        }
    }
    Ok(candidates[0].clone())
}

/// One entry of a docker save `manifest.json`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A docker reference in its short ("familiar") form, as `docker save` writes RepoTags:
/// without the default registry `docker.io/` (skopeo writes it, docker does not), without
/// `library/` for official images, and with `:latest` when no tag is given. So
/// `docker.io/test/web:1.0`, `test/web:1.0` and `docker.io/library/web` → `web:latest` match.
fn familiar_tag(r: &str) -> String {
    let r = r.strip_prefix("docker.io/").unwrap_or(r);
    let r = r.strip_prefix("library/").unwrap_or(r);
    let name_end = r.rfind('/').map_or(0, |i| i + 1);
    if r[name_end..].contains(':') {
        r.to_string()
    } else {
        format!("{r}:latest")
    }
}

fn resolve_docker(source: Source, image: &str, tag: Option<&str>) -> Result<Resolved> {
    let data = read_member(&source, image, "manifest.json")?.unwrap_or_default();
    let entries: Vec<DockerEntry> = serde_json::from_slice(&data)
        .map_err(|e| format_err(image, "manifest.json", format!("invalid: {e}")))?;
    let entry = match tag {
        Some(t) => {
            let t_familiar = familiar_tag(t);
            let want = |rt: &str| familiar_tag(rt) == t_familiar;
            entries
                .iter()
                .find(|e| e.repo_tags.iter().flatten().any(|rt| want(rt)))
                .ok_or_else(|| OciError::Select {
                    image: image.into(),
                    message: format!(
                        "manifest.json: no image tagged {t:?} (tags: {:?})",
                        entries
                            .iter()
                            .flat_map(|e| e.repo_tags.iter().flatten())
                            .collect::<Vec<_>>()
                    ),
                })?
        }
        None => match entries.as_slice() {
            [one] => one,
            [] => {
                return Err(OciError::Select {
                    image: image.into(),
                    message: "manifest.json lists no images".into(),
                })
            }
            _ => {
                return Err(OciError::Select {
                    image: image.into(),
                    message: "manifest.json lists several images; name one by tag".into(),
                })
            }
        },
    };
    // The config is named by its digest: `<hex>.json` (old) or `blobs/sha256/<hex>`.
    let config_name = clean_name(&entry.config);
    let config_hex = config_name
        .strip_prefix("blobs/sha256/")
        .or_else(|| config_name.strip_suffix(".json"))
        .unwrap_or(&config_name);
    let config_blob = Blob {
        digest: Some(checked_digest(image, &format!("sha256:{config_hex}"))?),
        name: config_name.clone(),
        size: None,
        media_type: "application/vnd.docker.container.image.v1+json".into(),
    };
    let config = read_config(&source, image, &config_blob)?;
    let diff_ids = diff_ids(image, &config)?;
    if diff_ids.len() != entry.layers.len() {
        return Err(OciError::LayerCount {
            image: image.into(),
            layers: entry.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let layers = entry
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(name, diff_id)| {
            let name = clean_name(name);
            let digest = match name.strip_prefix("blobs/sha256/") {
                Some(hex) => Some(checked_digest(image, &format!("sha256:{hex}"))?),
                None => None,
            };
            Ok(Layer {
                blob: Blob {
                    name,
                    digest,
                    size: None,
                    // Compression is detected from the content.
                    media_type: String::new(),
                },
                diff_id,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Resolved {
        source,
        manifest_digest: None,
        config,
        layers,
    })
}

#[cfg(test)]
mod tests;

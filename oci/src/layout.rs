//! Writing an OCI image layout directory: where registry pulls land before they are imported
//! like any other layout (so one code path checks every blob), and how tests make images.

use super::digest::{Digest, HashingReader};
use serde_json::{json, Value};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// A layer as it is stored: the blob, its media type, and the digest of the uncompressed
/// tar (the config's diff_id).
pub struct LayerBlob {
    pub data: Vec<u8>,
    pub media_type: String,
    pub diff_id: Digest,
}

impl LayerBlob {
    /// An uncompressed layer tar.
    pub fn tar(tar: &[u8]) -> LayerBlob {
        LayerBlob {
            data: tar.to_vec(),
            media_type: "application/vnd.oci.image.layer.v1.tar".into(),
            diff_id: Digest::of(tar),
        }
    }

    /// A layer tar, gzip-compressed.
    pub fn gzip(tar: &[u8]) -> io::Result<LayerBlob> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(tar)?;
        Ok(LayerBlob {
            data: e.finish()?,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            diff_id: Digest::of(tar),
        })
    }

    /// A layer tar, zstd-compressed.
    pub fn zstd(tar: &[u8]) -> io::Result<LayerBlob> {
        Ok(LayerBlob {
            data: zstd::encode_all(tar, 3)?,
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            diff_id: Digest::of(tar),
        })
    }
}

pub struct LayoutWriter {
    dir: PathBuf,
}

impl LayoutWriter {
    /// Creates (or reuses) a layout at `dir`: `oci-layout` and `blobs/sha256/`.
    pub fn create(dir: &Path) -> io::Result<LayoutWriter> {
        fs::create_dir_all(dir.join("blobs/sha256"))?;
        fs::write(
            dir.join("oci-layout"),
            "{\"imageLayoutVersion\":\"1.0.0\"}\n",
        )?;
        Ok(LayoutWriter {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stores `data` as a blob and returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> io::Result<Digest> {
        let digest = Digest::of(data);
        fs::write(self.dir.join(digest.blob_path()), data)?;
        Ok(digest)
    }

    /// Whether the blob is already stored with the right size (its digest is checked again
    /// on import).
    pub fn has_blob(&self, digest: &Digest, size: u64) -> bool {
        fs::metadata(self.dir.join(digest.blob_path())).is_ok_and(|m| m.len() == size)
    }

    /// Streams a blob in and returns its digest and size; it is stored under the digest it
    /// really has, so a wrong download never takes the name of the blob it claimed to be.
    pub fn put_blob_from(&self, reader: impl Read) -> io::Result<(Digest, u64)> {
        let tmp = self.dir.join("blobs/sha256/.incoming");
        let mut hashing = HashingReader::new(reader);
        let mut f = fs::File::create(&tmp)?;
        io::copy(&mut hashing, &mut f)?;
        f.flush()?;
        let (digest, size) = hashing.finish()?;
        fs::rename(&tmp, self.dir.join(digest.blob_path()))?;
        Ok((digest, size))
    }

    /// Stores one image (its layers, a config with `run_config` as its `config` section, and
    /// a manifest) for linux/`arch`, and returns the manifest's descriptor for
    /// [`write_index`](Self::write_index); add a tag with [`tagged`].
    pub fn add_image(
        &self,
        layers: &[LayerBlob],
        run_config: Value,
        arch: &str,
    ) -> io::Result<Value> {
        let mut descs = Vec::new();
        for l in layers {
            let d = self.put_blob(&l.data)?;
            descs.push(
                json!({"mediaType": l.media_type, "digest": d.to_string(), "size": l.data.len()}),
            );
        }
        let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.to_string()).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux", "config": run_config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .map_err(io::Error::other)?;
        let cd = self.put_blob(&config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": cd.to_string(), "size": config.len()},
            "layers": descs,
        }))
        .map_err(io::Error::other)?;
        let md = self.put_blob(&manifest)?;
        Ok(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md.to_string(), "size": manifest.len(),
            "platform": {"os": "linux", "architecture": arch},
        }))
    }

    /// Writes `index.json` listing these descriptors (JSON objects, as the spec has them).
    pub fn write_index(&self, manifests: &[serde_json::Value]) -> io::Result<()> {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec_pretty(&index).map_err(io::Error::other)?,
        )
    }
}

/// A descriptor with a tag (`org.opencontainers.image.ref.name`) added.
pub fn tagged(mut desc: Value, tag: &str) -> Value {
    desc["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    desc
}

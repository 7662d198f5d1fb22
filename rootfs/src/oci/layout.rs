//! Writing an OCI image layout directory: where registry pulls land before they are imported
//! like any other layout (so one code path checks every blob), and how tests make images.

use super::digest::{Digest, HashingReader};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

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

//! Everything that can go wrong importing an OCI image. Every variant names the image (as the
//! user wrote it) and, where there is one, the blob digest and the path inside the layer, so a
//! bad input is found without a debugger.

use std::path::PathBuf;

pub type Result<T, E = OciError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("image {image}: cannot read {}: {source}", .path.display())]
    Read {
        image: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image}: {what}: {message}")]
    Format {
        image: String,
        /// The file or blob that is malformed (`index.json`, `manifest.json`, a digest).
        what: String,
        message: String,
    },
    #[error("image {image}: {message}")]
    Select { image: String, message: String },
    #[error("image {image}: blob {digest}: unsupported digest (only sha256:<64 hex digits> is accepted)")]
    BadDigest { image: String, digest: String },
    #[error("image {image}: blob {digest} is missing")]
    MissingBlob { image: String, digest: String },
    #[error("image {image}: blob {digest}: content has digest {actual}")]
    DigestMismatch {
        image: String,
        digest: String,
        actual: String,
    },
    #[error(
        "image {image}: blob {digest}: size is {actual} bytes, the descriptor says {expected}"
    )]
    SizeMismatch {
        image: String,
        digest: String,
        expected: u64,
        actual: u64,
    },
    #[error("image {image}: blob {digest}: {size} bytes is more than the {limit}-byte limit for a {what}")]
    TooLarge {
        image: String,
        digest: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    #[error("image {image}: layer {digest}: unsupported media type {media_type:?}")]
    MediaType {
        image: String,
        digest: String,
        media_type: String,
    },
    #[error("image {image}: the config lists {diff_ids} layer diff_ids but the manifest has {layers} layers")]
    LayerCount {
        image: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("image {image}: layer {digest}: uncompressed content has digest {actual}, the config's diff_id is {expected}")]
    DiffIdMismatch {
        image: String,
        digest: String,
        expected: String,
        actual: String,
    },
    #[error("image {image}: layer {digest}: cannot read the layer: {message}")]
    Layer {
        image: String,
        digest: String,
        message: String,
    },
    #[error("image {image}: layer {digest}: entry {path:?}: {reason}")]
    Entry {
        image: String,
        digest: String,
        path: String,
        reason: String,
    },
    #[error("image {image}: layer {digest}: entry {path:?}: {source}")]
    Write {
        image: String,
        digest: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("image {image}: config: {field}: {message}")]
    Config {
        image: String,
        field: &'static str,
        message: String,
    },
    #[error("output {}: {message}", .path.display())]
    Output { path: PathBuf, message: String },
    #[error("registry image {image}: {message}")]
    Registry { image: String, message: String },
}

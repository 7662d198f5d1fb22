//! The public keys trusted to sign bundles: minisign `.pub` files in one directory on the
//! verified root (the image build puts them there; no secret key is ever in an image).

use super::{io_err, UpdateError};
use manifest::bundle::signature::TrustedKey;
use std::fs;
use std::path::Path;

/// Where the image carries the trusted keys.
pub const KEYS_DIR: &str = "/etc/sysctr/update-keys";

/// Every `*.pub` in `dir`, sorted by name. A file that is not a minisign public key is an
/// error naming it: the keys come from the verified root, so a bad one is a build bug.
pub fn load(dir: &Path) -> Result<Vec<TrustedKey>, UpdateError> {
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(io_err("listing the update keys in", dir))? {
        let item = item.map_err(io_err("listing the update keys in", dir))?;
        let path = item.path();
        if path.extension().is_some_and(|e| e == "pub") {
            names.push(path);
        }
    }
    names.sort();
    let mut keys = Vec::new();
    for path in names {
        let text = fs::read_to_string(&path).map_err(io_err("reading the update key", &path))?;
        keys.push(TrustedKey::parse(&text, &path.display().to_string())?);
    }
    Ok(keys)
}

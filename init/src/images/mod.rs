//! The image store on the state partition (`/var/lib/sysctr/images`): images imported at
//! run time (`sysctr image import`) for services of the applied set that name an `image`.
//!
//! Layout: `refs.json` maps each `NAME:TAG` to its image (the config digest and the chain
//! of its layers); `layers/<chain id>/` is one layer unpacked on top of its parent chain
//! (the chain id, as in containerd, is the digest of the parent's chain id and the layer's
//! diff_id), so a layer is unpacked once and shared by every image built on the same
//! layers. An image's root is the directory of its top chain.

pub mod helper;
pub mod runner;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// One image of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The image's config digest (`sha256:…`): its identity.
    pub id: String,
    /// Chain ids (hex), bottom layer first; the last one is the root.
    pub chain: Vec<String>,
}

/// The refs file: `NAME:TAG` → image.
pub type Refs = BTreeMap<String, Image>;

pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(state_dir: &Path) -> Store {
        Store {
            dir: state_dir.join("images"),
        }
    }

    /// The store whose directory is `dir` itself (the helper's `--store`).
    pub fn at(dir: &Path) -> Store {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn layers_dir(&self) -> PathBuf {
        self.dir.join("layers")
    }

    /// The refs in force; an unreadable or malformed file reads as empty (and says so).
    pub fn refs(&self) -> Refs {
        self.refs_checked().unwrap_or_else(|e| {
            crate::error!("images", "{e}; the store reads as empty");
            Refs::new()
        })
    }

    /// The refs in force; none yet is empty, a malformed file an error (an import must not
    /// write over refs it cannot read).
    pub fn refs_checked(&self) -> Result<Refs, String> {
        let path = self.dir.join(REFS_FILE);
        match fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Refs::new()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    pub fn has(&self, image: &str) -> bool {
        self.root_of(image).is_some()
    }

    /// The unpacked root of `NAME:TAG`, if the store has it whole.
    pub fn root_of(&self, image: &str) -> Option<PathBuf> {
        let refs = self.refs();
        let top = refs.get(image)?.chain.last()?.clone();
        let root = self.layers_dir().join(top);
        root.is_dir().then_some(root)
    }
}

const REFS_FILE: &str = "refs.json";

/// Writes the refs whole (temp file, fsync, rename, fsync of the directory).
pub fn write_refs(store_dir: &Path, refs: &Refs) -> Result<(), String> {
    let mut text = serde_json::to_vec_pretty(refs).map_err(|e| e.to_string())?;
    text.push(b'\n');
    crate::applied::write_atomic(store_dir, REFS_FILE, &text).map_err(|e| e.to_string())
}

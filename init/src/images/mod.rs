//! The image store on the state partition (`/var/lib/sysctr/images`): images imported at
//! run time (`sysctr image import`) for services of the applied set that name an `image`.
//!
//! Layout: `refs.json` maps each `NAME:TAG` to its image (the config digest and the chain
//! of its layers); `layers/<chain id>/` is one layer unpacked on top of its parent chain
//! (the chain id, as in containerd, is the digest of the parent's chain id and the layer's
//! diff_id), so a layer is unpacked once and shared by every image built on the same
//! layers. An image's root is the directory of its top chain.

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
    /// Unpacked bytes of the image's layers (as counted at import).
    #[serde(default)]
    pub bytes: u64,
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

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The refs in force; an unreadable or malformed file reads as empty (and says so).
    pub fn refs(&self) -> Refs {
        let path = self.dir.join("refs.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                crate::error!(
                    "images",
                    "{}: {e}; the store reads as empty",
                    path.display()
                );
                Refs::new()
            }),
            Err(_) => Refs::new(),
        }
    }

    pub fn has(&self, image: &str) -> bool {
        self.root_of(image).is_some()
    }

    /// The unpacked root of `NAME:TAG`, if the store has it whole.
    pub fn root_of(&self, image: &str) -> Option<PathBuf> {
        let refs = self.refs();
        let top = refs.get(image)?.chain.last()?.clone();
        let root = self.dir.join("layers").join(top);
        root.is_dir().then_some(root)
    }
}

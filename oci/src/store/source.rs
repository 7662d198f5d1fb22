//! An image's files by name: a layout directory, or a tar indexed in one pass (each
//! member's data offset; hard and symbolic links resolved lexically to the member they
//! name, never through the host's file system).

use crate::error::{OciError, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The files of an image, by name relative to the layout (or archive) root.
pub enum Source {
    Dir(PathBuf),
    Tar {
        file: PathBuf,
        /// member name → (data offset, size); links resolved to their target's entry.
        members: BTreeMap<String, (u64, u64)>,
    },
}

impl Source {
    /// Indexes a tar's members: regular files by offset; hard and symbolic links (docker
    /// save links repeated layers) to the member they name.
    pub fn index_tar(image: &str, file: &Path) -> Result<Source> {
        let read_err = |source| OciError::Read {
            image: image.to_string(),
            path: file.to_path_buf(),
            source,
        };
        let mut f = File::open(file).map_err(read_err)?;
        let mut magic = [0u8; 4];
        let n = f.read(&mut magic).map_err(read_err)?;
        if n >= 2 && magic[..2] == [0x1f, 0x8b] || n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            return Err(OciError::Format {
                image: image.into(),
                what: file.display().to_string(),
                message: "is compressed; give the plain tar (gunzip/unzstd it first)".into(),
            });
        }
        f.seek(SeekFrom::Start(0)).map_err(read_err)?;
        let mut archive = tar::Archive::new(f);
        let mut members = BTreeMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let bad = |e: io::Error| OciError::Format {
            image: image.into(),
            what: file.display().to_string(),
            message: format!("not a readable tar: {e}"),
        };
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let name = clean_name(&String::from_utf8_lossy(&entry.path_bytes()));
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(name, (entry.raw_file_position(), entry.size()));
                }
                tar::EntryType::Link | tar::EntryType::Symlink => {
                    let target = entry
                        .link_name_bytes()
                        .map(|t| String::from_utf8_lossy(&t).into_owned())
                        .unwrap_or_default();
                    let target = if entry.header().entry_type() == tar::EntryType::Symlink {
                        join_lexically(&name, &target)
                    } else {
                        Some(clean_name(&target))
                    };
                    if let Some(t) = target {
                        links.push((name, t));
                    }
                }
                _ => {}
            }
        }
        // A link to a link is resolved by going round again (bounded).
        for _ in 0..8 {
            let mut changed = false;
            for (name, target) in &links {
                if !members.contains_key(name) {
                    if let Some(&at) = members.get(target) {
                        members.insert(name.clone(), at);
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        Ok(Source::Tar {
            file: file.to_path_buf(),
            members,
        })
    }

    pub fn size(&self, name: &str) -> Option<u64> {
        match self {
            Source::Dir(dir) => std::fs::metadata(dir.join(name))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len()),
            Source::Tar { members, .. } => members.get(name).map(|&(_, len)| len),
        }
    }

    /// The member's bytes as a stream; `None` when there is no such member.
    pub fn open(&self, name: &str) -> Option<io::Result<Box<dyn Read>>> {
        match self {
            Source::Dir(dir) => {
                let path = dir.join(name);
                if !path.is_file() {
                    return None;
                }
                Some(File::open(path).map(|f| Box::new(f) as Box<dyn Read>))
            }
            Source::Tar { file, members } => {
                let &(offset, len) = members.get(name)?;
                Some((|| {
                    let mut f = File::open(file)?;
                    f.seek(SeekFrom::Start(offset))?;
                    Ok(Box::new(f.take(len)) as Box<dyn Read>)
                })())
            }
        }
    }

    pub(super) fn location(&self, name: &str) -> PathBuf {
        match self {
            Source::Dir(dir) => dir.join(name),
            Source::Tar { file, .. } => file.join(name),
        }
    }
}

/// `./a//b` → `a/b`.
pub(super) fn clean_name(name: &str) -> String {
    name.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// A symlink target relative to the member `name`, as a member name; `None` if it leaves
/// the archive root.
pub(super) fn join_lexically(name: &str, target: &str) -> Option<String> {
    let base: Vec<String> = if target.starts_with('/') {
        Vec::new()
    } else {
        let mut v: Vec<String> = clean_name(name).split('/').map(String::from).collect();
        v.pop();
        v
    };
    join_parts(base, target)
}

fn join_parts(mut base: Vec<String>, target: &str) -> Option<String> {
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                base.pop()?;
            }
            c => base.push(c.to_string()),
        }
    }
    Some(base.join("/"))
}

//! Identical files in one output tree become one inode (hard links), found by content hash.
//! Container roots imported from different images often carry the same busybox or libc;
//! mksquashfs stores the data once either way, but as one inode they also share one page
//! cache in the running system.

use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`link_identical`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Deduplicated {
    pub files_linked: usize,
    pub bytes_saved: u64,
}

/// Hard-links regular files under `dir` with the same mode and content (sha256) to the
/// first such file in path order. Files already sharing an inode are left alone.
pub fn link_identical(dir: &Path) -> io::Result<Deduplicated> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    // (mode, size, sha256) → the first file with them, and its (device, inode).
    type Key = (u32, u64, [u8; 32]);
    let mut first: BTreeMap<Key, (PathBuf, u64, u64)> = BTreeMap::new();
    let mut done = Deduplicated::default();
    for path in files {
        let meta = fs::symlink_metadata(&path)?;
        let mode = meta.permissions().mode() & 0o7777;
        let mut hasher = Sha256::new();
        io::copy(&mut fs::File::open(&path)?, &mut hasher)?;
        let key = (mode, meta.len(), hasher.finalize().into());
        match first.get(&key) {
            Some((original, dev, ino)) => {
                if (meta.dev(), meta.ino()) == (*dev, *ino) {
                    continue;
                }
                // Link beside the file, then rename over it: never a moment without it.
                let tmp = path.with_file_name(format!(
                    ".{}.dedup",
                    path.file_name().unwrap_or_default().to_string_lossy()
                ));
                let _ = fs::remove_file(&tmp);
                fs::hard_link(original, &tmp)?;
                fs::rename(&tmp, &path)?;
                done.files_linked += 1;
                done.bytes_saved += meta.len();
            }
            None => {
                first.insert(key, (path, meta.dev(), meta.ino()));
            }
        }
    }
    Ok(done)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ft = e.file_type()?;
        if ft.is_dir() {
            walk(&e.path(), out)?;
        } else if ft.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_files_share_an_inode_different_ones_do_not() {
        let t = tempfile::tempdir().unwrap();
        let w = |p: &str, data: &str, mode: u32| {
            let path = t.path().join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        };
        w("a/rootfs/bin/busybox", "busybox", 0o755);
        w("b/rootfs/bin/busybox", "busybox", 0o755);
        w("c/rootfs/bin/busybox", "busybox", 0o644); // other mode
        w("c/rootfs/etc/x", "other", 0o755);
        let done = link_identical(t.path()).unwrap();
        assert_eq!(
            done,
            Deduplicated {
                files_linked: 1,
                bytes_saved: 7
            }
        );
        let ino = |p: &str| fs::metadata(t.path().join(p)).unwrap().ino();
        assert_eq!(ino("a/rootfs/bin/busybox"), ino("b/rootfs/bin/busybox"));
        assert_ne!(ino("a/rootfs/bin/busybox"), ino("c/rootfs/bin/busybox"));
        // A second run finds nothing more to do.
        assert_eq!(link_identical(t.path()).unwrap(), Deduplicated::default());
    }
}

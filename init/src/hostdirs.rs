//! A service's `host_dirs`: the host directories (bind-mount sources below /run and /var)
//! PID 1 creates right before it creates the service's container, so no onboot container
//! has to exist only to run `mkdir -p`. The manifest validated the paths (absolute, no
//! `..`, below /run or /var, not PID 1's own); this walks them one component at a time
//! from an open directory, never following a symlink: a container that can write below
//! /var (its bind mounts) cannot turn one of these into a mkdir somewhere else.

use nix::errno::Errno;
use nix::sys::stat::{mkdirat, Mode};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Why one directory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HostDirError {
    #[error("host_dirs: open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("host_dirs: {path} is a symlink or not a directory; refusing to create below it")]
    NotDir { path: PathBuf },
    #[error("host_dirs: create {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// Creates every directory of `dirs` (absolute paths) below `root` (`/` on a machine),
/// missing parents included, mode 0755; existing directories are left as they are.
pub fn create(root: &Path, dirs: &[String]) -> Result<(), HostDirError> {
    for dir in dirs {
        create_one(root, dir)?;
    }
    Ok(())
}

fn open_dir(at: Option<&OwnedFd>, name: &Path, path: &Path) -> Result<OwnedFd, HostDirError> {
    match crate::sys::open_dir_nofollow(at.map(|f| f.as_fd()), name) {
        Ok(fd) => Ok(fd),
        Err(Errno::ELOOP | Errno::ENOTDIR) => Err(HostDirError::NotDir {
            path: path.to_path_buf(),
        }),
        Err(source) => Err(HostDirError::Open {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn create_one(root: &Path, dir: &str) -> Result<(), HostDirError> {
    let mut at = open_dir(None, root, root)?;
    let mut path = root.to_path_buf();
    for part in Path::new(dir).components().filter_map(|c| match c {
        std::path::Component::Normal(p) => Some(p),
        _ => None,
    }) {
        path.push(part);
        match mkdirat(Some(at.as_raw_fd()), part, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(source) => return Err(HostDirError::Create { path, source }),
        }
        at = open_dir(Some(&at), Path::new(part), &path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dirs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn creates_missing_parents_and_leaves_existing_directories_alone() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("var/log")).unwrap();
        std::fs::write(t.path().join("var/log/keep"), "x").unwrap();
        create(
            t.path(),
            &dirs(&[
                "/run/sysctr/net",
                "/var/log/syslog",
                "/var/log",
                "/run/sysctr/net/",
            ]),
        )
        .unwrap();
        assert!(t.path().join("run/sysctr/net").is_dir());
        assert!(t.path().join("var/log/syslog").is_dir());
        assert!(t.path().join("var/log/keep").is_file());
        let mode = std::fs::metadata(t.path().join("run/sysctr"))
            .unwrap()
            .permissions()
            .mode();
        // 0755 less the process umask, which may only take bits away.
        assert_eq!(mode & 0o7022, 0, "{mode:o}");
        assert_eq!(mode & 0o700, 0o700, "{mode:o}");
    }

    #[test]
    fn a_symlink_on_the_way_is_refused_and_nothing_is_created_through_it() {
        let t = tempfile::tempdir().unwrap();
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::create_dir_all(t.path().join("var/log")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, t.path().join("var/log/syslog")).unwrap();
        let err = create(t.path(), &dirs(&["/var/log/syslog/x"])).unwrap_err();
        assert!(matches!(err, HostDirError::NotDir { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "host_dirs: {} is a symlink or not a directory; refusing to create below it",
                t.path().join("var/log/syslog").display()
            )
        );
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_file_in_the_way_is_named_in_the_error() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("run")).unwrap();
        std::fs::write(t.path().join("run/net"), "not a dir").unwrap();
        let err = create(t.path(), &dirs(&["/run/ok", "/run/net/x"])).unwrap_err();
        assert!(matches!(err, HostDirError::NotDir { .. }), "{err:?}");
        assert!(err.to_string().contains("run/net"), "{err}");
        // The entries before the bad one were made.
        assert!(t.path().join("run/ok").is_dir());
    }

    #[test]
    fn a_missing_root_is_an_open_error() {
        let t = tempfile::tempdir().unwrap();
        let err = create(&t.path().join("nope"), &dirs(&["/run/x"])).unwrap_err();
        assert!(
            matches!(
                err,
                HostDirError::Open {
                    source: Errno::ENOENT,
                    ..
                }
            ),
            "{err:?}"
        );
        // An empty list touches nothing, not even the root.
        create(&t.path().join("nope"), &[]).unwrap();
    }
}

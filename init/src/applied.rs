//! The applied set on the state partition (`/var/lib/sysctr/manifest.d/applied.json`):
//! read at boot after the image's manifest, replaced whole by `sysctr apply` and
//! `sysctr rm`. Every write goes to a temporary file in the same directory, is fsynced,
//! renamed over the old file, and the directory is fsynced, so a power cut leaves either
//! the old set or the new one, never a mix. The checks are `manifest::applied::join`, the
//! same at boot and for an apply.

use manifest::applied::{join, Joined, APPLIED_FILE};
use manifest::{Loaded, Service};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// An applied set file larger than this is refused (it is a manifest file).
const MAX_BYTES: u64 = manifest::load::MAX_FILE_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum AppliedError {
    #[error("{0}")]
    Invalid(String),
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

/// What PID 1 needs to check and keep the applied set.
pub struct AppliedSet {
    /// The image's manifest as loaded at boot: the names an applied entry cannot take.
    system: Loaded,
    /// `<state>/manifest.d`.
    dir: PathBuf,
    /// The image store, for `image` references.
    store: crate::images::Store,
}

impl AppliedSet {
    pub fn new(system: Loaded, state_dir: &Path) -> AppliedSet {
        AppliedSet {
            system,
            dir: state_dir.join("manifest.d"),
            store: crate::images::Store::new(state_dir),
        }
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join(APPLIED_FILE)
    }

    pub fn store(&self) -> &crate::images::Store {
        &self.store
    }

    /// The set written by the last apply, checked as at any boot: bad entries are rejected
    /// alone (they show as Failed). None when nothing was ever applied.
    pub fn load_at_boot(&self) -> Option<Joined> {
        let file = self.file();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name != APPLIED_FILE && !name.starts_with(".applied.") {
                    crate::warn!(
                        "apply",
                        "{}: ignored (only {APPLIED_FILE}, written by sysctr apply, is read)",
                        e.path().display()
                    );
                }
            }
        }
        let text = match read_limited(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                crate::error!("apply", "{}: cannot read: {e}", file.display());
                return None;
            }
        };
        let shown = file.display().to_string();
        match join(&self.system, &text, &shown, &|i| self.store.has(i)) {
            Ok(j) => Some(j),
            Err(e) => {
                crate::error!("apply", "{e}; no applied services this boot");
                None
            }
        }
    }

    /// Checks `text` as a new applied set: every entry must pass, or nothing is applied.
    pub fn check(&self, text: &str) -> Result<Vec<Service>, AppliedError> {
        let j = join(&self.system, text, "apply", &|i| self.store.has(i))
            .map_err(|e| AppliedError::Invalid(e.to_string()))?;
        if !j.rejected.is_empty() {
            return Err(AppliedError::Invalid(j.describe("apply")));
        }
        Ok(j.services)
    }

    /// Whether `image` is named by a service of `services`.
    pub fn uses_image(services: &[Service], image: &str) -> Option<String> {
        services
            .iter()
            .find(|s| s.image.as_deref() == Some(image))
            .map(|s| s.name.clone())
    }

    /// Writes `services` as the new applied set: temp file, fsync, rename, fsync the dir.
    pub fn write(&self, services: &[Service]) -> Result<(), AppliedError> {
        write_atomic(
            &self.dir,
            APPLIED_FILE,
            manifest::applied::to_file_text(services).as_bytes(),
        )
    }
}

fn read_limited(path: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    fs::File::open(path)?
        .take(MAX_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_BYTES {
        return Err(io::Error::other(format!(
            "larger than the maximum of {MAX_BYTES} bytes"
        )));
    }
    Ok(text)
}

/// Replaces `dir/name` with `data` so that a crash leaves the old content or the new one.
pub fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> Result<(), AppliedError> {
    let io = |path: &Path, action, source| AppliedError::Io {
        path: path.to_path_buf(),
        action,
        source,
    };
    fs::create_dir_all(dir).map_err(|e| io(dir, "create directory", e))?;
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| io(&tmp, "create", e))?;
        f.write_all(data).map_err(|e| io(&tmp, "write", e))?;
        f.sync_all().map_err(|e| io(&tmp, "fsync", e))?;
        fs::rename(&tmp, &target).map_err(|e| io(&target, "rename into place", e))?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(dir, "fsync directory", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system() -> Loaded {
        manifest::load_str(
            r#"{"version":1,"services":[{"name":"net","root":"/r","args":["/x"]}]}"#,
            "/etc/sysctr/manifest.json",
        )
        .unwrap()
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let set = AppliedSet::new(system(), d.path());
        assert!(set.load_at_boot().is_none());
        let svcs = set
            .check(r#"{"version":1,"services":[{"name":"web","root":"/r","args":["/x"],"depends_on":["net"]}]}"#)
            .unwrap();
        set.write(&svcs).unwrap();
        let back = set.load_at_boot().unwrap();
        assert_eq!(back.services, svcs);
        set.write(&[]).unwrap();
        assert!(set.load_at_boot().unwrap().services.is_empty());
        let names: Vec<String> = fs::read_dir(d.path().join("manifest.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![APPLIED_FILE.to_string()]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let d = tempfile::tempdir().unwrap();
        let set = AppliedSet::new(system(), d.path());
        let svcs = set
            .check(r#"{"version":1,"services":[{"name":"web","root":"/r","args":["/x"]}]}"#)
            .unwrap();
        set.write(&svcs).unwrap();
        // A directory where the temp file would go: the create fails, nothing is renamed.
        let tmp = d
            .path()
            .join("manifest.d")
            .join(format!(".{APPLIED_FILE}.{}.tmp", std::process::id()));
        fs::create_dir(&tmp).unwrap();
        let e = set.write(&[]).unwrap_err();
        assert!(e.to_string().contains("create"), "{e}");
        assert_eq!(set.load_at_boot().unwrap().services, svcs);
    }

    #[test]
    fn a_bad_set_is_refused_whole() {
        let d = tempfile::tempdir().unwrap();
        let set = AppliedSet::new(system(), d.path());
        let e = set
            .check(
                r#"{"version":1,"services":[
                {"name":"ok","root":"/r","args":["/x"]},
                {"name":"net","root":"/r","args":["/x"]}]}"#,
            )
            .unwrap_err();
        assert!(
            e.to_string().contains("apply: service \"net\": name:"),
            "{e}"
        );
        let e = set
            .check(r#"{"version":1,"services":[{"name":"x","image":"nope:1","args":["/x"]}]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("no image \"nope:1\""), "{e}");
    }
}

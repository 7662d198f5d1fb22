//! Seccomp programs compiled when the image is built, so that PID 1 does not compile them
//! while the system boots.
//!
//! Each distinct profile costs one libseccomp compile at the first start of a service that
//! has it (13 ms on the host; 184, 105 and 62 ms for the default services' three under TCG,
//! the first one cold), each on the boot's critical path (bench/ANALYSIS.md, issue 18). The image builder runs
//! the init binary it installs as `init --seccomp-precompile <manifest>…`, which writes,
//! next to each manifest, `seccomp/<sha256 of the profile's JSON>.bpf` for every profile its
//! services get: the same code and the same libseccomp as at boot, so the program is the
//! one PID 1 would have compiled. At a service's first start PID 1 looks there (the
//! directory next to the manifest it booted with) before compiling; a profile without a
//! file (a service added by live apply), or a file it does not trust, is compiled as
//! before.
//!
//! The directory is in the read-only root, under dm-verity in a production image. A file
//! is still checked before it is used: a regular file of PID 1's owner that nobody else
//! may write, a whole number of instructions within the kernel's limit, ending in a return.

use super::bpf::{self, Program};
use manifest::Service;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `init --seccomp-precompile <manifest>…`: the image builder's tool mode.
pub const TOOL_FLAG: &str = "--seccomp-precompile";
/// The directory of programs next to a manifest.
pub const DIR: &str = "seccomp";

#[derive(Debug, thiserror::Error)]
pub enum PrecompiledError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not used: {why}")]
    Refused { path: String, why: String },
    #[error("{path}: {why}")]
    Manifest { path: String, why: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PrecompiledError + '_ {
    move |source| PrecompiledError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where the programs for the services of `manifest` are.
pub fn dir_for(manifest: &Path) -> PathBuf {
    manifest.parent().unwrap_or(Path::new("/")).join(DIR)
}

/// The file holding the program of the profile whose JSON text is `profile`.
pub fn file_for(dir: &Path, profile: &str) -> PathBuf {
    let digest = Sha256::digest(profile.as_bytes());
    dir.join(format!("{}.bpf", manifest::bundle::to_hex(&digest)))
}

/// The precompiled program of `profile` (its JSON text) in `dir`: Ok(None) when there is
/// none, Err when there is a file PID 1 does not use (it then compiles the profile).
pub fn load(dir: &Path, profile: &str) -> Result<Option<Program>, PrecompiledError> {
    let path = file_for(dir, profile);
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path)(e)),
    };
    let refused = |why: String| PrecompiledError::Refused {
        path: path.display().to_string(),
        why,
    };
    let meta = file.metadata().map_err(io_err(&path))?;
    if !meta.file_type().is_file() {
        return Err(refused("not a regular file".into()));
    }
    if let Some(why) = crate::sys::not_pid1s_own(&meta) {
        return Err(refused(why));
    }
    let limit = (bpf::MAX_INSTRUCTIONS * 8) as u64;
    if meta.len() > limit {
        return Err(refused(format!("{} bytes, more than {limit}", meta.len())));
    }
    let mut raw = Vec::with_capacity(meta.len() as usize);
    (&file)
        .take(limit + 1)
        .read_to_end(&mut raw)
        .map_err(io_err(&path))?;
    Program::from_bytes(&raw).map(Some).map_err(refused)
}

/// The profile of a service's containers as PID 1 gives it, as JSON text (the key of its
/// program); None for a privileged service, which has none.
pub fn profile_text(svc: &Service) -> Result<Option<String>, String> {
    if svc.privileged {
        return Ok(None);
    }
    let profile = super::profile(&crate::spec::capabilities(svc)).map_err(|e| e.to_string())?;
    serde_json::to_string(&profile)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Compiles the profiles of the services of each manifest into the directory next to it;
/// returns the files written. A manifest that does not load, or a service it rejects, is
/// an error: the image builder checked them with the same code already.
pub fn precompile(manifests: &[PathBuf]) -> Result<Vec<PathBuf>, PrecompiledError> {
    let mut written = Vec::new();
    for path in manifests {
        let bad = |why: String| PrecompiledError::Manifest {
            path: path.display().to_string(),
            why,
        };
        let loaded = manifest::load_file(path).map_err(|e| bad(e.to_string()))?;
        if let Some(r) = loaded.rejected.first() {
            return Err(bad(format!("service {} rejected", r.name)));
        }
        let dir = dir_for(path);
        for svc in &loaded.manifest.services {
            let Some(text) = profile_text(svc).map_err(|e| bad(format!("{}: {e}", svc.name)))?
            else {
                continue;
            };
            let file = file_for(&dir, &text);
            if written.contains(&file) {
                continue;
            }
            let program = bpf::compile(
                &serde_json::from_str(&text).map_err(|e| bad(format!("{}: {e}", svc.name)))?,
            )
            .map_err(|e| bad(format!("{}: profile not compiled: {e}", svc.name)))?;
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            // 0644 whatever the umask: PID 1 refuses a program others may write.
            let tmp = file.with_extension("tmp");
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)
                .and_then(|mut f| {
                    f.set_permissions(fs::Permissions::from_mode(0o644))?;
                    f.write_all(&program.to_bytes())
                })
                .and_then(|_| fs::rename(&tmp, &file))
                .map_err(io_err(&file))?;
            written.push(file);
        }
    }
    Ok(written)
}

/// `init --seccomp-precompile <manifest>…`; the exit status.
pub fn tool_main(args: &[String]) -> i32 {
    let manifests: Vec<PathBuf> = args.iter().skip(1).map(PathBuf::from).collect();
    if manifests.is_empty() {
        eprintln!("init: {TOOL_FLAG} <manifest.json>…: no manifest given");
        return 2;
    }
    match precompile(&manifests) {
        Ok(files) => {
            eprintln!("init: {} seccomp programs precompiled", files.len());
            0
        }
        Err(e) => {
            eprintln!("init: {TOOL_FLAG}: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests;

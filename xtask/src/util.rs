//! Small helpers shared by the xtask commands: running commands, locating the workspace.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_path_buf()
}

/// Runs a command to completion, failing with its command line when it does not succeed.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

/// Runs a command and returns its standard output as text.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails, naming the folder and both sizes, when the file system holding `dir` has less
/// than `need` bytes free for `what` (a run that would stop halfway with ENOSPC instead).
pub fn ensure_free_space(dir: &std::path::Path, need: u64, what: &str) -> Result<()> {
    let st = nix::sys::statvfs::statvfs(dir)
        .with_context(|| format!("cannot statvfs {}", dir.display()))?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    if free < need {
        bail!(
            "{what} needs {} MiB free under {}, it has {} MiB: free some space (old build/ \
             folders, target/) and run it again",
            need >> 20,
            dir.display(),
            free >> 20
        );
    }
    Ok(())
}

/// Installs the Debian packages whose names are given, if any is missing.
pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

#[cfg(test)]
mod tests {
    use super::ensure_free_space;

    #[test]
    fn too_little_free_space_is_refused_naming_the_folder_and_sizes() {
        let dir = std::env::temp_dir();
        ensure_free_space(&dir, 0, "nothing").expect("0 bytes always fit");
        let err = ensure_free_space(&dir, u64::MAX, "a cluster of 3 nodes")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("a cluster of 3 nodes needs ")
                && err.contains(&format!("MiB free under {}, it has ", dir.display())),
            "{err}"
        );
        let err = ensure_free_space(std::path::Path::new("/no/such/dir"), 0, "x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot statvfs /no/such/dir"), "{err}");
    }
}

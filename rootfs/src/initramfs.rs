//! The UKI's initramfs: PID 1's binary as `/init`, xz-compressed, and nothing else.
//!
//! The kernel unpacks it into its rootfs while it probes devices (asynchronously, on a free
//! CPU) and then runs `/init` from memory; PID 1 mounts the slot's dm-verity root and moves
//! onto it (init/src/boot/root.rs). Against PID 1 on the xz root, paged in block by block
//! on its first instructions, this took the kernel running init → init's boot config from
//! ~1.6 s to ~0.2 s under TCG (bench/ANALYSIS.md). Because the UKI carries it, PID 1 is
//! verified with the kernel and the command line (and updated with them, in a bundle's
//! UKIs), and the root no longer holds a copy.
//!
//! The archive is newc (`cpio -H newc`), every entry owned by root with the build's
//! `SOURCE_DATE_EPOCH` as its time, so the same binary gives the same bytes. `/dev/console`
//! comes from the kernel's own built-in initramfs, unpacked before this one.

use anyhow::{bail, Context, Result};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

/// The directories PID 1 mounts on before it leaves the initramfs (boot/root.rs).
const DIRS: &[&str] = &["dev", "proc", "sysroot"];

/// Writes the initramfs holding `init` as `/init` to `out`; returns its size in bytes.
/// `work` is an empty scratch directory.
pub fn make(init: &Path, work: &Path, epoch: u64, out: &Path) -> Result<u64> {
    let stage = work.join("initramfs");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    fs::create_dir_all(&stage)?;
    crate::assemble::copy_file(init, &stage.join("init"), Some(0o755))?;
    for d in DIRS {
        fs::create_dir(stage.join(d))?;
    }
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(epoch);
    let mut names = vec![".".to_string(), "init".to_string()];
    names.extend(DIRS.iter().map(|d| d.to_string()));
    for name in &names {
        fs::File::open(stage.join(name))
            .and_then(|f| f.set_modified(time))
            .with_context(|| format!("cannot set the time of {}", stage.join(name).display()))?;
    }
    let list = names.join("\n") + "\n";
    let cpio = pipe(
        Command::new("cpio")
            .args([
                "--create",
                "--format=newc",
                "--owner=0:0",
                "--reproducible",
                "--quiet",
            ])
            .current_dir(&stage),
        list.as_bytes(),
        "cpio (apt-get install cpio)",
    )?;
    // The kernel's xz decoder wants CRC32 checks; the x86 filter shrinks code by ~10 %.
    let xz = pipe(
        Command::new("xz").args([
            "--format=xz",
            "--check=crc32",
            "--x86",
            "--lzma2=preset=9e,dict=8MiB",
            "--stdout",
        ]),
        &cpio,
        "xz (apt-get install xz-utils)",
    )?;
    fs::write(out, &xz).with_context(|| format!("cannot write {}", out.display()))?;
    fs::remove_dir_all(&stage)?;
    Ok(xz.len() as u64)
}

/// Runs `cmd` with `input` on its stdin; its stdout.
fn pipe(cmd: &mut Command, input: &[u8], what: &str) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {what}"))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("{what}: the writer thread panicked"))?
        .with_context(|| format!("{what}: cannot write its input"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The archive lists exactly /init (the binary, mode 0755, root's) and its mount points,
    /// and the same input gives the same bytes.
    #[test]
    fn holds_init_and_its_mount_points_reproducibly() {
        let dir = tempfile::tempdir().unwrap();
        let init = dir.path().join("init-bin");
        fs::write(&init, b"\x7fELF not really").unwrap();
        let work = dir.path().join("work");
        fs::create_dir(&work).unwrap();
        let a = dir.path().join("a.cpio.xz");
        let b = dir.path().join("b.cpio.xz");
        make(&init, &work, 1_700_000_000, &a).unwrap();
        make(&init, &work, 1_700_000_000, &b).unwrap();
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        let cpio = Command::new("xz")
            .args(["-dc"])
            .arg(&a)
            .output()
            .unwrap()
            .stdout;
        let listing = pipe(
            Command::new("cpio").args(["-t", "-v", "--quiet"]),
            &cpio,
            "cpio -t",
        )
        .unwrap();
        let listing = String::from_utf8(listing).unwrap();
        let names: Vec<&str> = listing
            .lines()
            .map(|l| l.split_whitespace().last().unwrap())
            .collect();
        assert_eq!(names, [".", "init", "dev", "proc", "sysroot"], "{listing}");
        let init_line = listing.lines().find(|l| l.ends_with(" init")).unwrap();
        assert!(init_line.starts_with("-rwxr-xr-x"), "{init_line}");
        assert!(init_line.contains(" root "), "{init_line}");
        let inside = pipe(
            Command::new("cpio")
                .args(["-i", "--to-stdout", "--quiet", "init"])
                .current_dir(dir.path()),
            &cpio,
            "cpio -i",
        )
        .unwrap();
        assert_eq!(inside, fs::read(&init).unwrap());
    }
}

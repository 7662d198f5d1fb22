//! Building the static binaries that go into the image: `init` (PID 1) and `sysctr`, and
//! `bench-guest` for the benchmark image.
//!
//! They are built for an explicit `--target` so that `+crt-static` applies to them and not to
//! build scripts or proc macros, and with libseccomp linked statically (see
//! `.cargo/config.toml`): without that the binary silently comes out dynamic.

use crate::util::{ensure_debian_packages, output, run, workspace_root};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "x86_64-unknown-linux-gnu";

/// Debian packages the static build links against.
pub const BUILD_PACKAGES: &[&str] = &["libseccomp-dev", "file"];

pub struct Binaries {
    pub init: PathBuf,
    pub sysctr: PathBuf,
    /// The in-guest benchmark driver (`bench/src/bin/guest.rs`), for the benchmark image.
    pub bench_guest: PathBuf,
}

impl Binaries {
    /// A binary by the name a container recipe gives it (`"built": "<name>"`).
    pub fn built(&self, name: &str) -> Option<&Path> {
        match name {
            "init" => Some(&self.init),
            "sysctr" => Some(&self.sysctr),
            "bench-guest" => Some(&self.bench_guest),
            _ => None,
        }
    }
}

pub fn static_binaries() -> Result<Binaries> {
    ensure_debian_packages(BUILD_PACKAGES)?;
    let root = workspace_root();
    eprintln!("xtask: building static init, sysctr and bench-guest (release, {TARGET})");
    run(Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET])
        .args(["-p", "sysctr-init", "-p", "sysctr", "-p", "sysctr-bench"])
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            // Not position-independent: a static-pie binary relocates itself at start,
            // which reads half a megabyte of relocations and dirties every page of
            // .data.rel.ro (memory that then stays private to PID 1).
            "-C target-feature=+crt-static -C relocation-model=static",
        ))?;
    let dir = target_dir().join(TARGET).join("release");
    let bins = Binaries {
        init: dir.join("init"),
        sysctr: dir.join("sysctr"),
        bench_guest: dir.join("bench-guest"),
    };
    for bin in [&bins.init, &bins.sysctr, &bins.bench_guest] {
        let desc = output(Command::new("file").arg("-L").arg(bin))?;
        if !desc.contains("statically linked") && !desc.contains("static-pie linked") {
            bail!("{} is not static: {}", bin.display(), desc.trim());
        }
    }
    Ok(bins)
}

/// Cargo's target directory (honours CARGO_TARGET_DIR).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

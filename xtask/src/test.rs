//! `cargo xtask test`: every test, in the order that fails fastest — unit tests, then the
//! host integration tests (the real static init as PID 1 in namespaces; needs root), then
//! the QEMU boot tests of the real image. `--no-boot` skips the last stage.

use crate::build;
use crate::util::{ensure_debian_packages, run, workspace_root};
use anyhow::{bail, Result};
use std::process::Command;

/// What the integration tests need on the host besides the build packages; the last three
/// for rootfs/'s registry test (a loopback registry, skopeo pushing to it) and its web
/// example test (umoci building the image).
const TEST_PACKAGES: &[&str] = &[
    "busybox-static",
    "util-linux",
    "docker-registry",
    "skopeo",
    "umoci",
];

/// `cargo xtask test`'s options.
#[derive(clap::Args, Debug)]
pub struct TestArgs {
    /// Skip the QEMU boot tests.
    #[arg(long = "no-boot")]
    no_boot: bool,
}

pub fn command(args: &TestArgs) -> Result<()> {
    let boot = !args.no_boot;
    ensure_debian_packages(TEST_PACKAGES)?;
    let bins = build::static_binaries()?;
    let root = workspace_root();
    eprintln!("xtask: unit tests");
    run(Command::new(env!("CARGO")).current_dir(&root).args([
        "test",
        "--workspace",
        "--exclude",
        "sysctr-tests",
        "--exclude",
        "sysctr-boot-tests",
    ]))?;
    if !nix_is_root() {
        bail!("the host integration tests need root (namespaces, mounts, cgroups)");
    }
    eprintln!("xtask: host integration tests (real init as PID 1 in namespaces)");
    run(Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["test", "-p", "sysctr-tests", "--", "--test-threads=2"])
        .env("SYSCTR_INIT_BIN", &bins.init)
        .env("SYSCTR_CLI_BIN", &bins.sysctr))?;
    if boot {
        eprintln!("xtask: QEMU boot tests");
        crate::qemu::boot_test(&[])?;
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|v| v.split_whitespace().next() == Some("0"))
            })
        })
        .unwrap_or(false)
}

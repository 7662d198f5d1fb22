//! `cargo xtask …`: the build, run, test and benchmark driver. Each subcommand lives in its
//! own module; this file only dispatches.

mod bench;
mod build;
mod bundle;
mod fuzz;
mod image;
mod kernel;
mod qemu;
mod test;
mod util;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build            build the static init and sysctr binaries (release, crt-static)
  kernel           build the kernel from kernel-config/ (cached in ~/.cache/sysctr/kernel)
  image [--dev]    build kernel, binaries, containers and the disk image; print sizes
  run [options]    build the development image and boot it in QEMU (run --help)
  boot-test        build the test image and run the QEMU boot tests (boot-tests/)
  bundle [options] build a signed update bundle, or check one (bundle --help)
  fuzz [SECONDS]   fuzz the control-socket request decoder (cargo fuzz; default 60 s)
  test [--no-boot] run every test: unit, host integration (root), QEMU boot tests
  bench [options]  measure start, restart, memory, ps, boot and size vs runc/crun; write bench/RESULTS.md
";

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match cmd.as_str() {
        "build" => build::static_binaries().map(|b| {
            println!("init:   {}", b.init.display());
            println!("sysctr: {}", b.sysctr.display());
        }),
        "kernel" => kernel::build().map(|k| println!("{}", k.display())),
        "image" => image::command(&rest),
        "run" => qemu::command(&rest),
        "boot-test" => qemu::boot_test(&rest),
        "fuzz" => fuzz::run_fuzz(&rest),
        "bundle" => bundle::command(&rest),
        "test" => test::command(&rest),
        "bench" => bench::command(&rest),
        "" | "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            let _ = rest;
            bail!("unknown command {other:?}\n{USAGE}")
        }
    }
}

//! `cargo xtask …`: the build, run, test and benchmark driver. Each subcommand lives in its
//! own module with its options (a clap `Args` struct); this file only declares the command
//! set and dispatches.

mod appliance_test;
mod bench;
mod build;
mod bundle;
mod cluster;
mod fuzz;
mod image;
mod kernel;
mod qemu;
mod test;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// The build, run, test and benchmark driver of sysctr.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the static init and sysctr binaries (release, crt-static).
    Build,
    /// Build the kernel from kernel-config/ (cached in ~/.cache/sysctr/kernel).
    Kernel,
    /// Build kernel, binaries, containers and the disk image; print sizes.
    Image(image::ImageArgs),
    /// Boot N node images on a private network (a network namespace with a bridge and
    /// taps) and form a Docker Swarm; `cluster kernel` / `cluster image` only build.
    Cluster(cluster::ClusterArgs),
    /// 3 nodes: a swarm, a 3-replica service through the routing mesh from every node, a
    /// node powered off (its replicas rescheduled within a printed bound) and back.
    ClusterTest(cluster::ClusterTestArgs),
    /// Build the development image and boot it in QEMU on this terminal.
    Run(qemu::RunArgs),
    /// Build the test images and run the QEMU boot tests (boot-tests/).
    BootTest(qemu::BootTestArgs),
    /// Kill QEMU at random moments of updates and trial boots; every next boot must have its
    /// health set Ready on a good slot. The table goes to bench/RESULTS.md.
    Powercut(qemu::PowercutArgs),
    /// Build a signed update bundle, or extract and check a bundle's manifest.
    Bundle(bundle::Args),
    /// Fuzz what PID 1 parses from outside: requests, framing, manifest, bundle heads.
    Fuzz(fuzz::FuzzArgs),
    /// Run every test: unit, host integration (root), QEMU boot tests.
    Test(test::TestArgs),
    /// Measure start, restart, memory, ps, boot and size against runc and crun; write
    /// bench/RESULTS.md and bench/results.json.
    Bench(bench::BenchArgs),
    /// Crash/restart and start/stop cycles against the real init; PID 1's descriptors and
    /// RSS must stay flat (a section of bench/RESULTS.md).
    Soak(bench::soak::SoakArgs),
}

fn main() {
    let cli = Cli::parse();
    if let Err(err) = run(cli.command) {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Build => build::static_binaries().map(|b| {
            println!("init:   {}", b.init.display());
            println!("sysctr: {}", b.sysctr.display());
        }),
        Command::Kernel => kernel::build().map(|k| println!("{}", k.display())),
        Command::Image(a) => image::command(&a),
        Command::Cluster(a) => cluster::command(&a),
        Command::ClusterTest(a) => cluster::test_command(&a),
        Command::Run(a) => qemu::command(&a),
        Command::BootTest(a) => qemu::boot_test(&a.cargo_test_args),
        Command::Powercut(a) => qemu::powercut(&a),
        Command::Bundle(a) => bundle::command(a),
        Command::Fuzz(a) => fuzz::run_fuzz(&a),
        Command::Test(a) => test::command(&a),
        Command::Bench(a) => bench::command(&a),
        Command::Soak(a) => bench::soak::command(&a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(words: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xtask").chain(words.iter().copied()))
    }

    #[test]
    fn the_command_set_is_consistent_and_every_command_and_option_has_help() {
        let cmd = Cli::command();
        cmd.clone().debug_assert();
        for sub in cmd.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
            for arg in sub.get_arguments() {
                assert!(
                    arg.get_help().is_some() || arg.get_id() == "help",
                    "{} {} has no help",
                    sub.get_name(),
                    arg.get_id()
                );
            }
        }
    }

    #[test]
    fn unknown_commands_and_options_are_rejected() {
        assert!(parse(&["frobnicate"]).is_err());
        assert!(parse(&["image", "--devv"]).is_err());
        assert!(parse(&["run", "--memory"]).is_err(), "a value is required");
        assert!(parse(&["run", "--memory", "lots"]).is_err());
        assert!(parse(&["run", "--disk-bus", "scsi"]).is_err());
        assert!(parse(&["run", "--forward", "8080"]).is_err());
        assert!(parse(&["bench", "--runs", "0"]).is_err());
        assert!(parse(&["test", "--boot"]).is_err());
        assert!(parse(&["fuzz", "soon"]).is_err());
        assert!(parse(&["powercut"]).is_err(), "--runs is required");
        assert!(parse(&["powercut", "--runs", "0"]).is_err());
        assert!(parse(&["powercut", "--runs", "4", "--jobs", "0"]).is_err());
        assert!(parse(&["powercut", "--runs", "4", "--jobs", "9"]).is_err());
        assert!(parse(&["bundle", "--sign"]).is_err());
        assert!(parse(&["cluster", "--nodes", "0"]).is_err());
        assert!(parse(&["cluster", "kernal"]).is_err());
        assert!(
            parse(&["cluster-test", "--nodes", "3"]).is_err(),
            "always 3 nodes"
        );
    }

    #[test]
    fn the_documented_command_lines_parse() {
        for words in [
            &["build"][..],
            &["image", "--dev", "--version", "1.2.0", "--out", "build/x"],
            &[
                "run", "--memory", "1024", "--cpus", "4", "--kvm", "--append", "a=b",
            ],
            &[
                "run",
                "--forward",
                "8080:8080",
                "--disk-bus",
                "nvme",
                "--nic",
                "e1000e",
            ],
            &[
                "run",
                "--prod",
                "--fresh",
                "--direct-kernel",
                "--ssh-port",
                "2200",
            ],
            &["boot-test"],
            &["cluster", "--nodes", "1"],
            &["cluster", "kernel"],
            &["cluster", "image"],
            &["cluster", "--no-build", "--kvm", "--memory", "768"],
            &["cluster-test"],
            &["cluster-test", "--tcg", "--netns", "ci"],
            &["powercut", "--runs", "100"],
            &["powercut", "--runs", "3", "--seed", "42"],
            &["powercut", "--runs", "100", "--jobs", "2"],
            &["boot-test", "boot_every", "--nocapture"],
            &["boot-test", "--", "--ignored"],
            &["boot-test", "--ignored"],
            &["fuzz"],
            &["fuzz", "30"],
            &["test", "--no-boot"],
            &[
                "bench",
                "--no-host",
                "--runs",
                "3",
                "--kvm",
                "--out",
                "x.md",
            ],
            &[
                "bundle",
                "--version",
                "1.4.0",
                "--from-image",
                "out/",
                "--out",
                "os.bundle",
            ],
            &[
                "bundle",
                "--extract-manifest",
                "os.bundle",
                "--out",
                "m.json",
            ],
        ] {
            if let Err(e) = parse(words) {
                panic!("{words:?}: {e}");
            }
        }
        let Command::BootTest(a) = parse(&["boot-test", "--", "--ignored"]).unwrap().command else {
            unreachable!()
        };
        assert_eq!(a.cargo_test_args, ["--ignored"]);
        let Command::BootTest(a) = parse(&["boot-test", "x", "--nocapture"]).unwrap().command
        else {
            unreachable!()
        };
        assert_eq!(a.cargo_test_args, ["x", "--nocapture"]);
    }
}

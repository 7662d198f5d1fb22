//! `cargo xtask fuzz [SECONDS]`: fuzzes the control protocol's request decoder (the bytes
//! any local client can send PID 1) with cargo-fuzz for SECONDS (default 60). Installs
//! cargo-fuzz and the nightly toolchain when missing, seeds the corpus with one valid
//! request per op, and leaves crashing inputs in `manifest/fuzz/artifacts/decode_request/`.

use crate::util::{run, workspace_root};
use anyhow::{Context, Result};
use manifest::protocol::{self, Op, PowerAction, Request};
use std::path::Path;
use std::process::Command;

const TARGET: &str = "decode_request";

/// `cargo xtask fuzz`'s options.
#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// How long to fuzz, in seconds.
    #[arg(value_name = "SECONDS", default_value_t = 60)]
    pub seconds: u64,
}

pub fn run_fuzz(seconds: u64) -> Result<()> {
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let dir = workspace_root().join("manifest/fuzz");
    let corpus = dir.join("corpus").join(TARGET);
    seed_corpus(&corpus)?;
    let dict = dir.join("decode_request.dict");
    run(Command::new("cargo")
        .args(["+nightly", "fuzz", "run", TARGET])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-dict={}", dict.display()))
        .arg("-max_len=4096")
        .current_dir(&dir)
        // Chosen by the outer `cargo xtask`; the fuzz build picks its own.
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR"))
    .with_context(|| {
        format!(
            "the fuzzer stopped early: a finding is in {}",
            dir.join("artifacts").join(TARGET).display()
        )
    })?;
    println!("fuzz: {TARGET} ran {seconds}s without findings");
    Ok(())
}

fn ensure_nightly() -> Result<()> {
    let ok = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("xtask: installing the nightly toolchain (cargo fuzz needs it)");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    Ok(())
}

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !installed {
        eprintln!("xtask: installing cargo-fuzz");
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// One valid request body per op, and a framed one, so the fuzzer starts from the grammar.
fn seed_corpus(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let svc = || "ssh".to_string();
    let ops = [
        Op::Version {},
        Op::Ps {},
        Op::Inspect { service: svc() },
        Op::Logs {
            service: svc(),
            lines: Some(10),
            since_ms: Some(1_795_395_723_000),
            follow: true,
        },
        Op::KernelLog {
            lines: Some(5),
            follow: false,
        },
        Op::Events {},
        Op::Start { service: svc() },
        Op::Stop { service: svc() },
        Op::Restart { service: svc() },
        Op::Exec {
            service: svc(),
            args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
            env: vec!["TERM=xterm".into()],
            tty: true,
        },
        Op::Power {
            action: PowerAction::Reboot,
        },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        let frame = protocol::encode(&Request::new(op));
        let write = |name: String, bytes: &[u8]| {
            std::fs::write(dir.join(&name), bytes)
                .with_context(|| format!("cannot write {}", dir.join(name).display()))
        };
        write(format!("seed-body-{i:02}"), &frame[4..])?;
        write(format!("seed-frame-{i:02}"), &frame)?;
    }
    Ok(())
}

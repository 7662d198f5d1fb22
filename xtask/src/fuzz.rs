//! `cargo xtask fuzz [SECONDS] [TARGET…]`: runs each cargo-fuzz target of `manifest/fuzz/`
//! (what PID 1 parses from outside: control requests of every type, their framing, the
//! manifest, update bundle heads) for SECONDS (default 60) each, or only the TARGETs named.
//! `cargo xtask fuzz --seed` rewrites the committed seed corpus from the current formats.
//!
//! The committed corpus (`manifest/fuzz/corpus/<target>/`, small and hand-made) is read
//! only; what the fuzzer finds worth keeping goes to `target/fuzz-corpus/<target>/`, and a
//! crashing input to `manifest/fuzz/artifacts/<target>/`. Runs on the machine's own
//! stable toolchain without a sanitizer (`--sanitizer none`: no nightly to fetch); a nightly
//! toolchain, where one is installed, adds AddressSanitizer.

use crate::util::{run, workspace_root};
use anyhow::{bail, Context, Result};
use manifest::bundle;
use manifest::protocol::{self, Op, PowerAction, Request};
use manifest::protocol_update::{UpdateOp, UpdateRequest};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Every target, and the longest input each takes.
const TARGETS: &[(&str, usize)] = &[
    ("decode_request", 4096),
    ("frame_decoder", 4096),
    ("load_manifest", 16384),
    ("bundle_head", 8192),
];

/// `cargo xtask fuzz`'s options.
#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// How long to fuzz each target, in seconds.
    #[arg(value_name = "SECONDS", default_value_t = 60)]
    pub seconds: u64,
    /// Only these targets (decode_request, frame_decoder, load_manifest, bundle_head).
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Rewrite the committed seed corpus from the current formats instead of fuzzing.
    #[arg(long)]
    pub seed: bool,
}

pub fn run_fuzz(args: &FuzzArgs) -> Result<()> {
    if args.seed {
        return seed_all();
    }
    let seconds = args.seconds;
    let mut chosen = Vec::new();
    for a in &args.targets {
        match TARGETS.iter().find(|(n, _)| n == a) {
            Some(t) => chosen.push(*t),
            None => {
                let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
                bail!("no fuzz target {a:?}; there are {}", names.join(", "));
            }
        }
    }
    if chosen.is_empty() {
        chosen = TARGETS.to_vec();
    }
    ensure_cargo_fuzz()?;
    let dir = fuzz_dir();
    let nightly = has_nightly();
    for (target, max_len) in chosen {
        let work = workspace_root().join("target/fuzz-corpus").join(target);
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        let mut cmd = Command::new("cargo");
        if nightly {
            cmd.arg("+nightly");
        }
        cmd.args(["fuzz", "run"]);
        if !nightly {
            cmd.args(["--sanitizer", "none"]);
        }
        cmd.arg(target)
            .arg(&work)
            .arg(dir.join("corpus").join(target))
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-max_len={max_len}"))
            // A hang is a finding too: no input may take two seconds.
            .arg("-timeout=2")
            .arg(format!("-dict={}", dir.join("fuzz.dict").display()))
            .current_dir(&dir)
            // Chosen by the outer `cargo xtask`; the fuzz build picks its own.
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("CARGO_TARGET_DIR");
        run(&mut cmd).with_context(|| {
            format!(
                "fuzz target {target} stopped early: the input is in {}",
                dir.join("artifacts").join(target).display()
            )
        })?;
        println!("fuzz: {target} ran {seconds}s without findings");
    }
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    workspace_root().join("manifest/fuzz")
}

fn has_nightly() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
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

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::write(dir.join(name), bytes)
        .with_context(|| format!("cannot write {}", dir.join(name).display()))
}

/// Rewrites the committed seeds: one valid input per request op, manifest and bundle head,
/// so each fuzzer starts from the grammar instead of from nothing.
fn seed_all() -> Result<()> {
    let corpus = fuzz_dir().join("corpus");
    for (t, _) in TARGETS {
        let d = corpus.join(t);
        if d.exists() {
            std::fs::remove_dir_all(&d).with_context(|| format!("cannot clear {}", d.display()))?;
        }
    }
    let frames = request_frames();
    let requests = corpus.join("decode_request");
    let framing = corpus.join("frame_decoder");
    for (i, frame) in frames.iter().enumerate() {
        write(&requests, &format!("body-{i:02}"), &frame[4..])?;
        write(&requests, &format!("frame-{i:02}"), frame)?;
    }
    // frame_decoder's input is (chunk sizes, stream), as `arbitrary` splits it: a length
    // prefix would be fragile, so seeds are the streams alone and the fuzzer finds chunks.
    write(&framing, "all-ops", &frames.concat())?;
    write(&framing, "one-op", &frames[0])?;
    let mut oversized = 100_000u32.to_be_bytes().to_vec();
    oversized.extend_from_slice(b"{\"version\":1");
    write(&framing, "oversized", &oversized)?;

    let manifests = corpus.join("load_manifest");
    for (name, file) in [
        ("test-services", "boot-tests/test-services.json"),
        ("unhealthy-services", "boot-tests/unhealthy-services.json"),
    ] {
        let path = workspace_root().join(file);
        let text =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        write(&manifests, name, &text)?;
    }
    write(&manifests, "minimal", MINIMAL_MANIFEST.as_bytes())?;

    let bundles = corpus.join("bundle_head");
    let m = bundle::Manifest::sample();
    write(&bundles, "manifest", &m.to_bytes())?;
    let signature = "untrusted comment: fuzz seed\nRWQ\ntrusted comment: seed\nAAAA\n";
    write(
        &bundles,
        "head",
        &bundle::encode_head(&m.to_bytes(), signature.as_bytes()),
    )?;
    println!("fuzz: seeds written to {}", corpus.display());
    Ok(())
}

const MINIMAL_MANIFEST: &str = r#"{
  "version": 1,
  "services": [
    {
      "name": "web",
      "root": "/containers/web/rootfs",
      "args": ["/bin/httpd", "-f"],
      "env": ["PORT=80"],
      "user": { "uid": 33, "gid": 33 },
      "depends_on": ["net"],
      "readiness": { "kind": "tcp", "port": 80, "interval_ms": 100, "timeout_secs": 5 },
      "restart": { "policy": "on-failure", "backoff_initial_ms": 100, "backoff_max_ms": 5000 },
      "stop": { "signal": "SIGTERM", "timeout_secs": 10 },
      "resources": { "memory_max": "64M", "pids_max": 64 }
    },
    { "name": "net", "root": "/containers/net/rootfs", "args": ["/bin/net"], "kind": "onboot" }
  ]
}
"#;

/// One request frame per op, control and update.
fn request_frames() -> Vec<Vec<u8>> {
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
        Op::BootLogs {
            boot: -1,
            service: Some(svc()),
            lines: Some(100),
        },
        Op::ListBoots {},
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
    let mut frames: Vec<Vec<u8>> = ops
        .into_iter()
        .map(|op| protocol::encode(&Request::new(op)))
        .collect();
    for op in [
        UpdateOp::Update {
            allow_downgrade: true,
            reboot: false,
        },
        UpdateOp::UpdateStatus {},
        UpdateOp::Rollback {},
    ] {
        frames.push(protocol::encode(&UpdateRequest::new(op)));
    }
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_valid_inputs() {
        for frame in request_frames() {
            let body = &frame[4..];
            assert!(
                protocol::decode_request(body).is_ok()
                    || manifest::protocol_update::decode_update_request(body).is_ok(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let m = bundle::Manifest::sample();
        assert_eq!(bundle::Manifest::parse(&m.to_bytes()).unwrap(), m);
        let loaded = manifest::load_str(MINIMAL_MANIFEST, "minimal").unwrap();
        assert!(loaded.rejected.is_empty(), "{:?}", loaded.rejected);
        assert_eq!(loaded.manifest.services.len(), 2);
    }
}

//! `sysctr version`: this client's version, then the running init's. When init cannot be
//! reached the client's version is still printed before the error (exit code 2).

use crate::client::{Client, ClientError};
use manifest::protocol::{Op, Request, Response, PROTOCOL_VERSION};
use std::io::Write;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Exits with 2 after printing the client's version when init cannot be reached.

Examples:
  sysctr version
  sysctr version --json
  SYSCTR_SOCKET=/tmp/init-test/control.sock sysctr version")]
pub struct Args {
    /// Print init's reply (version, protocol, booted slot and entry) as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    if args.json {
        let reply = client.call(&Request::new(Op::Version {}))?;
        let Response::Version { .. } = &reply else {
            return Err(ClientError::unexpected("version", reply).into());
        };
        let mut v = serde_json::to_value(&reply)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("reply");
            o.insert(
                "client".into(),
                serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "protocol": PROTOCOL_VERSION }),
            );
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(0);
    }
    writeln!(
        out,
        "client: sysctr {} (protocol {PROTOCOL_VERSION})",
        env!("CARGO_PKG_VERSION")
    )?;
    out.flush()?;
    match client.call(&Request::new(Op::Version {}))? {
        Response::Version {
            version,
            protocol,
            init_boot_ms,
            boot,
        } => {
            writeln!(
                out,
                "init:   sysctr {version} (protocol {protocol}), started {:.3}s after boot",
                init_boot_ms as f64 / 1000.0
            )?;
            if let Some(b) = boot {
                writeln!(out, "boot:   {}", describe_boot(&b))?;
            }
            if protocol != PROTOCOL_VERSION {
                eprintln!(
                    "sysctr: warning: init speaks protocol {protocol}, this client {PROTOCOL_VERSION}"
                );
            }
        }
        other => return Err(ClientError::unexpected("version", other).into()),
    }
    Ok(0)
}

/// One line: slot, firmware path, entry and its boot-counting state.
fn describe_boot(b: &manifest::protocol::BootInfo) -> String {
    let mut s = format!("slot {}", b.slot.as_deref().unwrap_or("-"));
    if let Some(v) = &b.os_version {
        s = format!("OS {v}, {s}");
    }
    s.push_str(if b.uefi { ", UEFI" } else { ", direct kernel" });
    if let Some(l) = &b.loader {
        s.push_str(&format!(" ({l})"));
    }
    if let Some(e) = &b.entry {
        s.push_str(&format!(", entry {e}"));
    }
    match (b.tries_left, b.tries_done) {
        (Some(l), Some(d)) => s.push_str(&format!(", trial: {l} tries left, {d} done")),
        _ if b.blessed => s.push_str(", blessed this boot"),
        _ => {}
    }
    s
}

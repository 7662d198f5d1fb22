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
  SYSCTR_SOCKET=/tmp/init-test/control.sock sysctr version")]
pub struct Args {}

pub fn run(client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
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
        } => {
            writeln!(
                out,
                "init:   sysctr {version} (protocol {protocol}), started {:.3}s after boot",
                init_boot_ms as f64 / 1000.0
            )?;
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

//! `sysctr inspect <service>`: init's full view of one service as pretty JSON.

use crate::client::{Client, ClientError};
use manifest::protocol::{Op, Request, Response, ServiceStatus};
use serde::Serialize;
use std::io::Write;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The output is one JSON object: status (as in `ps --json`), manifest (the service's entry),
spec (the generated OCI runtime spec, null before the first start), cgroup and bundle.

Examples:
  sysctr inspect ssh
  sysctr inspect ssh | jq .spec.process.capabilities")]
pub struct Args {
    /// The service, as named in the manifest.
    pub service: String,
}

/// The reply without its tag, fields in this order (status first).
#[derive(Serialize)]
struct View {
    status: ServiceStatus,
    manifest: serde_json::Value,
    spec: Option<serde_json::Value>,
    cgroup: String,
    bundle: String,
}

pub fn run(args: &Args, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    let req = Request::new(Op::Inspect {
        service: args.service.clone(),
    });
    let view = match client.call(&req)? {
        Response::Inspect {
            status,
            manifest,
            spec,
            cgroup,
            bundle,
        } => View {
            status,
            manifest,
            spec,
            cgroup,
            bundle,
        },
        other => return Err(ClientError::unexpected("inspect", other).into()),
    };
    serde_json::to_writer_pretty(&mut *out, &view)?;
    writeln!(out)?;
    Ok(0)
}

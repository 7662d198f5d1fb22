//! `sysctr reboot|poweroff|halt`: ask init to stop every service and take the machine down.

use crate::client::{Client, ClientError};
use manifest::protocol::{Op, PowerAction, Request, Response};
use std::io::Write;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Init stops the services in reverse dependency order, syncs and unmounts, then acts. Only
root may ask.

Examples:
  sysctr reboot
  sysctr poweroff
  sysctr halt")]
pub struct Args {}

pub fn run(
    action: PowerAction,
    _args: &Args,
    client: &Client,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    match client.call(&Request::new(Op::Power { action })) {
        Ok(Response::Ok { message }) if !message.is_empty() => writeln!(out, "{message}")?,
        Ok(Response::Ok { .. }) => writeln!(out, "{}: shutting down", verb(action))?,
        // Going down may close the socket before the answer is written.
        Err(ClientError::ClosedEarly { .. }) => writeln!(
            out,
            "{}: init closed the connection; the system is going down",
            verb(action)
        )?,
        Ok(other) => return Err(ClientError::unexpected("ok", other).into()),
        Err(e) => return Err(e.into()),
    }
    Ok(0)
}

fn verb(action: PowerAction) -> &'static str {
    match action {
        PowerAction::Reboot => "reboot",
        PowerAction::Poweroff => "poweroff",
        PowerAction::Halt => "halt",
    }
}

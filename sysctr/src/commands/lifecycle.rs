//! `sysctr start|stop|restart <service>`: one state change, answered by init once it has
//! been carried out (or refused).

use crate::client::{Client, ClientError};
use manifest::protocol::{Op, Request, Response};
use std::io::Write;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Only root may change a service's state; others get `permission_denied` (exit code 1).

Examples:
  sysctr start ntpd
  sysctr stop ssh
  sysctr restart network")]
pub struct Args {
    /// The service, as named in the manifest.
    pub service: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
    Restart,
}

impl Action {
    fn op(self, service: String) -> Op {
        match self {
            Action::Start => Op::Start { service },
            Action::Stop => Op::Stop { service },
            Action::Restart => Op::Restart { service },
        }
    }

    fn done(self) -> &'static str {
        match self {
            Action::Start => "started",
            Action::Stop => "stopped",
            Action::Restart => "restarted",
        }
    }
}

pub fn run(
    action: Action,
    args: &Args,
    client: &Client,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    match client.call(&Request::new(action.op(args.service.clone())))? {
        Response::Ok { message } if message.is_empty() => {
            writeln!(out, "{}: {}", args.service, action.done())?
        }
        Response::Ok { message } => writeln!(out, "{message}")?,
        other => return Err(ClientError::unexpected("ok", other).into()),
    }
    Ok(0)
}

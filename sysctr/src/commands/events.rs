//! `sysctr events`: service state changes as init reports them, one line each, until
//! interrupted.

use crate::client::{Client, ClientError};
use crate::format;
use anyhow::Context;
use manifest::protocol::{Event, Op, Request, Response};
use std::io::Write;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each line is `TIMESTAMP SERVICE STATE DETAIL` (UTC); --json prints one JSON object per line.

Examples:
  sysctr events
  sysctr events --json | jq -c 'select(.state == \"failed\")'")]
pub struct Args {
    /// Print each event as a JSON object on its own line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    let mut conn = client.connect()?;
    conn.send(&Request::new(Op::Events {}))?;
    conn.stream(|resp| {
        let Response::Event { event } = resp else {
            return Err(ClientError::unexpected("event", resp).into());
        };
        write_event(out, &event, args.json)
            .and_then(|_| out.flush())
            .context("writing to standard output")
    })?;
    Ok(0)
}

pub fn write_event(out: &mut dyn Write, e: &Event, json: bool) -> std::io::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, e)?;
        return writeln!(out);
    }
    let line = format!(
        "{} {:<16} {:<8} {}",
        format::timestamp_ms(e.ts_ms),
        e.service,
        e.state.as_str(),
        format::sanitize(&e.detail)
    );
    writeln!(out, "{}", line.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use manifest::protocol::State;

    #[test]
    fn event_lines() {
        let e = Event {
            ts_ms: 1_795_395_723_000,
            service: "ssh".into(),
            state: State::Ready,
            detail: "pid 412".into(),
        };
        let mut out = Vec::new();
        write_event(&mut out, &e, false).unwrap();
        write_event(&mut out, &e, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "2026-11-23T01:02:03.000Z ssh              ready    pid 412"
        );
        let back: Event = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(back, e);
    }
}

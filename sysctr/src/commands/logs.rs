//! `sysctr logs` and `sysctr dmesg`: a service's log lines or the kernel log, once or
//! followed until init ends the stream or the user interrupts.

use crate::client::Client;
use crate::format;
use crate::since::{self, Since};
use anyhow::Context;
use manifest::protocol::{LogEntry, Op, Request, Response, Stream};
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each line is printed as `TIMESTAMP STREAM LINE` (UTC, STREAM is stdout, stderr or kernel);
--raw prints the line alone, --json one JSON object per line.

Examples:
  sysctr logs ssh
  sysctr logs -f -n 20 network
  sysctr logs --since 10m ntpd
  sysctr logs --since 2026-11-23T01:00:00Z --raw ssh
  sysctr logs --kernel -n 50
  sysctr logs --list-boots
  sysctr logs --boot -1 ssh      (the previous boot's, from the state partition)
  sysctr logs --boot -1 --init   (PID 1's own log of the previous boot)")]
pub struct Args {
    #[command(flatten)]
    pub common: Common,

    /// The log kept on the state partition for this boot (0) or an earlier one (-1 the
    /// previous, -2 …); see --list-boots.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = clap::value_parser!(i64).range(..=0),
          conflicts_with_all = ["kernel", "follow", "since"])]
    pub boot: Option<i64>,

    /// PID 1's own log, from the state partition (this boot's unless --boot).
    #[arg(long, conflicts_with_all = ["kernel", "service", "follow", "since"])]
    pub init: bool,

    /// List the boots whose logs the state partition keeps.
    #[arg(long, conflicts_with_all = ["kernel", "service", "init", "boot", "follow", "since"])]
    pub list_boots: bool,

    /// Only lines at or after this time: a duration ago (10m, 2h, 1h30m), a UTC time
    /// (2026-11-23T01:02:03Z) or milliseconds since the Unix epoch.
    #[arg(long, value_name = "WHEN", value_parser = since::parse)]
    pub since: Option<Since>,

    /// Show the kernel log instead of a service's.
    #[arg(long, conflicts_with = "service")]
    pub kernel: bool,

    /// The service whose log to show.
    #[arg(required_unless_present_any = ["kernel", "init", "list_boots"])]
    pub service: Option<String>,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sysctr dmesg
  sysctr dmesg -f
  sysctr dmesg -n 100 --raw")]
pub struct KernelArgs {
    #[command(flatten)]
    pub common: Common,
}

/// The options `logs` and `dmesg` share.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// Keep printing new lines as they are written.
    #[arg(short, long)]
    pub follow: bool,

    /// Only the last N lines (of the backlog, when following).
    #[arg(short = 'n', long, value_name = "N")]
    pub lines: Option<usize>,

    /// Print only the text of each line.
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,

    /// Print each entry as a JSON object on its own line.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let since_ms = args.since.map(|s| s.resolve(now_ms));
    let c = &args.common;
    if args.list_boots {
        return list_boots(client, c, out);
    }
    if args.boot.is_some() || args.init {
        let op = Op::BootLogs {
            boot: args.boot.unwrap_or(0),
            service: if args.init {
                None
            } else {
                args.service.clone()
            },
            lines: c.lines,
        };
        return print_stream(client, op, c, None, out);
    }
    let op = match &args.service {
        Some(service) if !args.kernel => Op::Logs {
            service: service.clone(),
            lines: c.lines,
            since_ms,
            follow: c.follow,
        },
        _ => Op::KernelLog {
            lines: c.lines,
            follow: c.follow,
        },
    };
    print_stream(client, op, c, since_ms, out)
}

pub fn run_kernel(args: &KernelArgs, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    let c = &args.common;
    let op = Op::KernelLog {
        lines: c.lines,
        follow: c.follow,
    };
    print_stream(client, op, c, None, out)
}

fn print_stream(
    client: &Client,
    op: Op,
    style: &Common,
    since_ms: Option<u64>,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    let mut conn = client.connect()?;
    conn.send(&Request::new(op))?;
    conn.stream(|resp| {
        let Response::Log { entry } = resp else {
            return Err(crate::client::ClientError::unexpected("log", resp).into());
        };
        // The kernel log request has no time filter of its own; filter here.
        if since_ms.is_some_and(|s| entry.ts_ms < s) {
            return Ok(());
        }
        write_entry(out, &entry, style).context("writing to standard output")?;
        if style.follow {
            out.flush().context("writing to standard output")?;
        }
        Ok(())
    })?;
    Ok(0)
}

fn list_boots(client: &Client, style: &Common, out: &mut dyn Write) -> anyhow::Result<i32> {
    let boots = match client.call(&Request::new(Op::ListBoots {}))? {
        Response::Boots { boots } => boots,
        other => return Err(crate::client::ClientError::unexpected("boots", other).into()),
    };
    let w = |out: &mut dyn Write, text: String| {
        writeln!(out, "{text}").context("writing to standard output")
    };
    if style.json {
        for b in &boots {
            w(out, serde_json::to_string(b)?)?;
        }
        return Ok(0);
    }
    w(
        out,
        format!(
            "{:>5} {:>5}  {:<24}  {:<36}  SERVICES",
            "BOOT", "SEQ", "STARTED", "BOOT ID"
        ),
    )?;
    for b in &boots {
        w(
            out,
            format!(
                "{:>5} {:>5}  {:<24}  {:<36}  {}",
                b.index,
                b.seq,
                format::timestamp_ms(b.started_ms),
                format::sanitize(&b.boot_id),
                format::sanitize(&b.services.join(","))
            ),
        )?;
    }
    Ok(0)
}

fn stream_name(s: Stream) -> &'static str {
    match s {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
        Stream::Kernel => "kernel",
    }
}

pub fn write_entry(out: &mut dyn Write, e: &LogEntry, style: &Common) -> std::io::Result<()> {
    if style.json {
        serde_json::to_writer(&mut *out, e)?;
        writeln!(out)
    } else if style.raw {
        writeln!(out, "{}", format::sanitize(&e.line))
    } else {
        writeln!(
            out,
            "{} {} {}",
            format::timestamp_ms(e.ts_ms),
            stream_name(e.stream),
            format::sanitize(&e.line)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn style(raw: bool, json: bool) -> Common {
        Common {
            follow: false,
            lines: None,
            raw,
            json,
        }
    }

    #[test]
    fn entry_formats() {
        let e = LogEntry {
            ts_ms: 1_795_395_723_456,
            stream: Stream::Stderr,
            line: "listening on :22".into(),
        };
        let mut out = Vec::new();
        write_entry(&mut out, &e, &style(false, false)).unwrap();
        write_entry(&mut out, &e, &style(true, false)).unwrap();
        write_entry(&mut out, &e, &style(false, true)).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "2026-11-23T01:02:03.456Z stderr listening on :22");
        assert_eq!(lines[1], "listening on :22");
        let back: LogEntry = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn log_lines_are_printed_without_escapes() {
        let e = LogEntry {
            ts_ms: 0,
            stream: Stream::Stdout,
            line: "\x1b[2J\x1b]0;title\x07hello\rworld".into(),
        };
        for (raw, json) in [(true, false), (false, false)] {
            let mut out = Vec::new();
            write_entry(&mut out, &e, &style(raw, json)).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("hello\u{fffd}world\n"), "{text:?}");
        }
        // JSON keeps the line as sent: serde escapes control characters.
        let mut out = Vec::new();
        write_entry(&mut out, &e, &style(false, true)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\\u001b[2J") && !text.contains('\x1b'),
            "{text}"
        );
    }
}

//! `sysctr update FILE|-`, `sysctr update status` and `sysctr rollback`: install a signed
//! OS bundle into the inactive slot, show both slots, boot the other good slot next time.
//! The bundle itself goes to init as an open file descriptor, so `-` works over ssh.

use crate::client::{Client, ClientError, REPLY_TIMEOUT};
use crate::format;
use manifest::bundle;
use manifest::protocol_update::{
    Installed, Phase, Progress, SlotState, UpdateOp, UpdateReply, UpdateRequest, UpdateResult,
    UpdateStatus,
};
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::os::fd::AsRawFd;

#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Init checks the bundle's signature, `compatible` id and version before it writes one byte,
streams the root into the inactive slot, reads it back (sha256 and dm-verity root hash),
puts the slot's UKI on the ESP as the newest boot-counted entry, tried first. The next
boot is a trial: the health gate blesses it or the machine falls back to the current slot.
A file named `status` is given as `./status`. Only root may install.

Examples:
  sysctr update /mnt/usb/sysctr-update/os-1.4.0.bundle
  ssh root@box sysctr update - < os-1.4.0.bundle
  sysctr update --reboot os.bundle
  sysctr update status --json"
)]
pub struct Args {
    #[command(subcommand)]
    pub status: Option<StatusCommand>,
    /// The bundle file, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    pub bundle: Option<String>,
    /// Install a version older than (or the same as) the running one.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Reboot into the new slot once it is installed.
    #[arg(long)]
    pub reboot: bool,
    /// Print the result as JSON (progress still goes to standard error).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum StatusCommand {
    /// Both slots (version, good/bad/trial/empty, tries left), the booted slot and the last
    /// update's result.
    #[command(after_help = "\
Examples:
  sysctr update status
  sysctr update status --json")]
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The other slot must be good (blessed by an earlier boot); the change applies at the next
boot. Only root may ask.

Examples:
  sysctr rollback
  sysctr rollback && sysctr reboot")]
pub struct RollbackArgs {}

pub fn run(args: &Args, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    if let Some(StatusCommand::Status(s)) = &args.status {
        return run_status(s, client, out);
    }
    let Some(path) = args.bundle.as_deref() else {
        anyhow::bail!("give a bundle file, `-` for standard input, or `status`");
    };
    let file;
    let fd = if path == "-" {
        if io::stdin().is_terminal() {
            anyhow::bail!(
                "standard input is a terminal; pipe or redirect a bundle into `sysctr update -`"
            );
        }
        io::stdin().as_raw_fd()
    } else {
        file = File::open(path).map_err(|e| anyhow::anyhow!("cannot open bundle {path}: {e}"))?;
        describe(path);
        file.as_raw_fd()
    };
    let installed = install(args, client, fd, &mut progress_printer())?;
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &installed)?;
        writeln!(out)?;
    } else {
        writeln!(
            out,
            "installed {} into slot {} ({}, signed by key {})",
            installed.version, installed.slot, installed.entry, installed.key_id
        )?;
        if installed.rebooting {
            writeln!(
                out,
                "rebooting into it; the health gate decides whether it stays"
            )?;
        } else {
            writeln!(
                out,
                "it boots on trial at the next reboot (`sysctr reboot`)"
            )?;
        }
    }
    Ok(0)
}

/// Says what a bundle file claims to be before init checks it (nothing here is trusted).
fn describe(path: &str) {
    // A second open, so the descriptor init reads stays at the start.
    let Ok(mut copy) = File::open(path) else {
        return;
    };
    if let Ok(head) = bundle::read_head(&mut copy) {
        if let Ok(m) = serde_json::from_slice::<bundle::Manifest>(&head.manifest) {
            eprintln!(
                "sysctr: {path}: version {} for {} (init checks its signature)",
                m.version, m.compatible
            );
        }
    }
}

/// Sends the install request with the bundle's descriptor and follows the progress.
pub fn install(
    args: &Args,
    client: &Client,
    bundle_fd: std::os::fd::RawFd,
    on_progress: &mut dyn FnMut(Progress),
) -> anyhow::Result<Installed> {
    let mut conn = client.connect()?;
    conn.set_timeout(Some(REPLY_TIMEOUT))?;
    let req = UpdateRequest::new(UpdateOp::Update {
        allow_downgrade: args.allow_downgrade,
        reboot: args.reboot,
    });
    conn.send_msg_with_fds(&req, &[bundle_fd])?;
    loop {
        match conn.recv_as::<UpdateReply>()? {
            Some(UpdateReply::UpdateProgress { progress }) => on_progress(progress),
            Some(UpdateReply::UpdateDone { installed }) => return Ok(installed),
            Some(UpdateReply::Error { kind, message }) => {
                return Err(ClientError::Refused { kind, message }.into())
            }
            Some(other) => {
                return Err(ClientError::Unexpected {
                    expected: "update_progress or update_done",
                    got: reply_name(&other).into(),
                }
                .into())
            }
            None => {
                return Err(ClientError::ClosedEarly {
                    path: conn.path().to_path_buf(),
                }
                .into())
            }
        }
    }
}

fn reply_name(r: &UpdateReply) -> &'static str {
    match r {
        UpdateReply::UpdateProgress { .. } => "update_progress",
        UpdateReply::UpdateDone { .. } => "update_done",
        UpdateReply::UpdateStatus { .. } => "update_status",
        UpdateReply::Ok { .. } => "ok",
        UpdateReply::Error { .. } => "error",
        UpdateReply::End => "end",
    }
}

/// Progress on standard error: one line per phase, redrawn in place on a terminal.
fn progress_printer() -> impl FnMut(Progress) {
    let tty = io::stderr().is_terminal();
    let mut last: Option<Phase> = None;
    move |p: Progress| {
        let line = progress_line(&p);
        let mut err = io::stderr().lock();
        if tty {
            let _ = write!(err, "\r\x1b[K{line}");
            if p.total == 0 || p.done == p.total {
                let _ = writeln!(err);
            }
        } else if last != Some(p.phase) || (p.total > 0 && p.done == p.total) {
            let _ = writeln!(err, "{line}");
        }
        last = Some(p.phase);
    }
}

pub fn progress_line(p: &Progress) -> String {
    if p.total == 0 {
        return format!("update: {}", p.phase.as_str());
    }
    format!(
        "update: {} {} / {} ({}%)",
        p.phase.as_str(),
        format::bytes(p.done),
        format::bytes(p.total),
        p.done * 100 / p.total
    )
}

fn call(client: &Client, op: UpdateOp) -> anyhow::Result<UpdateReply> {
    let mut conn = client.connect()?;
    conn.set_timeout(Some(REPLY_TIMEOUT))?;
    conn.send_msg(&UpdateRequest::new(op))?;
    match conn.recv_as::<UpdateReply>()? {
        Some(UpdateReply::Error { kind, message }) => {
            Err(ClientError::Refused { kind, message }.into())
        }
        Some(reply) => Ok(reply),
        None => Err(ClientError::ClosedEarly {
            path: conn.path().to_path_buf(),
        }
        .into()),
    }
}

pub fn run_status(args: &StatusArgs, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    let status = match call(client, UpdateOp::UpdateStatus {})? {
        UpdateReply::UpdateStatus { status } => status,
        other => {
            return Err(ClientError::Unexpected {
                expected: "update_status",
                got: reply_name(&other).into(),
            }
            .into())
        }
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &status)?;
        writeln!(out)?;
    } else {
        out.write_all(render_status(&status).as_bytes())?;
    }
    Ok(0)
}

pub fn render_status(s: &UpdateStatus) -> String {
    let rows: Vec<Vec<format::Cell>> = s
        .slots
        .iter()
        .map(|slot| {
            let state = match slot.state {
                SlotState::Good => "good",
                SlotState::Bad => "bad",
                SlotState::Trial => "trial",
                SlotState::Empty => "empty",
            };
            let mut flags = Vec::new();
            if s.booted == Some(slot.slot) {
                flags.push("booted");
            }
            if slot.next_boot {
                flags.push("next boot");
            }
            vec![
                format::Cell::plain(slot.slot.as_str()),
                format::Cell::plain(slot.version.clone().unwrap_or_else(|| "-".into())),
                format::Cell::plain(state),
                format::Cell::plain(slot.tries_left.map_or("-".into(), |t| t.to_string())),
                format::Cell::plain(flags.join(", ")),
            ]
        })
        .collect();
    let mut text = format::table(
        &["SLOT", "VERSION", "STATE", "TRIES LEFT", ""],
        &rows,
        false,
    );
    if let Some(id) = &s.compatible {
        text.push_str(&format!("compatible: {id}\n"));
    }
    match &s.last {
        None => text.push_str("last update: none\n"),
        Some(last) => {
            let result = match last.result {
                UpdateResult::Installed => "installed",
                UpdateResult::Refused => "refused",
                UpdateResult::Failed => "failed",
                UpdateResult::Blessed => "blessed",
                UpdateResult::RolledBack => "rolled back",
            };
            text.push_str(&format!(
                "last update: {result}{}{} at {}",
                last.version
                    .as_ref()
                    .map_or(String::new(), |v| format!(" {v}")),
                last.slot.map_or(String::new(), |s| format!(" (slot {s})")),
                format::timestamp_ms(last.at_ms)
            ));
            if let Some(reason) = &last.reason {
                text.push_str(&format!(": {reason}"));
            }
            text.push('\n');
        }
    }
    text
}

pub fn run_rollback(
    _args: &RollbackArgs,
    client: &Client,
    out: &mut dyn Write,
) -> anyhow::Result<i32> {
    match call(client, UpdateOp::Rollback {})? {
        UpdateReply::Ok { message } if !message.is_empty() => writeln!(out, "{message}")?,
        UpdateReply::Ok { .. } => writeln!(out, "rollback: the other slot boots next time")?,
        other => {
            return Err(ClientError::Unexpected {
                expected: "ok",
                got: reply_name(&other).into(),
            }
            .into())
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests;

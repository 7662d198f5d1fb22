//! `sysctr apply FILE|-` and `sysctr rm NAME`: change the services applied on the state
//! partition while the system runs. Init checks the whole file the way it checks a
//! manifest at boot, prints the plan (add, change, remove, unchanged) and carries it out;
//! `--dry-run` stops after the plan.

use crate::client::{Client, ClientError};
use anyhow::Context;
use manifest::applied::Plan;
use manifest::protocol::{Op, Request, Response, MAX_REQUEST_BYTES};
use std::io::{Read, Write};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
FILE is a manifest (`{\"version\":1,\"services\":[…]}`) holding the whole applied set: a
service applied before and missing from FILE is removed. Services of the image's manifest
cannot be named (system services are never replaced). An entry may name an `image`
(NAME:TAG, see `sysctr image ls`) instead of a `root`. Any problem refuses the whole file
and changes nothing. New services start, changed ones restart in dependency order,
removed ones stop; unchanged ones keep running with the same pid. Only root may apply.

Examples:
  sysctr apply --dry-run services.json
  sysctr apply services.json
  ssh root@box sysctr apply - < services.json")]
pub struct Args {
    /// The manifest file of the applied set, or `-` for standard input.
    #[arg(value_name = "FILE|-")]
    pub file: String,
    /// Check and print the plan only; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Stops the service and removes it from the applied set on the state partition. Services of
the image's manifest cannot be removed (use `sysctr stop`). Only root may remove.

Examples:
  sysctr rm web")]
pub struct RmArgs {
    /// The applied service.
    pub service: String,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    let limit = u64::from(MAX_REQUEST_BYTES) - 1024;
    let mut text = String::new();
    if args.file == "-" {
        std::io::stdin()
            .take(limit + 1)
            .read_to_string(&mut text)
            .context("read the manifest from standard input")?;
    } else {
        std::fs::File::open(&args.file)
            .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
            .with_context(|| format!("read {}", args.file))?;
    }
    if text.len() as u64 > limit {
        anyhow::bail!(
            "{}: larger than the {limit} bytes one apply request can carry",
            args.file
        );
    }
    let op = Op::Apply {
        text,
        dry_run: args.dry_run,
    };
    show(client.call(&Request::new(op))?, args.json, out)
}

pub fn run_rm(args: &RmArgs, client: &Client, out: &mut dyn Write) -> anyhow::Result<i32> {
    let op = Op::Rm {
        service: args.service.clone(),
    };
    show(client.call(&Request::new(op))?, args.json, out)
}

fn show(resp: Response, json: bool, out: &mut dyn Write) -> anyhow::Result<i32> {
    let Response::Applied { plan, dry_run } = resp else {
        return Err(ClientError::unexpected("applied", resp).into());
    };
    if json {
        let v = serde_json::json!({"plan": plan, "dry_run": dry_run});
        writeln!(out, "{v}")?;
    } else {
        write!(out, "{}", render(&plan, dry_run))?;
    }
    Ok(0)
}

/// One line per service, `+` added, `~` changed, `-` removed, `=` unchanged, then a summary.
pub fn render(plan: &Plan, dry_run: bool) -> String {
    let mut s = String::new();
    for (mark, names) in [
        ("+", &plan.add),
        ("~", &plan.change),
        ("-", &plan.remove),
        ("=", &plan.unchanged),
    ] {
        for n in names {
            s.push_str(&format!("{mark} {n}\n"));
        }
    }
    let counts = format!(
        "{} to add, {} to change, {} to remove, {} unchanged",
        plan.add.len(),
        plan.change.len(),
        plan.remove.len(),
        plan.unchanged.len()
    );
    if dry_run {
        s.push_str(&format!("dry run: {counts}; nothing changed\n"));
    } else {
        s.push_str(&format!("applied: {counts}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_reads_one_line_per_service() {
        let p = Plan {
            add: vec!["new".into()],
            change: vec!["edit".into()],
            remove: vec!["old".into()],
            unchanged: vec!["keep".into()],
        };
        assert_eq!(
            render(&p, true),
            "+ new\n~ edit\n- old\n= keep\ndry run: 1 to add, 1 to change, 1 to remove, 1 unchanged; nothing changed\n"
        );
        assert!(render(&Plan::default(), false).starts_with("applied: 0 to add"));
    }
}

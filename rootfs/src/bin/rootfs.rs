//! `rootfs`: the image builder's command. `rootfs import` unpacks one OCI image into a
//! directory; `rootfs check` loads an appliance file and prints what would be built.

use anyhow::Result;
use clap::{Parser, Subcommand};
use rootfs::appliance::{self, Appliance, PlannedContainer, PlannedSource};
use rootfs::oci::{self, ImageRef};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "rootfs",
    about = "sysctr image builder: OCI image import, appliance files"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Unpack an OCI image into DIR and print its run defaults (JSON).
    Import {
        /// oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG],
        /// docker://HOST[:PORT]/NAME[:TAG], or a path.
        #[arg(long)]
        image: String,
        /// Output directory (must not exist, or be empty).
        #[arg(long)]
        out: PathBuf,
    },
    /// Load and check an appliance file and print the plan.
    Check {
        appliance: PathBuf,
        /// Plan the development variant (service.dev.json where a system container has one).
        #[arg(long)]
        dev: bool,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("rootfs: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Import { image, out } => {
            let cwd = std::env::current_dir()?;
            let image = ImageRef::parse(&image, &cwd).map_err(anyhow::Error::msg)?;
            let imported = oci::import(&image, &out)?;
            for w in &imported.warnings {
                eprintln!("rootfs: warning: {w}");
            }
            println!("{}", serde_json::to_string_pretty(&imported)?);
            eprintln!("rootfs: {image} unpacked into {}", out.display());
        }
        Command::Check { appliance, dev } => {
            let a = appliance::load(&appliance)?;
            let plan = a.plan(dev)?;
            print!("{}", describe(&a, &plan));
        }
    }
    Ok(())
}

/// The plan as a person reads it.
fn describe(a: &Appliance, plan: &[PlannedContainer]) -> String {
    let mut s = format!(
        "appliance {} {} (compatible {})\nfile:   {}\noutput: {}\n",
        a.name,
        a.version,
        a.compatible,
        a.path.display(),
        a.output_dir().display()
    );
    if !a.kernel.fragments.is_empty() || !a.kernel.cmdline.is_empty() {
        let frags: Vec<String> = a
            .kernel
            .fragments
            .iter()
            .map(|f| a.base().join(f).display().to_string())
            .collect();
        s += &format!(
            "kernel: extra fragments [{}], extra cmdline {:?}\n",
            frags.join(", "),
            a.kernel.cmdline
        );
    }
    s += "containers, in manifest order:\n";
    let width = plan.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for c in plan {
        let kind = c
            .entry
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("service");
        let command = match c.entry.get("args").and_then(Value::as_array) {
            Some(args) => args
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
            None => "(command from the image config)".into(),
        };
        let source = match &c.source {
            PlannedSource::System(d) => format!("system container {}", d.display()),
            other => other.to_string(),
        };
        s += &format!(
            "  {:<width$}  {kind:<7}  {}\n  {:<width$}  {:<7}  from {source}\n",
            c.name, command, "", ""
        );
    }
    for f in &a.files {
        let what = match (&f.src, &f.text) {
            (Some(src), _) => a.base().join(src).display().to_string(),
            _ => "inline text".into(),
        };
        s += &format!("file {} from {what}\n", f.dest);
    }
    if let Some(b) = &a.boot_config {
        s += &format!(
            "default boot config: {}\n",
            serde_json::to_string(b).unwrap_or_default()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_plan_names_every_container_with_its_source_and_command() {
        let ws = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap();
        let a = appliance::load(&ws.join("examples/default.appliance.json"))
            .context("default example")
            .unwrap();
        let text = describe(&a, &a.plan(false).unwrap());
        assert!(text.starts_with("appliance sysctr 0.1.0 (compatible org.sysctr.default)"));
        for name in ["logging", "network", "ssh", "time", "console"] {
            assert!(
                text.contains(&format!(
                    "from system container {}",
                    ws.join("system-containers").join(name).display()
                )),
                "{name}: {text}"
            );
        }
        assert!(text.contains("/usr/libexec/sshd"), "{text}");
    }
}

//! The command line: the top-level options and one module per subcommand. Each module
//! holds its clap `Args` and a `run` that returns the process exit code.

pub mod apply;
pub mod completions;
pub mod events;
pub mod exec;
pub mod image;
pub mod inspect;
pub mod lifecycle;
pub mod logs;
pub mod notify;
pub mod power;
pub mod ps;
pub mod update;
pub mod version;

use crate::client::Client;
use clap::{Parser, Subcommand};
use manifest::protocol::SOCKET_PATH;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

const EXIT_CODES: &str = "\
Exit codes:
  0    success
  1    init refused or failed the request (its error kind and message are printed)
  2    init cannot be reached (the message names the socket), or the protocol broke
  64   the command line is wrong
  exec exits with the process's own exit code, or 128+N when signal N killed it

Examples:
  sysctr ps
  sysctr logs -f -n 50 ssh
  sysctr exec -t ssh -- /bin/sh
  sysctr --socket /tmp/test/control.sock version";

#[derive(Debug, Parser)]
#[command(
    name = "sysctr",
    version,
    about = "Inspect and drive sysctr's PID 1 over its control socket",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// The control socket of init.
    #[arg(
        long,
        global = true,
        env = "SYSCTR_SOCKET",
        default_value = SOCKET_PATH,
        value_name = "PATH"
    )]
    pub socket: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List services and onboot tasks with their state, restarts, memory and CPU.
    Ps(ps::Args),
    /// Show (or follow) a service's logs, or the kernel log with --kernel.
    Logs(logs::Args),
    /// Show (or follow) the kernel log; the same as `logs --kernel`.
    Dmesg(logs::KernelArgs),
    /// Start a stopped or failed service.
    Start(lifecycle::Args),
    /// Stop a service (it stays stopped until started).
    Stop(lifecycle::Args),
    /// Stop a service and start it again.
    Restart(lifecycle::Args),
    /// Everything init knows about a service, as JSON: status, manifest entry, OCI spec,
    /// cgroup and bundle.
    Inspect(inspect::Args),
    /// Run a command inside a running service's container.
    Exec(exec::Args),
    /// Print service state changes as they happen.
    Events(events::Args),
    /// Stop every service and reboot the machine.
    Reboot(power::Args),
    /// Stop every service and power the machine off.
    Poweroff(power::Args),
    /// Stop every service and halt the machine.
    Halt(power::Args),
    /// Install a signed OS update bundle into the inactive slot, or show the slots
    /// (`update status`).
    Update(update::Args),
    /// Replace the services applied on the state partition with a manifest file; prints
    /// the plan (add, change, remove, unchanged).
    Apply(apply::Args),
    /// Stop an applied service and remove it from the applied set.
    Rm(apply::RmArgs),
    /// The image store on the state partition: import, ls, rm.
    Image(image::Args),
    /// Boot the other good slot next time.
    Rollback(update::RollbackArgs),
    /// The versions of this client and of the running init.
    Version(version::Args),
    /// Print a shell completion script.
    Completions(completions::Args),
    /// From inside a service: tell init it is ready (sd_notify, like systemd-notify).
    Notify(notify::Args),
}

/// Whether to colour output written to standard output.
pub fn use_color() -> bool {
    io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Runs the command and returns the exit code. Output goes to `out`, except for `exec`,
/// which hands the real standard streams to the process in the container.
pub fn run(cli: Cli, out: &mut dyn Write) -> anyhow::Result<i32> {
    use manifest::protocol::PowerAction;
    let client = Client::new(cli.socket);
    match cli.command {
        Command::Ps(args) => ps::run(&args, &client, out, use_color()),
        Command::Logs(args) => logs::run(&args, &client, out),
        Command::Dmesg(args) => logs::run_kernel(&args, &client, out),
        Command::Start(args) => lifecycle::run(lifecycle::Action::Start, &args, &client, out),
        Command::Stop(args) => lifecycle::run(lifecycle::Action::Stop, &args, &client, out),
        Command::Restart(args) => lifecycle::run(lifecycle::Action::Restart, &args, &client, out),
        Command::Inspect(args) => inspect::run(&args, &client, out),
        Command::Exec(args) => exec::run(&args, &client),
        Command::Events(args) => events::run(&args, &client, out),
        Command::Reboot(args) => power::run(PowerAction::Reboot, &args, &client, out),
        Command::Poweroff(args) => power::run(PowerAction::Poweroff, &args, &client, out),
        Command::Halt(args) => power::run(PowerAction::Halt, &args, &client, out),
        Command::Update(args) => update::run(&args, &client, out),
        Command::Apply(args) => apply::run(&args, &client, out),
        Command::Rm(args) => apply::run_rm(&args, &client, out),
        Command::Image(args) => image::run(&args, &client, out),
        Command::Rollback(args) => update::run_rollback(&args, &client, out),
        Command::Version(args) => version::run(&args, &client, out),
        Command::Completions(args) => completions::run(&args, out),
        Command::Notify(args) => notify::run(&args, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_has_examples() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("Examples:"),
                "`sysctr {}` has no examples in its help",
                sub.get_name()
            );
        }
        let top = cmd.get_after_help().unwrap().to_string();
        assert!(top.contains("Exit codes:") && top.contains("64"), "{top}");
    }

    #[test]
    fn socket_defaults_to_the_protocol_path() {
        let cli = Cli::try_parse_from(["sysctr", "ps"]).unwrap();
        if std::env::var_os("SYSCTR_SOCKET").is_none() {
            assert_eq!(cli.socket, PathBuf::from(SOCKET_PATH));
        }
        let cli = Cli::try_parse_from(["sysctr", "ps", "--socket", "/tmp/x.sock"]).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/tmp/x.sock"));
    }

    #[test]
    fn exec_takes_the_command_after_the_service() {
        let cli =
            Cli::try_parse_from(["sysctr", "exec", "-t", "-e", "A=1", "ssh", "--", "ls", "-l"])
                .unwrap();
        let Command::Exec(args) = cli.command else {
            panic!("not exec")
        };
        assert!(args.tty);
        assert_eq!(args.env, ["A=1"]);
        assert_eq!(args.service, "ssh");
        assert_eq!(args.cmd, ["ls", "-l"]);
        assert!(Cli::try_parse_from(["sysctr", "exec", "ssh"]).is_err());
        assert!(Cli::try_parse_from(["sysctr", "exec", "-e", "=x", "ssh", "ls"]).is_err());
    }

    #[test]
    fn logs_needs_a_service_or_kernel() {
        assert!(Cli::try_parse_from(["sysctr", "logs"]).is_err());
        assert!(Cli::try_parse_from(["sysctr", "logs", "--kernel"]).is_ok());
        assert!(Cli::try_parse_from(["sysctr", "logs", "--kernel", "ssh"]).is_err());
        assert!(Cli::try_parse_from(["sysctr", "logs", "--since", "later", "ssh"]).is_err());
        assert!(
            Cli::try_parse_from(["sysctr", "logs", "-f", "-n", "5", "--since", "10m", "ssh"])
                .is_ok()
        );
    }

    #[test]
    fn logs_of_an_earlier_boot() {
        let parse = |args: &[&str]| {
            let mut v = vec!["sysctr", "logs"];
            v.extend_from_slice(args);
            Cli::try_parse_from(v)
        };
        let Command::Logs(a) = parse(&["--boot", "-1", "ssh"]).unwrap().command else {
            panic!("not logs")
        };
        assert_eq!((a.boot, a.service.as_deref()), (Some(-1), Some("ssh")));
        assert!(parse(&["--boot", "-1", "--init"]).is_ok());
        assert!(parse(&["--init"]).is_ok());
        assert!(parse(&["--list-boots"]).is_ok());
        // a later boot, or one that is not a number, is refused by the parser
        assert!(parse(&["--boot", "1", "ssh"]).is_err());
        assert!(parse(&["--boot", "last", "ssh"]).is_err());
        // an earlier boot is not followed, nor time-filtered, nor the kernel's
        assert!(parse(&["--boot", "-1", "-f", "ssh"]).is_err());
        assert!(parse(&["--boot", "-1", "--since", "10m", "ssh"]).is_err());
        assert!(parse(&["--boot", "-1", "--kernel"]).is_err());
        assert!(parse(&["--init", "ssh"]).is_err());
        assert!(parse(&["--list-boots", "ssh"]).is_err());
        assert!(parse(&["--boot", "-1"]).is_err());
    }
}

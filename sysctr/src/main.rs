//! `sysctr`: the command that inspects and drives sysctr's PID 1 over its control socket
//! (`docs/api.md` has the protocol). `main` parses the command line, runs the subcommand
//! and turns the outcome into one of the documented exit codes.

#![deny(unsafe_code)]

mod client;
mod commands;
mod format;
mod since;
mod tty;

#[cfg(test)]
mod apidoc;
#[cfg(test)]
mod fake_init;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match commands::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                client::EXIT_USAGE as u8
            } else {
                0
            });
        }
    };
    let code = match commands::run(cli, &mut std::io::stdout().lock()) {
        Ok(code) => code,
        Err(err) => {
            if !client::is_broken_pipe(&err) {
                eprintln!("sysctr: {err:#}");
            }
            client::exit_code_for(&err)
        }
    };
    // Exit codes are a byte; the process's own code is already one.
    ExitCode::from((code & 0xff) as u8)
}

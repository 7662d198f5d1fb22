//! `sysctr completions <shell>`: the shell completion script, generated from the clap
//! definition so it never goes stale.

use super::Cli;
use clap::CommandFactory;
use clap_complete::Shell;
use std::io::Write;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  sysctr completions bash > /etc/bash_completion.d/sysctr
  sysctr completions zsh > \"${fpath[1]}/_sysctr\"
  sysctr completions fish > ~/.config/fish/completions/sysctr.fish")]
pub struct Args {
    /// The shell to generate the script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

pub fn run(args: &Args, out: &mut dyn Write) -> anyhow::Result<i32> {
    clap_complete::generate(args.shell, &mut Cli::command(), "sysctr", out);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_mention_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            run(&Args { shell }, &mut out).unwrap();
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("exec") && text.contains("logs"), "{shell}");
        }
    }
}

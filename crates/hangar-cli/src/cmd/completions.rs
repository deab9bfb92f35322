//! `hangar completions SHELL`: a completion script generated from the same
//! clap definitions the parser uses, so it cannot drift from them.

use std::io::Write;

use clap::CommandFactory;

use crate::args::{Cli, CompletionsArgs};

/// The script for `a.shell`.
pub fn script(a: &CompletionsArgs) -> Vec<u8> {
    let mut cmd = Cli::command();
    let name = cmd.get_name().to_string();
    // Into memory: clap_complete panics on a write error (e.g. `| head`).
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, name, &mut out);
    out
}

pub fn run(a: &CompletionsArgs) -> u8 {
    let mut out = std::io::stdout().lock();
    match out.write_all(&script(a)).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: cannot write the completion script: {e}");
            1
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(shell: clap_complete::Shell) -> String {
        String::from_utf8(script(&CompletionsArgs { shell })).unwrap()
    }

    #[test]
    fn bash_script_knows_commands_and_options() {
        let s = text(clap_complete::Shell::Bash);

        for word in ["vm", "create", "--cpus", "--disk-size", "completions"] {
            assert!(s.contains(word), "bash completion lacks {word}");
        }
    }

    #[test]
    fn zsh_and_fish_scripts_describe_options() {
        for shell in [clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
            let s = text(shell);

            assert!(s.contains("cpus") && s.contains("vCPUs"), "{shell}: {s}");
        }
    }
}

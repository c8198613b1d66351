//! What the package ships beside the binary, generated from the clap
//! definition so it never drifts from the flags: shell completion
//! scripts (`--completions bash|zsh|fish`) and the manual page (`--man`,
//! roff, for `cgihost.1`).

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;

use super::Cli;

/// The shells `--completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Write the completion script for `shell` to stdout.
pub fn print_completions(shell: Shell) -> ExitCode {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "cgihost", &mut out);
    write_stdout(&out)
}

/// Write the manual page (roff) to stdout.
pub fn print_man() -> ExitCode {
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(Cli::command());
    if let Err(e) = man.render(&mut out) {
        eprintln!("cgihost: cannot render the manual page: {e}");
        return ExitCode::FAILURE;
    }
    write_stdout(&out)
}

/// `text` to stdout; a closed pipe or full disk is an error exit.
fn write_stdout(text: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cgihost: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

//! What the package ships beside the binary, generated from the clap
//! definition so it never drifts from the flags: shell completion
//! scripts (`--completions bash|zsh|fish`) and the manual page (`--man`,
//! roff, for `cgihost.1`).

use std::io::Write;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_mangen::roff::{bold, roman, Roff};

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

/// Write the manual page (roff) to stdout: clap's sections, and what a
/// daemon's page has beside them (signals, files, environment, exit status).
pub fn print_man() -> ExitCode {
    let mut out = Vec::new();
    let man = clap_mangen::Man::new(Cli::command());
    let rendered = (|| {
        man.render_title(&mut out)?;
        man.render_name_section(&mut out)?;
        man.render_synopsis_section(&mut out)?;
        man.render_description_section(&mut out)?;
        man.render_options_section(&mut out)?;
        man.render_extra_section(&mut out)?;
        daemon_sections().to_writer(&mut out)?;
        man.render_version_section(&mut out)
    })();
    if let Err(e) = rendered {
        eprintln!("cgihost: cannot render the manual page: {e}");
        return ExitCode::FAILURE;
    }
    write_stdout(&out)
}

/// SIGNALS, FILES, ENVIRONMENT, EXIT STATUS and SEE ALSO.
fn daemon_sections() -> Roff {
    let mut page = Roff::new();
    let sections: [(&str, &[(&str, &str)]); 5] = [
        ("SIGNALS", &[
            ("HUP", "Re-read the flags and the configuration file and swap the routes; requests in flight finish on the old ones. A file that does not validate is refused and the running configuration stays."),
            ("TERM, INT", "The health_path answers 503 and, for shutdown_delay seconds, everything else is still served; then stop accepting, let requests in flight finish (shutdown_grace), stop CGI programs and FastCGI workers, exit."),
            ("USR1", "Open the access_log file again by name (logrotate's convention: rename it, then signal)."),
        ]),
        ("FILES", &[
            ("/etc/cgihost/cgihost.toml", "The configuration the Debian package's cgihost.service starts with (--config)."),
            ("/usr/share/doc/cgihost/cgihost.toml.example", "Every configuration key, commented."),
        ]),
        ("ENVIRONMENT", &[
            ("RUST_LOG", "Log filter for the diagnostics on stderr, as -v and -q."),
            ("LISTEN_FDS, LISTEN_PID", "Listening sockets passed by systemd (cgihost.socket); they replace --port and --bind."),
            ("NOTIFY_SOCKET, WATCHDOG_USEC", "systemd Type=notify: READY=1, RELOADING=1, STOPPING=1 and watchdog pings."),
        ]),
        ("EXIT STATUS", &[
            ("0", "Stopped by a signal, or --check-config found nothing wrong."),
            ("1", "A runtime failure (a listener that cannot bind, for one)."),
            ("2", "Bad flags or configuration."),
        ]),
        ("SEE ALSO", &[("systemd.service(5), systemd.socket(5)", "The units the Debian package installs: cgihost.service and cgihost.socket.")]),
    ];
    for (title, entries) in sections {
        page.control("SH", [title]);
        for (term, text) in entries {
            page.control("TP", []);
            page.text([bold(*term)]);
            page.text([roman(*text)]);
        }
    }
    page
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

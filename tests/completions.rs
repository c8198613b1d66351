//! What the package ships beside the binary, from the built binary:
//! `--completions bash|zsh|fish` (each shell parses its script, bash
//! completes a real flag) and the hidden `--man` (groff renders it without
//! a warning and it lists the flags).

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn cgihost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cgihost"))
        .args(args)
        .output()
        .expect("run cgihost")
}

fn stdout_of(args: &[&str]) -> String {
    let out = cgihost(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Run `program args` with `input` on stdin; its output.
fn feed(program: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("wait")
}

/// Every long flag `--help` lists.
fn long_flags() -> Vec<String> {
    let help = stdout_of(&["--help"]);
    let mut flags: Vec<String> = help
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.trim_end_matches(['.', ')']).to_string())
        .collect();
    flags.sort();
    flags.dedup();
    assert!(flags.len() > 15, "too few flags in --help: {flags:?}");
    flags
}

#[test]
fn each_shell_parses_its_completion_script_and_it_names_every_flag() {
    let flags = long_flags();
    for (shell, check) in [
        ("bash", ["bash", "-n"]),
        ("zsh", ["zsh", "-n"]),
        ("fish", ["fish", "--no-execute"]),
    ] {
        let script = stdout_of(&["--completions", shell]);
        for flag in &flags {
            // fish lists long flags without their dashes (`-l status-path`).
            let name = flag.trim_start_matches('-');
            assert!(script.contains(name), "{shell} script lacks {flag}");
        }
        let out = feed(check[0], &check[1..], &script);
        assert!(out.status.success(), "{shell} rejects its script: {out:?}");
    }
}

#[test]
fn bash_completes_a_flag_and_its_values() {
    let script = stdout_of(&["--completions", "bash"]);
    let complete = |line: &str| {
        let probe = format!(
            "{script}\nCOMP_LINE='cgihost {line}'; COMP_POINT=${{#COMP_LINE}}\n\
             COMP_WORDS=(cgihost {line}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))\n\
             _cgihost cgihost \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"\n"
        );
        let out = feed("bash", &[], &probe);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    assert_eq!(complete("--status-p").trim(), "--status-path");
    let shells = complete("--completions z");
    assert_eq!(shells.trim(), "zsh");
}

#[test]
fn completions_refuse_an_unknown_shell() {
    let out = cgihost(&["--completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bash, zsh, fish"), "{stderr}");
}

#[test]
fn the_man_page_renders_without_warnings_and_lists_the_flags() {
    let page = stdout_of(&["--man"]);
    assert!(page.contains(".TH cgihost 1"), "{page}");
    // groff with every warning on, as man-db renders it.
    let out = feed("groff", &["-man", "-Tutf8", "-ww", "-z"], &page);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "", "groff warns");
    let text = feed("groff", &["-man", "-Tascii", "-P-cbou"], &page);
    let text = String::from_utf8(text.stdout).expect("UTF-8");
    for section in [
        "NAME",
        "SYNOPSIS",
        "OPTIONS",
        "SIGNALS",
        "FILES",
        "EXIT STATUS",
    ] {
        let heading = format!("\n{section}\n");
        assert!(text.contains(&heading), "no {section} section:\n{text}");
    }
    assert!(text.contains("/etc/cgihost/cgihost.toml"), "{text}");
    for flag in long_flags() {
        assert!(text.contains(&flag), "man page lacks {flag}:\n{text}");
    }
    // The generator flag itself stays out of --help and the page.
    assert!(!stdout_of(&["--help"]).contains("--man"));
    assert!(!text.contains("--man"));
}

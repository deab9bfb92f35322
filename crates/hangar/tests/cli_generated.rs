//! `hangar completions` and `hangar man` through the real binary: the bash
//! script is sourced and its completion function called as bash would on
//! TAB; the man pages are parsed by groff and rendered by `man -l`. Neither
//! command needs a daemon, a config or root. Needs bash, groff and man-db.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Stdio};

use clap::CommandFactory;
use hangar_cli::args::Cli;

fn hangar_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hangar")
}

/// Runs a host tool, naming it in the panic when it is missing.
fn tool(program: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(
        found,
        "this test needs `{program}` on PATH (Debian: bash, groff, man-db)"
    );
    Command::new(program)
}

/// What bash offers for `line` (TAB at its end): sources the script that
/// `hangar completions bash` prints, finds the function it registered for
/// `hangar` and calls it with the COMP_* variables bash would set.
fn bash_complete(line: &str) -> Vec<String> {
    const DRIVER: &str = r#"
set -e
eval "$("$HANGAR" completions bash)"
fn=$(complete -p hangar | sed -n 's/.*-F \([^ ]*\).*/\1/p')
[ -n "$fn" ] || { echo "no completion function registered for hangar" >&2; exit 1; }
read -ra COMP_WORDS <<<"$LINE"
[[ "$LINE" == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
COMP_LINE="$LINE"
COMP_POINT=${#COMP_LINE}
COMPREPLY=()
prev=""
(( COMP_CWORD > 0 )) && prev=${COMP_WORDS[COMP_CWORD-1]}
"$fn" hangar "${COMP_WORDS[COMP_CWORD]}" "$prev"
printf '%s\n' "${COMPREPLY[@]}"
"#;
    let out = tool("bash")
        .args(["--norc", "--noprofile", "-c", DRIVER])
        .env("HANGAR", hangar_bin())
        .env("LINE", line)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "completing {line:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completes_subcommands() {
    assert_eq!(bash_complete("hangar vm cr"), ["create"]);
    assert_eq!(bash_complete("hangar im"), ["image"]);
}

#[test]
fn bash_completes_options_of_a_subcommand() {
    let offered = bash_complete("hangar vm create --c");

    assert!(offered.contains(&"--cpus".to_string()), "{offered:?}");
    assert!(offered.iter().all(|o| o.starts_with("--c")), "{offered:?}");
}

#[test]
fn bash_completes_shell_names_for_completions() {
    let offered = bash_complete("hangar completions ");

    for shell in ["bash", "zsh", "fish"] {
        assert!(offered.contains(&shell.to_string()), "{offered:?}");
    }
}

/// Every visible command as its words: `["vm", "create"]`, `[]` for the top.
fn command_paths(
    cmd: &clap::Command,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, clap::Command)>,
) {
    out.push((prefix.clone(), cmd.clone()));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut path = prefix.clone();
        path.push(sub.get_name().to_string());
        command_paths(sub, path, out);
    }
}

fn render(page: &Path) -> String {
    let out = tool("man")
        .arg("-l")
        .arg(page)
        .env("MANWIDTH", "200")
        .env("MAN_KEEP_FORMATTING", "")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "man -l {}: {}",
        page.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn man_dir_has_a_page_per_command_naming_its_options() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let st = Command::new(hangar_bin())
        .args(["man", "--dir"])
        .arg(&pages)
        .env_remove("HANGAR_CONFIG")
        .status()
        .unwrap();
    assert!(st.success());
    let mut cli = Cli::command().disable_help_subcommand(true);
    cli.build();
    let mut commands = Vec::new();
    command_paths(&cli, Vec::new(), &mut commands);
    assert!(commands.len() > 1, "the tree walk found no subcommands");

    for (path, cmd) in &commands {
        let name = std::iter::once("hangar".to_string())
            .chain(path.iter().cloned())
            .collect::<Vec<_>>()
            .join("-");
        let page = pages.join(format!("{name}.1"));
        assert!(page.exists(), "no page {}", page.display());
        let groff = tool("groff")
            .args(["-man", "-Tutf8", "-z", "-ww"])
            .arg(&page)
            .output()
            .unwrap();
        assert!(
            groff.status.success() && groff.stderr.is_empty(),
            "groff on {name}.1: {}",
            String::from_utf8_lossy(&groff.stderr)
        );
        let text = render(&page);
        assert!(
            text.contains(&name),
            "{name}.1 does not name itself:\n{text}"
        );
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                let flag = format!("--{long}");
                assert!(text.contains(&flag), "{name}.1 lacks {flag}:\n{text}");
            }
        }
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let see = format!("{name}-{}", sub.get_name());
            assert!(
                text.contains(&see),
                "{name}.1 does not mention {see}:\n{text}"
            );
        }
    }
}

#[test]
fn man_without_dir_prints_the_top_page() {
    let out = Command::new(hangar_bin())
        .arg("man")
        .env_remove("HANGAR_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("hangar.1");
    std::fs::write(&page, &out.stdout).unwrap();

    let text = render(&page);

    for word in ["hangar-vm(1)", "hangar-completions(1)", "--socket"] {
        assert!(text.contains(word), "top page lacks {word}:\n{text}");
    }
}

#[test]
fn completions_and_man_need_no_config_or_daemon() {
    // A config path that does not exist would fail any daemon command.
    for args in [&["completions", "bash"][..], &["man"][..]] {
        let out = Command::new(hangar_bin())
            .args([
                "--config",
                "/nonexistent/hangar.toml",
                "--socket",
                "/nonexistent.sock",
            ])
            .args(args)
            .output()
            .unwrap();

        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "hangar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

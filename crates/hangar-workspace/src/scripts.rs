//! The guest side: POSIX sh scripts run through the exec stream, the argv
//! that runs them, and parsers for what they print (untrusted: it comes
//! from the guest).

use crate::inspect::Source;

/// Unpacks a pack from standard input into DEST (see the script's header).
pub const IMPORT_SCRIPT: &str = include_str!("import.sh");
/// Writes a bundle of the guest's new commits to standard output.
pub const EXPORT_SCRIPT: &str = include_str!("export.sh");
/// Reports the guest workspace's branch, commits and uncommitted files.
pub const STATUS_SCRIPT: &str = include_str!("status.sh");
/// Says whether the guest can take an import, before anything is sent.
pub const PROBE_SCRIPT: &str = include_str!("probe.sh");

/// The export script's exit code when there is nothing new to export.
pub const EXPORT_NOTHING_EXIT: i32 = 3;

/// `/workspace/<name>`: where an import goes unless told.
pub fn default_dest(source: &Source) -> String {
    format!("/workspace/{}", source.name())
}

fn sh(script: &str, name: &str, args: &[&str]) -> Vec<String> {
    let mut v = vec![
        "sh".to_string(),
        "-c".to_string(),
        script.to_string(),
        name.to_string(),
    ];
    v.extend(args.iter().map(|a| a.to_string()));
    v
}

pub fn import_command(dest: &str, force: bool, owner: &str) -> Vec<String> {
    sh(
        IMPORT_SCRIPT,
        "hangar-import",
        &[dest, if force { "1" } else { "0" }, owner],
    )
}

pub fn export_command(dest: &str, include_uncommitted: bool) -> Vec<String> {
    sh(
        EXPORT_SCRIPT,
        "hangar-export",
        &[dest, if include_uncommitted { "1" } else { "0" }],
    )
}

pub fn status_command(dest: &str) -> Vec<String> {
    sh(STATUS_SCRIPT, "hangar-status", &[dest])
}

pub fn probe_command(dest: &str) -> Vec<String> {
    sh(PROBE_SCRIPT, "hangar-probe", &[dest])
}

/// What the probe found in the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub user: String,
    pub git: bool,
    pub tar: bool,
    pub dest_exists: bool,
}

/// Parses the probe's output; `None` if it is not what the script prints.
pub fn parse_probe(out: &[u8]) -> Option<Probe> {
    let text = std::str::from_utf8(out).ok()?;
    let mut p = Probe {
        user: String::new(),
        git: false,
        tar: false,
        dest_exists: false,
    };
    for line in text.lines() {
        let (k, v) = line.split_once(' ')?;
        match k {
            "user" => p.user = v.to_string(),
            "git" => p.git = v == "yes",
            "tar" => p.tar = v == "yes",
            "dest" => p.dest_exists = v == "exists",
            _ => return None,
        }
    }
    (!p.user.is_empty()).then_some(p)
}

/// The guest workspace as the status script reports it. Strings are the
/// guest's: escape them before they reach a terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestStatus {
    /// `None` when HEAD is detached.
    pub branch: Option<String>,
    pub head: String,
    pub base: String,
    pub ahead: u64,
    /// `git status --porcelain` entries: two status letters and a path.
    pub uncommitted: Vec<String>,
}

/// Parses the status script's output; `None` if malformed.
pub fn parse_status(out: &[u8]) -> Option<GuestStatus> {
    let nul = out.iter().position(|b| *b == 0)?;
    let head = std::str::from_utf8(&out[..nul]).ok()?;
    let mut st = GuestStatus {
        branch: None,
        head: String::new(),
        base: String::new(),
        ahead: 0,
        uncommitted: Vec::new(),
    };
    for line in head.lines() {
        let (k, v) = line.split_once(' ').unwrap_or((line, ""));
        match k {
            "branch" => st.branch = (!v.is_empty()).then(|| v.to_string()),
            "head" => st.head = v.to_string(),
            "base" => st.base = v.to_string(),
            "ahead" => st.ahead = v.parse().ok()?,
            _ => return None,
        }
    }
    // Porcelain -z: "XY PATH\0", and renames add "ORIG\0" after.
    let mut entries = out[nul + 1..].split(|b| *b == 0).filter(|e| !e.is_empty());
    while let Some(e) = entries.next() {
        let e = String::from_utf8_lossy(e).into_owned();
        if e.len() < 3 {
            return None;
        }
        let renamed = matches!(e.as_bytes()[0], b'R' | b'C');
        st.uncommitted.push(e);
        if renamed {
            entries.next();
        }
    }
    Some(st)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn probe_output_is_parsed() {
        let p = parse_probe(b"user dev\ngit yes\ntar no\ndest exists\n").unwrap();
        assert_eq!(
            p,
            Probe {
                user: "dev".into(),
                git: true,
                tar: false,
                dest_exists: true
            }
        );
    }

    #[test]
    fn probe_output_with_unknown_lines_is_rejected() {
        assert_eq!(parse_probe(b"user dev\nsurprise!\n"), None);
        assert_eq!(parse_probe(b""), None);
    }

    #[test]
    fn status_output_with_a_rename_is_parsed() {
        let out = b"branch main\nhead abc\nbase def\nahead 2\n\0R  new\0old\0?? x y\0";
        let st = parse_status(out).unwrap();
        assert_eq!(st.branch.as_deref(), Some("main"));
        assert_eq!(st.ahead, 2);
        assert_eq!(
            st.uncommitted,
            vec!["R  new".to_string(), "?? x y".to_string()]
        );
    }

    #[test]
    fn status_of_a_detached_head_has_no_branch() {
        let st = parse_status(b"branch \nhead abc\nbase abc\nahead 0\n\0").unwrap();
        assert_eq!(st.branch, None);
        assert!(st.uncommitted.is_empty());
    }

    #[test]
    fn scripts_are_valid_posix_sh() {
        for s in [IMPORT_SCRIPT, EXPORT_SCRIPT, STATUS_SCRIPT, PROBE_SCRIPT] {
            let st = std::process::Command::new("sh")
                .args(["-n", "-c", s])
                .status()
                .unwrap();
            assert!(st.success());
        }
    }
}

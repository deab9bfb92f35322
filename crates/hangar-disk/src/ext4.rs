//! Growing the ext4 filesystem inside a disk file after the file itself was
//! extended. The standard tools (`e2fsck`, `resize2fs`) are the reference
//! implementation, so we shell out to them.

use std::path::Path;
use std::process::Command;

use crate::StorageError;

/// Checks the filesystem (required by resize2fs after a size change) and grows
/// it to fill the whole file.
pub(crate) fn grow_to_file_size(disk: &Path) -> Result<(), StorageError> {
    // e2fsck exit codes: 0 clean, 1 errors fixed, 2 fixed + reboot advised
    // (meaningless for an unmounted file). 4 and above are real failures.
    run(Command::new("e2fsck").arg("-fy").arg(disk), &[0, 1, 2])?;
    run(Command::new("resize2fs").arg(disk), &[0])?;
    Ok(())
}

fn run(cmd: &mut Command, ok_codes: &[i32]) -> Result<(), StorageError> {
    let command = render(cmd);
    tracing::debug!(%command, "running");
    let out = cmd.output().map_err(|source| StorageError::Spawn {
        command: command.clone(),
        package: "e2fsprogs",
        source,
    })?;
    match out.status.code() {
        Some(code) if ok_codes.contains(&code) => Ok(()),
        _ => Err(StorageError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

pub(crate) fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_command_and_stderr_on_failure() {
        let err = run(
            Command::new("sh").args(["-c", "echo boom >&2; exit 3"]),
            &[0],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Command `sh -c echo boom >&2; exit 3` failed (exit status: 3): boom"
        );
    }

    #[test]
    fn run_accepts_listed_nonzero_codes() {
        let res = run(Command::new("sh").args(["-c", "exit 1"]), &[0, 1]);
        assert!(res.is_ok());
    }

    #[test]
    fn grow_of_non_ext4_file_fails_with_e2fsck_error() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1024 * 1024).unwrap();
        let err = grow_to_file_size(f.path()).unwrap_err();
        assert!(
            matches!(err, StorageError::Command { ref command, .. } if command.starts_with("e2fsck -fy")),
            "{err}"
        );
    }
}

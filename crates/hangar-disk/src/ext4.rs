//! Growing the ext4 filesystem inside a disk file after the file itself was
//! extended. The standard tools (`e2fsck`, `resize2fs`) are the reference
//! implementation, so we shell out to them.

use std::path::Path;

use hangar_host::Tool;

use crate::StorageError;

/// Checks the filesystem (required by resize2fs after a size change) and grows
/// it to fill the whole file. No time limit: both take time in proportion
/// to the disk.
pub(crate) fn grow_to_file_size(disk: &Path) -> Result<(), StorageError> {
    // e2fsck exit codes: 0 clean, 1 errors fixed, 2 fixed + reboot advised
    // (meaningless for an unmounted file). 4 and above are real failures.
    run(Tool::new("e2fsck")
        .arg("-fy")
        .arg(disk)
        .ok_codes(&[0, 1, 2]))?;
    run(Tool::new("resize2fs").arg(disk))?;
    Ok(())
}

fn run(tool: Tool) -> Result<(), StorageError> {
    tool.run_blocking()
        .map(drop)
        .map_err(StorageError::tool("e2fsprogs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_reports_command_and_stderr_on_failure() {
        let err = run(Tool::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Command `sh -c echo boom >&2; exit 3` failed (exit status: 3): boom"
        );
    }

    #[test]
    fn run_of_a_missing_tool_names_the_package() {
        let err = run(Tool::new("hangar-no-such-e2fsck")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Failed to run `hangar-no-such-e2fsck`; is e2fsprogs installed?"
        );
    }

    #[test]
    fn grow_of_non_ext4_file_fails_with_e2fsck_error() {
        let f = tempfile::NamedTempFile::new().unwrap();
        f.as_file().set_len(1024 * 1024).unwrap();
        let err = grow_to_file_size(f.path()).unwrap_err();
        assert!(
            matches!(err, StorageError::Command(ref e) if e.command().starts_with("e2fsck -fy")),
            "{err}"
        );
    }
}

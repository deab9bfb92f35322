//! [`DmOps`] on the real host: shells out to `losetup` (util-linux) and
//! `dmsetup` (dmsetup package), the reference tools, rather than
//! re-implementing their ioctls and udev handshakes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hangar_host::Tool;

use super::ops::{DmOps, LoopInfo};
use crate::StorageError;

/// `losetup` and `dmsetup` finish in well under a second (`remove --retry`
/// in a few); one that runs this long is stuck (e.g. waiting for a udev
/// that never answers) and is killed rather than holding the dm lock.
const DM_TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// The host's loop and device-mapper tools.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct HostOps;

/// Runs `tool` from Debian package `package` and returns its stdout if it
/// exited 0.
fn run(tool: Tool, package: &'static str) -> Result<String, StorageError> {
    tool.timeout(DM_TOOL_TIMEOUT)
        .run_blocking()
        .map(|out| out.stdout)
        .map_err(StorageError::tool(package))
}

impl DmOps for HostOps {
    fn loop_attach(&self, file: &Path, read_only: bool) -> Result<String, StorageError> {
        let mut tool = Tool::new("losetup").args(["--find", "--show"]);
        if read_only {
            tool = tool.arg("--read-only");
        }
        let out = run(tool.arg(file), "util-linux")?;
        Ok(out.trim().to_string())
    }

    fn loop_detach(&self, device: &str) -> Result<(), StorageError> {
        run(
            Tool::new("losetup").arg("--detach").arg(device),
            "util-linux",
        )
        .map(drop)
    }

    fn dm_create(&self, name: &str, table: &str) -> Result<(), StorageError> {
        run(
            Tool::new("dmsetup").arg("create").arg(name).stdin(table),
            "dmsetup",
        )?;
        // Without a running udev the /dev/mapper node may be missing; mknodes
        // makes it (a no-op when udev already did).
        if !Path::new("/dev/mapper").join(name).exists() {
            run(Tool::new("dmsetup").arg("mknodes").arg(name), "dmsetup")?;
        }
        Ok(())
    }

    fn dm_remove(&self, name: &str) -> Result<(), StorageError> {
        // --retry rides out a transient open by udev's blkid probe.
        run(
            Tool::new("dmsetup").args(["remove", "--retry"]).arg(name),
            "dmsetup",
        )
        .map(drop)
    }

    fn dm_exists(&self, name: &str) -> Result<bool, StorageError> {
        match run(
            Tool::new("dmsetup")
                .args(["info", "-c", "--noheadings", "-o", "name"])
                .arg(name),
            "dmsetup",
        ) {
            Ok(_) => Ok(true),
            // dmsetup has no exit code of its own for "no such device".
            Err(StorageError::Command(ref e))
                if e.output().is_some_and(|stderr| {
                    stderr.contains("does not exist") || stderr.contains("not found")
                }) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn grow_ext4(&self, device: &Path) -> Result<(), StorageError> {
        crate::ext4::grow_to_file_size(device)
    }

    fn dm_list(&self) -> Result<Vec<String>, StorageError> {
        let out = run(Tool::new("dmsetup").arg("ls"), "dmsetup")?;
        Ok(parse_dmsetup_ls(&out))
    }

    fn loop_list(&self) -> Result<Vec<LoopInfo>, StorageError> {
        let out = run(Tool::new("losetup").arg("-J"), "util-linux")?;
        let mut loops = parse_losetup_json(&out)?;
        for l in &mut loops {
            l.held_with_autoclear = l.held_with_autoclear && has_holders(&l.device);
        }
        Ok(loops)
    }
}

/// `dmsetup ls` prints `name\t(253:0)` lines, or "No devices found".
pub(crate) fn parse_dmsetup_ls(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains('(') && !l.starts_with("No devices"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Parses `losetup -J` (empty output means no loop devices). The
/// `held_with_autoclear` field holds only the autoclear flag here; the
/// caller ANDs in the holders check.
pub(crate) fn parse_losetup_json(out: &str) -> Result<Vec<LoopInfo>, StorageError> {
    if out.trim().is_empty() {
        return Ok(Vec::new());
    }
    let v: serde_json::Value = serde_json::from_str(out).map_err(|source| StorageError::Parse {
        command: "losetup -J".to_string(),
        source,
    })?;
    let list = v
        .get("loopdevices")
        .and_then(|l| l.as_array())
        .cloned()
        .unwrap_or_default();
    Ok(list
        .iter()
        .filter_map(|d| {
            let device = d.get("name")?.as_str()?.to_string();
            let back = d.get("back-file")?.as_str()?;
            let back = back.strip_suffix(" (deleted)").unwrap_or(back);
            Some(LoopInfo {
                device,
                backing_file: PathBuf::from(back),
                held_with_autoclear: d.get("autoclear").and_then(|a| a.as_bool()) == Some(true),
            })
        })
        .collect())
}

/// Whether anything (a dm device) holds `/dev/loopN` open, per sysfs.
fn has_holders(device: &str) -> bool {
    let Some(base) = Path::new(device).file_name() else {
        return false;
    };
    std::fs::read_dir(Path::new("/sys/block").join(base).join("holders"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_dmsetup_ls_reads_names_and_ignores_no_devices() {
        assert_eq!(
            parse_dmsetup_ls("hangar-a-disk\t(253:1)\nother\t(253:0)\n"),
            vec!["hangar-a-disk".to_string(), "other".to_string()]
        );
        assert!(parse_dmsetup_ls("No devices found\n").is_empty());
    }

    #[test]
    fn parse_losetup_json_strips_deleted_and_reads_autoclear() {
        let json = r#"{"loopdevices":[
            {"name":"/dev/loop0","autoclear":true,"back-file":"/s/vms/a/disk.ext4 (deleted)"},
            {"name":"/dev/loop1","autoclear":false,"back-file":"/s/img"}]}"#;

        let loops = parse_losetup_json(json).unwrap();

        assert_eq!(loops[0].backing_file, PathBuf::from("/s/vms/a/disk.ext4"));
        assert!(loops[0].held_with_autoclear);
        assert!(!loops[1].held_with_autoclear);
    }

    #[test]
    fn parse_losetup_json_of_empty_output_is_empty() {
        assert!(parse_losetup_json("").unwrap().is_empty());
    }

    /// Real kernel behaviour the backend relies on: detaching a loop device
    /// that is still open only marks it autoclear; it goes away when the
    /// last opener closes it. (Needs root and loop devices.)
    #[test]
    #[ignore = "needs root: loop devices"]
    fn detach_of_open_loop_is_deferred_until_close() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backing");
        std::fs::File::create(&file)
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        let dev = HostOps.loop_attach(&file, true).unwrap();
        let holder = std::fs::File::open(&dev).unwrap();

        HostOps.loop_detach(&dev).unwrap();
        let while_open = HostOps.loop_list().unwrap();
        drop(holder);
        // The kernel clears the device after the last close, asynchronously.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let after_close = loop {
            let loops = HostOps.loop_list().unwrap();
            let gone = !loops.iter().any(|l| l.backing_file == file);
            if gone || std::time::Instant::now() >= deadline {
                break loops;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };

        assert!(
            while_open
                .iter()
                .any(|l| l.device == dev && l.backing_file == file),
            "{while_open:?}"
        );
        assert!(
            !after_close.iter().any(|l| l.backing_file == file),
            "{after_close:?}"
        );
    }
}

//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hangar_vmm::{Drive, VmSpec};

/// A spec whose files all live in `dir` (created empty when missing).
pub fn spec_in(dir: &Path, kernel: PathBuf, cmdline: &str) -> VmSpec {
    let root = dir.join("root.ext4");
    let config = dir.join("config.img");
    for f in [&root, &config] {
        let file = std::fs::File::create(f).unwrap();
        file.set_len(1024 * 1024).unwrap();
    }
    VmSpec {
        id: "vm-test".into(),
        name: "test".into(),
        cpus: 1,
        memory_mib: 256,
        kernel,
        initrd: None,
        cmdline: cmdline.into(),
        root_disk: root,
        extra_drives: vec![Drive {
            id: "config".into(),
            path: config,
            read_only: true,
        }],
        tap: "tap0".into(),
        mac: "52:54:00:00:00:01".into(),
        vm_dir: dir.to_path_buf(),
        serial_log: dir.join("serial.log"),
        netns: None,
    }
}

/// Pids of live processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle)
                && hangar_vmm::proc_start_time(*pid).is_some()
        })
        .collect()
}

/// Kills the VMM on drop if it is still the same process, so a failing
/// test does not leave a VM running (VMMs run in their own session and
/// would outlive the test binary).
pub struct KillOnDrop(pub hangar_vmm::VmmHandle);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if hangar_vmm::is_same_process_alive(self.0.pid, self.0.start_time) {
            let _ = std::process::Command::new("kill")
                .args(["-9", &self.0.pid.to_string()])
                .status();
        }
    }
}

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
        restore_from: None,
        run_as: None,
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

/// What a boot test needs when [`find_kernel`] finds nothing.
pub const NO_KERNEL: &str = "a guest kernel: set HANGAR_TEST_KERNEL=/path/to/vmlinux, or build \
     the default image first (its vmlinux under /var/cache/hangar/images; the `hangar` e2e tests, \
     which scripts/test.sh runs before these, build it)";

/// [`find_kernel`], or a failure naming the need.
pub fn require_kernel() -> PathBuf {
    find_kernel().unwrap_or_else(|| panic!("needs {NO_KERNEL}"))
}

/// A kernel to boot: HANGAR_TEST_KERNEL, else an image under
/// /var/cache/hangar/images/*/vmlinux, else /boot/vmlinuz-*.
pub fn find_kernel() -> Option<PathBuf> {
    if let Some(k) = std::env::var_os("HANGAR_TEST_KERNEL") {
        return Some(k.into());
    }
    let images = std::fs::read_dir("/var/cache/hangar/images").ok();
    images
        .into_iter()
        .flatten()
        .filter_map(|e| Some(e.ok()?.path().join("vmlinux")))
        .find(|k| k.is_file())
        .or_else(|| {
            std::fs::read_dir("/boot")
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("vmlinuz-"))
                })
        })
}

/// Guest kernel command line for microvm under TCG: `tsc_early_khz` is
/// required there (see GUEST-BOOT.md).
pub fn tcg_cmdline(extra: &str) -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2000.0);
    format!(
        "console=ttyS0 quiet tsc_early_khz={} {extra}",
        (mhz * 1000.0) as u64
    )
}

/// A network namespace with one TAP (`tap0`), removed on drop.
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> Self {
        hangar_testsupport::require_root("a TAP in a network namespace");
        let name = format!("hgtest-vmm-{}-{tag}", std::process::id());
        run("ip", &["netns", "add", &name]);
        let t = TestNetns { name };
        run(
            "ip",
            &["-n", &t.name, "tuntap", "add", "dev", "tap0", "mode", "tap"],
        );
        run("ip", &["-n", &t.name, "link", "set", "tap0", "up"]);
        t
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let st = std::process::Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?} failed");
}

/// What a test guest does when asked to power off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guest {
    /// Powers off on the ACPI power button (QEMU `system_powerdown`) or
    /// Ctrl-Alt-Del (Firecracker `SendCtrlAltDel`, SIGINT to init).
    HonoursShutdown,
    /// Ignores both; only signals to the VMM end it.
    IgnoresShutdown,
}

/// Printed on the console once the guest's init is ready for a shutdown
/// request.
pub const READY_MARKER: &str = "hangar-guest-ready";

/// Modules the power-button guest loads, from the cached image's rootfs.
fn button_modules(image_rootfs: &Path, tree: &Path) -> bool {
    let Some(kver) = kernel_version_in(image_rootfs) else {
        return false;
    };
    let mut ok = true;
    for (src, name) in [
        ("kernel/drivers/input/evdev.ko", "evdev.ko"),
        ("kernel/drivers/acpi/button.ko", "button.ko"),
    ] {
        let dst = tree.join("lib").join(name);
        let st = std::process::Command::new("debugfs")
            .arg("-R")
            .arg(format!("dump /lib/modules/{kver}/{src} {}", dst.display()))
            .arg(image_rootfs)
            .stderr(std::process::Stdio::null())
            .status();
        ok &= st.is_ok_and(|s| s.success()) && dst.metadata().is_ok_and(|m| m.len() > 0);
    }
    ok
}

/// The kernel version directory under /lib/modules in an ext4 image
/// (`debugfs ls -p` prints `/inode/mode/uid/gid/name/size/`).
fn kernel_version_in(image_rootfs: &Path) -> Option<String> {
    let out = std::process::Command::new("debugfs")
        .arg("-R")
        .arg("ls -p /lib/modules")
        .arg(image_rootfs)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split('/').nth(5).map(str::to_string))
        .find(|n| n.starts_with(|c: char| c.is_ascii_digit()))
}

/// A busybox newc initramfs for `guest`. The power-button path needs the
/// `evdev` and `button` modules, taken from the rootfs next to `kernel`
/// (the cached image); without them only Ctrl-Alt-Del is honoured.
pub fn make_guest_initrd(dir: &Path, kernel: &Path, guest: Guest) -> PathBuf {
    let tree = dir.join(format!("initrd-tree-{guest:?}"));
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::create_dir_all(tree.join("lib")).unwrap();
    std::fs::copy("/bin/busybox", tree.join("bin/busybox")).unwrap();
    let rootfs = kernel.with_file_name("rootfs.ext4");
    let have_modules = rootfs.is_file() && button_modules(&rootfs, &tree);
    let body = match guest {
        // The input device is opened (fd 3) before the ready marker, so a
        // power-button event sent right after the marker is buffered, not
        // lost; `head` then blocks until it reads one.
        Guest::HonoursShutdown => format!(
            "trap '$B echo hangar-guest-powering-off; $B poweroff -f' INT TERM\n\
             {}\
             $B echo {READY_MARKER}\n\
             {}\n\
             wait\n\
             $B echo hangar-guest-powering-off\n\
             $B poweroff -f\n",
            if have_modules {
                "$B insmod /lib/evdev.ko\n$B insmod /lib/button.ko\nexec 3< /dev/input/event0\n"
            } else {
                ""
            },
            if have_modules {
                "$B head -c 1 <&3 > /dev/null &"
            } else {
                "$B sleep 2147483647 &"
            }
        ),
        Guest::IgnoresShutdown => {
            format!("trap '' INT TERM\n$B echo {READY_MARKER}\nwhile true; do $B sleep 1; done\n")
        }
    };
    let init = tree.join("init");
    std::fs::write(
        &init,
        format!(
            "#!/bin/busybox sh\nB=/bin/busybox\n$B mkdir -p /dev /proc /sys\n\
             $B mount -t devtmpfs dev /dev\n{body}"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = dir.join(format!("initrd-{guest:?}.cpio"));
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            tree.display(),
            out.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "cpio failed");
    out
}

/// Waits until `path` contains `text`.
pub async fn wait_for_text(path: &Path, text: &str, timeout: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if std::fs::read_to_string(path)
            .unwrap_or_default()
            .contains(text)
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

//! `sweep_dir` against real mounts and a real process: what a `kill -9`ed
//! debootstrap leaves in its build tree.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use hangar_host::sweep::{mounts_under, sweep_dir};

/// Whatever a failed run leaves: the process and the mounts.
struct Leftovers {
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for m in mounts_under(&self.dir) {
            let _ = Command::new("umount").arg("-R").arg("-l").arg(&m).status();
        }
    }
}

fn mount(args: &[&str], target: &Path) {
    let st = Command::new("mount")
        .args(args)
        .arg(target)
        .status()
        .unwrap();
    assert!(st.success(), "mount {args:?} {} failed", target.display());
}

#[test]
#[ignore = "needs root: mounts proc, sysfs and tmpfs inside a temp dir"]
fn a_crashed_build_dir_with_proc_sys_and_stacked_mounts_is_unmounted_and_removed() {
    hangar_testsupport::require_root("mounting inside a temp dir");
    let base = tempfile::tempdir().unwrap();
    let outside = base.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), "x").unwrap();
    let dir = base.path().join(".pull-0123456789ab");
    let tree = dir.join("work/tree");
    for sub in ["proc", "sys", "dev/pts", "var/cache"] {
        std::fs::create_dir_all(tree.join(sub)).unwrap();
    }
    // Armed before the first mount, so a failure half way unmounts the
    // ones already made (the temp dir could not be removed through them).
    let mut guard = Leftovers {
        dir: dir.clone(),
        child: None,
    };
    mount(&["-t", "proc", "proc"], &tree.join("proc"));
    mount(&["-t", "sysfs", "sysfs"], &tree.join("sys"));
    // A tmpfs with a file, and a second tmpfs stacked on the same point.
    mount(&["-t", "tmpfs", "tmpfs"], &tree.join("var/cache"));
    std::fs::write(tree.join("var/cache/f"), "y").unwrap();
    mount(&["-t", "tmpfs", "tmpfs"], &tree.join("var/cache"));
    // A bind mount of a directory outside: removing across it would
    // delete `outside/keep`.
    mount(
        &["--bind", outside.to_str().unwrap()],
        &tree.join("dev/pts"),
    );
    std::os::unix::fs::symlink(&outside, tree.join("link")).unwrap();
    // A process still working in the tree, as an orphaned debootstrap is.
    let child = Command::new("sleep")
        .arg("600")
        .current_dir(&tree)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    guard.child = Some(child);
    // Four mount points, one of them with two mounts stacked.
    assert_eq!(mounts_under(&dir).len(), 4);

    let swept = sweep_dir(&dir).unwrap();

    assert_eq!(swept.unmounted, 5, "{swept:?}");
    assert_eq!(swept.killed, 1, "{swept:?}");
    let status = guard.child.as_mut().unwrap().wait().unwrap();
    assert!(!status.success(), "the process in the tree was not killed");
    assert!(mounts_under(&dir).is_empty());
    assert!(!dir.exists(), "the build dir is still there");
    assert!(
        outside.join("keep").exists(),
        "the sweep removed a file through a bind mount or symlink"
    );
}

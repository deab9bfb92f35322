//! Builds the default image from Debian packages: debootstrap, kernel,
//! our initramfs, finalized ext4 rootfs, manifest.

use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::process::{report, run, ProgressFn};
use crate::{initramfs, kernel, rootfs, ImageError, ImageManifest, Recipe};

pub const KERNEL_FILE: &str = "vmlinux";
pub const INITRD_FILE: &str = "initrd.img";
pub const ROOTFS_FILE: &str = "rootfs.ext4";

/// Removes what a failed build made (best effort; errors are logged).
struct Cleanup {
    paths: Vec<PathBuf>,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for p in &self.paths {
            if let Err(e) = remove_path(p) {
                tracing::warn!(path = %p.display(), error = %e, "cannot clean up after failed image build");
            }
        }
    }
}

pub(crate) fn remove_path(p: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Builds `recipe` into `out_dir` (`vmlinux`, `initrd.img`, `rootfs.ext4`,
/// `manifest.json`), using `work_dir/tree` as the scratch tree. Needs root,
/// debootstrap, e2fsprogs and the mirror (run in the root network
/// namespace). On error or cancel, removes the tree and what it wrote.
pub async fn build_bootstrap_image(
    recipe: &Recipe,
    work_dir: &Path,
    out_dir: &Path,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<ImageManifest, ImageError> {
    let tree = work_dir.join("tree");
    let mut cleanup = Cleanup {
        paths: vec![tree.clone()],
        armed: true,
    };
    if !work_dir.exists() {
        cleanup.paths.push(work_dir.to_path_buf());
    }
    if out_dir.exists() {
        for f in [
            KERNEL_FILE,
            INITRD_FILE,
            ROOTFS_FILE,
            crate::manifest::MANIFEST_FILE,
        ] {
            cleanup.paths.push(out_dir.join(f));
        }
    } else {
        cleanup.paths.push(out_dir.to_path_buf());
    }
    remove_path(&tree).map_err(|e| ImageError::io("clear old build tree", &tree, e))?;
    // Private: the tree below is the guest's (its modes are the guest's),
    // closed to others by this 0700 dir.
    hangar_host::private::create_private_dir(work_dir)
        .map_err(|e| ImageError::io("create", work_dir, e))?;
    hangar_host::private::create_private_dir(out_dir)
        .map_err(|e| ImageError::io("create", out_dir, e))?;

    let started = Instant::now();
    debootstrap(recipe, &tree, progress, cancel).await?;
    install_kernel(recipe, &tree, progress, cancel).await?;

    report(progress, "kernel", "extracting vmlinux");
    let vmlinuz = find_vmlinuz(&tree)?;
    let vmlinux = out_dir.join(KERNEL_FILE);
    blocking(move || kernel::write_vmlinux(&vmlinuz, &vmlinux)).await?;
    check_cancel(cancel)?;

    report(progress, "initramfs", "busybox + virtio modules + init");
    let t = tree.clone();
    let initrd_path = out_dir.join(INITRD_FILE);
    blocking(move || {
        let data = initramfs::build_initramfs(&t)?;
        hangar_host::private::write_private(&initrd_path, data)
            .map_err(|e| ImageError::io("write", &initrd_path, e))
    })
    .await?;
    check_cancel(cancel)?;

    report(progress, "rootfs", "finalizing tree");
    let t = tree.clone();
    blocking(move || rootfs::finalize_tree(&t)).await?;
    check_cancel(cancel)?;

    let rootfs_path = out_dir.join(ROOTFS_FILE);
    make_ext4(
        &tree,
        &rootfs_path,
        recipe.rootfs_size_bytes,
        progress,
        cancel,
    )
    .await?;

    let manifest = ImageManifest::new(
        &recipe.source(),
        KERNEL_FILE,
        Some(INITRD_FILE),
        ROOTFS_FILE,
        recipe.rootfs_size_bytes,
        Some(recipe.cache_key()),
    );
    // Our own initramfs: it waits at the snapshot point and runs the agent.
    let manifest = manifest.with_hangar_initramfs(true);
    manifest.save(out_dir)?;

    report(progress, "cleanup", "removing build tree");
    cleanup.armed = false;
    let t = tree.clone();
    if let Err(e) =
        blocking(move || remove_path(&t).map_err(|e| ImageError::io("remove", &t, e))).await
    {
        tracing::warn!(error = %e, "cannot remove build tree");
    }
    report(
        progress,
        "done",
        format!(
            "built {} in {:.0}s",
            recipe.name,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(manifest)
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Io {
            action: "run build step",
            path: PathBuf::from("(blocking task)"),
            source: std::io::Error::other(e.to_string()),
        })?
}

fn check_cancel(cancel: &CancellationToken) -> Result<(), ImageError> {
    if cancel.is_cancelled() {
        Err(ImageError::Cancelled)
    } else {
        Ok(())
    }
}

async fn debootstrap(
    recipe: &Recipe,
    tree: &Path,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<(), ImageError> {
    report(
        progress,
        "debootstrap",
        format!("{} from {}", recipe.suite, recipe.mirror),
    );
    let include = format!("--include={}", recipe.packages.join(","));
    let tree_s = tree.to_string_lossy();
    run(
        "debootstrap",
        &[
            "--variant=minbase",
            "--components=main",
            &include,
            &recipe.suite,
            &tree_s,
            &recipe.mirror,
        ],
        &[("DEBIAN_FRONTEND", "noninteractive")],
        "debootstrap",
        "debootstrap",
        progress,
        cancel,
    )
    .await
}

/// Installs the kernel inside the tree without building Debian's initramfs
/// (slow, and unused: we ship our own): update-initramfs is diverted to
/// /bin/true first.
async fn install_kernel(
    recipe: &Recipe,
    tree: &Path,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<(), ImageError> {
    report(
        progress,
        "kernel",
        format!("installing {}", recipe.kernel_package),
    );
    let tree_s = tree.to_string_lossy();
    run(
        "chroot",
        &[
            &tree_s,
            "dpkg-divert",
            "--local",
            "--rename",
            "--add",
            "/usr/sbin/update-initramfs",
        ],
        &[],
        "coreutils",
        "kernel",
        progress,
        cancel,
    )
    .await?;
    let fake = tree.join("usr/sbin/update-initramfs");
    let _ = std::fs::remove_file(&fake);
    std::os::unix::fs::symlink("/bin/true", &fake)
        .map_err(|e| ImageError::io("divert update-initramfs at", &fake, e))?;
    let env = [("DEBIAN_FRONTEND", "noninteractive"), ("INITRD", "No")];
    run(
        "chroot",
        &[
            &tree_s,
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            &recipe.kernel_package,
        ],
        &env,
        "coreutils",
        "kernel",
        progress,
        cancel,
    )
    .await?;
    run(
        "chroot",
        &[&tree_s, "apt-get", "clean"],
        &env,
        "coreutils",
        "kernel",
        progress,
        cancel,
    )
    .await
}

/// The newest `/boot/vmlinuz-*` of the tree.
fn find_vmlinuz(tree: &Path) -> Result<PathBuf, ImageError> {
    let boot = tree.join("boot");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&boot)
        .map_err(|e| ImageError::io("list", &boot, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(|| ImageError::MissingInTree {
        path: tree.to_path_buf(),
        what: "/boot/vmlinuz-* (the kernel package did not install)".into(),
    })
}

/// `mkfs.ext4 -d TREE` into a sparse file of `size` bytes.
async fn make_ext4(
    tree: &Path,
    out: &Path,
    size: u64,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<(), ImageError> {
    report(
        progress,
        "rootfs",
        format!("mkfs.ext4 ({} MiB, sparse)", size >> 20),
    );
    let _ = std::fs::remove_file(out);
    // Pre-created private: mkfs.ext4 writes into it and keeps its mode.
    hangar_host::private::create_private_file(out)
        .and_then(|f| f.set_len(size))
        .map_err(|e| ImageError::io("create sparse rootfs", out, e))?;
    let tree_s = tree.to_string_lossy();
    let out_s = out.to_string_lossy();
    run(
        "mkfs.ext4",
        &["-q", "-F", "-L", "root", "-m", "0", "-d", &tree_s, &out_s],
        &[],
        "e2fsprogs",
        "rootfs",
        progress,
        cancel,
    )
    .await
}

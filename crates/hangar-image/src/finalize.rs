//! Turns a flattened OCI rootfs (a staging tree) into a Hangar image:
//! checks the image config can run in it, adds what booting needs (the
//! mount points, `/etc/{hostname,hosts,resolv.conf}` pointing at the
//! config drive, the kernel's modules), writes the ext4 with
//! `mkfs.ext4 -d` sized from the content, and takes the kernel and
//! Hangar's initramfs from a kernel image (the default image). No sshd
//! or shell is needed in the tree: Hangar's guest agent, brought in by
//! the initramfs at boot, makes the guest reachable.
//!
//! Everything happens inside the staging dir: paths in the tree are
//! resolved with `openat2(RESOLVE_IN_ROOT)`, so a symlink in the image
//! (`/etc -> /host/etc`) resolves inside the tree, never on the host.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tokio_util::sync::CancellationToken;

use crate::bootstrap::{blocking, INITRD_FILE, KERNEL_FILE, ROOTFS_FILE};
use crate::cache::copy_file;
use crate::process::{report, run};
use crate::sources::RunConfig;
use crate::{ImageError, ImageManifest, ProgressFn};

/// The image a finalized rootfs borrows its kernel and initramfs from.
#[derive(Debug, Clone)]
pub struct KernelSource {
    /// Its image dir (`vmlinux`, `initrd.img`, `rootfs.ext4`).
    pub dir: PathBuf,
    /// Its manifest digest, recorded in the new image's manifest.
    pub digest: String,
}

/// Where the default PATH comes from when the image sets none (docker's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Finalizes `tree` into `out_dir` (which holds it) and returns the
/// manifest, already saved. On success the tree is moved beside `out_dir`
/// and removed in the background; on error the caller removes `out_dir`.
pub async fn finalize_oci(
    tree: &Path,
    run_config: &RunConfig,
    source: &str,
    kernel: &KernelSource,
    out_dir: &Path,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<ImageManifest, ImageError> {
    report(
        progress,
        "finalize",
        "checking the image config against its rootfs",
    );
    let (t, rc) = (tree.to_path_buf(), run_config.clone());
    let (files, bytes) = blocking(move || {
        let root = open_root(&t)?;
        check_runnable(&root, &rc)?;
        prepare_tree(&root, &rc)?;
        tree_usage(&t)
    })
    .await?;
    // The image's own kernel when Hangar can boot it, else the default
    // image's (whose modules then go into the tree).
    let own = use_own_kernel(tree, &kernel.dir, out_dir, progress).await?;
    let modules = match own {
        Some(_) => 0,
        None => add_kernel_modules(tree, &kernel.dir, progress, cancel).await?,
    };

    // Room for the content, its metadata and what a user installs later
    // (`vm create --disk` grows a VM's own copy further).
    let size = round_mib(bytes + bytes / 4 + modules + (256 << 20));
    let inodes = files + files / 4 + 16384;
    report(
        progress,
        "rootfs",
        format!("mkfs.ext4 ({} MiB, sparse)", size >> 20),
    );
    let rootfs = out_dir.join(ROOTFS_FILE);
    hangar_host::private::create_private_file(&rootfs)
        .and_then(|f| f.set_len(size))
        .map_err(|e| ImageError::io("create sparse rootfs", &rootfs, e))?;
    let (tree_s, rootfs_s, inodes_s) = (
        tree.to_string_lossy(),
        rootfs.to_string_lossy(),
        inodes.to_string(),
    );
    run(
        "mkfs.ext4",
        &[
            "-q", "-F", "-L", "root", "-m", "0", "-N", &inodes_s, "-d", &tree_s, &rootfs_s,
        ],
        &[],
        "e2fsprogs",
        "rootfs",
        progress,
        cancel,
    )
    .await?;

    if own.is_none() {
        report(
            progress,
            "kernel",
            "taking the kernel and initramfs of the default image",
        );
        let (kdir, odir) = (kernel.dir.clone(), out_dir.to_path_buf());
        blocking(move || {
            copy_file(&kdir.join(KERNEL_FILE), &odir.join(KERNEL_FILE))?;
            copy_file(&kdir.join(INITRD_FILE), &odir.join(INITRD_FILE))
        })
        .await?;
    }
    // The tree (often tens of thousands of files) is deleted off the
    // pull's path: renamed beside the work dir, under the same prefix, so
    // the start-up sweep finds it if the daemon dies first.
    let trash = out_dir.with_file_name(format!(
        "{}-tree",
        out_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    std::fs::rename(tree, &trash).map_err(|e| ImageError::io("move away", tree, e))?;
    tokio::task::spawn_blocking(move || {
        if let Err(e) = crate::bootstrap::remove_path(&trash) {
            tracing::warn!(dir = %trash.display(), error = %e, "cannot remove a finished staging tree");
        }
    });

    let manifest = ImageManifest::new(
        source,
        KERNEL_FILE,
        Some(INITRD_FILE),
        ROOTFS_FILE,
        size,
        None,
    )
    .with_hangar_initramfs(true)
    .with_run(
        run_config.clone(),
        &own.map(|v| format!("image:/boot/vmlinuz-{v}"))
            .unwrap_or_else(|| kernel.digest.clone()),
    );
    manifest.save(out_dir)?;
    Ok(manifest)
}

/// Writes `vmlinux` and `initrd.img` into `out_dir` from the tree's own
/// kernel and modules (with the busybox of the kernel image's initramfs)
/// and returns its version; `None`, with the reason reported, when the
/// tree has no kernel Hangar can boot.
async fn use_own_kernel(
    tree: &Path,
    kernel_dir: &Path,
    out_dir: &Path,
    progress: ProgressFn<'_>,
) -> Result<Option<String>, ImageError> {
    use crate::own_kernel::{find, Found};
    let (t, kdir, odir) = (
        tree.to_path_buf(),
        kernel_dir.to_path_buf(),
        out_dir.to_path_buf(),
    );
    let outcome = blocking(move || {
        let root = open_root(&t)?;
        let k = match find(&root)? {
            Found::None => return Ok(Err(None)),
            Found::Unusable(why) => return Ok(Err(Some(why))),
            Found::Usable(k) => k,
        };
        let vmlinux = odir.join(KERNEL_FILE);
        if let Err(e) = crate::kernel::write_vmlinux(&k.vmlinuz_path(), &vmlinux) {
            return Ok(Err(Some(format!("its kernel {}: {e}", k.version))));
        }
        let initrd = kdir.join(INITRD_FILE);
        let base = std::fs::read(&initrd).map_err(|e| ImageError::io("read", &initrd, e))?;
        let busybox = crate::cpio::read_file(&base, "bin/busybox").ok_or_else(|| {
            ImageError::MissingInTree {
                path: initrd.clone(),
                what: "bin/busybox in the kernel image's initramfs".into(),
            }
        })?;
        let data = crate::initramfs::build_initramfs_with(&busybox, &k.modules)?;
        let out = odir.join(INITRD_FILE);
        hangar_host::private::write_private(&out, data)
            .map_err(|e| ImageError::io("write", &out, e))?;
        Ok(Ok(k.version))
    })
    .await?;
    match outcome {
        Ok(version) => {
            report(
                progress,
                "kernel",
                format!("using the image's own kernel {version}"),
            );
            Ok(Some(version))
        }
        Err(why) => {
            if let Some(why) = why {
                report(
                    progress,
                    "kernel",
                    format!("{why}; using the default image's kernel instead"),
                );
            }
            // (A failed vmlinux extraction removed its own output.)
            Ok(None)
        }
    }
}

fn round_mib(n: u64) -> u64 {
    n.div_ceil(1 << 20) << 20
}

fn open_root(tree: &Path) -> Result<OwnedFd, ImageError> {
    let f = std::fs::File::open(tree).map_err(|e| ImageError::io("open", tree, e))?;
    Ok(OwnedFd::from(f))
}

/// Opens `path` (absolute in the image) inside the tree: symlinks resolve
/// as if the tree were `/`. `None` when it does not exist.
pub(crate) fn open_in_root(
    root: &OwnedFd,
    path: &str,
    flags: OFlag,
) -> Result<Option<OwnedFd>, ImageError> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    match crate::flatten::inroot::open_in_root(root.as_fd(), rel.as_bytes(), flags) {
        Ok(fd) => Ok(Some(fd)),
        Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => Ok(None),
        Err(e) => Err(ImageError::io(
            "open in the image",
            PathBuf::from(path),
            e.into(),
        )),
    }
}

fn read_in_root(root: &OwnedFd, path: &str) -> Result<Option<String>, ImageError> {
    use std::io::Read;
    let Some(fd) = open_in_root(root, path, OFlag::O_RDONLY)? else {
        return Ok(None);
    };
    let mut s = String::new();
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut s)
        .map_err(|e| ImageError::io("read in the image", PathBuf::from(path), e))?;
    Ok(Some(s))
}

/// An executable regular file at `path` in the tree.
fn is_executable(root: &OwnedFd, path: &str) -> Result<bool, ImageError> {
    let Some(fd) = open_in_root(root, path, OFlag::O_PATH)? else {
        return Ok(false);
    };
    let st = nix::sys::stat::fstat(fd.as_fd())
        .map_err(|e| ImageError::io("stat in the image", PathBuf::from(path), e.into()))?;
    let is_file = st.st_mode & libc::S_IFMT == libc::S_IFREG;
    Ok(is_file && st.st_mode & 0o111 != 0)
}

/// Checks what the config needs: its user in `/etc/passwd` (a numeric uid
/// needs no entry) and its program (entrypoint, else cmd) present.
fn check_runnable(root: &OwnedFd, rc: &RunConfig) -> Result<(), ImageError> {
    if let Some(user) = rc.user_name() {
        if user.parse::<u32>().is_err() {
            let passwd = read_in_root(root, "/etc/passwd")?.unwrap_or_default();
            let known = passwd.lines().any(|l| l.split(':').next() == Some(user));
            if !known {
                return Err(ImageError::Unrunnable(format!(
                    "its USER {user:?} is not in the image's /etc/passwd"
                )));
            }
        }
    }
    let Some(program) = rc.command().into_iter().next() else {
        return Ok(());
    };
    let found = if program.contains('/') {
        let abs = if program.starts_with('/') {
            program.clone()
        } else {
            format!("{}/{program}", rc.working_dir.as_deref().unwrap_or("/"))
        };
        is_executable(root, &abs)?
    } else {
        let path = rc.path_var().unwrap_or(DEFAULT_PATH);
        let mut found = false;
        for dir in path.split(':').filter(|d| d.starts_with('/')) {
            if is_executable(root, &format!("{dir}/{program}"))? {
                found = true;
                break;
            }
        }
        found
    };
    if !found {
        return Err(ImageError::Unrunnable(format!(
            "its entrypoint/command program {program:?} is not an executable file in the image"
        )));
    }
    Ok(())
}

/// Creates the mount points and the working dir, and points the identity
/// files at the config drive (`/run/hangar`, unpacked by the initramfs).
fn prepare_tree(root: &OwnedFd, rc: &RunConfig) -> Result<(), ImageError> {
    for (dir, mode) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("etc", 0o755),
    ] {
        make_dir_at(root, dir, mode)?;
    }
    if let Some(wd) = &rc.working_dir {
        make_dirs_in_root(root, wd)?;
    }
    if let Some(etc) = open_in_root(root, "/etc", OFlag::O_DIRECTORY | OFlag::O_PATH)? {
        for (name, target) in [
            ("hostname", "/run/hangar/hostname"),
            ("hosts", "/run/hangar/hosts"),
            ("resolv.conf", "/run/hangar/resolv.conf"),
        ] {
            relink_at(&etc, name, target)?;
        }
    }
    Ok(())
}

fn make_dir_at(dir: &OwnedFd, name: &str, mode: u32) -> Result<(), ImageError> {
    match nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(mode)) {
        Ok(()) => {
            // mkdir's mode is masked by the umask; tmp needs its sticky bit.
            nix::sys::stat::fchmodat(
                dir.as_fd(),
                name,
                Mode::from_bits_truncate(mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| ImageError::io("chmod in the image", PathBuf::from(name), e.into()))
        }
        Err(nix::errno::Errno::EEXIST) => Ok(()),
        Err(e) => Err(ImageError::io(
            "create in the image",
            PathBuf::from(name),
            e.into(),
        )),
    }
}

/// `mkdir -p` inside the tree.
fn make_dirs_in_root(root: &OwnedFd, path: &str) -> Result<(), ImageError> {
    let mut sofar = String::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(ImageError::Unrunnable(format!(
                "its working dir {path:?} climbs with `..`"
            )));
        }
        let parent =
            open_in_root(root, &sofar, OFlag::O_DIRECTORY | OFlag::O_PATH)?.ok_or_else(|| {
                ImageError::Unrunnable(format!(
                    "its working dir {path:?}: {sofar} is not a directory"
                ))
            })?;
        make_dir_at(&parent, part, 0o755)?;
        sofar = format!("{sofar}/{part}");
    }
    Ok(())
}

/// Replaces `dir/name` (unless it is a directory) with a symlink.
fn relink_at(dir: &OwnedFd, name: &str, target: &str) -> Result<(), ImageError> {
    use nix::unistd::UnlinkatFlags;
    match nix::unistd::unlinkat(dir.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
        Err(nix::errno::Errno::EISDIR) => return Ok(()),
        Err(e) => {
            return Err(ImageError::io(
                "remove in the image",
                PathBuf::from(name),
                e.into(),
            ))
        }
    }
    nix::unistd::symlinkat(target, dir.as_fd(), name)
        .map_err(|e| ImageError::io("symlink in the image", PathBuf::from(name), e.into()))
}

/// Inodes and bytes (allocated) of the tree, never following a link.
fn tree_usage(tree: &Path) -> Result<(u64, u64), ImageError> {
    fn walk(p: &Path, files: &mut u64, bytes: &mut u64) -> std::io::Result<()> {
        let md = std::fs::symlink_metadata(p)?;
        *files += 1;
        *bytes += md.blocks() * 512 + 256;
        if md.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), files, bytes)?;
            }
        }
        Ok(())
    }
    let (mut files, mut bytes) = (0, 0);
    walk(tree, &mut files, &mut bytes).map_err(|e| ImageError::io("measure", tree, e))?;
    Ok((files, bytes))
}

/// Copies the kernel image's `/lib/modules/<version>` into the tree (when
/// the tree lacks it), so `modprobe` works in the guest. Returns its
/// size in bytes. Read from the kernel image's ext4 with `debugfs`, never
/// mounted.
async fn add_kernel_modules(
    tree: &Path,
    kernel_dir: &Path,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<u64, ImageError> {
    let kernel_rootfs = kernel_dir.join(ROOTFS_FILE);
    let Some(version) = kernel_modules_version(&kernel_rootfs).await? else {
        return Ok(0);
    };
    // The tree's `lib` may be a link (`/lib -> usr/lib` in Debian): find
    // the directory it names inside the tree.
    let t = tree.to_path_buf();
    let v = version.clone();
    let dest = blocking(move || {
        let root = open_root(&t)?;
        if open_in_root(&root, &format!("/lib/modules/{v}"), OFlag::O_PATH)?.is_some() {
            return Ok(None);
        }
        make_dirs_in_root(&root, "/lib/modules")?;
        let dir = open_in_root(&root, "/lib/modules", OFlag::O_DIRECTORY | OFlag::O_PATH)?
            .ok_or_else(|| ImageError::MissingInTree {
                path: t.clone(),
                what: "/lib/modules".into(),
            })?;
        let real = std::fs::read_link(format!("/proc/self/fd/{}", dir.as_raw_fd()))
            .map_err(|e| ImageError::io("resolve", &t, e))?;
        if !real.starts_with(&t) {
            return Err(ImageError::MissingInTree {
                path: t.clone(),
                what: "/lib/modules inside the tree".into(),
            });
        }
        Ok(Some(real))
    })
    .await?;
    let Some(dest) = dest else {
        return Ok(0);
    };
    report(
        progress,
        "modules",
        format!("adding /lib/modules/{version} of the kernel"),
    );
    let cmd = format!("rdump /usr/lib/modules/{version} {}", dest.display());
    run(
        "debugfs",
        &["-R", &cmd, &kernel_rootfs.to_string_lossy()],
        &[],
        "e2fsprogs",
        "modules",
        progress,
        cancel,
    )
    .await?;
    let d = dest.join(&version);
    let bytes = blocking(move || tree_usage(&d).map(|(_, b)| b)).await?;
    Ok(bytes)
}

/// The kernel version whose modules the kernel image ships.
async fn kernel_modules_version(rootfs: &Path) -> Result<Option<String>, ImageError> {
    let out = hangar_host::Tool::new("debugfs")
        .args(["-R", "ls -p /usr/lib/modules"])
        .arg(rootfs)
        .run()
        .await
        .map_err(ImageError::tool("debugfs", "e2fsprogs"))?;
    let text = &out.stdout;
    // `ls -p` lines: /inode/mode/uid/gid/name/size/
    let mut versions: Vec<String> = text
        .lines()
        .filter_map(|l| l.split('/').nth(5))
        .filter(|n| !n.is_empty() && *n != "." && *n != ".." && !n.contains(char::is_whitespace))
        .map(str::to_string)
        .collect();
    versions.sort();
    Ok(versions.pop())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(t.path().join("etc")).expect("etc");
        std::fs::create_dir_all(t.path().join("bin")).expect("bin");
        t
    }

    fn exe(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(p, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn rc(user: Option<&str>, entry: &[&str]) -> RunConfig {
        RunConfig {
            user: user.map(str::to_string),
            entrypoint: entry.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_missing_user_or_program_is_named() {
        let t = tree();
        std::fs::write(t.path().join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").expect("passwd");
        exe(&t.path().join("bin/app"));
        let root = open_root(t.path()).expect("root");

        check_runnable(&root, &rc(Some("root"), &["/bin/app"])).expect("fine");
        check_runnable(&root, &rc(Some("1000:1000"), &["app"])).expect("numeric uid, PATH lookup");
        let err = check_runnable(&root, &rc(Some("dev"), &[])).expect_err("no dev");
        assert!(err.to_string().contains("\"dev\""), "{err}");
        let err = check_runnable(&root, &rc(None, &["/bin/nope"])).expect_err("no program");
        assert!(err.to_string().contains("/bin/nope"), "{err}");
    }

    #[test]
    fn symlinks_in_the_image_resolve_inside_it() {
        let t = tree();
        let outside = tempfile::tempdir().expect("outside");
        exe(&outside.path().join("app"));
        // An absolute link to a host dir that has the program: it must
        // resolve inside the tree, where there is none.
        std::os::unix::fs::symlink(outside.path(), t.path().join("host")).expect("link");
        let root = open_root(t.path()).expect("root");
        assert!(check_runnable(&root, &rc(None, &["/host/app"])).is_err());
    }

    #[test]
    fn prepare_links_identity_files_and_makes_mount_points() {
        let t = tree();
        std::fs::write(t.path().join("etc/hostname"), "builder").expect("write");
        let root = open_root(t.path()).expect("root");
        let mut r = rc(None, &[]);
        r.working_dir = Some("/srv/app".into());

        prepare_tree(&root, &r).expect("prepare");

        assert_eq!(
            std::fs::read_link(t.path().join("etc/hostname")).expect("link"),
            Path::new("/run/hangar/hostname")
        );
        for d in ["proc", "sys", "dev", "run", "tmp", "srv/app"] {
            assert!(t.path().join(d).is_dir(), "{d}");
        }
        let mode = std::fs::metadata(t.path().join("tmp")).expect("tmp").mode();
        assert_eq!(mode & 0o7777, 0o1777);
    }

    #[test]
    fn a_working_dir_through_a_link_out_stays_inside() {
        let t = tree();
        let outside = tempfile::tempdir().expect("outside");
        std::os::unix::fs::symlink(outside.path(), t.path().join("srv")).expect("link");
        let root = open_root(t.path()).expect("root");
        let mut r = rc(None, &[]);
        r.working_dir = Some("/srv/app".into());

        let _ = prepare_tree(&root, &r);

        assert!(!outside.path().join("app").exists());
    }
}

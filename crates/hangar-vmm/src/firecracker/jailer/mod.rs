//! Running Firecracker under its `jailer` (chroot, uid/gid drop, cgroups,
//! network namespace).
//!
//! The jailer builds `<chroot_base>/<exec file name>/<id>/root`, copies the
//! Firecracker binary there, pivots into it and execs Firecracker (same
//! pid: we never pass `--new-pid-ns` or `--daemonize`). Every file the API
//! names must exist inside that root, so `start` hard-links (read-only
//! files: or copies) kernel, initrd, drives, log and metrics into it and
//! sends jail-relative paths. The API socket is
//! `<root>/run/firecracker.socket`; `vm_dir/firecracker.sock` is a symlink
//! to it, which is how `kill` (also after a daemon restart) finds the jail
//! to remove.
//!
//! Layout and argv are pure functions (unit-tested); the file operations
//! are small wrappers.

use std::path::{Path, PathBuf};

use nix::unistd::{chown, Gid, Uid};

use crate::error::VmmError;
use crate::process;
use crate::{VmSpec, VMM_LOG};

use super::api::METRICS_FILE;

/// Firecracker's API socket as the jailed process sees it.
pub const JAIL_API_SOCKET: &str = "/run/firecracker.socket";
/// The jailer's own default chroot base.
pub const DEFAULT_CHROOT_BASE: &str = "/srv/jailer";
/// Where cgroup hierarchies are mounted on a standard host.
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The jailer's limit on `--id`.
const MAX_ID_LEN: usize = 64;
/// Memory the Firecracker process needs beyond guest RAM, for the
/// `memory.max` limit (VMM, device buffers, page tables).
const VMM_MEMORY_OVERHEAD_MIB: u64 = 64;

/// How to run Firecracker under the jailer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailerConfig {
    /// The `jailer` binary (same version as Firecracker).
    pub binary: PathBuf,
    /// Uid/gid Firecracker runs as; writable files are chowned to them.
    pub uid: u32,
    pub gid: u32,
    /// `--chroot-base-dir`; must be on the same filesystem as the VM
    /// directories (writable files are hard-linked).
    pub chroot_base: PathBuf,
    /// `--cgroup-version` (1 or 2).
    pub cgroup_version: u8,
    /// Network namespace for VMs whose spec names none.
    pub netns: Option<String>,
    /// `--parent-cgroup`.
    pub parent_cgroup: Option<String>,
    /// Extra `--cgroup FILE=VALUE` settings, passed verbatim.
    pub cgroups: Vec<String>,
    /// Derive CPU and memory limits from the spec (`cpu.max` and
    /// `memory.max` on v2; CFS quota and `memory.limit_in_bytes` on v1).
    pub limit_resources: bool,
    /// Where the cgroup hierarchy is mounted (the jailer finds it itself;
    /// this tells the driver where to remove what the jailer made).
    pub cgroup_root: PathBuf,
}

impl JailerConfig {
    /// cgroup v2, no extra limits, no default network namespace.
    pub fn new(
        binary: impl Into<PathBuf>,
        uid: u32,
        gid: u32,
        chroot_base: impl Into<PathBuf>,
    ) -> Self {
        JailerConfig {
            binary: binary.into(),
            uid,
            gid,
            chroot_base: chroot_base.into(),
            cgroup_version: 2,
            netns: None,
            parent_cgroup: None,
            cgroups: Vec::new(),
            limit_resources: false,
            cgroup_root: PathBuf::from(DEFAULT_CGROUP_ROOT),
        }
    }

    /// The uid/gid `spec`'s Firecracker runs as: the VM's own when it has
    /// one ([`VmSpec::run_as`]), else the configured jail user.
    pub fn ids_for(&self, spec: &VmSpec) -> (u32, u32) {
        spec.run_as
            .map_or((self.uid, self.gid), |id| (id.uid, id.gid))
    }

    /// True when the jailer will create a cgroup per VM: it does only
    /// when given `--cgroup` settings.
    pub fn makes_cgroups(&self) -> bool {
        self.limit_resources || !self.cgroups.is_empty()
    }
}

/// Where one VM's jail lives on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jail {
    /// `<chroot_base>/<exec file name>/<id>`: removed as a whole.
    pub dir: PathBuf,
    /// `<dir>/root`: the jailed process's `/`.
    pub root: PathBuf,
}

impl Jail {
    /// The jail the jailer builds for `exec_file` and `id`.
    pub fn new(chroot_base: &Path, exec_file: &Path, id: &str) -> Jail {
        let exec_name = exec_file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "firecracker".to_string());
        let dir = chroot_base.join(exec_name).join(id);
        Jail {
            root: dir.join("root"),
            dir,
        }
    }

    /// Host path of a path as the jailed process sees it ("/vmlinux").
    pub fn host_path(&self, jail_path: &str) -> PathBuf {
        self.root.join(jail_path.trim_start_matches('/'))
    }

    /// The jail's `--id` (its directory name).
    pub fn id(&self) -> Option<String> {
        Some(self.dir.file_name()?.to_string_lossy().into_owned())
    }

    /// The exec file name the jail was built for (its parent directory).
    pub fn exec_name(&self) -> Option<String> {
        Some(
            self.dir
                .parent()?
                .file_name()?
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// Host path of the API socket.
    pub fn api_socket(&self) -> PathBuf {
        self.host_path(JAIL_API_SOCKET)
    }

    /// The jail whose API socket is `socket`, if `socket` has exactly the
    /// layout [`Jail::api_socket`] produces (so a stray symlink can never
    /// make `kill` remove an unrelated directory).
    pub fn from_api_socket(socket: &Path) -> Option<Jail> {
        let run = socket.parent()?;
        let root = run.parent()?;
        let dir = root.parent()?;
        let exec_dir = dir.parent()?;
        let ok = socket.file_name()? == "firecracker.socket"
            && run.file_name()? == "run"
            && root.file_name()? == "root"
            && exec_dir
                .file_name()?
                .to_string_lossy()
                .contains("firecracker")
            && validate_jail_id(&dir.file_name()?.to_string_lossy()).is_ok();
        ok.then(|| Jail {
            dir: dir.to_path_buf(),
            root: root.to_path_buf(),
        })
    }
}

/// The jailer accepts ids of 1–64 alphanumerics and hyphens.
pub fn validate_jail_id(id: &str) -> Result<(), VmmError> {
    let invalid = |reason| VmmError::InvalidJailId {
        id: id.to_string(),
        reason,
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(invalid("it must be 1 to 64 characters long"));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(invalid("only letters, digits and hyphens are allowed"));
    }
    Ok(())
}

/// The cgroup controllers [`cgroup_limits`] writes to (v1 and v2 alike).
pub const LIMIT_CONTROLLERS: [&str; 2] = ["cpu", "memory"];

/// `--cgroup` values limiting the VMM to the spec's CPUs and memory.
pub fn cgroup_limits(spec: &VmSpec, cgroup_version: u8) -> Vec<String> {
    let period: u64 = 100_000;
    let quota = u64::from(spec.cpus.max(1)) * period;
    let mem_bytes = (u64::from(spec.memory_mib) + VMM_MEMORY_OVERHEAD_MIB) * 1024 * 1024;
    if cgroup_version == 1 {
        vec![
            format!("cpu.cfs_period_us={period}"),
            format!("cpu.cfs_quota_us={quota}"),
            format!("memory.limit_in_bytes={mem_bytes}"),
        ]
    } else {
        vec![
            format!("cpu.max={quota} {period}"),
            format!("memory.max={mem_bytes}"),
        ]
    }
}

/// The jailer argv (without the binary). `firecracker` must be an absolute
/// path; `netns` is the namespace name (under /run/netns).
pub fn jailer_args(
    cfg: &JailerConfig,
    firecracker: &Path,
    spec: &VmSpec,
    netns: Option<&str>,
) -> Vec<String> {
    let (uid, gid) = cfg.ids_for(spec);
    let mut a: Vec<String> = vec![
        "--id".into(),
        spec.id.clone(),
        "--exec-file".into(),
        firecracker.to_string_lossy().into_owned(),
        "--uid".into(),
        uid.to_string(),
        "--gid".into(),
        gid.to_string(),
        "--chroot-base-dir".into(),
        cfg.chroot_base.to_string_lossy().into_owned(),
    ];
    if let Some(ns) = netns {
        a.push("--netns".into());
        a.push(format!("/run/netns/{ns}"));
    }
    a.push("--cgroup-version".into());
    a.push(cfg.cgroup_version.to_string());
    if let Some(parent) = &cfg.parent_cgroup {
        a.push("--parent-cgroup".into());
        a.push(parent.clone());
    }
    let limits = if cfg.limit_resources {
        cgroup_limits(spec, cfg.cgroup_version)
    } else {
        Vec::new()
    };
    for c in limits.iter().chain(&cfg.cgroups) {
        a.push("--cgroup".into());
        a.push(c.clone());
    }
    a.push("--".into());
    a.push("--api-sock".into());
    a.push(JAIL_API_SOCKET.into());
    a
}

/// One file that must appear inside the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailFile {
    pub host: PathBuf,
    /// Absolute path as the jailed process sees it.
    pub in_jail: String,
    /// Firecracker writes it: hard link only, chowned to the jail user.
    pub writable: bool,
}

/// `spec` with every path the API sends rewritten to its place in the jail
/// (`vm_dir` becomes `/`, so log and metrics are `/vmm.log`,
/// `/metrics.json`), plus the files to put there.
pub fn jailed_spec(spec: &VmSpec) -> Result<(VmSpec, Vec<JailFile>), VmmError> {
    let mut j = spec.clone();
    let mut files = Vec::new();
    let mut place = |host: &Path, name: String, writable: bool| -> PathBuf {
        let in_jail = format!("/{name}");
        files.push(JailFile {
            host: host.to_path_buf(),
            in_jail: in_jail.clone(),
            writable,
        });
        PathBuf::from(in_jail)
    };
    j.kernel = place(&spec.kernel, "vmlinux".into(), false);
    j.initrd = spec
        .initrd
        .as_deref()
        .map(|p| place(p, "initrd".into(), false));
    j.root_disk = place(&spec.root_disk, "drive-root".into(), true);
    for (d, jd) in spec.extra_drives.iter().zip(j.extra_drives.iter_mut()) {
        if d.id.is_empty()
            || !d
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(VmmError::InvalidJailId {
                id: d.id.clone(),
                reason: "drive ids must be letters, digits, '-' or '_' to be placed in the jail",
            });
        }
        jd.path = place(&d.path, format!("drive-{}", d.id), !d.read_only);
    }
    place(&spec.vm_dir.join(VMM_LOG), VMM_LOG.into(), true);
    place(&spec.vm_dir.join(METRICS_FILE), METRICS_FILE.into(), true);
    j.vm_dir = PathBuf::from("/");
    Ok((j, files))
}

/// How a file got into the jail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    HardLinked,
    Copied,
    /// A device node made with the source's type and number.
    DeviceNode,
}

/// Hard-links `src` to `dst`; across filesystems, copies read-only files
/// and refuses writable ones (a copy would silently drop the guest's
/// writes when the jail is removed). A device (the dm backend's disk, in
/// /dev on another filesystem) gets a node of its own in the jail, with
/// the same major:minor, readable and writable by its owner only.
pub fn link_or_copy(src: &Path, dst: &Path, writable: bool) -> Result<Placed, VmmError> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(src).map_err(|source| VmmError::Io {
        action: "inspect",
        path: src.to_path_buf(),
        source,
    })?;
    let kind = meta.file_type();
    if kind.is_block_device() || kind.is_char_device() {
        make_device_node(
            dst,
            kind.is_block_device(),
            std::os::unix::fs::MetadataExt::rdev(&meta),
        )?;
        return Ok(Placed::DeviceNode);
    }
    match std::fs::hard_link(src, dst) {
        Ok(()) => Ok(Placed::HardLinked),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) && !writable => {
            std::fs::copy(src, dst).map_err(|source| VmmError::Io {
                action: "copy into the jail",
                path: src.to_path_buf(),
                source,
            })?;
            Ok(Placed::Copied)
        }
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => Err(VmmError::JailCrossDevice {
            path: src.to_path_buf(),
            jail_path: dst.to_path_buf(),
        }),
        Err(source) => Err(VmmError::Io {
            action: "hard-link into the jail",
            path: src.to_path_buf(),
            source,
        }),
    }
}

/// `mknod` of a block (or character) device `rdev` at `dst`, mode 0600.
fn make_device_node(dst: &Path, block: bool, rdev: u64) -> Result<(), VmmError> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    let kind = if block {
        SFlag::S_IFBLK
    } else {
        SFlag::S_IFCHR
    };
    mknod(dst, kind, Mode::S_IRUSR | Mode::S_IWUSR, rdev).map_err(|e| VmmError::Io {
        action: "make the device node in the jail",
        path: dst.to_path_buf(),
        source: e.into(),
    })
}

/// True when `uid` can read `path` by its owner or its "other" bits.
fn readable_by(path: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| (m.uid() == uid && m.mode() & 0o400 != 0) || m.mode() & 0o004 != 0)
        .unwrap_or(false)
}

/// Creates the jail root with `run/` and places `files`; writable files,
/// device nodes and `run/` (where Firecracker creates its socket) are
/// chowned to uid:gid. A read-only file the jail user cannot read (an
/// image file readable by root only) is copied and the copy given to it,
/// so the shared original keeps its owner. On error the caller removes the
/// jail.
pub(crate) fn prepare_jail(
    jail: &Jail,
    files: &[JailFile],
    uid: u32,
    gid: u32,
) -> Result<(), VmmError> {
    let run = jail.host_path("/run");
    std::fs::create_dir_all(&run).map_err(|source| VmmError::Io {
        action: "create the jail directory",
        path: run.clone(),
        source,
    })?;
    let give = |path: &Path| {
        chown(path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| VmmError::Io {
            action: "chown to the jail user",
            path: path.to_path_buf(),
            source: e.into(),
        })
    };
    give(&run)?;
    for f in files {
        let dst = jail.host_path(&f.in_jail);
        let mut placed = link_or_copy(&f.host, &dst, f.writable)?;
        if !f.writable && placed != Placed::DeviceNode && !readable_by(&dst, uid) {
            if placed == Placed::HardLinked {
                process::remove_if_exists(&dst);
                std::fs::copy(&f.host, &dst).map_err(|source| VmmError::Io {
                    action: "copy into the jail",
                    path: f.host.clone(),
                    source,
                })?;
                placed = Placed::Copied;
            }
            give(&dst)?;
        }
        tracing::debug!(src = %f.host.display(), dst = %dst.display(), ?placed, "file placed in jail");
        if f.writable || placed == Placed::DeviceNode {
            give(&dst)?;
        }
    }
    Ok(())
}

/// Removes the whole jail directory (links, copies, the copied binary,
/// device nodes the jailer made). Missing is fine.
pub(crate) fn remove_jail(jail: &Jail) {
    match std::fs::remove_dir_all(&jail.dir) {
        Ok(()) => tracing::debug!(jail = %jail.dir.display(), "jail removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(jail = %jail.dir.display(), error = %e, "cannot remove jail"),
    }
}

/// The cgroup directories the jailer creates for `jail` under `cfg`:
/// `<root>/<parent>/<id>` on v2, and the same below each controller a
/// setting names on v1; the parent defaults to the exec file name. None
/// when the jailer is given no `--cgroup` settings (it then creates none).
pub fn cgroup_dirs(cfg: &JailerConfig, jail: &Jail) -> Vec<PathBuf> {
    let (Some(exec_name), Some(id)) = (jail.exec_name(), jail.id()) else {
        return Vec::new();
    };
    if !cfg.makes_cgroups() {
        return Vec::new();
    }
    let parent = cfg.parent_cgroup.clone().unwrap_or(exec_name);
    if cfg.cgroup_version != 1 {
        return vec![cfg.cgroup_root.join(parent).join(id)];
    }
    let mut controllers: Vec<String> = if cfg.limit_resources {
        LIMIT_CONTROLLERS.map(String::from).to_vec()
    } else {
        Vec::new()
    };
    controllers.extend(cfg.cgroups.iter().filter_map(|c| {
        c.split_once('.')
            .map(|(controller, _)| controller.to_string())
    }));
    controllers.sort();
    controllers.dedup();
    controllers
        .into_iter()
        .map(|c| cfg.cgroup_root.join(c).join(&parent).join(&id))
        .collect()
}

/// The cgroup version mounted at `root`: 2 when it is the unified
/// hierarchy (it has `cgroup.controllers`), else 1.
pub fn host_cgroup_version(root: &Path) -> u8 {
    if root.join("cgroup.controllers").exists() {
        2
    } else {
        1
    }
}

/// Removes the (empty, once the VMM is gone) cgroup directories the jailer
/// made. Missing is fine; a cgroup that still has processes stays and is
/// logged.
pub(crate) fn remove_cgroups(dirs: &[PathBuf]) {
    for dir in dirs {
        match std::fs::remove_dir(dir) {
            Ok(()) => tracing::debug!(cgroup = %dir.display(), "cgroup removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(cgroup = %dir.display(), error = %e, "cannot remove cgroup"),
        }
    }
}

/// `binary` as an absolute path (the jailer requires one): bare names are
/// looked up on PATH.
pub(crate) fn absolute_binary(binary: &Path) -> Result<PathBuf, VmmError> {
    let unusable = |hint: &str| VmmError::BinaryUnusable {
        kind: "firecracker",
        path: binary.to_path_buf(),
        hint: hint.to_string(),
        source: None,
    };
    // An explicit path is taken as is, so a missing one gets its own hint.
    let found = if binary.components().count() > 1 {
        binary.to_path_buf()
    } else {
        hangar_host::which(binary).ok_or_else(|| {
            unusable("not found on PATH; set `[vmm] firecracker` to its absolute path")
        })?
    };
    std::fs::canonicalize(&found).map_err(|_| unusable("does not exist; fix `[vmm] firecracker`"))
}

/// Removes a stale jail left by a crash, then builds a fresh one.
pub(crate) fn build_jail(
    jail: &Jail,
    files: &[JailFile],
    (uid, gid): (u32, u32),
) -> Result<(), VmmError> {
    if jail.dir.exists() {
        tracing::warn!(jail = %jail.dir.display(), "removing a stale jail");
        remove_jail(jail);
    }
    if let Err(e) = prepare_jail(jail, files, uid, gid) {
        remove_jail(jail);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests;

//! Device-mapper backend: a per-VM writable snapshot over the read-only
//! image, built when the VM starts and torn down when it stops.
//!
//! # Design
//! * **`snapshot` target, persistent.** The per-VM artifact is a sparse COW
//!   file at `dest`; on [`DiskBackend::activate`] the image is attached to a
//!   *read-only* loop device (the origin), the COW file to a read-write loop
//!   device, and `dmsetup create hangar-<vm>-<disk>` maps
//!   `snapshot <origin> <cow> P 8`. `P` keeps the exception table in the COW
//!   file, so the guest's writes survive stop/start; chunk size 8 sectors
//!   (4 KiB) matches the ext4 block size, so a guest write copies no more
//!   than it touches. Thin provisioning was not chosen: it needs a pool
//!   (metadata + data devices) shared by all VMs, whose exhaustion and
//!   repair are daemon-wide problems, while a snapshot is self-contained
//!   per VM and is removed with one file.
//! * **COW sizing.** The COW file is sparse and sized for the worst case
//!   (every chunk copied once) plus the exception metadata (16 bytes per
//!   4 KiB chunk, so 1/256, doubled for margin) plus 1 MiB, so the snapshot
//!   can never overflow and become invalid; it costs only what is written.
//! * **Growing.** The snapshot's size is the size of its origin. When the
//!   disk is larger than the image, the origin is a second dm device
//!   `hangar-<vm>-<disk>-base` = `linear` over the image loop + `zero` for
//!   the rest, and [`DiskBackend::create`] activates once to run
//!   `e2fsck -fy` + `resize2fs` on the snapshot (the grown metadata lands in
//!   the COW file), then deactivates. The virtual size is recorded next to
//!   the COW file in `<dest>.dmsize`, because activation must rebuild the
//!   same geometry.
//! * **No leaked devices.** Activation undoes every step on failure (dm
//!   devices removed in reverse, loop devices detached). Once the snapshot
//!   exists, both loop devices are detached right away: the kernel only
//!   marks a loop device that is still open as autoclear and detaches it
//!   when its holder (the dm device) goes away, so deactivation is just
//!   `dmsetup remove`, and a daemon crash leaves at most dm devices (listed
//!   by [`crate::find_leftovers`]), never orphaned loop devices.
//! * **Serialised.** One process-wide mutex covers every create, activate,
//!   deactivate and remove, so two VMs' loop/dm sequences never interleave
//!   (loop allocation with `--find` and dm name checks are not atomic).
//! * The image file must not change while any VM uses it; hangar images are
//!   content-addressed and never rewritten.

pub(crate) mod ops;
pub(crate) mod real;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use hangar_host::{Tool, ToolError};

use crate::create::create_new_disk;
use crate::{DiskBackend, StorageError};
use ops::DmOps;
use real::HostOps;

const SECTOR: u64 = 512;
/// Snapshot chunk size in sectors (4 KiB).
const CHUNK_SECTORS: u64 = 8;
/// Longest dm device name we make; the kernel limit is 127 and the base
/// device adds "-base".
const MAX_NAME: usize = 120;

/// How long `dmsetup version` / `losetup --version` may take.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serialises every loop/dm sequence in this process.
static DM_LOCK: Mutex<()> = Mutex::new(());

fn serialised() -> MutexGuard<'static, ()> {
    DM_LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Per-VM device-mapper snapshots over the read-only image.
pub struct DmBackend {
    ops: Arc<dyn DmOps>,
    state_dir: PathBuf,
}

impl std::fmt::Debug for DmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmBackend")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl DmBackend {
    /// A backend using the host's `losetup`/`dmsetup`. `state_dir` is where
    /// the disks live (leftover loop devices are looked for under it). Does
    /// not check that device-mapper works: see [`dm_availability`].
    pub fn new(state_dir: &Path) -> Self {
        Self::with_ops(Arc::new(HostOps), state_dir)
    }

    pub(crate) fn with_ops(ops: Arc<dyn DmOps>, state_dir: &Path) -> Self {
        Self {
            ops,
            state_dir: state_dir.to_path_buf(),
        }
    }
}

/// Whether this host can run the dm backend; `Err` says why not (for
/// `backend_by_name` and `hangar doctor`).
pub fn dm_availability() -> Result<(), String> {
    if !Path::new("/dev/mapper/control").exists() {
        return Err("no /dev/mapper/control".to_string());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("no /dev/loop-control (loop module not loaded)".to_string());
    }
    for (tool, arg, package) in [
        ("dmsetup", "version", "dmsetup"),
        ("losetup", "--version", "util-linux"),
    ] {
        match Tool::new(tool)
            .arg(arg)
            .timeout(PROBE_TIMEOUT)
            .run_blocking()
        {
            Ok(_) => {}
            Err(ToolError::Spawn { source, .. }) => {
                return Err(format!("cannot run {tool} ({source}); install {package}"))
            }
            Err(ToolError::Failed { output, .. }) => {
                return Err(format!("`{tool} {arg}` failed: {output}"))
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// The dm device name for the disk at `dest`: `hangar-<dir>-<stem>`, e.g.
/// `hangar-<vm id>-disk` for `vms/<vm id>/disk.ext4`. The daemon uses it to
/// tell its own devices from leftovers.
pub fn dm_device_name(dest: &Path) -> String {
    let part = |s: Option<&std::ffi::OsStr>| -> String {
        s.map(|s| s.to_string_lossy())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    let dir = part(dest.parent().and_then(Path::file_name));
    let stem = part(dest.file_stem());
    let name = format!("hangar-{dir}-{stem}");
    if name.len() <= MAX_NAME {
        return name;
    }
    // Too long for the kernel: keep a readable prefix plus a hash of the
    // whole path so distinct disks keep distinct names.
    let hash = dest
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{}-{hash:016x}", &name[..MAX_NAME - 17])
}

/// `/dev/mapper/<name>` for the disk at `dest` (valid while active).
pub fn dm_device_path(dest: &Path) -> PathBuf {
    Path::new("/dev/mapper").join(dm_device_name(dest))
}

fn base_name(name: &str) -> String {
    format!("{name}-base")
}

/// Where the virtual size of the disk at `dest` is recorded.
fn record_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_os_string();
    s.push(".dmsize");
    PathBuf::from(s)
}

/// COW file length for a snapshot of `virtual_bytes`: every chunk copied
/// once, plus exception metadata (1/256, doubled), plus 1 MiB of headroom.
fn cow_len(virtual_bytes: u64) -> u64 {
    let raw = virtual_bytes + virtual_bytes / 128 + (1 << 20);
    raw.div_ceil(4096) * 4096
}

fn image_len(image: &Path) -> Result<u64, StorageError> {
    let len = std::fs::metadata(image)
        .map_err(|e| StorageError::io("read image rootfs", image, e))?
        .len();
    if len % SECTOR != 0 {
        return Err(StorageError::ImageNotSectorAligned {
            path: image.to_path_buf(),
            len,
        });
    }
    Ok(len)
}

fn read_record(dest: &Path) -> Result<u64, StorageError> {
    let record = record_path(dest);
    let bad = |source| StorageError::DmRecord {
        disk: dest.to_path_buf(),
        record: record.clone(),
        source,
    };
    let text = std::fs::read_to_string(&record).map_err(bad)?;
    text.trim()
        .parse::<u64>()
        .map_err(|e| bad(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// `linear` over the image plus `zero` up to the virtual size.
fn base_table(image_loop: &str, image_sectors: u64, virtual_sectors: u64) -> String {
    format!(
        "0 {image_sectors} linear {image_loop} 0\n{image_sectors} {} zero",
        virtual_sectors - image_sectors
    )
}

fn snapshot_table(virtual_sectors: u64, origin: &str, cow_loop: &str) -> String {
    format!("0 {virtual_sectors} snapshot {origin} {cow_loop} P {CHUNK_SECTORS}")
}

/// What a half-finished activation made; undone on drop unless disarmed.
struct Undo<'a> {
    ops: &'a dyn DmOps,
    dms: Vec<String>,
    loops: Vec<String>,
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        for name in self.dms.drain(..).rev() {
            if let Err(e) = self.ops.dm_remove(&name) {
                tracing::warn!(%name, error = %e, "could not remove dm device while undoing activation");
            }
        }
        for dev in self.loops.drain(..).rev() {
            if let Err(e) = self.ops.loop_detach(&dev) {
                tracing::warn!(%dev, error = %e, "could not detach loop device while undoing activation");
            }
        }
    }
}

/// Removes the COW file and its size record unless disarmed.
struct RemoveFiles(Option<Vec<PathBuf>>);

impl Drop for RemoveFiles {
    fn drop(&mut self) {
        for p in self.0.take().unwrap_or_default() {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "could not remove partial dm disk");
                }
            }
        }
    }
}

fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove disk", path, e)),
    }
}

impl DmBackend {
    fn create_locked(
        &self,
        image: &Path,
        dest: &Path,
        size_bytes: u64,
    ) -> Result<(), StorageError> {
        let img = image_len(image)?;
        if size_bytes < img {
            return Err(StorageError::SizeTooSmall {
                requested: size_bytes,
                minimum: img,
            });
        }
        let virt = size_bytes.div_ceil(SECTOR) * SECTOR;
        let record = record_path(dest);
        let cow = create_new_disk(dest)?;
        let mut files = RemoveFiles(Some(vec![dest.to_path_buf(), record.clone()]));
        // A zeroed header tells dm-snapshot this is a new, empty COW store.
        cow.set_len(cow_len(virt))
            .map_err(|e| StorageError::io("size COW disk", dest, e))?;
        drop(cow);
        hangar_host::private::write_private(&record, format!("{virt}\n"))
            .map_err(|e| StorageError::io("write size record", &record, e))?;
        if virt > img {
            let dev = self.activate_locked(image, dest)?;
            let grown = self.ops.grow_ext4(&dev);
            // The files are deleted on failure, so a teardown that fails
            // (a transient udev open, say) is retried once rather than
            // leaving a device over a deleted COW file.
            let down = self.deactivate_locked(dest).or_else(|e| {
                tracing::warn!(error = %e, "dm teardown after resize failed; retrying");
                self.deactivate_locked(dest)
            });
            grown?;
            down?;
        }
        files.0 = None;
        tracing::info!(dest = %dest.display(), size_bytes = virt, "dm disk created");
        Ok(())
    }

    fn activate_locked(&self, image: &Path, dest: &Path) -> Result<PathBuf, StorageError> {
        let ops = &*self.ops;
        let name = dm_device_name(dest);
        let path = dm_device_path(dest);
        if ops.dm_exists(&name)? {
            tracing::info!(%name, "dm device already active");
            return Ok(path);
        }
        let base = base_name(&name);
        if ops.dm_exists(&base)? {
            // Half a stack from a crash: nothing can be using it.
            ops.dm_remove(&base)?;
        }
        let virt = read_record(dest)?;
        let img = image_len(image)?;
        if virt < img {
            return Err(StorageError::SizeTooSmall {
                requested: virt,
                minimum: img,
            });
        }
        std::fs::metadata(dest).map_err(|e| StorageError::io("open COW disk", dest, e))?;

        let mut undo = Undo {
            ops,
            dms: Vec::new(),
            loops: Vec::new(),
        };
        let image_loop = ops.loop_attach(image, true)?;
        undo.loops.push(image_loop.clone());
        let cow_loop = ops.loop_attach(dest, false)?;
        undo.loops.push(cow_loop.clone());
        let origin = if virt > img {
            ops.dm_create(&base, &base_table(&image_loop, img / SECTOR, virt / SECTOR))?;
            undo.dms.push(base.clone());
            format!("/dev/mapper/{base}")
        } else {
            image_loop.clone()
        };
        ops.dm_create(&name, &snapshot_table(virt / SECTOR, &origin, &cow_loop))?;
        undo.dms.push(name.clone());
        // Hand the loop devices to the kernel: they are held by dm now, so
        // detaching only sets autoclear and they vanish with the dm devices.
        while let Some(dev) = undo.loops.first().cloned() {
            ops.loop_detach(&dev)?;
            undo.loops.remove(0);
        }
        undo.dms.clear();
        tracing::info!(%name, image = %image.display(), cow = %dest.display(), virt, "dm snapshot active");
        Ok(path)
    }

    fn deactivate_locked(&self, dest: &Path) -> Result<(), StorageError> {
        let ops = &*self.ops;
        let name = dm_device_name(dest);
        for n in [name.clone(), base_name(&name)] {
            if ops.dm_exists(&n)? {
                ops.dm_remove(&n)?;
            }
        }
        // Loop devices normally went with the dm devices (autoclear); detach
        // any left on the COW file by a crash mid-activation. The COW file is
        // this disk's alone, so whatever loop shows it is ours.
        let canonical = dest.canonicalize().ok();
        for l in ops.loop_list()? {
            if l.backing_file == dest || Some(&l.backing_file) == canonical.as_ref() {
                ops.loop_detach(&l.device)?;
            }
        }
        tracing::info!(%name, "dm snapshot inactive");
        Ok(())
    }
}

impl DiskBackend for DmBackend {
    fn name(&self) -> &'static str {
        "dm"
    }

    /// Makes the sparse COW file at `dest` (plus `<dest>.dmsize`); when
    /// `size_bytes` exceeds the image, also grows the filesystem once
    /// through a temporary activation.
    fn create(
        &self,
        image_rootfs: &Path,
        dest: &Path,
        size_bytes: u64,
    ) -> Result<(), StorageError> {
        let _serial = serialised();
        self.create_locked(image_rootfs, dest, size_bytes)
    }

    /// Deactivates if needed, then deletes the COW file and size record.
    fn remove(&self, dest: &Path) -> Result<(), StorageError> {
        let _serial = serialised();
        self.deactivate_locked(dest)?;
        remove_if_exists(dest)?;
        remove_if_exists(&record_path(dest))
    }

    fn activate(&self, image_rootfs: &Path, dest: &Path) -> Result<PathBuf, StorageError> {
        let _serial = serialised();
        self.activate_locked(image_rootfs, dest)
    }

    fn deactivate(&self, dest: &Path) -> Result<(), StorageError> {
        let _serial = serialised();
        self.deactivate_locked(dest)
    }

    fn leftovers(&self) -> Vec<String> {
        let _serial = serialised();
        crate::leftovers::leftovers_with(&*self.ops, &self.state_dir, true)
    }
}

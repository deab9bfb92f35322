//! Applies OCI/docker image layers (uncompressed tar streams), in order,
//! into a staging root: the rootfs an image is finalized from.
//!
//! Layers are hostile input. Every entry's name is normalized lexically
//! ([`entrypath`]), its parent directory is resolved *inside* the root with
//! `openat2(RESOLVE_IN_ROOT)` ([`inroot`]), and the final component is
//! created with *at calls on that parent fd that never follow it
//! ([`create`]), so no entry can touch anything outside the root, whatever
//! symlinks earlier entries planted. Whiteouts ([`whiteout`]) and
//! replacements remove with [`remove`], which never descends a symlink.

pub(crate) mod copy;
mod create;
mod entrypath;
pub(crate) mod inroot;
mod meta;
mod remove;
mod whiteout;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::SFlag;
use nix::sys::time::TimeSpec;
use tracing::debug;

use crate::ImageError;
use entrypath::RelPath;
use inroot::Root;
use meta::read_meta;
use remove::{is_dir, remove_all_at, stat_at};

/// Copy buffer for file contents: large enough for few syscalls, small
/// enough to never matter for memory.
const COPY_BUF: usize = 256 * 1024;

/// What one layer did, for logs and progress.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerStats {
    /// Entries read (whiteouts included, PAX global headers not).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
    /// Whiteout and opaque-directory markers applied.
    pub whiteouts: u64,
}

/// Applies layers into one staging root.
pub struct Flattener {
    root_path: PathBuf,
    root: Root,
    buf: Vec<u8>,
    /// Directory mtimes, applied in [`Flattener::finish`] because entries
    /// created inside a directory later change its mtime again.
    dir_mtimes: BTreeMap<Vec<u8>, TimeSpec>,
    /// Keys of the paths the current layer wrote and of their ancestors:
    /// what an opaque directory keeps.
    touched: HashSet<Vec<u8>>,
}

impl Flattener {
    /// `root` must be an existing, empty directory that only the daemon
    /// can reach (it is the staging area).
    pub fn new(root: &Path) -> Result<Self, ImageError> {
        let fd = Root::open(root).map_err(|(action, e)| ImageError::io(action, root, e))?;
        Ok(Flattener {
            root_path: root.to_path_buf(),
            root: fd,
            buf: vec![0; COPY_BUF],
            dir_mtimes: BTreeMap::new(),
            touched: HashSet::new(),
        })
    }

    /// Applies one uncompressed layer tar. `layer` names it in errors
    /// (e.g. `sha256:ab12…`); `cancelled` is polled between entries.
    pub fn apply_layer(
        &mut self,
        layer: impl Read,
        label: &str,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<LayerStats, ImageError> {
        self.touched.clear();
        let mut stats = LayerStats::default();
        let mut archive = tar::Archive::new(layer);
        let entries = archive
            .entries()
            .map_err(|e| bad_entry(label, b"", format!("cannot read the layer: {e}")))?;
        // The last name read, so a broken stream says where it broke.
        let mut last = Vec::new();
        for entry in entries {
            if cancelled() {
                return Err(ImageError::Cancelled);
            }
            let mut entry = entry.map_err(|e| {
                let which = if last.is_empty() {
                    "first entry"
                } else {
                    "entry after this one"
                };
                bad_entry(label, &last, format!("cannot read the {which}: {e}"))
            })?;
            last = entry.path_bytes().into_owned();
            self.apply_entry(&mut entry, &last, &mut stats)
                .map_err(|reason| bad_entry(label, &last, reason))?;
        }
        debug!(layer = label, root = %self.root_path.display(), ?stats, "layer applied");
        Ok(stats)
    }

    /// Sets what must come last (directory mtimes).
    pub fn finish(self) -> Result<(), ImageError> {
        for (key, mtime) in &self.dir_mtimes {
            let rel = RelPath::parse(key).map_err(|reason| bad_entry("(finish)", key, reason))?;
            let fd = match self
                .root
                .open_dir(&rel, OFlag::O_RDONLY | OFlag::O_NOFOLLOW)
            {
                Ok(fd) => fd,
                // Replaced by a non-directory or removed by a later layer in
                // a way the bookkeeping did not see: nothing to date.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => {
                    debug!(dir = %String::from_utf8_lossy(key), "directory gone before finish");
                    continue;
                }
                Err(e) => {
                    return Err(ImageError::io(
                        "open directory to set its mtime",
                        self.root_path.join(String::from_utf8_lossy(key).as_ref()),
                        e.into(),
                    ))
                }
            };
            meta::set_mtime_fd(fd.as_fd(), mtime)
                .map_err(|reason| bad_entry("(finish)", key, reason))?;
        }
        Ok(())
    }

    /// One entry; the error is the reason, the caller adds layer and name.
    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        stats: &mut LayerStats,
    ) -> Result<(), String> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            debug!("skipping a PAX global header");
            return Ok(());
        }
        let path = RelPath::parse(raw)?;
        stats.entries += 1;
        let Some((parent, name)) = path.split_last() else {
            return self.apply_root(entry);
        };
        match whiteout::classify(name)? {
            whiteout::Kind::None => {}
            whiteout::Kind::Remove(target) => {
                stats.whiteouts += 1;
                return self.whiteout(&parent, target);
            }
            whiteout::Kind::Opaque => {
                stats.whiteouts += 1;
                return self.opaque(&parent);
            }
            whiteout::Kind::Meta => {
                debug!(entry = %String::from_utf8_lossy(raw), "ignoring aufs metadata entry");
                return Ok(());
            }
        }
        if kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse() {
            stats.bytes += self.file(entry, &parent, name)?;
        } else if kind.is_dir() {
            self.dir(entry, &parent, name)?;
        } else if kind.is_symlink() {
            self.symlink(entry, &parent, name)?;
        } else if kind.is_hard_link() {
            self.hardlink(entry, &parent, name)?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            self.node(entry, &parent, name)?;
        } else {
            return Err(format!(
                "entry type {kind:?} ({:?}) is not allowed in an image layer",
                char::from(kind.as_byte())
            ));
        }
        self.touch(&path);
        Ok(())
    }

    /// `./` itself: only a directory entry makes sense; it sets the root's
    /// metadata.
    fn apply_root<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), String> {
        if !entry.header().entry_type().is_dir() {
            return Err("the entry would replace the root directory".into());
        }
        let meta = read_meta(entry)?;
        let fd = self
            .root
            .open_dir(&RelPath::root(), OFlag::O_RDONLY)
            .map_err(|e| format!("cannot open the root: {e}"))?;
        create::dir_fd(&fd, &meta)?;
        self.dir_mtimes.insert(Vec::new(), meta.mtime);
        self.touch(&RelPath::root());
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &RelPath,
        name: &[u8],
    ) -> Result<u64, String> {
        let meta = read_meta(entry)?;
        let (dir, _) = self.free_slot(parent, name, false)?;
        create::file(dir.as_fd(), name, &meta, entry, &mut self.buf)
    }

    fn dir<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &RelPath,
        name: &[u8],
    ) -> Result<(), String> {
        let meta = read_meta(entry)?;
        let (dir, kept) = self.free_slot(parent, name, true)?;
        create::dir(dir.as_fd(), name, &meta, kept)?;
        self.dir_mtimes.insert(parent.join(name).key(), meta.mtime);
        Ok(())
    }

    fn symlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &RelPath,
        name: &[u8],
    ) -> Result<(), String> {
        let meta = read_meta(entry)?;
        let target = entry
            .link_name_bytes()
            .ok_or("symlink without a target")?
            .into_owned();
        let (dir, _) = self.free_slot(parent, name, false)?;
        create::symlink(dir.as_fd(), name, &target, &meta)
    }

    /// A hard link's target is resolved inside the root like any path, so
    /// it names an in-root entry or nothing.
    fn hardlink<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &RelPath,
        name: &[u8],
    ) -> Result<(), String> {
        let raw = entry
            .link_name_bytes()
            .ok_or("hard link without a target")?
            .into_owned();
        let target = RelPath::parse(&raw).map_err(|e| format!("link target: {e}"))?;
        let (tparent, tname) = target.split_last().ok_or("link target is the root")?;
        let tdir = self
            .root
            .dir_existing(&tparent)?
            .ok_or("link target missing")?;
        let tstat = stat_at(tdir.as_fd(), tname)
            .map_err(|e| format!("link target: {e}"))?
            .ok_or("link target missing")?;
        if is_dir(&tstat) {
            return Err("link target is a directory".into());
        }
        let dir = self.root.dir_creating(parent)?;
        let existing =
            stat_at(dir.as_fd(), name).map_err(|e| format!("cannot look at the entry: {e}"))?;
        if let Some(st) = existing {
            if (st.st_dev, st.st_ino) == (tstat.st_dev, tstat.st_ino) {
                return Ok(()); // already that very file
            }
            self.remove(dir.as_fd(), parent, name)?;
        }
        create::hardlink(tdir.as_fd(), tname, dir.as_fd(), name)
    }

    fn node<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        parent: &RelPath,
        name: &[u8],
    ) -> Result<(), String> {
        let meta = read_meta(entry)?;
        let header = entry.header();
        let kind = header.entry_type();
        let (sflag, dev) = if kind.is_fifo() {
            (SFlag::S_IFIFO, 0)
        } else {
            let major = header
                .device_major()
                .map_err(|e| format!("bad device major: {e}"))?
                .ok_or("device without a major number")?;
            let minor = header
                .device_minor()
                .map_err(|e| format!("bad device minor: {e}"))?
                .ok_or("device without a minor number")?;
            let sflag = if kind.is_character_special() {
                SFlag::S_IFCHR
            } else {
                SFlag::S_IFBLK
            };
            (sflag, libc::makedev(major, minor))
        };
        let (dir, _) = self.free_slot(parent, name, false)?;
        create::node(dir.as_fd(), name, sflag, dev, &meta)
    }

    /// `.wh.NAME`: removes NAME (recursively) if it is there.
    fn whiteout(&mut self, parent: &RelPath, target: &[u8]) -> Result<(), String> {
        let Some(dir) = self.root.dir_existing(parent)? else {
            return Ok(()); // no parent, nothing to hide
        };
        self.remove(dir.as_fd(), parent, target)
    }

    /// `.wh..wh..opq`: the directory keeps only what this layer writes.
    fn opaque(&mut self, dir: &RelPath) -> Result<(), String> {
        let fd = self.root.dir_creating(dir)?;
        self.touch(dir);
        let mut removed = Vec::new();
        whiteout::make_opaque(fd.as_fd(), dir, &self.touched, &mut removed)
            .map_err(|e| format!("cannot clear the opaque directory: {e}"))?;
        for path in removed {
            self.forget(&path);
        }
        Ok(())
    }

    /// Resolves the parent (creating it if missing) and frees `name` in it:
    /// whatever is there is removed, except a directory when `keep_dir`.
    /// Returns the parent fd and whether a directory was kept.
    fn free_slot(
        &mut self,
        parent: &RelPath,
        name: &[u8],
        keep_dir: bool,
    ) -> Result<(OwnedFd, bool), String> {
        let dir = self.root.dir_creating(parent)?;
        let existing =
            stat_at(dir.as_fd(), name).map_err(|e| format!("cannot look at the entry: {e}"))?;
        match existing {
            None => Ok((dir, false)),
            Some(st) if keep_dir && is_dir(&st) => Ok((dir, true)),
            Some(_) => {
                self.remove(dir.as_fd(), parent, name)?;
                Ok((dir, false))
            }
        }
    }

    fn remove(&mut self, dir: BorrowedFd, parent: &RelPath, name: &[u8]) -> Result<(), String> {
        remove_all_at(dir, name).map_err(|e| format!("cannot remove what is there: {e}"))?;
        self.forget(&parent.join(name));
        Ok(())
    }

    /// Drops recorded directory mtimes at and below a removed path.
    fn forget(&mut self, path: &RelPath) {
        let key = path.key();
        self.dir_mtimes.remove(&key);
        let mut prefix = key;
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        let doomed: Vec<Vec<u8>> = self
            .dir_mtimes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.dir_mtimes.remove(&k);
        }
    }

    fn touch(&mut self, path: &RelPath) {
        self.touched.extend(path.keys_with_ancestors());
    }
}

fn bad_entry(layer: &str, entry: &[u8], reason: String) -> ImageError {
    ImageError::BadLayerEntry {
        layer: layer.to_string(),
        entry: String::from_utf8_lossy(entry).into_owned(),
        reason,
    }
}

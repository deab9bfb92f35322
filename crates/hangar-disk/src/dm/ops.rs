//! The narrow seam between the dm backend and the host: every loop and
//! device-mapper operation the backend performs goes through [`DmOps`], so
//! the multi-step logic (ordering, rollback, serialisation) is unit-tested
//! against a recording fake (youki's `Syscall` pattern) on hosts without
//! device-mapper, and runs for real through [`super::real::HostOps`].

use std::path::{Path, PathBuf};

use crate::StorageError;

/// One attached loop device, as `losetup -J` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LoopInfo {
    /// `/dev/loopN`.
    pub device: String,
    /// The file behind it (" (deleted)" suffix stripped).
    pub backing_file: PathBuf,
    /// Autoclear is set and something (a dm device) holds it open: the
    /// kernel detaches it by itself when the holder goes away, so it is not
    /// a leftover on its own.
    pub held_with_autoclear: bool,
}

/// Loop and device-mapper operations, one host command each.
pub(crate) trait DmOps: Send + Sync {
    /// Attaches `file` to a free loop device and returns `/dev/loopN`.
    fn loop_attach(&self, file: &Path, read_only: bool) -> Result<String, StorageError>;
    /// Detaches a loop device. If it is still open (held by a dm device)
    /// the kernel only sets autoclear and detaches it when the last holder
    /// closes it (`losetup -d` is lazy since Linux 3.7).
    fn loop_detach(&self, device: &str) -> Result<(), StorageError>;
    /// Creates dm device `name` with a (possibly multi-line) table.
    fn dm_create(&self, name: &str, table: &str) -> Result<(), StorageError>;
    /// Removes dm device `name`; fails if it is open (VMM still running).
    fn dm_remove(&self, name: &str) -> Result<(), StorageError>;
    /// Whether dm device `name` exists.
    fn dm_exists(&self, name: &str) -> Result<bool, StorageError>;
    /// Checks and grows the ext4 filesystem on `device` to fill it.
    fn grow_ext4(&self, device: &Path) -> Result<(), StorageError>;
    /// Names of all dm devices.
    fn dm_list(&self) -> Result<Vec<String>, StorageError>;
    /// All attached loop devices.
    fn loop_list(&self) -> Result<Vec<LoopInfo>, StorageError>;
}

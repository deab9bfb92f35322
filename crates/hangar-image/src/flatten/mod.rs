//! Applies OCI/docker image layers (uncompressed tar streams), in order,
//! into a staging root: the rootfs an image is finalized from.
//!
//! PLACEHOLDER: the safe implementation (openat2 RESOLVE_IN_ROOT, whiteouts,
//! hard links, devices, xattrs, mtimes) replaces this file.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::ImageError;

/// What one layer did, for logs and progress.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

/// Applies layers into one staging root.
pub struct Flattener {
    root: PathBuf,
}

impl Flattener {
    /// `root` must be an existing, empty directory that only the daemon
    /// can reach (it is the staging area).
    pub fn new(root: &Path) -> Result<Self, ImageError> {
        Ok(Flattener {
            root: root.to_path_buf(),
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
        let _ = (label, cancelled);
        let mut ar = tar::Archive::new(layer);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.unpack(&self.root)
            .map_err(|e| ImageError::io("unpack layer into", &self.root, e))?;
        Ok(LayerStats::default())
    }

    /// Sets what must come last (directory mtimes).
    pub fn finish(self) -> Result<(), ImageError> {
        Ok(())
    }
}

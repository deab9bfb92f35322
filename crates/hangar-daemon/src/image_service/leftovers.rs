//! What a daemon killed during an image pull or registration leaves, found
//! and removed at the next start: the `.pull-*`/`.register-*` work dirs in
//! the images dir, image dirs no store row points at (moved into place
//! just before the row was written), and crashed builds in the image
//! cache. Each is swept with `hangar_host::sweep`: processes still working
//! in it killed, mounts inside it unmounted, then removed without ever
//! crossing a mount.

use std::collections::HashSet;

use tracing::{info, warn};

use super::ImageService;

/// Prefix of the dir a pull builds its image in.
pub(super) const PULL_PREFIX: &str = ".pull-";
/// Prefix of the dir an upload or registration builds its image in.
pub(super) const REGISTER_PREFIX: &str = ".register-";
/// Prefixes of the work dirs pulls and registrations make in the images
/// dir before moving a finished image into place: what the sweep removes.
const WORK_DIR_PREFIXES: [&str; 2] = [PULL_PREFIX, REGISTER_PREFIX];

/// A fresh work dir name under `images_dir` with one of the prefixes above.
pub(super) fn work_dir(images_dir: &std::path::Path, prefix: &str) -> std::path::PathBuf {
    images_dir.join(format!(
        "{prefix}{}",
        hex::encode(rand::random::<[u8; 6]>())
    ))
}

impl ImageService {
    /// Removes the leftovers of interrupted pulls and registrations; returns
    /// how many dirs were removed. Runs before the API serves, so no pull
    /// or registration of this daemon is running.
    pub fn sweep_leftovers(&self) -> usize {
        let images_dir = self.infra.config.images_dir();
        // By digest, the name of every image dir (`store_image`), not by the
        // stored path: a state dir reached under another spelling (moved,
        // or through a symlink) must not make every image look orphaned.
        let stored: HashSet<String> = match self.infra.store.list_images() {
            Ok(images) => images
                .into_iter()
                .map(|i| i.digest.trim_start_matches("sha256:").to_string())
                .collect(),
            Err(e) => {
                // Without the rows, no image dir can be told orphaned.
                warn!(error = %e, "cannot list images; leftover image dirs are not swept");
                return 0;
            }
        };
        let Ok(entries) = std::fs::read_dir(&images_dir) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            let work_dir = WORK_DIR_PREFIXES.iter().any(|p| name.starts_with(p));
            let orphan = !name.starts_with('.') && !stored.contains(&name);
            if !work_dir && !orphan {
                continue;
            }
            match hangar_host::sweep::sweep_dir(&path) {
                Ok(swept) => {
                    info!(dir = %path.display(), killed = swept.killed, unmounted = swept.unmounted, "removed what an interrupted image pull or registration left");
                    removed += 1;
                }
                Err(err) => {
                    warn!(dir = %path.display(), error = %err, "cannot remove what an interrupted image pull or registration left")
                }
            }
        }
        removed + hangar_image::sweep_crashed_builds(&self.infra.config.image_cache_dir)
    }
}

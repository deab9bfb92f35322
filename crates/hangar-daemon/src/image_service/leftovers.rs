//! What a daemon killed during an image pull or registration leaves, found
//! and removed at the next start: the `.pull-*`/`.register-*` work dirs in
//! the images dir, image dirs no store row points at (moved into place
//! just before the row was written), and crashed builds in the image
//! cache. Each is swept with `hangar_host::sweep`: processes still working
//! in it killed, mounts inside it unmounted, then removed without ever
//! crossing a mount.

use std::collections::HashSet;
use std::path::PathBuf;

use tracing::{info, warn};

use super::ImageService;

/// Prefixes of the work dirs pulls and registrations make in the images
/// dir before moving a finished image into place.
pub const WORK_DIR_PREFIXES: [&str; 2] = [".pull-", ".register-"];

impl ImageService {
    /// Removes the leftovers of interrupted pulls and registrations; returns
    /// how many dirs were removed. Runs before the API serves, so no pull
    /// or registration of this daemon is running.
    pub fn sweep_leftovers(&self) -> usize {
        let images_dir = self.infra.config.images_dir();
        let stored: HashSet<PathBuf> = match self.infra.store.list_images() {
            Ok(images) => images.into_iter().map(|i| PathBuf::from(i.dir)).collect(),
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
            let orphan = !name.starts_with('.') && !stored.contains(&path);
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

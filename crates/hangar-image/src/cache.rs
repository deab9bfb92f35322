//! A cache of built images keyed by [`Recipe::cache_key`], shared by
//! concurrent builders through a per-key lock file (flock).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bootstrap::{build_bootstrap_image, remove_path};
use crate::process::{report, ProgressFn};
use crate::{ImageError, ImageManifest, Recipe};

/// Where the daemon keeps built images by default.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/hangar/images";

/// Returns the image for `recipe` in `out_dir`: copied from
/// `cache_dir/<key>` when present, built (and cached) otherwise.
pub async fn build_or_reuse_cached(
    recipe: &Recipe,
    cache_dir: &Path,
    out_dir: &Path,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<ImageManifest, ImageError> {
    let key = recipe.cache_key();
    let cached = cache_dir.join(&key);
    // Root's, like the state dir: 0700 dirs, 0600 files.
    hangar_host::private::create_private_dir(cache_dir)
        .map_err(|e| ImageError::io("create", cache_dir, e))?;
    let lock_path = cache_dir.join(format!("{key}.lock"));
    let _lock = lock_exclusive(&lock_path, progress, cancel).await?;

    if !cached.join(crate::manifest::MANIFEST_FILE).exists() {
        // Leftovers of builders that died while holding this lock.
        clear_stale_builds(cache_dir, &key);
        let tmp = cache_dir.join(format!(".build-{key}-{}", std::process::id()));
        let image = tmp.join("image");
        let result =
            build_bootstrap_image(recipe, &tmp.join("work"), &image, progress, cancel).await;
        let result = result.and_then(|m| {
            let _ = remove_path(&cached);
            std::fs::rename(&image, &cached)
                .map_err(|e| ImageError::io("move built image into", &cached, e))?;
            Ok(m)
        });
        let _ = remove_path(&tmp);
        result?;
    }
    report(
        progress,
        "cache",
        format!("copying image {key:.12} from cache"),
    );
    copy_image(&cached, out_dir)
}

/// Leftovers of builders of `key` that died while holding its lock (the
/// caller holds it now). A builder killed with `kill -9` may leave
/// processes working in its tree and `/proc`, `/sys` mounted inside it:
/// each is swept (killed, unmounted, removed without crossing a mount).
fn clear_stale_builds(cache_dir: &Path, key: &str) -> usize {
    let prefix = format!(".build-{key}-");
    let mut swept = 0;
    if let Ok(entries) = std::fs::read_dir(cache_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                match hangar_host::sweep::sweep_dir(&e.path()) {
                    Ok(_) => swept += 1,
                    Err(err) => {
                        tracing::warn!(dir = %e.path().display(), error = %err, "cannot remove a crashed build")
                    }
                }
            }
        }
    }
    swept
}

/// At daemon start: sweeps the build dirs of every recipe whose lock no
/// builder holds (a daemon sharing the cache that is building right now
/// keeps its own). Returns how many build dirs were removed.
pub fn sweep_crashed_builds(cache_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(cache_dir) else {
        return 0;
    };
    let mut keys: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(".build-")?;
            // `.build-<key>-<pid>`
            Some(rest.rsplit_once('-')?.0.to_string())
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut swept = 0;
    for key in keys {
        let lock_path = cache_dir.join(format!("{key}.lock"));
        if let Ok(Some(_lock)) = try_lock_exclusive(&lock_path) {
            swept += clear_stale_builds(cache_dir, &key);
        }
    }
    swept
}

/// The exclusive flock on `path` if no one holds it (held until the File
/// drops). The lock file is made 0600.
fn try_lock_exclusive(path: &Path) -> std::io::Result<Option<File>> {
    let file = hangar_host::private::append_private_file(path)?;
    // SAFETY: flock on a valid, open file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(Some(file));
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        Ok(None)
    } else {
        Err(err)
    }
}

/// Waits for the exclusive flock on `path` (held until the File drops),
/// giving up on cancel.
async fn lock_exclusive(
    path: &Path,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<File, ImageError> {
    let mut waited = false;
    loop {
        if let Some(file) = try_lock_exclusive(path).map_err(|e| ImageError::io("lock", path, e))? {
            return Ok(file);
        }
        if !waited {
            report(progress, "wait", "another build of this image is running");
            waited = true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(ImageError::Cancelled),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Copies an image directory's files (reflink when the filesystem can,
/// sparse otherwise). On error removes what it copied.
pub fn copy_image(src: &Path, out_dir: &Path) -> Result<ImageManifest, ImageError> {
    let manifest = ImageManifest::load(src)?;
    let created = !out_dir.exists();
    hangar_host::private::create_private_dir(out_dir)
        .map_err(|e| ImageError::io("create", out_dir, e))?;
    let mut names: Vec<&str> = vec![&manifest.kernel, &manifest.rootfs];
    if let Some(i) = &manifest.initrd {
        names.push(i);
    }
    let mut copied: Vec<PathBuf> = Vec::new();
    let result = (|| {
        for name in names {
            let dst = out_dir.join(name);
            copy_file(&src.join(name), &dst)?;
            copied.push(dst);
        }
        manifest.save(out_dir)
    })();
    if let Err(e) = result {
        if created {
            let _ = remove_path(out_dir);
        } else {
            for p in copied {
                let _ = remove_path(&p);
            }
        }
        return Err(e);
    }
    Ok(manifest)
}

/// `cp --reflink=auto --sparse=always SRC DST`.
pub(crate) fn copy_file(src: &Path, dst: &Path) -> Result<(), ImageError> {
    // Pre-created private: cp (without -p) writes into an existing file
    // and keeps its mode, rather than copying the source's.
    hangar_host::private::create_private_file(dst).map_err(|e| ImageError::io("create", dst, e))?;
    hangar_host::Tool::new("cp")
        .args(["--reflink=auto", "--sparse=always", "--"])
        .arg(src)
        .arg(dst)
        .run_blocking()
        .map(drop)
        .map_err(|e| {
            // A copy that failed half way (a full disk) leaves no partial
            // file, and one that never ran no empty pre-created one.
            let _ = std::fs::remove_file(dst);
            ImageError::tool("cp", "coreutils")(e)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_api::Progress;
    use std::sync::Mutex;

    #[test]
    fn crashed_builds_are_swept_unless_a_builder_holds_their_lock() {
        let cache = tempfile::tempdir().expect("tempdir");
        let crashed = cache.path().join(".build-keya-4242/work/tree/etc");
        let building = cache.path().join(".build-keyb-4343/work/tree/etc");
        for d in [&crashed, &building] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::write(d.join("f"), "x").expect("write");
        }
        // A live builder of keyb holds its lock.
        let _held = try_lock_exclusive(&cache.path().join("keyb.lock")).expect("lock");

        assert_eq!(sweep_crashed_builds(cache.path()), 1);

        assert!(!cache.path().join(".build-keya-4242").exists());
        assert!(building.join("f").exists(), "a locked build was swept");
    }

    fn fake_image(dir: &Path, recipe_key: &str) -> ImageManifest {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join("vmlinux"), b"\x7fELF\x02kernel").expect("write");
        std::fs::write(dir.join("initrd.img"), b"initrd").expect("write");
        std::fs::File::create(dir.join("rootfs.ext4"))
            .and_then(|f| f.set_len(64 << 20))
            .expect("rootfs");
        let m = ImageManifest::new(
            "bootstrap:debian-12",
            "vmlinux",
            Some("initrd.img"),
            "rootfs.ext4",
            64 << 20,
            Some(recipe_key.into()),
        );
        m.save(dir).expect("save");
        m
    }

    #[tokio::test]
    async fn cached_image_is_copied_without_building() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = root.path().join("cache");
        let mut recipe = Recipe::default_debian12();
        // A mirror that cannot work: a build attempt would fail.
        recipe.mirror = "http://127.0.0.1:9/debian".into();
        let want = fake_image(&cache.join(recipe.cache_key()), &recipe.cache_key());
        let out = root.path().join("out");
        let phases = Mutex::new(Vec::new());
        let cb = |p: Progress| phases.lock().expect("lock").push(p.phase);

        let got = build_or_reuse_cached(&recipe, &cache, &out, &cb, &CancellationToken::new())
            .await
            .expect("cache hit");

        assert_eq!(got, want);
        assert_eq!(ImageManifest::load(&out).expect("load"), want);
        assert_eq!(
            std::fs::read(out.join("initrd.img")).expect("read"),
            b"initrd"
        );
        assert_eq!(
            std::fs::metadata(out.join("rootfs.ext4"))
                .expect("meta")
                .len(),
            64 << 20
        );
        let phases = phases.into_inner().expect("lock");
        assert!(phases.contains(&"cache".to_string()));
        assert!(!phases.contains(&"debootstrap".to_string()));
    }

    #[tokio::test]
    async fn cache_miss_with_cancel_leaves_no_partial_dirs() {
        let root = tempfile::tempdir().expect("tempdir");
        let cache = root.path().join("cache");
        let recipe = Recipe::default_debian12();
        let out = root.path().join("out");
        let cancel = CancellationToken::new();
        cancel.cancel();
        let cb = |_: Progress| {};

        let err = build_or_reuse_cached(&recipe, &cache, &out, &cb, &cancel)
            .await
            .expect_err("cancelled");

        assert!(matches!(err, ImageError::Cancelled), "{err}");
        assert!(!out.exists());
        let left: Vec<_> = std::fs::read_dir(&cache)
            .expect("cache dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[tokio::test]
    async fn waiting_for_a_held_lock_can_be_cancelled() {
        let root = tempfile::tempdir().expect("tempdir");
        let lock = root.path().join("k.lock");
        let cb = |_: Progress| {};
        let held = lock_exclusive(&lock, &cb, &CancellationToken::new())
            .await
            .expect("first lock");
        let cancel = CancellationToken::new();
        // Cancelled once it reports that it waits for the held lock.
        let on_wait = {
            let cancel = cancel.clone();
            move |p: Progress| {
                if p.phase == "wait" {
                    cancel.cancel();
                }
            }
        };

        let err = lock_exclusive(&lock, &on_wait, &cancel)
            .await
            .expect_err("blocked");

        assert!(matches!(err, ImageError::Cancelled));
        drop(held);
    }
}

//! Registering user files as a named image. Any client uploads them
//! ([`ImageService::register_upload`]): the CLI opened them as its user,
//! so the kernel already decided what that user may read. Only root
//! clients may name host paths ([`ImageService::register_image`]), since
//! the daemon opens those with its own rights (issue 8, item 1).

use std::time::Duration;

use axum::body::Body;
use hangar_api::{ImageInfo, RegisterImageRequest, UploadImageQuery};
use hangar_image::{FileDigests, INITRD_FILE, ROOTFS_FILE, UPLOADED_KERNEL_FILE};

use super::upload::{self, Part, StagingDir};
use super::ImageService;
use crate::api::peer::PeerCred;
use crate::blocking::off_runtime;
use crate::error::{DaemonError, Result};

/// What a non-root client that names host paths is told.
pub const PATHS_ARE_ROOT_ONLY: &str = "registering an image from host paths is for root only (the daemon would open them with its own rights); upload the files instead: `hangar image register` does that (POST /v1/images/upload)";

impl ImageService {
    /// Registers the files a client streams in `body` (see
    /// [`upload::receive`] for the format) as image `q.name`. Sizes are
    /// checked against the `[images]` limits before a byte is read; an
    /// upload that fails or is dropped leaves no file and no row.
    pub async fn register_upload(&self, q: UploadImageQuery, body: Body) -> Result<ImageInfo> {
        hangar_api::name::validate_name("image", &q.name).map_err(DaemonError::Invalid)?;
        let limits = &self.infra.config.images;
        let (max_kernel, max_initrd, max_rootfs) = limits.max_bytes();
        check_size("kernel", q.kernel_bytes, max_kernel, "max_kernel_size")?;
        if let Some(n) = q.initrd_bytes {
            check_size("initrd", n, max_initrd, "max_initrd_size")?;
        }
        check_size("rootfs", q.rootfs_bytes, max_rootfs, "max_rootfs_size")?;
        self.refuse_taken_name(&q.name)?;

        let staging = StagingDir::create(&self.infra.config.images_dir())?;
        let dir = staging.path().to_path_buf();
        let mut parts = vec![Part {
            what: "kernel",
            path: dir.join(UPLOADED_KERNEL_FILE),
            bytes: q.kernel_bytes,
        }];
        if let Some(bytes) = q.initrd_bytes {
            parts.push(Part {
                what: "initrd",
                path: dir.join(INITRD_FILE),
                bytes,
            });
        }
        parts.push(Part {
            what: "rootfs",
            path: dir.join(ROOTFS_FILE),
            bytes: q.rootfs_bytes,
        });
        let idle = Duration::from_secs(limits.upload_idle_timeout_secs);
        let mut sums = upload::receive(body, &parts, idle, &self.infra.shutdown)
            .await?
            .into_iter();
        let kernel = sums.next().unwrap_or_default();
        let initrd = q.initrd_bytes.and_then(|_| sums.next());
        let files = FileDigests {
            kernel,
            initrd,
            rootfs: sums.next().unwrap_or_default(),
        };

        self.import_and_store(
            &q.name,
            staging,
            "cannot register the uploaded image",
            move || hangar_image::finish_upload(&dir, files, "register"),
        )
        .await
    }

    /// Registers files at host paths: root clients only.
    pub async fn register_image(
        &self,
        req: RegisterImageRequest,
        peer: PeerCred,
    ) -> Result<ImageInfo> {
        if !peer.is_root() {
            return Err(DaemonError::invalid(PATHS_ARE_ROOT_ONLY));
        }
        hangar_api::name::validate_name("image", &req.name).map_err(DaemonError::Invalid)?;
        for (what, p) in [
            ("kernel", Some(&req.kernel)),
            ("rootfs", Some(&req.rootfs)),
            ("initrd", req.initrd.as_ref()),
        ] {
            if let Some(p) = p {
                let path = std::path::Path::new(p);
                if !path.is_absolute() {
                    return Err(DaemonError::invalid(format!(
                        "{what} path {p:?} must be absolute (the daemon resolves paths itself)"
                    )));
                }
                if !path.is_file() {
                    return Err(DaemonError::invalid(format!(
                        "{what} file {p} does not exist or is not a regular file"
                    )));
                }
            }
        }
        self.refuse_taken_name(&req.name)?;
        let staging = StagingDir::create(&self.infra.config.images_dir())?;
        let dir = staging.path().to_path_buf();
        let name = req.name.clone();
        self.import_and_store(&name, staging, "cannot register image", move || {
            hangar_image::import_files(
                std::path::Path::new(&req.kernel),
                req.initrd.as_deref().map(std::path::Path::new),
                std::path::Path::new(&req.rootfs),
                &dir,
                "register",
            )
        })
        .await
    }

    /// The end both register forms share: `import` turns the staging dir's
    /// files into an image (on the blocking pool), then `store_image` moves
    /// the dir into place and records it, or removes it. The image lock is
    /// taken only for the name check and the move-in: the staging dir is
    /// private, so the slow import need not hold up pulls and removals.
    async fn import_and_store(
        &self,
        name: &str,
        staging: StagingDir,
        context: &str,
        import: impl FnOnce() -> std::result::Result<hangar_image::ImageManifest, hangar_image::ImageError>
            + Send
            + 'static,
    ) -> Result<ImageInfo> {
        let manifest =
            off_runtime("image import", import)
                .await?
                .map_err(|e| DaemonError::ImageRejected {
                    context: context.into(),
                    source: Box::new(e),
                })?;
        let _guard = self.lock.lock().await;
        self.refuse_taken_name(name)?;
        // From here `store_image` owns the directory: it moves it into
        // place or removes it.
        let dir = staging.path().to_path_buf();
        staging.keep();
        crate::crash_point!("register.after_files_written");
        let rec = self.store_image(name, "register", &dir, &manifest).await?;
        crate::crash_point!("register.after_store_row");
        self.image_info(&rec)
    }

    pub(crate) fn refuse_taken_name(&self, name: &str) -> Result<()> {
        match self.infra.store.get_image(name) {
            Ok(existing) if existing.name == name => Err(DaemonError::conflict(format!(
                "an image named {name:?} already exists; remove it first with `hangar image rm {name}`"
            ))),
            _ => Ok(()),
        }
    }
}

/// Refuses an empty part or one over its limit, naming the config key.
fn check_size(what: &str, bytes: u64, max: u64, key: &str) -> Result<()> {
    if bytes == 0 {
        return Err(DaemonError::invalid(format!("the {what} file is empty")));
    }
    if bytes > max {
        return Err(DaemonError::invalid(format!(
            "the {what} is {bytes} bytes, more than the {max} that [images] {key} allows"
        )));
    }
    Ok(())
}

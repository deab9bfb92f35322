//! The image service: the daemon's side of images — pulls from the catalog
//! (bootstrap builds, cached by recipe; the catalog itself is
//! `hangar_image::catalog`), registration of user files, listing and
//! removal. Images live in `state_dir/images/<digest hex>/` and are
//! read-only once stored. The service owns the image-ops lock.
//! Registration (uploads, and host paths for root) is in [`register`].

mod bundle;
mod leftovers;
mod oci;
mod register;
mod same_files;
pub(crate) mod upload;

use crate::blocking::{off_runtime, remove_tree};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hangar_api::image::CatalogEntry;
use hangar_api::image::ImageRun;
use hangar_api::{ImageFiles, ImageInfo, OpKind, Operation};
use hangar_image::ImageManifest;
use hangar_ops::OpHandle;
use hangar_store::ImageRecord;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::{DaemonError, Result};
use crate::infra::Infra;
use crate::snapshot_service::SnapshotService;

pub struct ImageService {
    infra: Infra,
    snapshots: Arc<SnapshotService>,
    /// Serialises image pulls, registrations and removals. Taken after a
    /// VM lock, never before one; held across a pull's build and its boot
    /// snapshot prewarm (so the image cannot be removed meanwhile).
    lock: tokio::sync::Mutex<()>,
    /// The built-in catalog merged with `[images] catalogs`, as last read
    /// (at start-up and on each `GET /v1/images/catalog`).
    catalog: std::sync::RwLock<Vec<hangar_image::catalog::Entry>>,
    /// The system's CA roots plus `[images] ca_certs`, for every HTTPS
    /// download (registries, bundles, catalogs).
    trust: hangar_image::sources::Trust,
}

impl ImageService {
    pub fn new(
        infra: Infra,
        snapshots: Arc<SnapshotService>,
        trust: hangar_image::sources::Trust,
    ) -> Self {
        ImageService {
            infra,
            snapshots,
            trust,
            lock: tokio::sync::Mutex::new(()),
            catalog: std::sync::RwLock::new(hangar_image::catalog::builtin()),
        }
    }

    /// The record of a local image, by name or digest.
    pub fn get(&self, name: &str) -> Result<ImageRecord> {
        Ok(self.infra.store.get_image(name)?)
    }

    /// Begins a pull as an operation: an OCI reference from its registry,
    /// or a catalog name (validated first).
    pub fn begin_pull(self: &Arc<Self>, req: hangar_api::PullImageRequest) -> Result<Operation> {
        if hangar_api::image::is_bundle_url(&req.name) {
            return self.begin_bundle_pull(req);
        }
        if hangar_api::image::is_oci_reference(&req.name) {
            return self.begin_oci_pull(req);
        }
        // A catalog entry from a registry takes the user's login (the CLI
        // sends it for such entries); nothing else of a reference's.
        let from_registry = matches!(
            self.catalog_entry(&req.name).map(|e| e.source),
            Some(hangar_image::catalog::Source::Oci { .. })
        );
        if req.as_name.is_some()
            || req.insecure
            || (req.credentials.is_some() && !from_registry)
            || req.sha256.is_some()
        {
            return Err(DaemonError::invalid(format!(
                "{:?} is a catalog name: --name, --insecure and registry credentials are for OCI references (REGISTRY/REPOSITORY[:TAG])",
                req.name
            )));
        }
        let credentials = req.credentials.as_ref().map(oci::credentials).transpose()?;
        let name = req.name.as_str();
        self.resolve_image(name)?;
        let this = self.clone();
        let target = name.to_string();
        Ok(crate::op::begin(
            &self.infra.ops,
            OpKind::ImagePull,
            name,
            move |op| async move {
                let cancel = op.cancel_token().clone();
                let rec = this
                    .pull_image_as(&target, credentials, Some(&op), &cancel)
                    .await?;
                Ok(serde_json::to_value(this.image_info(&rec)?).unwrap_or_default())
            },
        ))
    }

    /// The run settings of an OCI image, by digest (none for other images).
    pub fn run_config(&self, digest: &str) -> Option<hangar_image::sources::RunConfig> {
        let rec = self.infra.store.get_image(digest).ok()?;
        serde_json::from_str::<ImageManifest>(&rec.manifest_json)
            .ok()?
            .run
    }

    pub fn image_info(&self, rec: &ImageRecord) -> Result<ImageInfo> {
        let manifest = serde_json::from_str::<ImageManifest>(&rec.manifest_json).ok();
        Ok(ImageInfo {
            name: rec.name.clone(),
            names: rec.names.clone(),
            digest: rec.digest.clone(),
            source: rec.source.clone(),
            rootfs_bytes: rec.rootfs_bytes,
            created_at: rec.created_at.clone(),
            used_by: self.infra.store.vms_using_image(&rec.digest)?,
            files: manifest
                .as_ref()
                .and_then(|m| m.files.clone())
                .map(|f| ImageFiles {
                    kernel_sha256: f.kernel,
                    initrd_sha256: f.initrd,
                    rootfs_sha256: f.rootfs,
                }),
            run: manifest
                .as_ref()
                .and_then(|m| m.run.clone())
                .map(|r| ImageRun {
                    env: r.env,
                    user: r.user,
                    working_dir: r.working_dir,
                    entrypoint: r.entrypoint,
                    cmd: r.cmd,
                }),
            kernel_from: manifest.as_ref().and_then(|m| m.kernel_from.clone()),
            parent: manifest.as_ref().and_then(|m| m.parent.clone()).map(|p| {
                hangar_api::image::ImageLineage {
                    image: p.image,
                    image_name: p.image_name,
                    vm: p.vm,
                    promoted_at: p.promoted_at,
                }
            }),
        })
    }

    pub fn list_image_infos(&self) -> Result<Vec<ImageInfo>> {
        let recs = self.infra.store.list_images()?;
        recs.iter().map(|r| self.image_info(r)).collect()
    }

    /// Reads the configured catalogs again and merges them after the
    /// built-in one. A catalog that cannot be read is skipped with a
    /// warning (the others, and the built-in, still count).
    pub async fn reload_catalogs(&self) {
        let mut lists = vec![hangar_image::catalog::builtin()];
        for url in &self.infra.config.images.catalogs {
            match hangar_image::catalog::load(url, &self.trust).await {
                Ok(entries) => lists.push(entries),
                Err(e) => {
                    warn!(catalog = %url, error = %crate::error::error_chain(&e), "cannot read an image catalog; skipped")
                }
            }
        }
        let merged = hangar_image::catalog::merge(lists);
        if let Ok(mut c) = self.catalog.write() {
            *c = merged;
        }
    }

    fn catalog_entry(&self, name: &str) -> Option<hangar_image::catalog::Entry> {
        self.catalog
            .read()
            .ok()?
            .iter()
            .find(|e| e.name == name)
            .cloned()
    }

    /// The disk size of a VM of `image` (asked for as `name`) when the
    /// request names none: the catalog entry's for that name, else
    /// `[defaults] disk_size`, either grown to the image's size (a default
    /// never makes a create fail); else the image's own size.
    pub fn default_disk_bytes(&self, name: &str, image: &ImageRecord) -> u64 {
        let configured = match self.infra.config.defaults.disk_size.as_str() {
            "" => None,
            // Checked when the config was loaded.
            s => hangar_config::parse_size(s).ok(),
        };
        self.catalog_entry(name)
            .and_then(|e| e.disk_bytes)
            .or(configured)
            .map_or(image.rootfs_bytes, |d| d.max(image.rootfs_bytes))
    }

    fn catalog_names(&self) -> Vec<String> {
        self.catalog
            .read()
            .map(|c| c.iter().map(|e| e.name.clone()).collect())
            .unwrap_or_default()
    }

    pub fn catalog_entries(&self) -> Vec<CatalogEntry> {
        let entries = self.catalog.read().map(|c| c.clone()).unwrap_or_default();
        entries
            .into_iter()
            .map(|c| CatalogEntry {
                local: self.infra.store.get_image(&c.name).is_ok(),
                source: c.source.describe(),
                name: c.name,
                description: c.description,
                disk_bytes: c.disk_bytes,
            })
            .collect()
    }

    /// Finds a local image by name or digest, or says how to get it.
    pub fn resolve_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        match self.infra.store.get_image(name) {
            Ok(rec) => Ok(Some(rec)),
            Err(hangar_store::StoreError::NotFound { .. }) => {
                if self.catalog_entry(name).is_some() {
                    Ok(None)
                } else {
                    Err(DaemonError::not_found(format!(
                        "no image named {name:?} locally or in the catalog ({}); see `hangar image ls` or register one with `hangar image register`",
                        self.catalog_names().join(", ")
                    )))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Makes a catalog image local (building it on first use) and returns
    /// its record. Pulls of any image are serialised by the image lock, so
    /// concurrent creates build the default image once.
    pub async fn pull_image(
        &self,
        name: &str,
        op: Option<&OpHandle>,
        cancel: &CancellationToken,
    ) -> Result<ImageRecord> {
        self.pull_image_as(name, None, op, cancel).await
    }

    /// [`Self::pull_image`] with the user's registry login, for a catalog
    /// entry that comes from a registry (`image pull NAME`; `vm create`
    /// pulls without one).
    async fn pull_image_as(
        &self,
        name: &str,
        credentials: Option<hangar_image::sources::oci::Credentials>,
        op: Option<&OpHandle>,
        cancel: &CancellationToken,
    ) -> Result<ImageRecord> {
        if let Ok(rec) = self.infra.store.get_image(name) {
            return Ok(rec);
        }
        let entry = self.catalog_entry(name).ok_or_else(|| {
            DaemonError::not_found(format!("no image named {name:?} in the catalog"))
        })?;
        let item = match &entry.source {
            hangar_image::catalog::Source::Recipe(recipe) => hangar_image::catalog::find(recipe)
                .ok_or_else(|| DaemonError::not_found(format!("no built-in recipe {recipe:?}")))?,
            hangar_image::catalog::Source::Oci {
                reference,
                insecure,
            } => {
                let pull = hangar_image::sources::oci::RegistryPull {
                    reference: reference.clone(),
                    credentials,
                    insecure: *insecure,
                    max_bytes: self.infra.config.images.max_bytes().2,
                };
                let logged_in = pull.credentials.is_some();
                self.pull_oci_now(name, &pull, op, cancel)
                    .await
                    .map_err(|e| match e {
                        // `vm create` sends no login: say where one goes.
                        DaemonError::ImageRejected { context, source }
                            if !logged_in
                                && matches!(*source, hangar_image::ImageError::RegistryAuth { .. }) =>
                        {
                            DaemonError::ImageRejected {
                                context: format!(
                                    "{context} (catalog image {name}: `vm create` pulls without a login; after `docker login`, `hangar image pull {name}` sends yours)"
                                ),
                                source,
                            }
                        }
                        e => e,
                    })?;
                return Ok(self.infra.store.get_image(name)?);
            }
            hangar_image::catalog::Source::Bundle { url, sha256 } => {
                self.pull_bundle_now(name, url, Some(sha256), op, cancel)
                    .await?;
                return Ok(self.infra.store.get_image(name)?);
            }
        };
        if let Some(op) = op {
            op.phase("wait-image-lock");
        }
        let _guard = tokio::select! {
            g = self.lock.lock() => g,
            _ = cancel.cancelled() => return Err(DaemonError::cancelled(format!("pull of {name} cancelled"))),
        };
        if let Ok(rec) = self.infra.store.get_image(name) {
            return Ok(rec);
        }
        let tmp = leftovers::work_dir(&self.infra.config.images_dir(), leftovers::PULL_PREFIX);
        let progress = report_to(op);
        let recipe = (item.recipe)();
        let built = hangar_image::build_or_reuse_cached(
            &recipe,
            &self.infra.config.image_cache_dir,
            &tmp,
            &progress,
            cancel,
        )
        .await;
        let manifest = match built {
            Ok(m) => m,
            Err(e) => {
                let _ = remove_tree(tmp.clone()).await;
                if cancel.is_cancelled() {
                    return Err(DaemonError::cancelled(format!("pull of {name} cancelled")));
                }
                return Err(DaemonError::image(format!("cannot build image {name}"), e));
            }
        };
        crate::crash_point!("pull.after_files_written");
        let rec = self
            .store_image(name, &format!("bootstrap:{name}"), &tmp, &manifest)
            .await?;
        info!(image = name, digest = %rec.digest, "image ready");
        crate::crash_point!("pull.after_store_row");
        // Still under the image lock, so the image cannot be removed meanwhile.
        let disk_bytes = self.default_disk_bytes(name, &rec);
        self.snapshots.prewarm(&rec, disk_bytes, op, cancel).await;
        Ok(rec)
    }

    /// Moves a finished image dir into place under its digest and records
    /// it. Removes `tmp` on failure. The flush and move run on the
    /// blocking pool (a whole image is written back to disk there).
    async fn store_image(
        &self,
        name: &str,
        source: &str,
        tmp: &Path,
        manifest: &ImageManifest,
    ) -> Result<ImageRecord> {
        // The same content already here under other names: it gets this
        // name too (the files are already in place; `tmp` goes below).
        let hexdigest = manifest.digest.trim_start_matches("sha256:");
        let final_dir = self.infra.config.images_dir().join(hexdigest);
        let (from, to) = (tmp.to_path_buf(), final_dir.clone());
        let moved = off_runtime("image store", move || {
            sync_dir_files(&from)?;
            if to.exists() {
                // Same content already stored (e.g. under another name):
                // only if the files say so too, not just the manifest.
                let differs = same_files::differing_part(&to, &from)?;
                std::fs::remove_dir_all(&from)?;
                Ok(Stored::Existing { differs })
            } else {
                std::fs::rename(&from, &to)?;
                Ok::<_, std::io::Error>(Stored::Moved)
            }
        })
        .await?;
        let moved = match moved {
            Ok(Stored::Moved) => true,
            Ok(Stored::Existing { differs: None }) => false,
            Ok(Stored::Existing {
                differs: Some(part),
            }) => {
                return Err(DaemonError::conflict(format!(
                    "image {} is already stored, with another {part}: this image's manifest is that image's, its files are not; nothing was kept",
                    manifest.digest
                )))
            }
            Err(e) => {
                let _ = remove_tree(tmp.to_path_buf()).await;
                return Err(DaemonError::io("cannot store image", e));
            }
        };
        if moved {
            crate::crash_point!(if source == "register" {
                "register.before_store_row"
            } else {
                "pull.before_store_row"
            });
        }
        let rec = ImageRecord {
            digest: manifest.digest.clone(),
            name: name.to_string(),
            names: Vec::new(),
            source: source.to_string(),
            dir: final_dir.display().to_string(),
            rootfs_bytes: manifest.rootfs_bytes,
            created_at: hangar_host::time::now_utc(),
            manifest_json: serde_json::to_string(manifest).unwrap_or_default(),
        };
        if let Err(e) = self.infra.store.upsert_image(&rec) {
            // No row points at files this call moved in: take them back out.
            if moved {
                let _ = remove_tree(final_dir).await;
            }
            return Err(e.into());
        }
        Ok(self.infra.store.get_image(name)?)
    }

    /// Stores a finished image dir (a promotion's) under `name`, under the
    /// image lock; `staging` is removed on failure.
    pub(crate) async fn store_new(
        &self,
        name: &str,
        staging: upload::StagingDir,
        manifest: &ImageManifest,
    ) -> Result<ImageInfo> {
        let _guard = self.lock.lock().await;
        self.refuse_taken_name(name)?;
        let dir = staging.path().to_path_buf();
        staging.keep();
        let rec = self
            .store_image(name, &manifest.source, &dir, manifest)
            .await?;
        self.image_info(&rec)
    }

    /// Gives the image `reference` (name or digest) the name `new_name`
    /// as well; both name the same files.
    pub async fn tag_image(&self, reference: &str, new_name: &str) -> Result<ImageInfo> {
        hangar_api::name::validate_name("image", new_name).map_err(DaemonError::Invalid)?;
        let _guard = self.lock.lock().await;
        let rec = self
            .infra
            .store
            .tag_image(reference, new_name, &hangar_host::time::now_utc())?;
        info!(image = %reference, name = %new_name, digest = %rec.digest, "image tagged");
        self.image_info(&rec)
    }

    /// Removes the name `name`. The image's files, boot snapshots and
    /// caches go with its last name, and not while a VM uses it (the store
    /// refuses, naming the VMs, in the same transaction that would delete
    /// the row).
    pub async fn remove_image(&self, name: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        match self.infra.store.remove_image_name(name)? {
            hangar_store::NameRemoval::Name { digest, remaining } => {
                info!(image = %name, %digest, remaining = %remaining.join(","), "image name removed; the image keeps its other names");
            }
            hangar_store::NameRemoval::Image(rec) => {
                self.snapshots.remove_image(&rec.digest);
                if let Some(e) = remove_tree(PathBuf::from(&rec.dir)).await {
                    warn!(dir = %rec.dir, error = %e, "cannot remove image files");
                }
                info!(image = %name, digest = %rec.digest, "image removed");
            }
        }
        Ok(())
    }
}

/// Where [`ImageService::store_image`] put the files.
enum Stored {
    /// Into place under the digest.
    Moved,
    /// Nowhere: the digest's dir was there; `differs` names a part whose
    /// file is not the same.
    Existing { differs: Option<&'static str> },
}

/// Progress of work that may run inside an operation (a pull) or outside
/// one (a catalog image fetched by `vm create`'s own operation, or none).
fn report_to(op: Option<&OpHandle>) -> impl Fn(hangar_api::Progress) + Send + Sync + '_ {
    move |p| {
        if let Some(op) = op {
            op.progress(p);
        }
    }
}

/// Flushes a new image's files to disk once, at pull time. Otherwise the
/// first VM created from it pays for writing back the whole image (a
/// reflink clone of a file with dirty pages forces writeback).
fn sync_dir_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    Ok(())
}

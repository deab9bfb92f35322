//! OCI images: pulled from a registry (`POST /v1/images/pull` with a
//! reference) or imported from an archive a client streams (`POST
//! /v1/images/import`). Both are operations: the layers are applied into a
//! private staging dir (`hangar_image::sources`), finalized into an image
//! with the default image's kernel (`hangar_image::finalize_oci`), and only
//! then, under the image lock, moved into place and recorded. The lock
//! never covers a download or an unpack. Failure or cancel at any step
//! removes the staging dir (the `StagingDir` guard), so nothing partial
//! is left or registered.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hangar_api::{ImageInfo, ImportImageQuery, OpKind, Operation, Progress, PullImageRequest};
use hangar_image::sources::oci::{Credentials, RegistryPull};
use hangar_image::sources::{archive, Unpacked};
use hangar_image::{ImageError, KernelSource};
use hangar_ops::OpHandle;
use tokio_util::sync::CancellationToken;

use super::leftovers::PULL_PREFIX;
use super::upload::StagingDir;
use super::ImageService;
use crate::error::{DaemonError, Result};

/// The staging dir's layout: the flattened tree, and the spooled archive.
const TREE: &str = "tree";
const SPOOL: &str = "spool";

impl ImageService {
    /// Checks an OCI pull request and begins it as an operation.
    pub fn begin_oci_pull(self: &Arc<Self>, req: PullImageRequest) -> Result<Operation> {
        let name = match &req.as_name {
            Some(n) => n.clone(),
            None => default_name(&req.name)?,
        };
        hangar_api::name::validate_name("image", &name)
            .map_err(|e| DaemonError::invalid(format!("{e}; choose one with --name")))?;
        let pull = RegistryPull {
            reference: req.name.clone(),
            credentials: req.credentials.as_ref().map(credentials).transpose()?,
            insecure: req.insecure,
            max_bytes: self.infra.config.images.max_bytes().2,
        };
        hangar_image::sources::oci::parse_reference(&pull)
            .map_err(|e| rejected("cannot pull the image", e))?;
        self.refuse_taken_name(&name)?;
        let this = self.clone();
        Ok(crate::op::begin(
            &self.infra.ops,
            OpKind::ImagePull,
            &name.clone(),
            move |op| async move {
                let cancel = op.cancel_token().clone();
                let info = this.pull_oci_now(&name, &pull, Some(&op), &cancel).await?;
                Ok(serde_json::to_value(info).unwrap_or_default())
            },
        ))
    }

    /// Pulls `pull` from its registry and stores it as `name` (the work of
    /// an `image pull REF` operation, and of a catalog entry's first use).
    pub(super) async fn pull_oci_now(
        &self,
        name: &str,
        pull: &RegistryPull,
        op: Option<&OpHandle>,
        cancel: &CancellationToken,
    ) -> Result<ImageInfo> {
        let staging = StagingDir::create_with_prefix(&self.infra.config.images_dir(), PULL_PREFIX)?;
        let tree = make_tree(&staging)?;
        let progress = super::report_to(op);
        let unpacked =
            hangar_image::sources::oci::pull(pull, &self.trust, &tree, &progress, cancel)
                .await
                .map_err(|e| source_error(&format!("cannot pull {}", pull.reference), e, cancel))?;
        self.finish_oci(name, staging, unpacked, op, cancel).await
    }

    /// Receives an archive from `body` into a staging dir, then begins
    /// unpacking it as an operation. The upload itself is part of the
    /// request: an archive that breaks off, stalls or is not an image is
    /// refused here, with nothing left behind.
    pub async fn begin_import(
        self: &Arc<Self>,
        q: ImportImageQuery,
        body: Body,
    ) -> Result<Operation> {
        hangar_api::name::validate_name("image", &q.name).map_err(DaemonError::Invalid)?;
        self.refuse_taken_name(&q.name)?;
        let limits = &self.infra.config.images;
        let (_, _, max_bytes) = limits.max_bytes();
        let idle = Duration::from_secs(limits.upload_idle_timeout_secs);
        let staging = StagingDir::create(&self.infra.config.images_dir())?;
        let spool_dir = staging.path().join(SPOOL);

        let reader = super::upload::body_reader(body, idle, &self.infra.shutdown);
        let shutdown = self.infra.shutdown.clone();
        let spooled = tokio::task::spawn_blocking(move || {
            let spool = archive::spool(reader, &spool_dir, max_bytes, &|_| {}, &|| {
                shutdown.is_cancelled()
            })?;
            let image = archive::read_image(&spool)?;
            Ok::<_, ImageError>((spool, image))
        })
        .await
        .map_err(|e| DaemonError::io("the archive reader failed", std::io::Error::other(e)))?;
        let (spool, image) = spooled.map_err(|e| rejected("cannot import the archive", e))?;

        let this = self.clone();
        let name = q.name.clone();
        Ok(crate::op::begin(
            &self.infra.ops,
            OpKind::ImageImport,
            &q.name,
            move |op| async move {
                let tree = make_tree(&staging)?;
                let cancel = op.cancel_token().clone();
                let total: u64 = spool.bytes;
                let done = Arc::new(AtomicU64::new(0));
                let (counter, token, t) = (done.clone(), cancel.clone(), tree.clone());
                let mut task = tokio::task::spawn_blocking(move || {
                    archive::unpack(
                        &spool,
                        image,
                        &t,
                        max_bytes,
                        &|n| {
                            counter.fetch_add(n, Ordering::Relaxed);
                        },
                        &|| token.is_cancelled(),
                    )
                });
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                let unpacked = loop {
                tokio::select! {
                    r = &mut task => break r.map_err(|e| DaemonError::io("the unpack task failed", std::io::Error::other(e)))?,
                    _ = tick.tick() => op.progress(Progress {
                        phase: "unpack".into(),
                        current: Some(done.load(Ordering::Relaxed)),
                        total: Some(total),
                        unit: Some("bytes".into()),
                        detail: None,
                    }),
                }
            }
            .map_err(|e| source_error("cannot import the archive", e, &cancel))?;
                let _ = crate::blocking::remove_tree(staging.path().join(SPOOL)).await;
                let info = this
                    .finish_oci(&name, staging, unpacked, Some(&op), &cancel)
                    .await?;
                Ok(serde_json::to_value(info).unwrap_or_default())
            },
        ))
    }

    /// The common end of pulls and imports: finalize the staged tree with
    /// the default image's kernel, then move it into place and record it.
    async fn finish_oci(
        &self,
        name: &str,
        staging: StagingDir,
        unpacked: Unpacked,
        op: Option<&OpHandle>,
        cancel: &CancellationToken,
    ) -> Result<ImageInfo> {
        let kernel_image = hangar_image::catalog::KERNEL_IMAGE;
        let kernel_rec = Box::pin(self.pull_image(kernel_image, op, cancel)).await?;
        let kernel = KernelSource {
            dir: PathBuf::from(&kernel_rec.dir),
            digest: kernel_rec.digest.clone(),
        };
        let progress = super::report_to(op);
        let manifest = hangar_image::finalize_oci(
            &staging.path().join(TREE),
            &unpacked.run,
            &unpacked.source,
            &kernel,
            staging.path(),
            &progress,
            cancel,
        )
        .await
        .map_err(|e| source_error("cannot finalize the image", e, cancel))?;
        if let Some(op) = op {
            op.phase("store");
        }
        let _guard = self.lock.lock().await;
        self.refuse_taken_name(name)?;
        let dir = staging.path().to_path_buf();
        staging.keep();
        let rec = self
            .store_image(name, &unpacked.source, &dir, &manifest)
            .await?;
        tracing::info!(image = name, digest = %rec.digest, source = %unpacked.source, "OCI image ready");
        self.image_info(&rec)
    }
}

/// `127.0.0.1:5000/team/golden:v3` → `golden`.
fn default_name(reference: &str) -> Result<String> {
    let no_digest = reference.split('@').next().unwrap_or(reference);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let repo = last.split(':').next().unwrap_or(last);
    if repo.is_empty() {
        return Err(DaemonError::invalid(format!(
            "cannot tell an image name from {reference:?}; give one with --name"
        )));
    }
    Ok(repo.to_string())
}

pub(super) fn credentials(c: &hangar_api::image::RegistryCredentials) -> Result<Credentials> {
    match (&c.username, &c.password, &c.token, &c.identity_token) {
        (_, _, None, Some(t)) => Ok(Credentials::IdentityToken(t.clone())),
        (_, _, Some(t), None) => Ok(Credentials::Bearer(t.clone())),
        (Some(u), Some(p), None, None) => Ok(Credentials::Basic {
            username: u.clone(),
            password: p.clone(),
        }),
        _ => Err(DaemonError::invalid(
            "registry credentials need a username and password, a token, or an identity token",
        )),
    }
}

fn make_tree(staging: &StagingDir) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let tree = staging.path().join(TREE);
    // The tree's root becomes the rootfs's `/`: 0755 (the staging dir
    // around it is 0700, so nobody else reaches it meanwhile).
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&tree)
        .map_err(|e| DaemonError::io(format!("cannot create {}", tree.display()), e))?;
    Ok(tree)
}

/// A refused image: the client's input is at fault (invalid).
fn rejected(context: &str, e: ImageError) -> DaemonError {
    DaemonError::ImageRejected {
        context: context.into(),
        source: Box::new(e),
    }
}

/// Maps a source's error: cancel, an unreachable registry, a refused
/// image, or a failure on our side.
fn source_error(context: &str, e: ImageError, cancel: &CancellationToken) -> DaemonError {
    match e {
        _ if cancel.is_cancelled() => DaemonError::cancelled(format!("{context}: cancelled")),
        ImageError::Cancelled => DaemonError::cancelled(format!("{context}: cancelled")),
        ImageError::Registry { .. } => {
            DaemonError::Unavailable(format!("{context}: {}", crate::error::error_chain(&e)))
        }
        // Credentials are the client's to fix (`docker login`), like a
        // bad image: refused as invalid, not "unavailable".
        ImageError::BadOci { .. }
        | ImageError::BadLayerEntry { .. }
        | ImageError::RegistryAuth { .. }
        | ImageError::Unrunnable(_) => rejected(context, e),
        e => DaemonError::image(context, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_name_is_the_repository_s_last_component() {
        assert_eq!(
            default_name("127.0.0.1:5000/team/golden:v3").unwrap(),
            "golden"
        );
        assert_eq!(default_name("reg.io/app@sha256:abc").unwrap(), "app");
        assert_eq!(default_name("localhost:5000/base").unwrap(), "base");
        assert!(default_name("reg.io/").is_err());
    }

    #[test]
    fn credentials_need_a_pair_or_a_token() {
        let c = |u: Option<&str>, p: Option<&str>, t: Option<&str>| {
            hangar_api::image::RegistryCredentials {
                username: u.map(str::to_string),
                password: p.map(str::to_string),
                token: t.map(str::to_string),
                identity_token: None,
            }
        };
        assert!(matches!(
            credentials(&c(Some("u"), Some("p"), None)),
            Ok(Credentials::Basic { .. })
        ));
        assert!(matches!(
            credentials(&c(None, None, Some("t"))),
            Ok(Credentials::Bearer(_))
        ));
        assert!(credentials(&c(Some("u"), None, None)).is_err());
        let mut identity = c(None, None, None);
        identity.identity_token = Some("refresh".into());
        assert!(matches!(
            credentials(&identity),
            Ok(Credentials::IdentityToken(_))
        ));
        identity.token = Some("t".into());
        assert!(credentials(&identity).is_err(), "two kinds of token");
    }
}

//! Hangar bundles (`hangar_image::sources::bundle`): exported by streaming
//! an image's bundle as a response body (the CLI writes the file as the
//! user), pulled from an `https://` URL by the daemon as an operation, or
//! received from a client that read a local file (`file://`) as a request
//! body. Either way the bundle is read in one pass into a private staging
//! dir and verified; a mismatch or cancel removes the staging dir.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hangar_api::{BundleQuery, ImageInfo, OpKind, Operation, PullImageRequest};
use hangar_image::sources::bundle;
use hangar_image::ImageManifest;
use hangar_ops::OpHandle;
use tokio_util::sync::CancellationToken;

use super::leftovers::PULL_PREFIX;
use super::upload::StagingDir;
use super::ImageService;
use crate::error::{DaemonError, Result};

impl ImageService {
    /// Begins a download of a bundle URL as an operation.
    pub fn begin_bundle_pull(self: &Arc<Self>, req: PullImageRequest) -> Result<Operation> {
        let url = req.name.clone();
        bundle::check_url(&url).map_err(|e| rejected("cannot pull the bundle", e))?;
        let name = match &req.as_name {
            Some(n) => n.clone(),
            None => name_from_url(&url)?,
        };
        hangar_api::name::validate_name("image", &name)
            .map_err(|e| DaemonError::invalid(format!("{e}; choose one with --name")))?;
        self.refuse_taken_name(&name)?;
        let this = self.clone();
        Ok(crate::op::begin(
            &self.infra.ops,
            OpKind::ImagePull,
            &name.clone(),
            move |op| async move {
                let cancel = op.cancel_token().clone();
                let info = this
                    .pull_bundle_now(&name, &url, req.sha256.as_deref(), Some(&op), &cancel)
                    .await?;
                Ok(serde_json::to_value(info).unwrap_or_default())
            },
        ))
    }

    /// Downloads the bundle at `url` and stores it as `name` (the work of an
    /// `image pull URL` operation, and of a catalog entry's first use).
    pub(super) async fn pull_bundle_now(
        &self,
        name: &str,
        url: &str,
        sha256: Option<&str>,
        op: Option<&OpHandle>,
        cancel: &CancellationToken,
    ) -> Result<ImageInfo> {
        let max = self.infra.config.images.max_bytes().2;
        let staging = StagingDir::create_with_prefix(&self.infra.config.images_dir(), PULL_PREFIX)?;
        let progress = super::report_to(op);
        let (header, sum) = bundle::download(
            url,
            &self.trust,
            sha256,
            staging.path(),
            max,
            &progress,
            cancel,
        )
        .await
        .map_err(|e| {
            if cancel.is_cancelled() {
                DaemonError::cancelled("the bundle download was cancelled")
            } else {
                rejected(&format!("cannot pull {url}"), e)
            }
        })?;
        tracing::info!(url, sha256 = %sum, bundle = %header.name, "bundle downloaded");
        self.store_new(name, staging, &header.manifest).await
    }

    /// Receives a bundle a client streams (a local file it read as the
    /// user) and stores it as `q.name`.
    pub async fn receive_bundle(&self, q: BundleQuery, body: Body) -> Result<ImageInfo> {
        hangar_api::name::validate_name("image", &q.name).map_err(DaemonError::Invalid)?;
        self.refuse_taken_name(&q.name)?;
        let limits = &self.infra.config.images;
        let max = limits.max_bytes().2;
        let idle = Duration::from_secs(limits.upload_idle_timeout_secs);
        let staging = StagingDir::create(&self.infra.config.images_dir())?;
        let reader = super::upload::body_reader(body, idle, &self.infra.shutdown);
        let (dir, sha, shutdown) = (
            staging.path().to_path_buf(),
            q.sha256.clone(),
            self.infra.shutdown.clone(),
        );
        let (header, _) = tokio::task::spawn_blocking(move || {
            bundle::read(reader, sha.as_deref(), &dir, max, &|_| {}, &|| {
                shutdown.is_cancelled()
            })
        })
        .await
        .map_err(|e| DaemonError::io("the bundle reader failed", std::io::Error::other(e)))?
        .map_err(|e| rejected("cannot import the bundle", e))?;
        let manifest: ImageManifest = header.manifest;
        self.store_new(&q.name, staging, &manifest).await
    }

    /// The bundle of image `name`, as a response body made on the fly.
    pub fn export_bundle(&self, name: &str) -> Result<Body> {
        let rec = self.get(name)?;
        let dir = std::path::PathBuf::from(&rec.dir);
        let export_name = rec.name.clone();
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        tokio::task::spawn_blocking(move || {
            let w = ChannelWriter { tx: tx.clone() };
            let out = std::io::BufWriter::with_capacity(1 << 20, w);
            if let Err(e) = bundle::write(&dir, &export_name, out, &|| tx.is_closed()) {
                tracing::warn!(image = %export_name, error = %e, "bundle export ended early");
                // Ends the body with an error: the client sees a broken
                // transfer, never a short file that looks whole.
                let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
            }
        });
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Body::from_stream(stream))
    }
}

/// Sends what is written as body chunks.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `https://host/x/golden.hangar.tar.zst` → `golden`.
fn name_from_url(url: &str) -> Result<String> {
    let file = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .rsplit('/')
        .next()
        .unwrap_or("");
    let stem = file.split('.').next().unwrap_or("");
    if stem.is_empty() {
        return Err(DaemonError::invalid(format!(
            "cannot tell an image name from {url:?}; give one with --name"
        )));
    }
    Ok(stem.to_string())
}

fn rejected(context: &str, e: hangar_image::ImageError) -> DaemonError {
    match e {
        hangar_image::ImageError::Registry { .. } => {
            DaemonError::Unavailable(format!("{context}: {}", crate::error::error_chain(&e)))
        }
        e => DaemonError::ImageRejected {
            context: context.into(),
            source: Box::new(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_name_is_the_file_name_s_stem() {
        assert_eq!(
            name_from_url("https://h/x/golden.hangar.tar.zst").unwrap(),
            "golden"
        );
        assert_eq!(
            name_from_url("http://127.0.0.1:8000/a.hangar.tar.zst?x=1").unwrap(),
            "a"
        );
        assert!(name_from_url("https://h/").is_err());
    }
}

//! Writing a response body to a file the user names, as the user: into a
//! new file beside the target (0666 under the umask, as cp makes files),
//! renamed over it once complete, so a transfer that breaks off leaves the
//! target as it was. `hangar cp` (guest → host) and `hangar image export`.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;
use hangar_api::ApiError;
use http_body_util::BodyStream;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// Writes `resp`'s body to `target` (or standard output for `-`) and
/// returns the sha256 (hex) of what was written.
pub async fn body_to_file<B>(resp: hyper::Response<B>, target: &Path) -> Result<String, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if target == Path::new("-") {
        let io_err =
            |e: std::io::Error| ApiError::invalid(format!("cannot write to standard output: {e}"));
        return pump(resp, &mut tokio::io::stdout(), &io_err).await;
    }
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.hangar-{}",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let io_err =
        |e: std::io::Error| ApiError::invalid(format!("cannot write {}: {e}", target.display()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&tmp)
        .map_err(io_err)?;
    let copied = async {
        let sum = pump(resp, &mut tokio::fs::File::from_std(file), &io_err).await?;
        std::fs::rename(&tmp, target).map_err(io_err)?;
        Ok(sum)
    }
    .await;
    if copied.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    copied
}

/// Copies the body into `out`, hashing it; returns the sha256 (hex).
async fn pump<B>(
    resp: hyper::Response<B>,
    out: &mut (impl tokio::io::AsyncWrite + Unpin),
    io_err: &dyn Fn(std::io::Error) -> ApiError,
) -> Result<String, ApiError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(BodyStream::new(resp.into_body()));
    let mut hasher = Sha256::new();
    while let Some(frame) = body.next().await {
        let frame =
            frame.map_err(|e| ApiError::internal(format!("the transfer broke off: {e}")))?;
        if let Ok(data) = frame.into_data() {
            let data: Bytes = data;
            hasher.update(&data);
            out.write_all(&data).await.map_err(io_err)?;
        }
    }
    out.flush().await.map_err(io_err)?;
    Ok(hex::encode(hasher.finalize()))
}

//! Receives the body of `POST /v1/images/upload` into files: for each part
//! (kernel, initrd, rootfs) exactly the declared number of bytes, then the
//! client's 32-byte sha256 of them, which must match the sha256 computed
//! here on the way. Nothing is ever held whole in memory: bytes go to disk
//! a megabyte at a time, on the blocking pool, with all-zero blocks left as
//! holes (rootfs images are mostly empty). A body that breaks off, runs
//! long, stalls for the idle timeout or carries a wrong digest is an error;
//! the caller's [`StagingDir`] then removes everything written.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::body::Body;
use bytes::{Buf, Bytes};
use hangar_api::UPLOAD_DIGEST_LEN;
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::blocking::off_runtime;
use crate::error::{DaemonError, Result};

/// Bytes handed to the blocking pool at once.
const FLUSH_BYTES: usize = 1 << 20;
/// All-zero runs of this size (aligned) are skipped, leaving holes.
const HOLE_BLOCK: usize = 4096;

/// One file of an upload.
#[derive(Debug, Clone)]
pub struct Part {
    /// `kernel`, `initrd` or `rootfs`, for messages.
    pub what: &'static str,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Streams `body` into the parts' files (created new, mode 0600) and
/// returns each part's sha256 in hex, in order. `shutdown` (the daemon's)
/// ends it, so a long upload does not hold up a daemon stop.
pub async fn receive(
    mut body: Body,
    parts: &[Part],
    idle: Duration,
    shutdown: &CancellationToken,
) -> Result<Vec<String>> {
    let mut digests = Vec::with_capacity(parts.len());
    let mut sink: Option<PartSink> = None;
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => {
                return Err(DaemonError::cancelled(
                    "the daemon is shutting down; the upload was dropped",
                ))
            }
            next = tokio::time::timeout(idle, body.frame()) => next,
        };
        let frame = match next {
            Err(_) => {
                return Err(DaemonError::Timeout(format!(
                    "the upload sent nothing for {}s and was dropped",
                    idle.as_secs()
                )))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(DaemonError::invalid(format!("the upload broke off: {e}")))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        while data.has_remaining() {
            let Some(part) = parts.get(digests.len()) else {
                return Err(DaemonError::invalid(
                    "the upload body is longer than the file sizes it declared",
                ));
            };
            let current = match sink.as_mut() {
                Some(s) => s,
                None => sink.insert(PartSink::create(part).await?),
            };
            current.take(&mut data).await?;
            if current.is_complete() {
                if let Some(done) = sink.take() {
                    digests.push(done.finish().await?);
                }
            }
        }
    }
    if let Some(part) = parts.get(digests.len()) {
        let got = sink.as_ref().map_or(0, |s| s.received);
        return Err(DaemonError::invalid(format!(
            "the upload ended early: it sent {got} of the {} bytes of the {}",
            part.bytes, part.what
        )));
    }
    Ok(digests)
}

/// The part being received: its file, hash and the digest that follows it.
struct PartSink {
    what: &'static str,
    bytes: u64,
    received: u64,
    digest: Vec<u8>,
    writer: SparseWriter,
}

impl PartSink {
    async fn create(part: &Part) -> Result<PartSink> {
        Ok(PartSink {
            what: part.what,
            bytes: part.bytes,
            received: 0,
            digest: Vec::with_capacity(UPLOAD_DIGEST_LEN),
            writer: SparseWriter::create(&part.path).await?,
        })
    }

    /// Consumes from `data` what belongs to this part (file bytes, then
    /// the digest), leaving the rest.
    async fn take(&mut self, data: &mut Bytes) -> Result<()> {
        let want = self.bytes - self.received;
        if want > 0 {
            let n = data
                .remaining()
                .min(usize::try_from(want).unwrap_or(usize::MAX));
            let chunk = data.split_to(n);
            self.received += n as u64;
            self.writer.write(&chunk).await?;
        }
        let want = UPLOAD_DIGEST_LEN - self.digest.len();
        let n = data.remaining().min(want);
        self.digest.extend_from_slice(&data.split_to(n));
        Ok(())
    }

    fn is_complete(&self) -> bool {
        self.received == self.bytes && self.digest.len() == UPLOAD_DIGEST_LEN
    }

    /// Flushes the file and checks the client's digest against ours.
    async fn finish(self) -> Result<String> {
        let ours = self.writer.finish(self.bytes).await?;
        if ours.as_slice() != self.digest.as_slice() {
            return Err(DaemonError::invalid(format!(
                "the {} arrived corrupted: its sha256 is {} but the client computed {}",
                self.what,
                hex::encode(ours),
                hex::encode(&self.digest)
            )));
        }
        Ok(hex::encode(ours))
    }
}

/// Writes a file front to back from the async side, a megabyte at a time
/// on the blocking pool, hashing it there too.
struct SparseWriter {
    path: PathBuf,
    /// `None` only while a flush has it on the blocking pool.
    state: Option<(std::fs::File, Sha256)>,
    buf: Vec<u8>,
    offset: u64,
}

impl SparseWriter {
    async fn create(path: &Path) -> Result<SparseWriter> {
        let p = path.to_path_buf();
        let file = off_runtime("create upload file", move || {
            hangar_host::private::create_new_private_file(&p)
                .map_err(|e| DaemonError::io(format!("cannot create {}", p.display()), e))
        })
        .await??;
        Ok(SparseWriter {
            path: path.to_path_buf(),
            state: Some((file, Sha256::new())),
            buf: Vec::with_capacity(FLUSH_BYTES),
            offset: 0,
        })
    }

    async fn write(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            let n = data.len().min(FLUSH_BYTES - self.buf.len());
            self.buf.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.buf.len() == FLUSH_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let Some((file, mut hasher)) = self.state.take() else {
            return Err(DaemonError::invalid(
                "an earlier write of this upload failed",
            ));
        };
        let buf = std::mem::take(&mut self.buf);
        let (offset, path) = (self.offset, self.path.clone());
        let (file, hasher, mut buf) = off_runtime("write upload", move || {
            hasher.update(&buf);
            write_skipping_zeros(&file, &buf, offset).map_err(|e| write_error(&path, e))?;
            Ok::<_, DaemonError>((file, hasher, buf))
        })
        .await??;
        self.offset += buf.len() as u64;
        buf.clear();
        self.buf = buf;
        self.state = Some((file, hasher));
        Ok(())
    }

    /// Writes what is buffered, gives the file its full length (trailing
    /// holes included) and returns the sha256 of everything written.
    async fn finish(mut self, len: u64) -> Result<[u8; 32]> {
        self.flush().await?;
        let Some((file, hasher)) = self.state.take() else {
            return Err(DaemonError::invalid(
                "an earlier write of this upload failed",
            ));
        };
        let path = self.path.clone();
        off_runtime("finish upload file", move || {
            file.set_len(len)
                .map_err(|e| DaemonError::io(format!("cannot size {}", path.display()), e))
        })
        .await??;
        Ok(hasher.finalize().into())
    }
}

/// A failed write of an upload, saying what to do when the disk is full.
fn write_error(path: &Path, e: std::io::Error) -> DaemonError {
    let full = matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
    let context = if full {
        format!(
            "cannot write {}: the state dir's filesystem is full; free space there (or move state_dir to a larger one) and register again",
            path.display()
        )
    } else {
        format!("cannot write {}", path.display())
    };
    DaemonError::io(context, e)
}

/// Writes `buf` at `offset`, leaving aligned all-zero blocks unwritten.
fn write_skipping_zeros(file: &std::fs::File, buf: &[u8], offset: u64) -> std::io::Result<()> {
    static ZEROS: [u8; HOLE_BLOCK] = [0; HOLE_BLOCK];
    for (i, block) in buf.chunks(HOLE_BLOCK).enumerate() {
        // A slice compare is one memcmp, fast even in debug builds.
        if block == &ZEROS[..block.len()] {
            continue;
        }
        file.write_all_at(block, offset + (i * HOLE_BLOCK) as u64)?;
    }
    Ok(())
}

/// A private directory under `images/` that an upload or registration
/// builds an image in. Dropping it (an error, or the request's future being
/// dropped when the client goes away) removes it and everything in it,
/// unless [`StagingDir::keep`] was called. Named `.register-*`, so a
/// daemon killed meanwhile leaves something the start-up sweep removes.
pub struct StagingDir {
    path: PathBuf,
    keep: bool,
}

impl StagingDir {
    pub fn create(images_dir: &Path) -> Result<StagingDir> {
        Self::create_with_prefix(images_dir, super::leftovers::REGISTER_PREFIX)
    }

    /// A staging dir with one of the work-dir prefixes the start-up sweep
    /// knows (`leftovers`).
    pub fn create_with_prefix(images_dir: &Path, prefix: &str) -> Result<StagingDir> {
        let path = super::leftovers::work_dir(images_dir, prefix);
        hangar_host::private::create_private_dir(&path)
            .map_err(|e| DaemonError::io(format!("cannot create {}", path.display()), e))?;
        Ok(StagingDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory now belongs to the caller (it was moved into place,
    /// or the caller removes it).
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let path = std::mem::take(&mut self.path);
        let remove = move || {
            // A write still running on the blocking pool may create a file
            // while we list the directory: try again then.
            for _ in 0..5 {
                match std::fs::remove_dir_all(&path) {
                    Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => continue,
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        tracing::warn!(dir = %path.display(), error = %e, "cannot remove an upload's files");
                        return;
                    }
                    _ => return,
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// A request body as a blocking reader (for a blocking-pool parser): each
/// frame must come within `idle`, and `shutdown` ends the stream, so a
/// stalled or abandoned upload cannot hold a thread.
pub fn body_reader(
    body: Body,
    idle: Duration,
    shutdown: &CancellationToken,
) -> impl std::io::Read + Send + 'static {
    use futures::StreamExt;
    let frames = body
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    let frames = futures::stream::unfold(frames, move |mut s| async move {
        match tokio::time::timeout(idle, s.next()).await {
            Ok(Some(item)) => Some((item, s)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the upload sent nothing for {}s", idle.as_secs()),
                )),
                s,
            )),
        }
    })
    .take_until(Box::pin(shutdown.clone().cancelled_owned()));
    tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(Box::pin(frames)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn body_of(chunks: Vec<Vec<u8>>) -> Body {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from(c))),
        );
        Body::from_stream(stream)
    }

    fn framed(files: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for f in files {
            out.extend_from_slice(f);
            out.extend_from_slice(&Sha256::digest(f));
        }
        out
    }

    fn parts(dir: &Path, sizes: &[u64]) -> Vec<Part> {
        ["kernel", "rootfs"]
            .iter()
            .zip(sizes)
            .map(|(what, bytes)| Part {
                what,
                path: dir.join(what),
                bytes: *bytes,
            })
            .collect()
    }

    #[tokio::test]
    async fn receives_parts_split_anywhere_and_keeps_zero_runs_as_holes() {
        let d = tempfile::tempdir().unwrap();
        let kernel = b"\x7fELF kernel bytes".to_vec();
        let mut rootfs = vec![0u8; 8 << 20];
        rootfs[5 << 20] = 7;
        let all = framed(&[&kernel, &rootfs]);
        // Odd chunk sizes so part and digest boundaries fall mid-chunk.
        let chunks = all.chunks(333_333).map(<[u8]>::to_vec).collect();
        let ps = parts(d.path(), &[kernel.len() as u64, rootfs.len() as u64]);

        let sums = receive(
            body_of(chunks),
            &ps,
            Duration::from_secs(5),
            &CancellationToken::new(),
        )
        .await
        .unwrap();

        assert_eq!(sums[0], hex::encode(Sha256::digest(&kernel)));
        assert_eq!(sums[1], hex::encode(Sha256::digest(&rootfs)));
        assert_eq!(std::fs::read(&ps[0].path).unwrap(), kernel);
        assert!(std::fs::read(&ps[1].path).unwrap() == rootfs);
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&ps[1].path).unwrap();
        assert!(meta.blocks() * 512 < 1 << 20, "zeros were written out");
        assert_eq!(meta.mode() & 0o777, 0o600);
    }

    #[tokio::test]
    async fn a_wrong_digest_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut all = framed(&[b"kernel", b"rootfs"]);
        let last = all.len() - 1;
        all[last] ^= 1;
        let ps = parts(d.path(), &[6, 6]);

        let err = receive(
            body_of(vec![all]),
            &ps,
            Duration::from_secs(5),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();

        assert!(err.to_string().contains("corrupted"), "{err}");
    }

    #[tokio::test]
    async fn a_short_or_long_body_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let all = framed(&[b"kernel", b"rootfs"]);
        let short = all[..all.len() - 40].to_vec();
        let err = receive(
            body_of(vec![short]),
            &parts(d.path(), &[6, 6]),
            Duration::from_secs(5),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("ended early"), "{err}");

        let d = tempfile::tempdir().unwrap();
        let mut long = all.clone();
        long.push(1);
        let err = receive(
            body_of(vec![long]),
            &parts(d.path(), &[6, 6]),
            Duration::from_secs(5),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("longer"), "{err}");
    }

    #[tokio::test]
    async fn a_stalled_body_times_out() {
        use futures::StreamExt;
        let d = tempfile::tempdir().unwrap();
        let stream =
            futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"ker"))])
                .chain(futures::stream::pending());
        let body = Body::from_stream(stream);

        let err = receive(
            body,
            &parts(d.path(), &[6, 6]),
            Duration::from_millis(200),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();

        assert!(matches!(err, DaemonError::Timeout(_)), "{err}");
    }

    #[tokio::test]
    async fn a_daemon_shutdown_ends_an_upload() {
        use futures::StreamExt;
        let d = tempfile::tempdir().unwrap();
        let stream =
            futures::stream::iter(vec![Ok::<_, std::io::Error>(Bytes::from_static(b"ker"))])
                .chain(futures::stream::pending());
        let shutdown = CancellationToken::new();
        shutdown.cancel();

        let err = receive(
            Body::from_stream(stream),
            &parts(d.path(), &[6, 6]),
            Duration::from_secs(60),
            &shutdown,
        )
        .await
        .unwrap_err();

        assert!(matches!(err, DaemonError::Cancelled(_)), "{err}");
    }

    #[tokio::test]
    async fn a_dropped_staging_dir_takes_its_files_with_it() {
        let d = tempfile::tempdir().unwrap();
        let staging = StagingDir::create(d.path()).unwrap();
        let path = staging.path().to_path_buf();
        std::fs::write(path.join("rootfs.ext4"), b"partial").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        drop(staging);

        // The removal runs on the blocking pool.
        for _ in 0..100 {
            if !path.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!path.exists());
    }
}

//! `hangar image register`: sends the user's files to the daemon
//! (`POST /v1/images/upload`), so the daemon never opens a host path on a
//! user's behalf. Each file is read a megabyte at a time on a blocking
//! thread, hashed on the way, and followed by its sha256 (the format in
//! docs/api.md); progress (bytes of total) shows on a terminal.

use std::io::{IsTerminal, Read};
use std::time::Duration;

use bytes::Bytes;
use hangar_api::{ApiError, ImageInfo, UploadImageQuery};
use http_body_util::StreamBody;
use hyper::body::Frame;
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::local_file::LocalFile;

/// Bytes per read and per body frame.
const CHUNK: usize = 1 << 20;
/// Frames in flight between the reader thread and the connection.
const QUEUE: usize = 4;

type FrameResult = Result<Frame<Bytes>, std::io::Error>;

/// Uploads `kernel`, `initrd` and `rootfs` as image `name`.
pub async fn upload_image(
    client: &Client,
    name: &str,
    kernel: LocalFile,
    initrd: Option<LocalFile>,
    rootfs: LocalFile,
) -> Result<ImageInfo, ApiError> {
    let query = UploadImageQuery {
        name: name.to_string(),
        kernel_bytes: kernel.len,
        initrd_bytes: initrd.as_ref().map(|f| f.len),
        rootfs_bytes: rootfs.len,
    };
    let path = format!("/v1/images/upload?{}", upload_query(&query));
    let files: Vec<LocalFile> = [Some(kernel), initrd, Some(rootfs)]
        .into_iter()
        .flatten()
        .collect();
    let total: u64 = files.iter().map(|f| f.len).sum();
    let bar = progress_bar(name, total);
    let (tx, rx) = mpsc::channel::<FrameResult>(QUEUE);
    let reader_bar = bar.clone();
    let reader = tokio::task::spawn_blocking(move || send_files(files, &tx, reader_bar.as_ref()));
    let body = StreamBody::new(tokio_stream_of(rx));
    let answer = client
        .post_stream(&path, "application/octet-stream", body)
        .await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // The reader's own error (a file that shrank, a read error) explains a
    // broken-off request better than the transport error does. After an
    // early refusal the reader ends once the connection drops the body.
    match tokio::time::timeout(Duration::from_secs(5), reader).await {
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(ApiError::internal(format!("the file reader failed: {e}"))),
        Ok(Ok(Ok(()))) | Err(_) => answer,
    }
}

/// Reads each file to its length at open time, sending its bytes and then
/// its sha256. A file that ends early is an error sent down the body, which
/// aborts the request so the daemon keeps nothing.
fn send_files(
    files: Vec<LocalFile>,
    tx: &mpsc::Sender<FrameResult>,
    bar: Option<&ProgressBar>,
) -> Result<(), ApiError> {
    for f in files {
        let mut hasher = Sha256::new();
        let mut left = f.len;
        let mut reader = (&f.file).take(f.len);
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
            let n = match reader.read(&mut buf) {
                Ok(0) => {
                    let msg = format!(
                        "{} shrank while it was being sent ({} bytes short); nothing was registered",
                        f.path.display(),
                        left
                    );
                    let _ = tx.blocking_send(Err(std::io::Error::other(msg.clone())));
                    return Err(ApiError::invalid(msg));
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let msg = format!(
                        "cannot read {}: {e}; nothing was registered",
                        f.path.display()
                    );
                    let _ = tx.blocking_send(Err(std::io::Error::other(msg.clone())));
                    return Err(ApiError::invalid(msg));
                }
            };
            buf.truncate(n);
            hasher.update(&buf);
            left -= n as u64;
            if tx.blocking_send(Ok(Frame::data(Bytes::from(buf)))).is_err() {
                // The connection is gone; its error is the one to report.
                return Ok(());
            }
            if let Some(b) = bar {
                b.inc(n as u64);
            }
        }
        let digest = Bytes::copy_from_slice(&hasher.finalize());
        if tx.blocking_send(Ok(Frame::data(digest))).is_err() {
            return Ok(());
        }
    }
    if let Some(b) = bar {
        // Sent; the daemon now checks, converts and stores the files.
        b.set_message("storing");
    }
    Ok(())
}

fn progress_bar(name: &str, total: u64) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = ProgressBar::new(total);
    b.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b.set_message(format!("uploading {name}"));
    b.enable_steady_tick(Duration::from_millis(200));
    Some(b)
}

/// The channel as a stream of body frames.
fn tokio_stream_of(
    mut rx: mpsc::Receiver<FrameResult>,
) -> impl futures::Stream<Item = FrameResult> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `name=..&kernel_bytes=..` with the name percent-encoded (names are DNS
/// labels, but a bad one must reach the daemon intact to be refused well).
fn upload_query(q: &UploadImageQuery) -> String {
    let mut out = format!("name={}", crate::cmd::seg(&q.name));
    out.push_str(&format!("&kernel_bytes={}", q.kernel_bytes));
    if let Some(n) = q.initrd_bytes {
        out.push_str(&format!("&initrd_bytes={n}"));
    }
    out.push_str(&format!("&rootfs_bytes={}", q.rootfs_bytes));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn query_encodes_the_name_and_leaves_out_a_missing_initrd() {
        let q = UploadImageQuery {
            name: "Bad Name/x".into(),
            kernel_bytes: 1,
            initrd_bytes: None,
            rootfs_bytes: 3,
        };
        assert_eq!(
            upload_query(&q),
            "name=Bad%20Name%2Fx&kernel_bytes=1&rootfs_bytes=3"
        );
    }

    #[test]
    fn files_go_out_as_bytes_then_sha256_each() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        std::fs::write(&a, vec![7u8; CHUNK + 5]).unwrap();
        std::fs::write(&b, b"rootfs").unwrap();
        let files = vec![
            crate::local_file::open_regular("kernel", &a).unwrap(),
            crate::local_file::open_regular("rootfs", &b).unwrap(),
        ];
        let (tx, mut rx) = mpsc::channel(1024);

        send_files(files, &tx, None).unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(frame) = rx.blocking_recv() {
            got.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }

        let mut want = vec![7u8; CHUNK + 5];
        want.extend_from_slice(&Sha256::digest(vec![7u8; CHUNK + 5]));
        want.extend_from_slice(b"rootfs");
        want.extend_from_slice(&Sha256::digest(b"rootfs"));
        assert!(got == want);
    }

    #[test]
    fn a_file_that_shrinks_aborts_the_body() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a");
        std::fs::write(&a, b"0123456789").unwrap();
        let file = crate::local_file::open_regular("kernel", &a).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&a)
            .unwrap()
            .set_len(4)
            .unwrap();
        let (tx, mut rx) = mpsc::channel(16);

        let err = send_files(vec![file], &tx, None).unwrap_err();
        drop(tx);

        assert!(err.message.contains("shrank"), "{err:?}");
        let mut frames = Vec::new();
        while let Some(f) = rx.blocking_recv() {
            frames.push(f);
        }
        assert!(
            frames.last().unwrap().is_err(),
            "the body must end in an error"
        );
    }
}

//! `hangar image import FILE|DIR|-`: streams an image archive to the daemon
//! (`POST /v1/images/import`), read as the user: a file (`docker save -o`,
//! `buildah push IMG oci-archive:F`), standard input (`docker save IMG |
//! hangar image import - --name N`), or an OCI image layout directory
//! (`skopeo copy … oci:DIR`), which is sent as a tar made on the fly.
//! The daemon answers once it has the archive; the import then runs as an
//! operation the caller waits for.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use hangar_api::{ApiError, Operation};
use http_body_util::StreamBody;
use hyper::body::Frame;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::mpsc;

use crate::client::Client;

const CHUNK: usize = 1 << 20;
const QUEUE: usize = 4;

type FrameResult = Result<Frame<Bytes>, std::io::Error>;

/// Where the archive comes from.
#[derive(Debug)]
pub enum ArchiveSource {
    Stdin,
    File(crate::local_file::LocalFile),
    /// An OCI image layout directory.
    Dir(PathBuf),
}

impl ArchiveSource {
    /// `-`, a directory, or a regular file the user can read.
    pub fn open(path: &Path) -> Result<ArchiveSource, ApiError> {
        if path == Path::new("-") {
            if std::io::stdin().is_terminal() {
                return Err(ApiError::invalid(
                    "standard input is a terminal; pipe an archive in (`docker save IMAGE | hangar image import - --name NAME`)",
                ));
            }
            return Ok(ArchiveSource::Stdin);
        }
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                if !path.join("index.json").is_file() || !path.join("oci-layout").is_file() {
                    return Err(ApiError::invalid(format!(
                        "{} is a directory but not an OCI image layout (no index.json and oci-layout)",
                        path.display()
                    )));
                }
                Ok(ArchiveSource::Dir(path.to_path_buf()))
            }
            _ => crate::local_file::open_regular("archive", path)
                .map(ArchiveSource::File)
                .map_err(|e| ApiError::invalid(e.to_string())),
        }
    }

    fn total(&self) -> Option<u64> {
        match self {
            ArchiveSource::File(f) => Some(f.len),
            _ => None,
        }
    }
}

/// Sends the archive; returns the import operation the daemon began.
pub async fn import_archive(
    client: &Client,
    name: &str,
    source: ArchiveSource,
) -> Result<Operation, ApiError> {
    let path = format!("/v1/images/import?name={}", crate::cmd::seg(name));
    send_archive(client, &path, "application/x-tar", name, source).await
}

/// Streams `source` as the body of `POST path` and decodes the answer.
pub async fn send_archive<T: serde::de::DeserializeOwned>(
    client: &Client,
    path: &str,
    content_type: &str,
    name: &str,
    source: ArchiveSource,
) -> Result<T, ApiError> {
    let bar = progress_bar(name, source.total());
    let (tx, rx) = mpsc::channel::<FrameResult>(QUEUE);
    let reader_bar = bar.clone();
    let reader = tokio::task::spawn_blocking(move || send(source, &tx, reader_bar.as_ref()));
    let body = StreamBody::new(futures::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    }));
    let answer = client.post_stream(path, content_type, body).await;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    // The reader's own error explains a broken-off request best.
    match tokio::time::timeout(Duration::from_secs(5), reader).await {
        Ok(Ok(Err(e))) => Err(e),
        Ok(Err(e)) => Err(ApiError::internal(format!(
            "the archive reader failed: {e}"
        ))),
        Ok(Ok(Ok(()))) | Err(_) => answer,
    }
}

/// Writes body frames into the channel.
struct FrameWriter<'a> {
    tx: &'a mpsc::Sender<FrameResult>,
    bar: Option<&'a ProgressBar>,
    gone: bool,
}

impl Write for FrameWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.gone {
            // The connection is gone; its error is the one to report.
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the daemon closed the upload",
            ));
        }
        if self
            .tx
            .blocking_send(Ok(Frame::data(Bytes::copy_from_slice(buf))))
            .is_err()
        {
            self.gone = true;
        }
        if let Some(b) = self.bar {
            b.inc(buf.len() as u64);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn send(
    source: ArchiveSource,
    tx: &mpsc::Sender<FrameResult>,
    bar: Option<&ProgressBar>,
) -> Result<(), ApiError> {
    let out = FrameWriter {
        tx,
        bar,
        gone: false,
    };
    let mut out = std::io::BufWriter::with_capacity(CHUNK, out);
    let fail = |what: String| {
        let _ = tx.blocking_send(Err(std::io::Error::other(what.clone())));
        ApiError::invalid(format!("{what}; nothing was imported"))
    };
    let result = match source {
        ArchiveSource::Stdin => copy(std::io::stdin().lock(), &mut out)
            .map_err(|e| format!("cannot read standard input: {e}")),
        ArchiveSource::File(f) => {
            let path = f.path.clone();
            copy(f.file, &mut out).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        ArchiveSource::Dir(dir) => {
            let mut b = tar::Builder::new(&mut out);
            // Links stay links; the daemon reads members, never follows.
            b.follow_symlinks(false);
            b.append_dir_all(".", &dir)
                .and_then(|_| b.finish())
                .map_err(|e| format!("cannot read the layout directory {}: {e}", dir.display()))
        }
    };
    match result.and_then(|()| out.flush().map_err(|e| e.to_string())) {
        Ok(()) => Ok(()),
        Err(_) if out.get_ref().gone => Ok(()),
        Err(e) => Err(fail(e)),
    }
}

fn copy(mut from: impl Read, to: &mut impl Write) -> Result<(), std::io::Error> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

fn progress_bar(name: &str, total: Option<u64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let b = match total {
        Some(t) => {
            let b = ProgressBar::new(t);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b
        }
        None => {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{msg} {bytes} ({bytes_per_sec})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        }
    };
    b.set_message(format!("sending {name}"));
    b.enable_steady_tick(Duration::from_millis(200));
    Some(b)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_layout_dir_goes_out_as_a_tar_of_its_members() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("index.json"), "{}").unwrap();
        std::fs::write(d.path().join("oci-layout"), "{}").unwrap();
        std::fs::create_dir_all(d.path().join("blobs/sha256")).unwrap();
        std::fs::write(d.path().join("blobs/sha256/ab"), "blob").unwrap();
        let src = ArchiveSource::open(d.path()).unwrap();
        let (tx, mut rx) = mpsc::channel(1024);

        send(src, &tx, None).unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(frame) = rx.blocking_recv() {
            got.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }

        let mut names: Vec<String> = tar::Archive::new(&got[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert!(names.contains(&"blobs/sha256/ab".to_string()), "{names:?}");
        assert!(names.contains(&"index.json".to_string()), "{names:?}");
    }

    #[test]
    fn a_plain_directory_is_refused_before_anything_is_sent() {
        let d = tempfile::tempdir().unwrap();
        let err = ArchiveSource::open(d.path()).unwrap_err();
        assert!(
            err.message.contains("not an OCI image layout"),
            "{}",
            err.message
        );
    }
}

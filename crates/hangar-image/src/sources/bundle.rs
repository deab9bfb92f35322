//! Hangar's portable image bundle (`NAME.hangar.tar.zst`): a zstd-compressed
//! tar whose first member, `hangar-bundle.json`, names the image, carries
//! its manifest and the size and sha256 of each part, followed by the parts
//! themselves (`vmlinux`, optional `initrd.img`, `rootfs.ext4`).
//!
//! [`write`] makes one from an image dir (each part hashed first, so the
//! header can come first; zstd frames carry checksums). [`read`] takes one
//! in a single streaming pass — whole-bundle sha256, zstd decode, tar, each
//! part written sparse into the staging dir — and checks the bundle's
//! sha256 when one is given (which authenticates every part), else each
//! part's sha256 from the header; a mismatch is an error, after which the
//! caller removes the staging dir.

use std::io::{Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use sha2::{Digest, Sha256};

use super::pipe;
use crate::bootstrap::{INITRD_FILE, KERNEL_FILE, ROOTFS_FILE};
use crate::{ImageError, ImageManifest};

/// The first member of every bundle.
pub const HEADER: &str = "hangar-bundle.json";
/// The format this code writes and reads.
pub const FORMAT: &str = "hangar-bundle/1";
/// How large a header may be.
const MAX_HEADER: u64 = 1 << 20;
/// How much zero padding may follow the parts (a tar's end is 1 KiB of
/// zeros, up to a 10 KiB record from other writers).
const MAX_TAIL: u64 = 64 << 10;

/// The bundle's first member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleHeader {
    pub format: String,
    /// The image's name where it was exported.
    pub name: String,
    pub manifest: ImageManifest,
    pub parts: Vec<Part>,
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

fn bad(reason: impl Into<String>) -> ImageError {
    ImageError::BadOci {
        what: "the bundle".into(),
        reason: reason.into(),
    }
}

/// The part files of an image dir, in bundle order.
fn part_files(m: &ImageManifest) -> Vec<(&'static str, String)> {
    let mut v = vec![(KERNEL_FILE, m.kernel.clone())];
    if let Some(i) = &m.initrd {
        v.push((INITRD_FILE, i.clone()));
    }
    v.push((ROOTFS_FILE, m.rootfs.clone()));
    v
}

/// Writes image `dir` (named `name`) as a bundle into `out`.
pub fn write(
    dir: &Path,
    name: &str,
    out: impl Write,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), ImageError> {
    let manifest = ImageManifest::load(dir)?;
    let mut parts = Vec::new();
    for (file, stored) in part_files(&manifest) {
        let p = dir.join(&stored);
        let bytes = std::fs::metadata(&p)
            .map_err(|e| ImageError::io("stat", &p, e))?
            .len();
        parts.push(Part {
            file: file.to_string(),
            bytes,
            sha256: crate::import::sha256_file(&p)?,
        });
    }
    // The manifest as the reader will store it: parts under their bundle names.
    let mut stored = manifest.clone();
    stored.kernel = KERNEL_FILE.to_string();
    stored.initrd = manifest.initrd.as_ref().map(|_| INITRD_FILE.to_string());
    stored.rootfs = ROOTFS_FILE.to_string();
    let header = BundleHeader {
        format: FORMAT.to_string(),
        name: name.to_string(),
        manifest: stored,
        parts: parts.clone(),
    };
    let json = serde_json::to_vec_pretty(&header)
        .map_err(|e| bad(format!("cannot encode the header: {e}")))?;
    let io = |e: std::io::Error| ImageError::io("write the bundle of", dir, e);
    let mut zstd = zstd::stream::write::Encoder::new(out, 3).map_err(io)?;
    // A frame checksum (xxh64, nearly free) lets every reader notice a
    // damaged bundle, with or without its sha256.
    zstd.include_checksum(true).map_err(io)?;
    let mut tar = tar::Builder::new(zstd);
    let mut h = header_for(json.len() as u64);
    tar.append_data(&mut h, HEADER, json.as_slice())
        .map_err(io)?;
    for ((_, stored), part) in part_files(&manifest).into_iter().zip(&parts) {
        if cancelled() {
            return Err(ImageError::Cancelled);
        }
        let p = dir.join(stored);
        let f = std::fs::File::open(&p).map_err(|e| ImageError::io("read", &p, e))?;
        let mut h = header_for(part.bytes);
        tar.append_data(&mut h, &part.file, f.take(part.bytes))
            .map_err(io)?;
    }
    let zstd = tar.into_inner().map_err(io)?;
    zstd.finish().map_err(io)?.flush().map_err(io)
}

fn header_for(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    h
}

/// Reads a bundle from `input` into `out_dir` (existing, private, empty),
/// checking it against `sha256` (of the whole bundle file, lowercase hex)
/// when given, and writes the image manifest there. The parts may be at
/// most `max_bytes` together. Returns the bundle's header and its sha256.
pub fn read(
    input: impl Read + Send,
    sha256: Option<&str>,
    out_dir: &Path,
    max_bytes: u64,
    on_bytes: &dyn Fn(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<(BundleHeader, String), ImageError> {
    if let Some(want) = sha256 {
        check_hex_sha256(want)?;
    }
    let io = |e: std::io::Error| bad(format!("cannot read it: {e}"));
    // Three threads: the input and its sha256; here the zstd decode (the
    // longest: it expands the rootfs, gigabytes, zeros included) and the
    // tar; and the sparse writes of the large parts.
    let (header, got) = std::thread::scope(|scope| {
        let outer = Sha256Reader {
            inner: input,
            hasher: Sha256::new(),
        };
        let (compressed, raw_thread) =
            pipe::read_ahead(scope, outer, |o| Ok(hex::encode(o.hasher.finalize())));
        let read = (|| {
            let decoded = zstd::stream::read::Decoder::new(compressed).map_err(io)?;
            let mut archive = tar::Archive::new(decoded);
            let header = read_parts(
                &mut archive,
                sha256,
                out_dir,
                max_bytes,
                on_bytes,
                cancelled,
            )?;
            // The archive's end: zero padding, bounded, so the zstd frame
            // ends (and its checksum is checked) without decoding whatever
            // a hostile bundle put after it.
            let mut decoded = archive.into_inner();
            let mut tail = Vec::new();
            (&mut decoded)
                .take(MAX_TAIL + 1)
                .read_to_end(&mut tail)
                .map_err(io)?;
            if tail.len() as u64 > MAX_TAIL || tail.iter().any(|b| *b != 0) {
                return Err(bad("it has data after its parts"));
            }
            // The rest of the input, which counts in the sha256.
            std::io::copy(&mut decoded.finish(), &mut std::io::sink()).map_err(io)?;
            Ok(header)
        })();
        // Joined on every path (the reader above is gone by now, so the
        // thread stops at its next chunk), and its panic is an error here,
        // not a second panic out of the scope.
        let got = raw_thread
            .join()
            .map_err(|_| bad("the reading thread panicked"));
        let header = read?;
        Ok::<_, ImageError>((header, got?.map_err(io)?))
    })?;
    if let Some(want) = sha256 {
        if got != want {
            return Err(bad(format!(
                "its sha256 is {got}, not the {want} given; it was not imported and nothing was kept"
            )));
        }
    }
    header.manifest.save(out_dir)?;
    Ok((header, got))
}

/// The bundle as it arrives, hashed on the way.
struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads the header and writes each part into `out_dir`.
fn read_parts(
    archive: &mut tar::Archive<impl Read>,
    sha256: Option<&str>,
    out_dir: &Path,
    max_bytes: u64,
    on_bytes: &dyn Fn(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<BundleHeader, ImageError> {
    let io = |e: std::io::Error| bad(format!("cannot read it: {e}"));
    let mut entries = archive.entries().map_err(io)?;
    let first = entries
        .next()
        .ok_or_else(|| bad("it is empty"))?
        .map_err(io)?;
    if first.path_bytes().as_ref() != HEADER.as_bytes() || first.size() > MAX_HEADER {
        return Err(bad(format!(
            "its first member is not {HEADER}; not a Hangar bundle"
        )));
    }
    let mut json = Vec::new();
    first.take(MAX_HEADER).read_to_end(&mut json).map_err(io)?;
    let header: BundleHeader =
        serde_json::from_slice(&json).map_err(|e| bad(format!("{HEADER} is not valid: {e}")))?;
    check_header(&header, max_bytes)?;
    let mut buf = vec![0u8; 1 << 20];
    for part in &header.parts {
        if cancelled() {
            return Err(ImageError::Cancelled);
        }
        let mut entry = entries
            .next()
            .ok_or_else(|| bad(format!("it ends before {}", part.file)))?
            .map_err(io)?;
        if entry.path_bytes().as_ref() != part.file.as_bytes() || entry.size() != part.bytes {
            return Err(bad(format!(
                "member {:?} ({} bytes) is not the {} ({} bytes) its header announced",
                String::from_utf8_lossy(&entry.path_bytes()),
                entry.size(),
                part.file,
                part.bytes
            )));
        }
        let path = out_dir.join(&part.file);
        let mut f = hangar_host::private::create_new_private_file(&path)
            .map_err(|e| ImageError::io("create", &path, e))?;
        let write_err = |e| ImageError::io("write", &path, e);
        if sha256.is_some() {
            // The bundle's own sha256, checked at the end, covers every
            // byte: the parts are what those bytes decode to. Hashing
            // them again (the rootfs expands to gigabytes) would be most
            // of the pull's time and prove nothing more.
            let copied =
                crate::flatten::copy::copy_sparse_behind(&mut entry, &mut f).map_err(write_err)?;
            on_bytes(copied);
            continue;
        }
        // No bundle sha256: each part against its header's, which catches
        // a damaged bundle (not a forged one).
        let (copied, got) = crate::flatten::copy::copy_sparse_sha256(&mut entry, &mut f, &mut buf)
            .map_err(write_err)?;
        on_bytes(copied);
        if got != part.sha256 {
            return Err(bad(format!(
                "its {} has sha256 {got}, its header says {}; nothing was kept",
                part.file, part.sha256
            )));
        }
    }
    if entries.next().is_some() {
        return Err(bad("it has members after its parts"));
    }
    Ok(header)
}

fn check_hex_sha256(s: &str) -> Result<(), ImageError> {
    if s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(bad(format!(
            "{s:?} is not a sha256 (64 lowercase hex digits)"
        )))
    }
}

/// The header must describe exactly the parts its manifest names, under
/// their fixed names, with a manifest whose digest is its own.
fn check_header(h: &BundleHeader, max_bytes: u64) -> Result<(), ImageError> {
    if h.format != FORMAT {
        return Err(bad(format!(
            "its format is {:?}; this Hangar reads {FORMAT}",
            h.format
        )));
    }
    let m = &h.manifest;
    let want: Vec<&str> = part_files(m).iter().map(|(f, _)| *f).collect();
    let got: Vec<&str> = h.parts.iter().map(|p| p.file.as_str()).collect();
    if want != got
        || m.kernel != KERNEL_FILE
        || m.rootfs != ROOTFS_FILE
        || m.initrd.as_deref().is_some_and(|i| i != INITRD_FILE)
    {
        return Err(bad(format!("its parts {got:?} do not match its manifest")));
    }
    if m.digest != m.compute_digest() {
        return Err(bad("its manifest's digest does not match the manifest"));
    }
    for p in &h.parts {
        check_hex_sha256(&p.sha256)?;
    }
    let total: u64 = h.parts.iter().map(|p| p.bytes).sum();
    if total > max_bytes {
        return Err(bad(format!(
            "its parts are {total} bytes, more than the [images] max_rootfs_size {max_bytes}"
        )));
    }
    Ok(())
}

/// Where a bundle may be downloaded from: `https://` anywhere, plain
/// `http://` only from a loopback address (as `--insecure` registries).
pub fn check_url(url: &str) -> Result<reqwest::Url, ImageError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(format!("{url:?} is not a URL: {e}")))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" => {
            let host = parsed.host_str().unwrap_or("");
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if super::oci::is_loopback_registry(host) {
                Ok(parsed)
            } else {
                Err(bad(format!("{url} is plain HTTP; bundles come over https:// (http:// only from a loopback address)")))
            }
        }
        other => Err(bad(format!(
            "{url}: {other}:// is not a bundle source (https://, or file:// read by the CLI)"
        ))),
    }
}

/// Downloads a bundle into `out_dir` in one streaming pass (download,
/// sha256, decompress, verify each part, write).
pub async fn download(
    url: &str,
    trust: &super::Trust,
    sha256: Option<&str>,
    out_dir: &Path,
    max_bytes: u64,
    progress: crate::ProgressFn<'_>,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(BundleHeader, String), ImageError> {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let parsed = check_url(url)?;
    let net = |e: reqwest::Error| ImageError::Registry {
        registry: parsed.host_str().unwrap_or("").to_string(),
        reason: crate::sources::trust::net_error(&e),
    };
    let client = trust
        .http_client(std::time::Duration::from_secs(120))
        .map_err(net)?;
    let resp = tokio::select! {
        r = client.get(parsed.clone()).send() => r.map_err(net)?,
        _ = cancel.cancelled() => return Err(ImageError::Cancelled),
    };
    let resp = resp.error_for_status().map_err(net)?;
    let total = resp.content_length();
    let done = Arc::new(AtomicU64::new(0));
    let counter = done.clone();
    // A connection that breaks off is the network's fault, not the
    // bundle's: kept here, it is reported as such below whatever the
    // decoder made of the short read. (A body with neither a length nor
    // chunks cannot tell a cut from its end: that shows as a bad bundle.)
    let broke: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
    let broke_in_stream = broke.clone();
    let stream = resp
        .bytes_stream()
        .map(move |r| match r {
            Ok(b) => {
                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                Ok(b)
            }
            Err(e) => {
                let cause = crate::sources::trust::net_error(&e);
                if let Ok(mut slot) = broke_in_stream.lock() {
                    slot.get_or_insert(cause);
                }
                Err(std::io::Error::other(e))
            }
        })
        .take_until(Box::pin(cancel.clone().cancelled_owned()));
    let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
    let (dir, want, token) = (
        out_dir.to_path_buf(),
        sha256.map(str::to_string),
        cancel.clone(),
    );
    let mut task = tokio::task::spawn_blocking(move || {
        read(reader, want.as_deref(), &dir, max_bytes, &|_| {}, &|| {
            token.is_cancelled()
        })
    });
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            r = &mut task => {
                let r = r.map_err(|e| bad(format!("the bundle reader failed: {e}")))?;
                if cancel.is_cancelled() {
                    return Err(ImageError::Cancelled);
                }
                let broke = broke.lock().ok().and_then(|mut slot| slot.take());
                return match (r, broke) {
                    (Err(_), Some(cause)) => Err(ImageError::Registry {
                        registry: parsed.host_str().unwrap_or("").to_string(),
                        reason: format!(
                            "the download broke off after {} bytes: {cause}; nothing was kept, pull it again",
                            done.load(Ordering::Relaxed)
                        ),
                    }),
                    (r, _) => r,
                };
            }
            _ = tick.tick() => progress(hangar_api::Progress {
                phase: "download".into(),
                current: Some(done.load(Ordering::Relaxed)),
                total,
                unit: Some("bytes".into()),
                detail: Some(url.to_string()),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn image_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join(KERNEL_FILE), b"\x7fELF kernel").expect("kernel");
        std::fs::write(d.path().join(INITRD_FILE), b"initrd").expect("initrd");
        let f = std::fs::File::create(d.path().join(ROOTFS_FILE)).expect("rootfs");
        f.set_len(64 << 20).expect("sparse");
        std::os::unix::fs::FileExt::write_at(&f, b"superblock", 1024).expect("write");
        ImageManifest::new(
            "test",
            KERNEL_FILE,
            Some(INITRD_FILE),
            ROOTFS_FILE,
            64 << 20,
            None,
        )
        .save(d.path())
        .expect("manifest");
        d
    }

    fn bundle_of(dir: &Path) -> Vec<u8> {
        let mut out = Vec::new();
        write(dir, "img", &mut out, &|| false).expect("write");
        out
    }

    #[test]
    fn a_bundle_round_trips_sparse_and_verified() {
        let src = image_dir();
        let bytes = bundle_of(src.path());
        assert!(bytes.len() < 1 << 20, "zeros compress: {}", bytes.len());
        let sum = hex::encode(Sha256::digest(&bytes));
        let out = tempfile::tempdir().expect("out");

        let (h, got) = read(
            &bytes[..],
            Some(&sum),
            out.path(),
            1 << 30,
            &|_| {},
            &|| false,
        )
        .expect("read");

        assert_eq!(got, sum);
        assert_eq!(h.name, "img");
        for f in [KERNEL_FILE, INITRD_FILE, ROOTFS_FILE] {
            assert_eq!(
                std::fs::read(out.path().join(f)).expect("part"),
                std::fs::read(src.path().join(f)).expect("src"),
                "{f}"
            );
        }
        let m = ImageManifest::load(out.path()).expect("manifest");
        assert_eq!(m, ImageManifest::load(src.path()).expect("src manifest"));
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(out.path().join(ROOTFS_FILE))
            .expect("meta")
            .blocks();
        assert!(blocks < 1024, "the rootfs is sparse: {blocks} blocks");
    }

    #[test]
    fn data_after_the_parts_is_refused() {
        let src = image_dir();
        let bytes = bundle_of(src.path());
        let mut tar = zstd::decode_all(&bytes[..]).expect("decode");
        tar.extend_from_slice(&[7u8; 4096]);
        let tampered = zstd::encode_all(&tar[..], 3).expect("encode");
        let out = tempfile::tempdir().expect("out");
        let err = read(&tampered[..], None, out.path(), 1 << 30, &|_| {}, &|| false)
            .expect_err("trailing data");
        assert!(err.to_string().contains("data after its parts"), "{err}");
        // Zero padding is what a tar ends with: fine.
        let mut padded = zstd::decode_all(&bytes[..]).expect("decode");
        padded.extend_from_slice(&[0u8; 8192]);
        let padded = zstd::encode_all(&padded[..], 3).expect("encode");
        let out = tempfile::tempdir().expect("out");
        read(&padded[..], None, out.path(), 1 << 30, &|_| {}, &|| false).expect("padded");
    }

    #[test]
    fn a_wrong_sha256_or_a_corrupted_bundle_is_refused() {
        let src = image_dir();
        let bytes = bundle_of(src.path());
        let out = tempfile::tempdir().expect("out");
        let err = read(
            &bytes[..],
            Some(&"0".repeat(64)),
            out.path(),
            1 << 30,
            &|_| {},
            &|| false,
        )
        .expect_err("sha");
        assert!(err.to_string().contains("not the"), "{err}");

        let mut bad = bytes.clone();
        let at = bad.len() / 2;
        bad[at] ^= 0x55;
        let out = tempfile::tempdir().expect("out");
        assert!(read(&bad[..], None, out.path(), 1 << 30, &|_| {}, &|| false).is_err());

        let out = tempfile::tempdir().expect("out");
        let err =
            read(&bytes[..], None, out.path(), 1 << 20, &|_| {}, &|| false).expect_err("limit");
        assert!(err.to_string().contains("max_rootfs_size"), "{err}");
    }

    /// Serves `body` once over plain HTTP on 127.0.0.1, announcing
    /// `announced` bytes and sending only `send` of them before closing.
    fn serve_once(body: Vec<u8>, announced: usize, send: usize) -> String {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
                line.clear();
            }
            let mut stream = stream;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\n\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body[..send]);
        });
        format!("http://127.0.0.1:{port}/b.hangar.tar.zst")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_download_that_breaks_off_is_a_network_error_not_a_bad_bundle() {
        let src = image_dir();
        let bytes = bundle_of(src.path());
        let sha = hex::encode(Sha256::digest(&bytes));
        let trust = super::super::Trust::default();
        let cancel = tokio_util::sync::CancellationToken::new();

        // Serves the bundle, cut after `send` bytes, and downloads it.
        let fetch = |send: usize| {
            let url = serve_once(bytes.clone(), bytes.len(), send);
            let (trust, sha, cancel) = (trust.clone(), sha.clone(), cancel.clone());
            async move {
                let out = tempfile::tempdir().expect("out");
                let max = 1 << 30;
                download(&url, &trust, Some(&sha), out.path(), max, &|_| {}, &cancel).await
            }
        };
        let (_, got) = fetch(bytes.len()).await.expect("a whole download");
        assert_eq!(got, sha);
        let err = fetch(bytes.len() / 2).await.expect_err("a short download");
        assert!(
            matches!(&err, ImageError::Registry { reason, .. } if reason.contains("broke off")),
            "{err:?}"
        );
    }
}

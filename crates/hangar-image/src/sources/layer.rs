//! One layer blob from any source: read once, in one pass, as it arrives —
//! hashed (the blob's digest), decompressed (gzip or zstd, told apart by
//! their magic bytes; uncompressed tar passes through), hashed again (the
//! config's `diff_id`) and applied by the flattener. A digest mismatch
//! fails the layer after the fact; the caller then removes the staging
//! tree, so nothing unverified survives.

use std::io::{BufRead, BufReader, Read};

use sha2::{Digest, Sha256};

use crate::flatten::{Flattener, LayerStats};
use crate::ImageError;

/// A layer as a manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDesc {
    /// `sha256:…` of the blob as stored (compressed); absent for the
    /// layers of a docker archive, which are named by path.
    pub digest: Option<String>,
    /// Size of the blob, when the manifest gives it.
    pub size: Option<u64>,
    /// `sha256:…` of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Option<String>,
    /// For messages: the digest, or the archive path.
    pub label: String,
}

/// Reads through, hashing and counting, and reporting each read's size;
/// reading past `limit` bytes is an error (a layer that decompresses
/// without end must not fill the disk).
pub(crate) struct HashingReader<'a, R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    limit: u64,
    on_bytes: &'a dyn Fn(u64),
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if self.bytes > self.limit {
            return Err(std::io::Error::other(format!(
                "it unpacks to more than {} bytes, the [images] max_rootfs_size limit",
                self.limit
            )));
        }
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

impl<'a, R> HashingReader<'a, R> {
    /// Reads `inner` without a limit, telling `on_bytes` each read's size.
    pub(crate) fn new(inner: R, on_bytes: &'a dyn Fn(u64)) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            limit: u64::MAX,
            on_bytes,
        }
    }

    /// Lowercase hex sha256 of what was read so far.
    pub(crate) fn hex(&self) -> String {
        hex::encode(self.hasher.clone().finalize())
    }

    fn digest(&self) -> String {
        format!("sha256:{}", self.hex())
    }
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// `input` decompressed by what its first bytes say: gzip, zstd, or as it
/// is (an uncompressed tar). Layers and whole archives both come this way.
pub(crate) fn decompressed<'a, R: BufRead + 'a>(
    input: &'a mut R,
) -> std::io::Result<Box<dyn Read + 'a>> {
    let head = input.fill_buf()?;
    Ok(if head.starts_with(&GZIP_MAGIC) {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else if head.starts_with(&ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input)?)
    } else {
        Box::new(input)
    })
}
const READ_BUFFER: usize = 1 << 20;

/// Verifies, decompresses and applies one layer read from `blob`.
/// `on_bytes` gets the compressed bytes as they are read (progress);
/// `budget` is how many uncompressed bytes the image may still take, and
/// is reduced by this layer's. Returns what the layer did and the blob's
/// size.
pub fn apply_blob(
    blob: impl Read,
    desc: &LayerDesc,
    flattener: &mut Flattener,
    budget: &mut u64,
    on_bytes: &dyn Fn(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<(LayerStats, u64), ImageError> {
    let io_err = |e: std::io::Error| ImageError::BadOci {
        what: format!("layer {}", desc.label),
        reason: format!("cannot read it: {e}"),
    };
    let mut compressed = BufReader::with_capacity(READ_BUFFER, HashingReader::new(blob, on_bytes));
    let stats;
    {
        let tar = decompressed(&mut compressed).map_err(io_err)?;
        let mut plain = HashingReader {
            limit: *budget,
            ..HashingReader::new(tar, &|_| {})
        };
        stats = flattener.apply_layer(&mut plain, &desc.label, cancelled)?;
        // The tar's end-of-archive blocks and any padding are part of what
        // the diff_id covers.
        std::io::copy(&mut plain, &mut std::io::sink()).map_err(io_err)?;
        *budget -= plain.bytes.min(*budget);
        if let Some(want) = &desc.diff_id {
            let got = plain.digest();
            if &got != want {
                return Err(mismatch(desc, "uncompressed content (diff_id)", want, &got));
            }
        }
    }
    std::io::copy(&mut compressed, &mut std::io::sink()).map_err(io_err)?;
    let outer = compressed.get_ref();
    if let Some(want) = &desc.digest {
        let got = outer.digest();
        if &got != want {
            return Err(mismatch(desc, "blob", want, &got));
        }
    }
    if let Some(size) = desc.size {
        if outer.bytes != size {
            return Err(ImageError::BadOci {
                what: format!("layer {}", desc.label),
                reason: format!("it is {} bytes, its manifest says {size}", outer.bytes),
            });
        }
    }
    Ok((stats, outer.bytes))
}

fn mismatch(desc: &LayerDesc, what: &str, want: &str, got: &str) -> ImageError {
    ImageError::BadOci {
        what: format!("layer {}", desc.label),
        reason: format!(
            "its {what} has digest {got}, the manifest says {want}; the image was not imported"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer_tar(file: &str, body: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_cksum();
        b.append_data(&mut h, file, body).expect("append");
        b.into_inner().expect("tar")
    }

    fn sha(b: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(b)))
    }

    fn apply(
        blob: &[u8],
        desc: &LayerDesc,
    ) -> (tempfile::TempDir, Result<(LayerStats, u64), ImageError>) {
        let t = tempfile::tempdir().expect("tempdir");
        let mut f = Flattener::new(t.path()).expect("flattener");
        let r = apply_blob(blob, desc, &mut f, &mut u64::MAX.clone(), &|_| {}, &|| {
            false
        });
        (t, r)
    }

    #[test]
    fn gzip_zstd_and_plain_layers_apply_and_verify() {
        let tar = layer_tar("hello.txt", b"hi\n");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).expect("gzip");
        let gz = gz.finish().expect("gzip");
        let zs = zstd::encode_all(&tar[..], 3).expect("zstd");
        for blob in [tar.clone(), gz, zs] {
            let desc = LayerDesc {
                digest: Some(sha(&blob)),
                size: Some(blob.len() as u64),
                diff_id: Some(sha(&tar)),
                label: "l".into(),
            };
            let (t, r) = apply(&blob, &desc);
            let (_, n) = r.expect("apply");
            assert_eq!(n, blob.len() as u64);
            assert_eq!(
                std::fs::read(t.path().join("hello.txt")).expect("read"),
                b"hi\n"
            );
        }
    }

    #[test]
    fn a_layer_past_the_budget_fails_and_the_budget_shrinks() {
        let tar = layer_tar("big", &vec![0u8; 64 << 10]);
        let zs = zstd::encode_all(&tar[..], 3).expect("zstd");
        let desc = LayerDesc {
            digest: None,
            size: None,
            diff_id: None,
            label: "bomb".into(),
        };
        let t = tempfile::tempdir().expect("tempdir");
        let mut f = Flattener::new(t.path()).expect("flattener");
        let mut budget = 16 << 10;
        let err =
            apply_blob(&zs[..], &desc, &mut f, &mut budget, &|_| {}, &|| false).expect_err("over");
        assert!(err.to_string().contains("max_rootfs_size"), "{err}");

        let mut budget = 1 << 20;
        apply_blob(&zs[..], &desc, &mut f, &mut budget, &|_| {}, &|| false).expect("fits");
        assert_eq!(budget, (1 << 20) - tar.len() as u64);
    }

    #[test]
    fn a_wrong_blob_digest_diff_id_or_size_fails() {
        let tar = layer_tar("a", b"x");
        let good = LayerDesc {
            digest: Some(sha(&tar)),
            size: Some(tar.len() as u64),
            diff_id: Some(sha(&tar)),
            label: "l".into(),
        };
        let other = sha(b"other");
        for desc in [
            LayerDesc {
                digest: Some(other.clone()),
                ..good.clone()
            },
            LayerDesc {
                diff_id: Some(other.clone()),
                ..good.clone()
            },
            LayerDesc {
                size: Some(1),
                ..good.clone()
            },
        ] {
            let (_t, r) = apply(&tar, &desc);
            let err = r.expect_err("must fail");
            assert!(matches!(err, ImageError::BadOci { .. }), "{err}");
        }
    }
}

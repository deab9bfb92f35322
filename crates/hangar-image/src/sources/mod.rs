//! Where OCI images come from: a registry ([`oci`]) or an archive a client
//! streams (`docker save`, an OCI image layout; [`archive`]). Both end the
//! same way: their layers, verified by digest on the way, applied in order
//! by [`crate::flatten::Flattener`] into a staging tree ([`layer`]), and
//! the image config's run settings kept ([`image_config`]). The tree then
//! goes to [`crate::finalize`].

pub mod archive;
pub mod bundle;
pub mod image_config;
pub mod layer;
pub mod oci;
mod oci_token;
mod pipe;
pub mod trust;

use crate::ImageError;

pub use image_config::{ImageConfig, RunConfig};
pub use layer::LayerDesc;
pub use trust::Trust;

/// Checks a `sha256:<64 lowercase hex>` digest: digests name files in
/// archives and URLs in registries, so nothing else may pass.
pub fn check_digest(digest: &str, what: &str) -> Result<(), ImageError> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if ok {
        Ok(())
    } else {
        Err(ImageError::BadOci {
            what: what.to_string(),
            reason: format!("{digest:?} is not a sha256 digest (sha256:<64 hex digits>)"),
        })
    }
}

/// Makes TLS usable: reqwest (ours and oci-client's) needs a process-wide
/// rustls crypto provider; ring, which the SSH code already links. A
/// second install is refused harmlessly.
pub(crate) fn tls_ready() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What came out of a source: the tree is in the staging dir the caller
/// gave; this says how to run it and where it came from.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub run: RunConfig,
    /// For `image ls`: e.g. `oci:127.0.0.1:5000/team/golden:v3@sha256:…`.
    pub source: String,
    /// Compressed bytes read, for logs.
    pub bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_hex_digests_pass() {
        let good = format!("sha256:{}", "ab".repeat(32));
        check_digest(&good, "t").expect("good");
        for bad in [
            "sha256:../../x".to_string(),
            format!("sha512:{}", "ab".repeat(32)),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}/", "ab".repeat(32)),
            String::new(),
        ] {
            assert!(check_digest(&bad, "t").is_err(), "{bad}");
        }
    }
}

//! Which HTTPS servers the daemon's downloads trust: the system's roots
//! (through reqwest's platform verifier) plus the CA certificates named by
//! `[images] ca_certs`, for a team registry, bundle host or catalog behind
//! a private CA. One [`Trust`] serves registry pulls (oci-client), the
//! token exchange, bundle downloads and catalogs, so they all agree.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::ImageError;

/// Redirects a download follows at most.
const MAX_REDIRECTS: usize = 10;

/// Extra CA certificates (DER), shared cheaply.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    roots: Arc<Vec<Vec<u8>>>,
}

impl Trust {
    /// Reads PEM files of CA certificates. A file that cannot be read or
    /// holds no valid certificate is an error naming it: a typo here would
    /// otherwise show up only as a TLS failure at the first pull.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Self, ImageError> {
        let mut roots = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let pem = std::fs::read(path).map_err(|e| ImageError::io("read", path, e))?;
            let bad = |reason: String| ImageError::BadOci {
                what: format!("CA certificate file {}", path.display()),
                reason,
            };
            let before = roots.len();
            // A trust store of its own parses each certificate now, so a
            // broken one names its file.
            let mut check = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("not PEM: {e}")))?;
                check
                    .add(cert.clone())
                    .map_err(|e| bad(format!("a certificate in it is not valid: {e}")))?;
                roots.push(cert.to_vec());
            }
            if roots.len() == before {
                return Err(bad(
                    "it holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
                ));
            }
        }
        Ok(Trust {
            roots: Arc::new(roots),
        })
    }

    /// How many extra CA certificates are trusted.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether only the system's roots are trusted.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// An HTTP client for bundles, catalogs and token exchanges: 30 s to
    /// connect, and `read_timeout` without a byte before a transfer counts
    /// as stalled.
    /// Redirects are followed (up to 10) only to places a URL given here
    /// could name itself: `https://`, or `http://` on loopback; never from
    /// https down to plain HTTP elsewhere.
    pub(crate) fn http_client(&self, read_timeout: Duration) -> reqwest::Result<reqwest::Client> {
        let policy = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
            } else if let Err(e) = super::bundle::check_url(attempt.url().as_str()) {
                attempt.error(format!("refused a redirect: {e}"))
            } else {
                attempt.follow()
            }
        });
        self.client(read_timeout, policy)
    }

    /// As [`Trust::http_client`], following no redirect: for a POST that
    /// carries a secret (a refresh token), which a 307 would send on.
    pub(crate) fn http_client_no_redirects(
        &self,
        read_timeout: Duration,
    ) -> reqwest::Result<reqwest::Client> {
        self.client(read_timeout, reqwest::redirect::Policy::none())
    }

    fn client(
        &self,
        read_timeout: Duration,
        redirects: reqwest::redirect::Policy,
    ) -> reqwest::Result<reqwest::Client> {
        super::tls_ready();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(read_timeout)
            .redirect(redirects);
        for der in self.roots.iter() {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(der)?);
        }
        builder.build()
    }

    /// The extra roots as oci-client takes them (added to the system's).
    pub(crate) fn oci_roots(&self) -> Vec<oci_client::client::Certificate> {
        self.roots
            .iter()
            .map(|der| oci_client::client::Certificate {
                encoding: oci_client::client::CertificateEncoding::Der,
                data: der.clone(),
            })
            .collect()
    }
}

/// A network error with its whole cause chain (reqwest's own message
/// leaves out why: refused, DNS, TLS), and for a certificate that is not
/// trusted, what to do about it.
pub(crate) fn net_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        text.push_str(
            "; the server's TLS certificate is not trusted: if it comes from a private CA, \
             add that CA's PEM file to [images] ca_certs in the daemon's config",
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_empty_or_broken_file_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = Trust::load(&[&missing]).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = Trust::load(&[&empty]).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = Trust::load(&[&broken]).unwrap_err().to_string();
        assert!(err.contains("broken.pem"), "{err}");
        assert!(Trust::load(&[] as &[&Path]).unwrap().is_empty());
    }

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("invalid peer certificate: UnknownIssuer")]
    struct Inner;

    #[test]
    fn a_network_error_names_its_causes_and_an_untrusted_certificate_the_fix() {
        let text = net_error(&Outer(Inner));
        assert!(
            text.starts_with("error sending request: invalid peer certificate: UnknownIssuer"),
            "{text}"
        );
        assert!(text.contains("[images] ca_certs"), "{text}");
        let plain = net_error(&std::io::Error::other("connection refused"));
        assert_eq!(plain, "connection refused");
    }
}

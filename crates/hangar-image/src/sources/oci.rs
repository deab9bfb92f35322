//! Pulls an image from any registry that speaks the OCI distribution API
//! (oci-client does the protocol: token and basic auth flows, docker v2
//! and OCI manifests, manifest lists resolved to linux/amd64). Each layer
//! is streamed from the socket straight through [`layer::apply_blob`]
//! into the staging tree: no layer is ever held in memory or written to
//! disk compressed.

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use hangar_api::Progress;
use oci_client::client::{linux_amd64_resolver, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};
use tokio_util::io::{StreamReader, SyncIoBridge};
use tokio_util::sync::CancellationToken;

use super::layer::{self, LayerDesc};
use super::{check_digest, ImageConfig, Unpacked};
use crate::flatten::Flattener;
use crate::{ImageError, ProgressFn};

/// Credentials the CLI read from the invoking user's
/// `~/.docker/config.json` (the daemon never reads root's).
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Used for HTTP basic auth, or to obtain a bearer token.
    Basic { username: String, password: String },
    /// A registry token used as is (docker's `registrytoken`).
    Bearer(String),
    /// An OAuth2 refresh token (docker's `identitytoken`, or a credential
    /// helper's `<token>` answer), exchanged at the registry's token
    /// server for an access token.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => write!(f, "Bearer(***)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(***)"),
        }
    }
}

/// What to pull.
#[derive(Debug, Clone)]
pub struct RegistryPull {
    /// `registry/repository[:tag][@digest]`.
    pub reference: String,
    pub credentials: Option<Credentials>,
    /// Plain HTTP; only for registries on a loopback address.
    pub insecure: bool,
    /// The most uncompressed bytes the layers may unpack to, together.
    pub max_bytes: u64,
}

/// Layer media types Hangar can apply: tar, gzip or zstd, OCI or docker.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Parses a reference, refusing `--insecure` for anything but loopback.
pub fn parse_reference(req: &RegistryPull) -> Result<Reference, ImageError> {
    let reference: Reference = req.reference.parse().map_err(|e| ImageError::BadOci {
        what: format!("reference {:?}", req.reference),
        reason: format!("not an image reference ({e}); use REGISTRY/REPOSITORY[:TAG][@DIGEST]"),
    })?;
    if req.insecure && !is_loopback_registry(reference.registry()) {
        return Err(ImageError::BadOci {
            what: format!("reference {}", req.reference),
            reason: "--insecure (plain HTTP) is allowed only for a registry on a loopback address (127.0.0.1, [::1], localhost)".into(),
        });
    }
    Ok(reference)
}

/// `host[:port]` names a loopback address.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn client_for(reference: &Reference, insecure: bool, trust: &super::Trust) -> Client {
    super::tls_ready();
    Client::new(ClientConfig {
        extra_root_certificates: trust.oci_roots(),
        protocol: if insecure {
            ClientProtocol::HttpsExcept(vec![reference.registry().to_string()])
        } else {
            ClientProtocol::Https
        },
        platform_resolver: Some(Box::new(linux_amd64_resolver)),
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: Some(Duration::from_secs(120)),
        ..ClientConfig::default()
    })
}

/// Pulls `req` into `tree` (an empty, private staging dir). On error the
/// caller removes the tree.
pub async fn pull(
    req: &RegistryPull,
    trust: &super::Trust,
    tree: &Path,
    progress: ProgressFn<'_>,
    cancel: &CancellationToken,
) -> Result<Unpacked, ImageError> {
    let reference = parse_reference(req)?;
    let registry = reference.registry().to_string();
    let with_credentials = req.credentials.is_some();
    let reg_err = |e: OciDistributionError| registry_error(&registry, with_credentials, e);
    let client = client_for(&reference, req.insecure, trust);
    let auth = match &req.credentials {
        None => RegistryAuth::Anonymous,
        Some(Credentials::Basic { username, password }) => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
        Some(Credentials::Bearer(t)) => RegistryAuth::Bearer(t.clone()),
        Some(Credentials::IdentityToken(t)) => {
            let scheme = if req.insecure { "http" } else { "https" };
            let access = tokio::select! {
                r = super::oci_token::exchange(trust, scheme, reference.resolve_registry(), reference.repository(), t) => r?,
                _ = cancel.cancelled() => return Err(ImageError::Cancelled),
            };
            RegistryAuth::Bearer(access)
        }
    };
    report(progress, "resolve", None, None, format!("{reference}"));
    let (manifest, manifest_digest, config_json) = tokio::select! {
        r = client.pull_manifest_and_config(&reference, &auth) => r.map_err(reg_err)?,
        _ = cancel.cancelled() => return Err(ImageError::Cancelled),
    };
    let what = format!("image {reference}");
    let config_digest = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(config_json.as_bytes()))
    );
    if config_digest != manifest.config.digest {
        return Err(ImageError::BadOci {
            what,
            reason: format!(
                "its config has digest {config_digest}, the manifest says {}",
                manifest.config.digest
            ),
        });
    }
    let config = ImageConfig::parse(config_json.as_bytes(), &what)?;
    config.check_platform(&what)?;
    let layers = layer_descs(&manifest.layers, &config, &what)?;
    let total: u64 = manifest.layers.iter().map(|l| l.size.max(0) as u64).sum();

    let mut flattener = Flattener::new(tree)?;
    let mut budget = req.max_bytes;
    let done = Arc::new(AtomicU64::new(0));
    for (i, (oci_desc, desc)) in manifest.layers.iter().zip(&layers).enumerate() {
        let detail = format!("layer {}/{} {}", i + 1, layers.len(), short(&desc.label));
        report(
            progress,
            "pull",
            Some(done.load(Ordering::Relaxed)),
            Some(total),
            detail.clone(),
        );
        let sized = tokio::select! {
            r = client.pull_blob_stream(&reference, oci_desc) => r.map_err(reg_err)?,
            _ = cancel.cancelled() => return Err(ImageError::Cancelled),
        };
        // A cancel ends the stream, so a blocked read returns at once.
        let stream = sized
            .stream
            .take_until(Box::pin(cancel.clone().cancelled_owned()));
        let reader = SyncIoBridge::new(StreamReader::new(stream));
        let (counter, token, desc2) = (done.clone(), cancel.clone(), desc.clone());
        let mut task = tokio::task::spawn_blocking(move || {
            let r = layer::apply_blob(
                reader,
                &desc2,
                &mut flattener,
                &mut budget,
                &|n| {
                    counter.fetch_add(n, Ordering::Relaxed);
                },
                &|| token.is_cancelled(),
            );
            (flattener, budget, r)
        });
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        let (back, left, result) = loop {
            tokio::select! {
                joined = &mut task => break joined.map_err(|e| ImageError::BadOci {
                    what: what.clone(),
                    reason: format!("the layer task failed: {e}"),
                })?,
                _ = tick.tick() => report(progress, "pull", Some(done.load(Ordering::Relaxed)), Some(total), detail.clone()),
            }
        };
        flattener = back;
        budget = left;
        if cancel.is_cancelled() {
            return Err(ImageError::Cancelled);
        }
        result?;
    }
    flattener.finish()?;
    Ok(Unpacked {
        run: config.run,
        source: format!("oci:{}@{manifest_digest}", reference.whole()),
        bytes: done.load(Ordering::Relaxed),
    })
}

/// Whether the registry said no to who we are (or to nobody): 401, or
/// 403 / an `UNAUTHORIZED`/`DENIED` error (what token registries answer
/// for a token without the access asked for). oci-client drops a token
/// server's refusal and retries anonymously, so a wrong password also
/// ends here.
fn is_auth_refusal(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => true,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|x| matches!(x.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        OciDistributionError::ServerError { code, .. } => *code == 401 || *code == 403,
        _ => false,
    }
}

/// A registry's error, saying what to do when it is about credentials.
fn registry_error(registry: &str, with_credentials: bool, e: OciDistributionError) -> ImageError {
    if !is_auth_refusal(&e) {
        return ImageError::Registry {
            registry: registry.to_string(),
            reason: super::trust::net_error(&e),
        };
    }
    let reason = if with_credentials {
        format!(
            "authentication failed: the registry refused the credentials for {registry} \
             from your docker config ($DOCKER_CONFIG/config.json or ~/.docker/config.json); \
             log in again (`docker login {registry}`) and retry ({e})"
        )
    } else {
        format!(
            "authentication required: the registry refused an anonymous pull and your docker \
             config ($DOCKER_CONFIG/config.json or ~/.docker/config.json) has no credentials \
             for {registry}; log in as yourself (`docker login {registry}`, or `podman login` / \
             `skopeo login` with --authfile ~/.docker/config.json) and retry ({e})"
        )
    };
    ImageError::RegistryAuth {
        registry: registry.to_string(),
        reason,
    }
}

/// Checks each layer's media type and digest and pairs it with its diff_id.
fn layer_descs(
    layers: &[OciDescriptor],
    config: &ImageConfig,
    what: &str,
) -> Result<Vec<LayerDesc>, ImageError> {
    if config.diff_ids.len() != layers.len() {
        return Err(ImageError::BadOci {
            what: what.to_string(),
            reason: format!(
                "its manifest lists {} layers but its config {} diff_ids",
                layers.len(),
                config.diff_ids.len()
            ),
        });
    }
    layers
        .iter()
        .zip(&config.diff_ids)
        .map(|(l, diff_id)| {
            check_digest(&l.digest, what)?;
            if !LAYER_TYPES.contains(&l.media_type.as_str()) {
                return Err(ImageError::BadOci {
                    what: what.to_string(),
                    reason: format!(
                        "layer {} has media type {:?}, which is not a filesystem layer (tar, tar+gzip or tar+zstd)",
                        l.digest, l.media_type
                    ),
                });
            }
            Ok(LayerDesc {
                digest: Some(l.digest.clone()),
                size: u64::try_from(l.size).ok(),
                diff_id: Some(diff_id.clone()),
                label: l.digest.clone(),
            })
        })
        .collect()
}

fn short(digest: &str) -> &str {
    digest.get(..19).unwrap_or(digest)
}

fn report(
    progress: ProgressFn<'_>,
    phase: &str,
    current: Option<u64>,
    total: Option<u64>,
    detail: String,
) {
    progress(Progress {
        phase: phase.to_string(),
        current,
        total,
        unit: current.map(|_| "bytes".to_string()),
        detail: Some(detail),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_is_for_loopback_registries_only() {
        for r in [
            "127.0.0.1:5000",
            "localhost:5000",
            "[::1]:5000",
            "127.0.0.2",
            "localhost",
        ] {
            assert!(is_loopback_registry(r), "{r}");
        }
        for r in [
            "registry.example.com",
            "10.0.0.1:5000",
            "localhost.evil.com:5000",
            "[fe80::1]:5000",
        ] {
            assert!(!is_loopback_registry(r), "{r}");
        }
        let req = RegistryPull {
            reference: "example.com/team/img:v1".into(),
            credentials: None,
            insecure: true,
            max_bytes: 1 << 30,
        };
        let err = parse_reference(&req).expect_err("refused");
        assert!(err.to_string().contains("loopback"), "{err}");
    }

    #[test]
    fn refusals_say_whether_to_log_in_or_to_log_in_again() {
        let unauthorized = || OciDistributionError::UnauthorizedError {
            url: "http://127.0.0.1:5000/v2/team/x/manifests/v1".into(),
        };
        let e = registry_error("127.0.0.1:5000", false, unauthorized());
        assert!(matches!(e, ImageError::RegistryAuth { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("authentication required"), "{msg}");
        assert!(msg.contains("docker login 127.0.0.1:5000"), "{msg}");

        let msg = registry_error("127.0.0.1:5000", true, unauthorized()).to_string();
        assert!(msg.contains("refused the credentials"), "{msg}");

        // A token registry's 403 DENIED (a token without pull access).
        let envelope: oci_client::errors::OciEnvelope = serde_json::from_str(
            r#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#,
        )
        .expect("envelope");
        let denied = OciDistributionError::RegistryError {
            envelope,
            url: "u".into(),
        };
        assert!(matches!(
            registry_error("r", false, denied),
            ImageError::RegistryAuth { .. }
        ));

        // Anything else stays a plain registry error.
        let e = registry_error(
            "r",
            false,
            OciDistributionError::ImageManifestNotFoundError("x".into()),
        );
        assert!(matches!(e, ImageError::Registry { .. }), "{e:?}");
    }

    #[test]
    fn credentials_never_print_their_secret() {
        let c = Credentials::Basic {
            username: "me".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Bearer("tok".into())).contains("tok"));
        assert!(!format!("{:?}", Credentials::IdentityToken("tok".into())).contains("tok"));
    }

    #[test]
    fn a_non_filesystem_layer_or_a_count_mismatch_is_refused() {
        let d = format!("sha256:{}", "a".repeat(64));
        let layer = OciDescriptor {
            media_type: "application/vnd.wasm.content.layer.v1+wasm".into(),
            digest: d.clone(),
            size: 1,
            ..Default::default()
        };
        let config = ImageConfig {
            diff_ids: vec![d.clone()],
            ..Default::default()
        };
        let err = layer_descs(std::slice::from_ref(&layer), &config, "t").expect_err("wasm");
        assert!(err.to_string().contains("not a filesystem layer"), "{err}");
        let err = layer_descs(&[], &config, "t").expect_err("count");
        assert!(err.to_string().contains("diff_ids"), "{err}");
    }
}

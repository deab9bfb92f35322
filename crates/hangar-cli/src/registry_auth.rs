//! Registry credentials for `hangar image pull REFERENCE`, read by the CLI
//! as the invoking user — from `$DOCKER_CONFIG/config.json` or
//! `~/.docker/config.json`, the file `docker login`, `podman login` and
//! `skopeo login --authfile` write — and sent with the pull request. The
//! daemon runs as root and never reads root's (or anyone's) docker config.
//! A configured credential helper (`credHelpers`, `credsStore`) is run as
//! the user, like docker does: `docker-credential-NAME get`.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use hangar_api::image::RegistryCredentials;
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: HashMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// The config file's path, as docker finds it.
fn config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Docker Hub, as a reference's registry.
const DOCKER_HUB: &str = "docker.io";
/// The keys docker writes Docker Hub logins under.
const DOCKER_HUB_KEYS: [&str; 3] = [
    "https://index.docker.io/v1/",
    "index.docker.io",
    "registry-1.docker.io",
];

/// The registry of a reference, by docker's rule: the part before the
/// first `/` when it looks like a host (has a `.` or `:`, or is
/// `localhost`), else Docker Hub (`team/app`, `library/x`).
pub fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => DOCKER_HUB,
    }
}

/// Credentials for `registry` from the user's docker config, if any.
/// A config that exists but cannot be read or parsed is an error (saying
/// which file), not silently anonymous.
pub fn credentials_for(registry: &str) -> Result<Option<RegistryCredentials>, String> {
    let Some(path) = config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let config: DockerConfig = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a docker config file: {e}", path.display()))?;
    lookup(&config, registry, &run_helper)
}

/// Runs a credential helper: `(helper name, registry)` → credentials.
type Helper<'a> = &'a dyn Fn(&str, &str) -> Result<Option<RegistryCredentials>, String>;

fn lookup(
    config: &DockerConfig,
    registry: &str,
    helper: Helper<'_>,
) -> Result<Option<RegistryCredentials>, String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
        format!("https://{registry}/v1/"),
        format!("https://{registry}/v2/"),
    ];
    if registry == DOCKER_HUB {
        keys.extend(DOCKER_HUB_KEYS.map(String::from));
    }
    if let Some(name) = keys.iter().find_map(|k| config.cred_helpers.get(k)) {
        return helper(name, registry);
    }
    if let Some(entry) = keys.iter().find_map(|k| config.auths.get(k)) {
        if let Some(c) = from_entry(entry)? {
            return Ok(Some(c));
        }
    }
    match &config.creds_store {
        Some(store) => helper(store, registry),
        None => Ok(None),
    }
}

fn from_entry(e: &AuthEntry) -> Result<Option<RegistryCredentials>, String> {
    // `identitytoken` is an OAuth2 refresh token (the daemon exchanges
    // it); `registrytoken` is a bearer token sent as is.
    if let Some(t) = &e.identitytoken {
        return Ok(Some(RegistryCredentials {
            identity_token: Some(t.clone()),
            ..no_credentials()
        }));
    }
    if let Some(t) = &e.registrytoken {
        return Ok(Some(RegistryCredentials {
            token: Some(t.clone()),
            ..no_credentials()
        }));
    }
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Some(RegistryCredentials {
            username: Some(u.clone()),
            password: Some(p.clone()),
            ..no_credentials()
        }));
    }
    let Some(auth) = &e.auth else {
        return Ok(None);
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| format!("a registry `auth` in the docker config is not base64: {e}"))?;
    let text =
        String::from_utf8(decoded).map_err(|_| "a registry `auth` is not UTF-8".to_string())?;
    let (u, p) = text
        .split_once(':')
        .ok_or("a registry `auth` in the docker config is not USER:PASSWORD")?;
    Ok(Some(RegistryCredentials {
        username: Some(u.to_string()),
        password: Some(p.to_string()),
        ..no_credentials()
    }))
}

fn no_credentials() -> RegistryCredentials {
    RegistryCredentials {
        username: None,
        password: None,
        token: None,
        identity_token: None,
    }
}

/// `docker-credential-NAME get`, with the registry on stdin.
fn run_helper(name: &str, registry: &str) -> Result<Option<RegistryCredentials>, String> {
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err(format!("credential helper name {name:?} is not valid"));
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run the credential helper {program} (from your docker config): {e}")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("credential helper {program} failed: {e}"))?;
    if !out.status.success() {
        let said = format!(
            "{} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Helpers say "credentials not found" this way: pull anonymously.
        // Anything else (a locked keychain) is the user's to fix, not an
        // anonymous pull that then fails as "unauthorized".
        if said.to_ascii_lowercase().contains("credentials not found") {
            return Ok(None);
        }
        let said: String = said.trim().chars().take(300).collect();
        return Err(format!(
            "the credential helper {program} (from your docker config) failed for {registry} ({}): {}",
            out.status,
            hangar_host::sanitize::escape_controls(said.as_bytes())
        ));
    }
    let a: HelperAnswer = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!("credential helper {program} answered something else than JSON credentials: {e}")
    })?;
    // Like docker: a helper's `<token>` user means the secret is an
    // identity (refresh) token.
    Ok(Some(if a.username == "<token>" {
        RegistryCredentials {
            identity_token: Some(a.secret),
            ..no_credentials()
        }
    } else {
        RegistryCredentials {
            username: Some(a.username),
            password: Some(a.secret),
            ..no_credentials()
        }
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cfg(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }

    fn no_helper(_: &str, _: &str) -> Result<Option<RegistryCredentials>, String> {
        Err("no helper here".into())
    }

    #[test]
    fn basic_auth_comes_from_the_auth_field() {
        // base64("me:s3cret")
        let c = cfg(r#"{"auths":{"127.0.0.1:5000":{"auth":"bWU6czNjcmV0"}}}"#);
        let got = lookup(&c, "127.0.0.1:5000", &no_helper).unwrap().unwrap();
        assert_eq!(got.username.as_deref(), Some("me"));
        assert_eq!(got.password.as_deref(), Some("s3cret"));
        assert!(lookup(&c, "other:5000", &no_helper).unwrap().is_none());
    }

    #[test]
    fn tokens_and_https_keys_and_helpers_are_found() {
        let c = cfg(r#"{"auths":{"https://reg.example":{"identitytoken":"tok"}}}"#);
        let got = lookup(&c, "reg.example", &no_helper).unwrap().unwrap();
        assert_eq!(got.identity_token.as_deref(), Some("tok"));
        assert_eq!(got.token, None, "a refresh token is not a registry token");
        let c = cfg(r#"{"auths":{"reg.example":{"registrytoken":"bearer"}}}"#);
        let got = lookup(&c, "reg.example", &no_helper).unwrap().unwrap();
        assert_eq!(got.token.as_deref(), Some("bearer"));
        assert_eq!(got.identity_token, None);

        let c = cfg(r#"{"credHelpers":{"reg.example":"pass"},"auths":{}}"#);
        let helper = |name: &str, reg: &str| {
            assert_eq!((name, reg), ("pass", "reg.example"));
            Ok(Some(RegistryCredentials {
                username: Some("u".into()),
                password: Some("p".into()),
                ..no_credentials()
            }))
        };
        assert!(lookup(&c, "reg.example", &helper).unwrap().is_some());
    }

    #[test]
    fn a_broken_auth_field_is_an_error_not_anonymous() {
        let c = cfg(r#"{"auths":{"r":{"auth":"!!!"}}}"#);
        assert!(lookup(&c, "r", &no_helper).is_err());
    }

    #[test]
    fn the_registry_is_the_first_component_when_it_is_a_host_else_docker_hub() {
        assert_eq!(
            registry_of("127.0.0.1:5000/team/golden:v3"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_of("ghcr.io/team/app:1"), "ghcr.io");
        assert_eq!(registry_of("localhost/app"), "localhost");
        assert_eq!(registry_of("team/app:1"), "docker.io");
        assert_eq!(registry_of("library/debian"), "docker.io");
    }

    #[test]
    fn docker_hub_logins_are_found_under_docker_s_own_key() {
        let config: DockerConfig =
            serde_json::from_str(r#"{"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"}}}"#)
                .unwrap();
        let none = |_: &str, _: &str| Ok(None);
        let found = lookup(&config, registry_of("team/app"), &none).unwrap();
        assert!(found.is_some(), "{found:?}");
    }
}

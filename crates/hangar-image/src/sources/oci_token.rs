//! Docker's `identitytoken`: what `docker login` keeps for registries
//! whose token server speaks OAuth2 (Azure, Harbor with OIDC, …) is a
//! refresh token, not a registry token. It is exchanged for an access
//! token as docker does: the registry's `/v2/` answers a `Bearer`
//! challenge naming the token server (`realm`) and `service`; a
//! `POST realm` with `grant_type=refresh_token` answers `access_token`,
//! which is then sent to the registry as a bearer token. oci-client has no
//! such flow, hence this module.

use std::time::Duration;

use serde::Deserialize;

use crate::ImageError;

/// The parameters of a `WWW-Authenticate: Bearer k="v",…` challenge.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct BearerChallenge {
    pub realm: String,
    pub service: Option<String>,
}

/// Parses a `Bearer` challenge; `None` for another scheme.
pub(crate) fn parse_challenge(header: &str) -> Option<BearerChallenge> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut c = BearerChallenge::default();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        match key.to_ascii_lowercase().as_str() {
            "realm" => c.realm = value.to_string(),
            "service" => c.service = Some(value.to_string()),
            _ => {}
        }
        rest = tail.trim().trim_start_matches(',').trim();
    }
    (!c.realm.is_empty()).then_some(c)
}

/// The `application/x-www-form-urlencoded` body of `pairs`.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    out.push(char::from(b))
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

/// The most a token server's answer may hold (a token is a few KiB).
const MAX_ANSWER: usize = 64 << 10;

/// Exchanges `refresh_token` for an access token that may pull
/// `repository` from `registry` (`scheme` is `https`, or `http` for an
/// `--insecure` loopback registry).
pub(crate) async fn exchange(
    trust: &super::Trust,
    scheme: &str,
    registry: &str,
    repository: &str,
    refresh_token: &str,
) -> Result<String, ImageError> {
    let err = |reason: String| ImageError::RegistryAuth {
        registry: registry.to_string(),
        reason,
    };
    let net = |e: reqwest::Error| ImageError::Registry {
        registry: registry.to_string(),
        reason: crate::sources::trust::net_error(&e),
    };
    // No redirects: a 307 would carry the refresh token on to elsewhere.
    let client = trust
        .http_client_no_redirects(Duration::from_secs(60))
        .map_err(net)?;
    let probe = client
        .get(format!("{scheme}://{registry}/v2/"))
        .send()
        .await
        .map_err(net)?;
    let challenge = probe
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .and_then(parse_challenge)
        .ok_or_else(|| {
            err(format!(
                "your docker config has an identity token for {registry}, but the registry asks for no token login (no Bearer challenge on /v2/, status {}); log in again with a username and password (`docker login {registry}`)",
                probe.status()
            ))
        })?;
    // The token server gets a secret: https, or plain HTTP on loopback.
    // Plain HTTP only for a registry that is itself plain HTTP on
    // loopback (`--insecure`): an https registry must not send the token
    // to a local port in the clear.
    let realm = super::bundle::check_url(&challenge.realm)
        .ok()
        .filter(|r| r.scheme() == "https" || scheme == "http")
        .ok_or_else(|| {
            err(format!(
                "the registry names token server {:?}, which is not https:// (plain http:// only on loopback, for a plain-HTTP registry); the identity token is not sent there",
                challenge.realm
            ))
        })?;
    let scope = format!("repository:{repository}:pull");
    let mut pairs = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", "hangar"),
        ("scope", scope.as_str()),
    ];
    if let Some(service) = &challenge.service {
        pairs.push(("service", service));
    }
    let mut answer = client
        .post(realm.clone())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(form(&pairs))
        .send()
        .await
        .map_err(net)?;
    let status = answer.status();
    let mut body = Vec::new();
    while let Some(chunk) = answer.chunk().await.map_err(net)? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_ANSWER {
            return Err(err(format!(
                "the token server {realm} answered more than {MAX_ANSWER} bytes; not a token"
            )));
        }
    }
    if !status.is_success() {
        return Err(err(format!(
            "authentication failed: the token server {realm} refused the identity token from your docker config (HTTP {status}); log in again (`docker login {registry}`) and retry"
        )));
    }
    let t: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
        err(format!(
            "the token server {realm} answered something else than a token: {e}"
        ))
    })?;
    t.access_token
        .or(t.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| err(format!("the token server {realm} answered no access_token")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_parsed_quoted_or_not() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .expect("challenge");
        assert_eq!(c.realm, "https://auth.example/token");
        assert_eq!(c.service.as_deref(), Some("registry.example"));
        let c = parse_challenge("bearer realm=http://127.0.0.1:1/t, service=s").expect("bare");
        assert_eq!(c.realm, "http://127.0.0.1:1/t");
        assert_eq!(c.service.as_deref(), Some("s"));
        assert_eq!(parse_challenge(r#"Basic realm="x""#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None, "no realm");
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn the_form_body_is_url_encoded() {
        assert_eq!(
            form(&[("scope", "repository:a/b:pull"), ("t", "x y&z")]),
            "scope=repository%3Aa%2Fb%3Apull&t=x+y%26z"
        );
    }
}

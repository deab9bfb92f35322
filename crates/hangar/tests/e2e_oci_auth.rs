//! Pulls from registries that want credentials, end to end: Debian's
//! `docker-registry` on 127.0.0.1 behind HTTP basic auth (a bcrypt
//! htpasswd made here), then behind bearer tokens from a token server this
//! test runs (JWTs signed by a key whose certificate is the registry's
//! `rootcertbundle`). A small busybox image is pushed with `skopeo copy
//! --dest-creds`; `hangar image pull` is run by a non-root socket user,
//! whose `~/.docker/config.json` is the only place credentials come from:
//! the daemon's own HOME holds a docker config with the right password,
//! and pulls without the user's credentials still fail (it never reads
//! it). Version 2.8 of the registry does not insist on TLS for either
//! scheme, so it serves plain HTTP on loopback and pulls use `--insecure`
//! (allowed only for loopback registries).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;
use common::oci::*;
use common::roles::{Role, NOBODY};
use common::{Options, TestDaemon};
use hangar_testsupport::registry::{Auth, LocalRegistry};
use hangar_testsupport::token_server::TokenServer;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-pw";

/// A busybox image with `/etc/marker` saying `marker`, as an OCI archive.
fn small_image(dir: &Path, marker: &str) -> PathBuf {
    let app = layer(&[
        Entry::Dir("etc", 0o755),
        Entry::File("etc/marker", format!("{marker}\n").into_bytes(), 0o644),
    ]);
    let base = busybox_layer();
    let archive = oci_archive(
        &[
            (base.clone(), base, "application/vnd.oci.image.layer.v1.tar"),
            (app.clone(), app, "application/vnd.oci.image.layer.v1.tar"),
        ],
        r#"{"Env":["PATH=/bin"]}"#,
    );
    let path = dir.join(format!("{marker}.oci.tar"));
    std::fs::write(&path, archive).unwrap();
    path
}

/// `skopeo copy oci-archive:FILE docker://DEST` with credentials.
fn push(dir: &Path, archive: &Path, dest: &str) {
    let policy = dir.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let out = Command::new("skopeo")
        .arg("--policy")
        .arg(&policy)
        .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
        .arg(format!("{USER}:{PASSWORD}"))
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!("docker://{dest}"))
        .env("HOME", dir)
        .output()
        .expect("skopeo (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo copy to {dest}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A docker config `auths` entry as `docker login` writes it.
fn password_login(password: &str) -> serde_json::Value {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{password}"));
    serde_json::json!({ "auth": auth })
}

/// A docker config with these `auths` entries, written into `dir`.
fn docker_config(dir: &Path, logins: &[(&str, serde_json::Value)]) {
    std::fs::create_dir_all(dir).unwrap();
    let auths: serde_json::Map<String, serde_json::Value> = logins
        .iter()
        .map(|(registry, entry)| (registry.to_string(), entry.clone()))
        .collect();
    let file = dir.join("config.json");
    std::fs::write(&file, serde_json::json!({ "auths": auths }).to_string()).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// The socket user's docker config dir (in their home, owned by them),
/// with `logins`; none removes it.
fn user_logins(d: &TestDaemon, logins: &[(&str, serde_json::Value)]) {
    let dir = d.home_of(Role::SocketUser).join(".docker");
    let _ = std::fs::remove_dir_all(&dir);
    if logins.is_empty() {
        return;
    }
    docker_config(&dir, logins);
    for p in [dir.clone(), dir.join("config.json")] {
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
    }
}

/// `hangar ARGS` as the socket user, whose docker config is the one in
/// their home (no `DOCKER_CONFIG` from the test's environment).
fn hangar_user(d: &TestDaemon, args: &[&str]) -> Output {
    let mut cmd = Command::new(common::hangar_bin());
    cmd.arg("--config")
        .arg(&d.config)
        .args(args)
        .env_remove("DOCKER_CONFIG");
    d.run_as(Role::SocketUser, cmd)
}

fn pull_fails(d: &TestDaemon, reference: &str) -> String {
    let name = reference
        .rsplit('/')
        .next()
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    pull_fails_named(d, &["image", "pull", reference, "--insecure"], name)
}

/// Runs `args` (a pull) as the user, which must fail without registering
/// `name` or leaving anything; returns its stderr.
fn pull_fails_named(d: &TestDaemon, args: &[&str], name: &str) -> String {
    let reference = args[2];
    let out = hangar_user(d, args);
    assert!(
        !out.status.success(),
        "pull of {reference} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        d.hangar(&["image", "show", name]).status.code() != Some(0),
        "{name} was registered by a failed pull"
    );
    // (An earlier successful pull's tree may still be being deleted in
    // the background; what this pull made must not stay.)
    common::wait_until(
        "no staging dirs or unregistered image dirs",
        std::time::Duration::from_secs(60),
        || d.image_leftovers().is_empty(),
    );
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("pull {reference} refused: {err}");
    err
}

fn pull_ok(d: &TestDaemon, reference: &str) {
    let out = hangar_user(d, &["image", "pull", reference, "--insecure"]);
    assert!(
        out.status.success(),
        "pull of {reference}: {}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        common::tail(&d.log(), 30)
    );
}

fn boot_and_read_marker(d: &TestDaemon, vm: &str, image: &str, marker: &str) {
    d.ok(&["vm", "create", vm, "--image", image]);
    let out = d.exec(vm, &["cat", "/etc/marker"]);
    assert_eq!(
        stdout(&out),
        format!("{marker}\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.ok(&["vm", "rm", "-f", vm]);
}

#[test]
#[ignore = "needs root: runs the daemon, boots guests and runs the CLI as a socket user (nobody)"]
fn registries_behind_basic_auth_and_bearer_tokens_are_pulled_with_the_users_docker_login() {
    let _serial = common::serial();
    let mut d = TestDaemon::with_socket_group(
        "oci-auth",
        Options {
            start: false,
            ..Options::default()
        },
    );
    let work = d.dir.path().join("oci-auth");
    std::fs::create_dir_all(&work).unwrap();

    let basic = LocalRegistry::start_with(&work.join("basic"), Auth::Htpasswd(&[(USER, PASSWORD)]));
    let tokens = TokenServer::start(&work.join("token-server"), USER, PASSWORD);
    let bearer = LocalRegistry::start_with(&work.join("bearer"), Auth::Token(&tokens));
    push(
        &work,
        &small_image(&work, "basic"),
        &format!("{}/team/basic:v1", basic.addr),
    );
    push(
        &work,
        &small_image(&work, "bearer"),
        &format!("{}/team/bearer:v1", bearer.addr),
    );
    assert!(
        tokens
            .issued()
            .iter()
            .any(|s| s.contains("repository:team/bearer:")),
        "skopeo's push went through the token server: {:?}",
        tokens.issued()
    );

    // The daemon (root) has a docker config with the right password for
    // both registries in its HOME and DOCKER_CONFIG: it must not use it.
    let root_docker = work.join("root-home/.docker");
    docker_config(
        &root_docker,
        &[
            (basic.addr.as_str(), password_login(PASSWORD)),
            (bearer.addr.as_str(), password_login(PASSWORD)),
        ],
    );
    // A catalog entry from the basic-auth registry.
    let catalog = work.join("catalog.json");
    std::fs::write(
        &catalog,
        format!(
            r#"{{"images":[{{"name":"team-basic","oci":"{}/team/basic:v1","insecure":true}}]}}"#,
            basic.addr
        ),
    )
    .unwrap();
    let mut config = std::fs::OpenOptions::new()
        .append(true)
        .open(&d.config)
        .unwrap();
    writeln!(
        config,
        "\n[images]\ncatalogs = [\"file://{}\"]",
        catalog.display()
    )
    .unwrap();
    drop(config);
    let (root_home, root_docker) = (
        common::path_str(&work.join("root-home")),
        common::path_str(&root_docker),
    );
    d.spawn_with_env(&[
        ("HOME", root_home.as_str()),
        ("DOCKER_CONFIG", root_docker.as_str()),
    ]);
    d.ok(&["image", "pull", "debian-12"]);

    let basic_ref = format!("{}/team/basic:v1", basic.addr);
    let bearer_ref = format!("{}/team/bearer:v1", bearer.addr);

    // No login: a clear refusal, nothing registered or left behind.
    user_logins(&d, &[]);
    for reference in [&basic_ref, &bearer_ref] {
        let err = pull_fails(&d, reference);
        assert!(err.contains("authentication required"), "{err}");
        assert!(err.contains("docker login 127.0.0.1:"), "{err}");
    }
    assert!(tokens.refused() > 0, "the anonymous pull asked for a token");

    // A wrong password: refused, saying the credentials were.
    user_logins(
        &d,
        &[
            (basic.addr.as_str(), password_login("wrong")),
            (bearer.addr.as_str(), password_login("wrong")),
        ],
    );
    for reference in [&basic_ref, &bearer_ref] {
        let err = pull_fails(&d, reference);
        assert!(err.contains("refused the credentials"), "{err}");
    }

    // An identity token (OAuth2 refresh token) that the token server does
    // not know, and one for a registry without token login.
    user_logins(
        &d,
        &[
            (
                basic.addr.as_str(),
                serde_json::json!({"identitytoken": "rt"}),
            ),
            (
                bearer.addr.as_str(),
                serde_json::json!({"identitytoken": "stale"}),
            ),
        ],
    );
    let err = pull_fails(&d, &basic_ref);
    assert!(err.contains("asks for no token login"), "{err}");
    let err = pull_fails(&d, &bearer_ref);
    assert!(err.contains("refused the identity token"), "{err}");

    // The user's login: both pull, boot and run.
    user_logins(
        &d,
        &[
            (basic.addr.as_str(), password_login(PASSWORD)),
            (bearer.addr.as_str(), password_login(PASSWORD)),
        ],
    );
    let before = tokens.issued().len();
    pull_ok(&d, &basic_ref);
    pull_ok(&d, &bearer_ref);
    let pulled: Vec<String> = tokens.issued()[before..].to_vec();
    assert!(
        pulled.iter().any(|s| s == "repository:team/bearer:pull"),
        "the pull took a pull token: {pulled:?}"
    );
    boot_and_read_marker(&d, "from-basic", "basic", "basic");
    boot_and_read_marker(&d, "from-bearer", "bearer", "bearer");

    // A valid identity token: exchanged for an access token, then pulled.
    user_logins(
        &d,
        &[(
            bearer.addr.as_str(),
            serde_json::json!({ "identitytoken": tokens.refresh_token }),
        )],
    );
    let out = hangar_user(
        &d,
        &[
            "image",
            "pull",
            &bearer_ref,
            "--insecure",
            "--name",
            "bearer-rt",
        ],
    );
    assert!(
        out.status.success(),
        "pull with an identity token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tokens
            .issued()
            .iter()
            .any(|s| s == "refresh_token repository:team/bearer:pull"),
        "{:?}",
        tokens.issued()
    );
    assert_eq!(
        d.json(&["image", "show", "bearer-rt"])["run"],
        d.json(&["image", "show", "bearer"])["run"]
    );
    // A catalog entry from a registry: `image pull NAME` sends the user's
    // login for it; `vm create` sends none and says so.
    user_logins(&d, &[]);
    let err = pull_fails_named(&d, &["image", "pull", "team-basic"], "team-basic");
    assert!(err.contains("authentication required"), "{err}");
    let out = hangar_user(&d, &["vm", "create", "cat", "--image", "team-basic"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "create without a login succeeded");
    assert!(
        err.contains("`hangar image pull team-basic` sends yours"),
        "{err}"
    );
    assert_eq!(d.json(&["vm", "ls"]), serde_json::json!([]));
    user_logins(&d, &[(basic.addr.as_str(), password_login(PASSWORD))]);
    let out = hangar_user(&d, &["image", "pull", "team-basic"]);
    assert!(
        out.status.success(),
        "catalog pull with a login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = d.json(&["image", "show", "team-basic"]);
    assert!(
        info["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("oci:{basic_ref}@sha256:")),
        "{info}"
    );

    // A finished pull's tree is deleted in the background.
    common::wait_until(
        "finished staging trees are removed",
        std::time::Duration::from_secs(60),
        || d.image_leftovers().is_empty(),
    );
    // Credentials are never written down by the daemon.
    let log = d.log();
    assert!(!log.contains(PASSWORD), "the daemon log holds the password");
    assert!(
        !log.contains(&tokens.refresh_token),
        "the daemon log holds the identity token"
    );
}

#[test]
#[ignore = "needs root: runs the daemon, boots guests and runs the CLI as a socket user (nobody)"]
fn an_https_registry_with_a_private_ca_is_pulled_once_the_ca_is_configured() {
    let _serial = common::serial();
    let mut d = TestDaemon::with_socket_group(
        "oci-tls",
        Options {
            start: false,
            ..Options::default()
        },
    );
    let work = d.dir.path().join("oci-tls");
    std::fs::create_dir_all(&work).unwrap();
    let registry =
        LocalRegistry::start_tls(&work.join("registry"), Auth::Htpasswd(&[(USER, PASSWORD)]));
    let ca = registry.ca.clone().expect("an HTTPS registry has a CA");
    let reference = format!("{}/team/tls:v1", registry.addr);
    push(&work, &small_image(&work, "tls"), &reference);
    d.spawn();
    d.ok(&["image", "pull", "debian-12"]);
    user_logins(&d, &[(registry.addr.as_str(), password_login(PASSWORD))]);

    // Its CA is in no trust store: refused, saying why and what to do,
    // and nothing stays.
    let err = pull_fails_named(&d, &["image", "pull", &reference], "tls");
    assert!(
        err.contains("certificate") && err.contains("[images] ca_certs"),
        "{err}"
    );

    // A CA file that is not a certificate stops the daemon at start,
    // naming the file.
    d.stop_daemon();
    let junk = work.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let plain_config = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(
        &d.config,
        format!(
            "{plain_config}\n[images]\nca_certs = [\"{}\"]\n",
            junk.display()
        ),
    )
    .unwrap();
    let out = Command::new(common::hangar_bin())
        .arg("--config")
        .arg(&d.config)
        .arg("daemon")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("junk.pem") && err.contains("no certificate"),
        "{out:?}"
    );

    // With its CA configured: pulled over HTTPS (no --insecure), booted.
    std::fs::write(
        &d.config,
        format!(
            "{plain_config}\n[images]\nca_certs = [\"{}\"]\n",
            ca.display()
        ),
    )
    .unwrap();
    d.spawn();
    let out = hangar_user(&d, &["image", "pull", &reference]);
    assert!(
        out.status.success(),
        "pull over HTTPS with the CA: {}\ndaemon log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        common::tail(&d.log(), 30)
    );
    boot_and_read_marker(&d, "from-tls", "tls", "tls");
    let log = d.log();
    assert!(!log.contains(PASSWORD), "the daemon log holds the password");
}

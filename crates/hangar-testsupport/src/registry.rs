//! A real OCI distribution registry for tests: Debian's `docker-registry`
//! (the CNCF distribution server) on 127.0.0.1, storing in the test's own
//! directory, killed by PID when dropped. Open, or behind HTTP basic auth
//! (an htpasswd file made with `htpasswd -B`: the registry takes bcrypt
//! only), or behind bearer tokens from a [`TokenServer`]. Version 2.8 does
//! not insist on TLS for either, so the registry speaks plain HTTP on
//! loopback (what `hangar image pull --insecure` allows), unless started
//! with [`LocalRegistry::start_tls`]: HTTPS with a certificate for
//! 127.0.0.1 from a private CA made here.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::token_server::{openssl, TokenServer, ISSUER, SERVICE};

/// Who may use the registry.
pub enum Auth<'a> {
    /// Anyone.
    Open,
    /// HTTP basic auth for these `(user, password)` pairs.
    Htpasswd(&'a [(&'a str, &'a str)]),
    /// Bearer tokens from this token server.
    Token(&'a TokenServer),
}

/// A running registry; `addr` is `127.0.0.1:PORT`.
pub struct LocalRegistry {
    pub addr: String,
    /// For an HTTPS registry: the PEM file of the private CA that signed
    /// its certificate (trusted by nothing else).
    pub ca: Option<std::path::PathBuf>,
    child: Child,
}

/// A private CA (`ca.pem`) and a server certificate it signed for IP
/// 127.0.0.1 (`server.pem`, `server.key`), made with the openssl CLI in
/// `dir`. Returns (ca, certificate, key).
#[track_caller]
pub fn private_ca_for_loopback(
    dir: &Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    std::fs::create_dir_all(dir).expect("tls dir");
    let p = |f: &str| dir.join(f).display().to_string();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=hangar test CA"];
    ca.extend(ec);
    let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
    ca.extend([
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(&ca);
    let (key, csr, cert, ext) = (
        p("server.key"),
        p("server.csr"),
        p("server.pem"),
        p("ext.cnf"),
    );
    let mut req = vec![
        "req",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &key,
        "-out",
        &csr,
    ];
    req.extend(ec);
    openssl(&req);
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext file");
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &cert,
        "-extfile",
        &ext,
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

impl LocalRegistry {
    /// Starts one storing under `dir` (created). Panics, naming the
    /// package, when `docker-registry` is not installed.
    #[track_caller]
    pub fn start(dir: &Path) -> LocalRegistry {
        Self::start_with(dir, Auth::Open)
    }

    /// Starts one storing under `dir` (created) with `auth`. Panics,
    /// naming the package, when `docker-registry` (or for htpasswd,
    /// `htpasswd`) is not installed.
    #[track_caller]
    pub fn start_with(dir: &Path, auth: Auth<'_>) -> LocalRegistry {
        Self::start_inner(dir, auth, false)
    }

    /// As [`Self::start_with`], serving HTTPS with a certificate from a
    /// private CA made in `dir` (see `ca`).
    #[track_caller]
    pub fn start_tls(dir: &Path, auth: Auth<'_>) -> LocalRegistry {
        Self::start_inner(dir, auth, true)
    }

    #[track_caller]
    fn start_inner(dir: &Path, auth: Auth<'_>, tls: bool) -> LocalRegistry {
        std::fs::create_dir_all(dir.join("storage")).expect("registry dir");
        let (ca, tls) = if tls {
            let (ca, cert, key) = private_ca_for_loopback(&dir.join("tls"));
            let conf = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            );
            (Some(ca), conf)
        } else {
            (None, String::new())
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("config.yml");
        let auth = match auth {
            Auth::Open => String::new(),
            Auth::Htpasswd(users) => {
                let file = dir.join("htpasswd");
                let mut text = String::new();
                for (user, password) in users {
                    let out = Command::new("htpasswd")
                        .args(["-nbB", user, password])
                        .stdin(Stdio::null())
                        .output()
                        .expect("htpasswd (apt-get install apache2-utils)");
                    assert!(out.status.success(), "htpasswd -nbB {user}");
                    text.push_str(String::from_utf8_lossy(&out.stdout).trim());
                    text.push('\n');
                }
                std::fs::write(&file, text).expect("htpasswd file");
                format!(
                    "auth:\n  htpasswd:\n    realm: hangar-test\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Token(server) => format!(
                "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                server.realm,
                server.cert.display()
            ),
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{tls}{auth}",
                dir.join("storage").display()
            ),
        )
        .expect("registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let reg = LocalRegistry { addr, ca, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&reg.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {} within 20 s; see {}",
                reg.addr,
                dir.join("registry.log").display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

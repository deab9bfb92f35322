//! A real token server for the registry's bearer-token flow (the docker
//! "token authentication specification"): `GET /token?service=S&scope=…`
//! with HTTP basic credentials answers a JWT signed RS256 with a key whose
//! self-signed certificate the registry trusts (`rootcertbundle`), carried
//! in the token's `x5c` header. `POST /token` with
//! `grant_type=refresh_token` (docker's OAuth2 flow for an
//! `identitytoken`) answers `access_token` for the refresh token
//! [`TokenServer::refresh_token`] names. Wrong or missing credentials get 401. The
//! key and certificate are made with the `openssl` CLI; each token is
//! signed with `openssl dgst`. Runs on 127.0.0.1 in a thread of the test,
//! stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// The `service` and `issuer` the registry must be configured with.
pub const SERVICE: &str = "hangar-test-registry";
pub const ISSUER: &str = "hangar-test-token-issuer";

pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`: the registry's `realm`.
    pub realm: String,
    /// The issuer's certificate (PEM): the registry's `rootcertbundle`.
    pub cert: PathBuf,
    /// The refresh token (an `identitytoken`) this server accepts for its
    /// user.
    pub refresh_token: String,
    issued: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    addr: String,
    thread: Option<JoinHandle<()>>,
}

struct Issuer {
    key: PathBuf,
    cert_der_b64: String,
    user: String,
    password: String,
    refresh_token: String,
}

impl TokenServer {
    /// Starts one that gives tokens to `user` with `password`; its key
    /// and certificate go in `dir` (created).
    #[track_caller]
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        std::fs::create_dir_all(dir).expect("token server dir");
        let key = dir.join("issuer.key");
        let cert = dir.join("issuer.pem");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ISSUER}"),
            "-keyout",
            &key.display().to_string(),
            "-out",
            &cert.display().to_string(),
        ]);
        let der = openssl(&[
            "x509",
            "-in",
            &cert.display().to_string(),
            "-outform",
            "DER",
        ]);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let refresh_token = format!("refresh-{user}-{nanos}");
        let issuer = Arc::new(Issuer {
            key,
            cert_der_b64: STANDARD.encode(der),
            user: user.to_string(),
            password: password.to_string(),
            refresh_token: refresh_token.clone(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("token server port");
        let addr = listener
            .local_addr()
            .expect("token server addr")
            .to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let issued = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (stop2, issued2, refused2) = (stop.clone(), issued.clone(), refused.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                // One request per connection (answered with
                // `Connection: close`); errors only end that connection.
                let _ = serve(conn, &issuer, &issued2, &refused2);
            }
        });
        TokenServer {
            realm: format!("http://{addr}/token"),
            cert,
            refresh_token,
            issued,
            refused,
            stop,
            addr,
            thread: Some(thread),
        }
    }

    /// The scopes of every token issued so far, in order.
    pub fn issued(&self) -> Vec<String> {
        self.issued.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// How many token requests were refused (no or wrong credentials).
    pub fn refused(&self) -> usize {
        self.refused.lock().map(|n| *n).unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the `openssl` CLI and returns its standard output.
#[track_caller]
pub(crate) fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn serve(
    mut conn: TcpStream,
    issuer: &Issuer,
    issued: &Mutex<Vec<String>>,
    refused: &Mutex<usize>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let (head, body) = read_request(&mut conn)?;
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let target = request_line.split(' ').nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    let post = request_line.starts_with("POST ");
    // GET: the query; POST (OAuth2): the form body.
    let params: Vec<(String, String)> = if post { body.as_str() } else { query }
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    if path != "/token" || !(post || request_line.starts_with("GET ")) {
        return respond(&mut conn, "404 Not Found", "", "{}");
    }
    let user = if post {
        (param("grant_type") == Some("refresh_token")
            && param("refresh_token") == Some(issuer.refresh_token.as_str()))
        .then(|| issuer.user.clone())
    } else {
        authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Basic "))
            .and_then(|b| STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|up| {
                let (u, p) = up.split_once(':')?;
                (u == issuer.user && p == issuer.password).then(|| u.to_string())
            })
    };
    let Some(user) = user.filter(|_| param("service") == Some(SERVICE)) else {
        if let Ok(mut n) = refused.lock() {
            *n += 1;
        }
        return respond(
            &mut conn,
            "401 Unauthorized",
            "WWW-Authenticate: Basic realm=\"hangar-test-token\"\r\n",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
        );
    };
    let scopes: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "scope")
        .map(|(_, v)| v.as_str())
        .collect();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|s| {
            // repository:NAME:ACTION[,ACTION]; NAME has no ':' (no port).
            let mut parts = s.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect();
    let token = sign(issuer, &user, &access)?;
    if let Ok(mut v) = issued.lock() {
        let how = if post { "refresh_token " } else { "" };
        v.push(format!("{how}{}", scopes.join(" ")));
    }
    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300});
    respond(&mut conn, "200 OK", "", &body.to_string())
}

fn sign(issuer: &Issuer, user: &str, access: &[serde_json::Value]) -> std::io::Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [issuer.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user, "aud": SERVICE,
        "iat": now, "nbf": now - 10, "exp": now + 300,
        "jti": format!("{now}-{}", std::process::id()),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(&issuer.key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "openssl dgst -sign: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(out.stdout)))
}

/// The request's head and its body (`Content-Length` bytes, at most
/// 64 KiB).
fn read_request(conn: &mut TcpStream) -> std::io::Result<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok((String::from_utf8_lossy(&buf).into_owned(), String::new()));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(64 * 1024);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Ok((head, String::from_utf8_lossy(&body).into_owned()))
}

fn respond(conn: &mut TcpStream, status: &str, headers: &str, body: &str) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}",
        body.len()
    )?;
    conn.flush()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_percent_decoded() {
        assert_eq!(
            percent_decode("repository%3Ateam%2Ftool%3Apull%2Cpush"),
            "repository:team/tool:pull,push"
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41"), "A");
    }
}

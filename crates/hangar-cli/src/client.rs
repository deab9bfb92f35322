//! HTTP/1.1 client for the daemon's Unix socket. Every error the daemon
//! returns arrives as an `ApiError`; transport failures become one too, with
//! a hint to start the daemon.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use hangar_api::{ApiError, ErrorKind};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::UnixStream;

/// How long a connect waits for room in the daemon socket's backlog.
const CONNECT_BACKLOG_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: &Path) -> Client {
        Client {
            socket: socket.to_path_buf(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    async fn connect(&self) -> Result<TokioIo<UnixStream>, ApiError> {
        // A Unix socket whose backlog is full refuses a non-blocking
        // connect with EAGAIN at once (a burst of clients, or another
        // user's flood, which the daemon drains within moments): wait and
        // try again, as a blocking connect would, rather than fail.
        let began = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5);
        let stream = loop {
            match UnixStream::connect(&self.socket).await {
                Ok(stream) => break stream,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && began.elapsed() < CONNECT_BACKLOG_WAIT =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(ApiError::unavailable(format!(
                        "the hangar daemon at {} took no new connection within {} s (its socket's backlog stayed full: too many connections waiting); try again",
                        self.socket.display(),
                        CONNECT_BACKLOG_WAIT.as_secs()
                    )));
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(ApiError::unavailable(permission_hint(&self.socket, &e)));
                }
                Err(e) => {
                    return Err(ApiError::unavailable(format!(
                        "cannot reach the hangar daemon at {}: {e}; start it with `sudo hangar daemon` (or point --socket / HANGAR_SOCKET / --config at the right one)",
                        self.socket.display()
                    )));
                }
            }
        };
        Ok(TokioIo::new(stream))
    }

    /// Sends one request on a fresh connection (which may be upgraded).
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        upgrade: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
        let content_type = body.is_some().then_some("application/json");
        let body = Full::new(Bytes::from(body.unwrap_or_default()));
        self.send_body(method, path, content_type, body, upgrade)
            .await
    }

    /// Sends one request with any body (a stream, for uploads).
    async fn send_body<B>(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: B,
        upgrade: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ApiError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let io = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| {
                ApiError::internal(format!("HTTP handshake with the daemon failed: {e}"))
            })?;
        tokio::spawn(conn.with_upgrades());
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "hangar");
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        if let Some(protocol) = upgrade {
            req = req
                .header("connection", "upgrade")
                .header("upgrade", protocol);
        }
        let req = req
            .body(body)
            .map_err(|e| ApiError::internal(format!("cannot build request: {e}")))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| ApiError::internal(format!("request to the daemon failed: {e}")))
    }

    /// POSTs a streamed body and decodes the JSON answer.
    pub async fn post_stream<T, B>(
        &self,
        path: &str,
        content_type: &str,
        body: B,
    ) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        self.send_stream(Method::POST, path, content_type, body)
            .await
    }

    /// Sends a streamed body with `method` and decodes the JSON answer.
    pub async fn send_stream<T, B>(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: B,
    ) -> Result<T, ApiError>
    where
        T: DeserializeOwned,
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let resp = self
            .send_body(method, path, Some(content_type), body, None)
            .await?;
        let status = resp.status();
        let bytes = read_body(resp).await?;
        if !status.is_success() {
            return Err(decode_error(status, &bytes));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal(format!("cannot decode the daemon's answer: {e}")))
    }

    /// GETs a body to stream: the response when it is a success, the
    /// decoded error otherwise.
    pub async fn get_stream(
        &self,
        path: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ApiError> {
        let resp = self.send(Method::GET, path, None, None).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            let bytes = read_body(resp).await?;
            return Err(decode_error(status, &bytes));
        }
        Ok(resp)
    }

    /// Sends one request and returns the status and body bytes.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ApiError> {
        let (status, _, bytes) = self.raw_with_headers(method, path, body).await?;
        Ok((status, bytes))
    }

    /// Like [`Client::raw`], with the response headers.
    pub async fn raw_with_headers(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), ApiError> {
        let resp = self.send(method, path, body, None).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = read_body(resp).await?;
        Ok((status, headers, bytes))
    }

    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ApiError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ApiError::internal(format!("cannot encode request: {e}")))?;
        let (status, bytes) = self.raw(method, path, body).await?;
        if !status.is_success() {
            return Err(decode_error(status, &bytes));
        }
        let bytes = if bytes.is_empty() {
            Bytes::from_static(b"null")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::internal(format!("cannot decode the daemon's answer: {e}")))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ApiError> {
        self.call(Method::GET, path, None::<&()>).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        self.call(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        let (status, bytes) = self.raw(Method::DELETE, path, None).await?;
        if !status.is_success() {
            return Err(decode_error(status, &bytes));
        }
        Ok(())
    }

    /// Opens an upgraded exec stream.
    pub async fn upgrade(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ApiError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ApiError::internal(format!("cannot encode request: {e}")))?;
        self.upgrade_to(path, Some(body), hangar_api::stream::UPGRADE_PROTOCOL)
            .await
    }

    /// Opens an upgraded TCP stream to a guest port.
    pub async fn upgrade_tcp(
        &self,
        path: &str,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ApiError> {
        self.upgrade_to(path, None, hangar_api::stream::TCP_UPGRADE_PROTOCOL)
            .await
    }

    /// Opens an attach stream to a session (hangar-exec frames).
    pub async fn upgrade_attach(
        &self,
        path: &str,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ApiError> {
        self.upgrade_to(path, None, hangar_api::session::ATTACH_UPGRADE_PROTOCOL)
            .await
    }

    async fn upgrade_to(
        &self,
        path: &str,
        body: Option<Vec<u8>>,
        protocol: &str,
    ) -> Result<TokioIo<hyper::upgrade::Upgraded>, ApiError> {
        let mut resp = self.send(Method::POST, path, body, Some(protocol)).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(decode_error(status, &bytes));
        }
        let upgraded = hyper::upgrade::on(&mut resp)
            .await
            .map_err(|e| ApiError::internal(format!("{protocol} stream upgrade failed: {e}")))?;
        Ok(TokioIo::new(upgraded))
    }
}

pub fn decode_error(status: StatusCode, bytes: &[u8]) -> ApiError {
    serde_json::from_slice::<ApiError>(bytes).unwrap_or_else(|_| {
        ApiError::new(
            ErrorKind::from_http_status(status.as_u16()),
            format!(
                "daemon answered {status}: {}",
                String::from_utf8_lossy(bytes).trim()
            ),
        )
    })
}

/// What to do when the socket exists but this user may not open it: name
/// the group that may (the daemon's `socket_group`).
fn permission_hint(socket: &Path, e: &std::io::Error) -> String {
    use std::os::unix::fs::MetadataExt;
    // The runtime dir (0750 root:socket_group) hides the socket from
    // non-members; it has the same group, so it names it just as well.
    let group = std::fs::metadata(socket)
        .or_else(|_| std::fs::metadata(socket.parent().unwrap_or(socket)))
        .ok()
        .map(|m| {
            nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(m.gid()))
                .ok()
                .flatten()
                .map(|g| g.name)
                .unwrap_or_else(|| m.gid().to_string())
        });
    match group {
        Some(g) if g != "root" => format!(
            "cannot open the hangar API socket {}: {e}; it is for members of group {g:?}: run `sudo usermod -aG {g} $USER` and log in again, or use sudo",
            socket.display()
        ),
        _ => format!(
            "cannot open the hangar API socket {}: {e}; it is root's only: use sudo, or set socket_group in the daemon's config to a group of yours",
            socket.display()
        ),
    }
}

/// The whole body of a daemon answer.
async fn read_body(resp: hyper::Response<hyper::body::Incoming>) -> Result<Bytes, ApiError> {
    Ok(resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::internal(format!("cannot read the daemon's answer: {e}")))?
        .to_bytes())
}

#[cfg(test)]
mod backlog_tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// A listening Unix socket with the smallest backlog (one waiting
    /// connection), so that a second waiting connect gets EAGAIN.
    fn tiny_backlog_listener(path: &Path) -> std::os::unix::net::UnixListener {
        // SAFETY: a fresh socket; its fd is owned by the listener below.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0, "socket");
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = nix::sys::socket::UnixAddr::new(path).expect("addr");
        nix::sys::socket::bind(owned.as_raw_fd(), &addr).expect("bind");
        assert_eq!(unsafe { libc::listen(owned.as_raw_fd(), 0) }, 0, "listen");
        std::os::unix::net::UnixListener::from(owned)
    }

    #[tokio::test]
    async fn a_full_backlog_is_waited_out_not_reported_as_a_missing_daemon() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("d.sock");
        let listener = tiny_backlog_listener(&path);
        // Fill the backlog until a connect is refused with EAGAIN.
        let mut waiting = Vec::new();
        loop {
            match UnixStream::connect(&path).await {
                Ok(s) => waiting.push(s),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("connect: {e}"),
            }
            assert!(waiting.len() < 64, "the backlog never filled");
        }
        // The "daemon" drains its backlog a moment later.
        let acceptor = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let mut accepted = Vec::new();
            for _ in 0..=waiting.len() {
                accepted.push(listener.accept().expect("accept"));
            }
            accepted.len()
        });
        let client = Client::new(&path);
        client
            .connect()
            .await
            .expect("connected once there was room");
        assert!(acceptor.join().expect("acceptor") >= 1);
    }
}

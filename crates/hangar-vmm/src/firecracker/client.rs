//! HTTP/1.1 client for Firecracker's API socket (hyper 1.x over a tokio
//! `UnixStream`). One connection per request: calls are rare and this
//! keeps a wedged connection from poisoning later calls.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::api::ApiCall;
use crate::error::VmmError;

/// Upper bound for one API exchange.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A Firecracker API endpoint.
#[derive(Debug, Clone)]
pub struct ApiClient {
    socket: PathBuf,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ApiClient {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends `call`; a non-2xx answer becomes [`VmmError::FirecrackerApi`]
    /// carrying Firecracker's `fault_message`.
    pub async fn send(&self, call: &ApiCall) -> Result<Bytes, VmmError> {
        let body = if call.body.is_null() {
            None
        } else {
            Some(call.body.to_string())
        };
        self.request(call.method, &call.path, body).await
    }

    /// GET `path` (e.g. `/` for InstanceInfo).
    pub async fn get(&self, path: &str) -> Result<Bytes, VmmError> {
        self.request("GET", path, None).await
    }

    async fn request(
        &self,
        method: &'static str,
        path: &str,
        body: Option<String>,
    ) -> Result<Bytes, VmmError> {
        let transport = |message: String| VmmError::FirecrackerTransport {
            method,
            path: path.to_string(),
            socket: self.socket.clone(),
            message,
        };
        let exchange = async {
            let stream = UnixStream::connect(&self.socket)
                .await
                .map_err(|e| transport(format!("cannot connect: {e}")))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| transport(format!("HTTP handshake failed: {e}")))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "Firecracker API connection ended with an error");
                }
            });
            let mut req = Request::builder()
                .method(method)
                .uri(path)
                .header("Host", "localhost")
                .header("Accept", "application/json");
            if body.is_some() {
                req = req.header("Content-Type", "application/json");
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| transport(format!("cannot build request: {e}")))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| transport(format!("request failed: {e}")))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(format!("cannot read response body: {e}")))?
                .to_bytes();
            if status.is_success() {
                return Ok(bytes);
            }
            Err(VmmError::FirecrackerApi {
                method,
                path: path.to_string(),
                status: status.as_u16(),
                fault_message: fault_message(&bytes),
            })
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| transport(format!("no answer within {} s", CALL_TIMEOUT.as_secs())))?
    }
}

/// Firecracker's `{"fault_message": "..."}`, or the raw body if it is not that.
fn fault_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("fault_message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            let raw = String::from_utf8_lossy(body).trim().to_string();
            if raw.is_empty() {
                "(empty response body)".to_string()
            } else {
                raw
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_message_extracts_firecracker_text() {
        assert_eq!(
            fault_message(br#"{"fault_message": "bad kernel"}"#),
            "bad kernel"
        );
    }

    #[test]
    fn fault_message_falls_back_to_raw_body() {
        assert_eq!(fault_message(b"oops"), "oops");
        assert_eq!(fault_message(b""), "(empty response body)");
    }
}

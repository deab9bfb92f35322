//! Serving the API on the Unix socket, with limits that keep one client
//! from exhausting the daemon:
//!
//! - a header-read timeout: a client that does not send a whole request
//!   head within it is cut (slowloris). hyper starts that clock whenever
//!   the connection waits for a request head, so it also closes keep-alive
//!   connections that sit idle between requests. A request being served (a
//!   long-poll of an operation) and an upgraded exec stream are not
//!   waiting for a head, so they are never cut;
//! - caps on open connections ([`ConnLimiter`]): beyond them a connection
//!   gets an immediate `unavailable` answer and is closed, instead of
//!   waiting in the backlog or holding a file descriptor.
//!
//! Every request carries its connection's [`PeerCred`] as
//! `ConnectInfo<PeerCred>`, as with `axum::serve`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hangar_api::ApiError;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use super::conn_limit::{ConnCaps, ConnLimiter, Refused};
use super::peer::PeerCred;

/// The limits of `[api]`.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    pub header_read_timeout: Duration,
    pub caps: ConnCaps,
}

/// How long a stop waits for requests in flight before dropping them.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a refused connection is given to send its request, so that
/// closing it does not cut the client's write before it reads the answer.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);
/// Refused connections answered at once; beyond, they are just closed.
const MAX_PENDING_REFUSALS: usize = 32;

/// Serves `router` on `listener` until `shutdown` completes, then lets the
/// requests in flight finish (for at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: UnixListener,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) {
    let limiter = ConnLimiter::new(limits.caps);
    let connections = TaskTracker::new();
    let stopping = CancellationToken::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    tokio::pin!(shutdown);
    let mut refused: u64 = 0;
    let refusals = Arc::new(Semaphore::new(MAX_PENDING_REFUSALS));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors (or a similar passing error):
                    // back off instead of spinning on accept.
                    warn!(error = %e, "cannot accept an API connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let peer = PeerCred::of(&stream);
        let slot = match limiter.admit(&peer) {
            Ok(slot) => slot,
            Err(why) => {
                refused += 1;
                // A flood must not flood the log too: 1st, 2nd, 4th, 8th…
                if refused.is_power_of_two() {
                    warn!(reason = %why, refused_so_far = refused, "API connection refused");
                }
                refuse(stream, &why, &refusals);
                continue;
            }
        };
        let slot = Arc::new(slot);
        let router = router.clone();
        let request_slot = slot.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(request_slot.clone());
            router.clone().oneshot(req)
        });
        let conn = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stopping = stopping.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                () = stopping.cancelled() => {
                    // Finish the request in flight, take no other.
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                debug!(uid = peer.uid, error = %e, "API connection ended with an error");
            }
            drop(slot);
        });
    }
    stopping.cancel();
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait())
        .await
        .is_err()
    {
        warn!("API requests still running after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
}

/// Answers a connection over its cap with an `unavailable` error and closes
/// it. The answer waits at most [`REFUSAL_WAIT`] for the request, and at
/// most [`MAX_PENDING_REFUSALS`] connections wait at once: past that, a
/// refused connection is closed unanswered.
fn refuse(stream: UnixStream, why: &Refused, refusals: &Arc<Semaphore>) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    let err = ApiError::unavailable(why.to_string());
    let body = serde_json::to_string(&err).unwrap_or_default();
    let status = err.kind.http_status();
    let response = format!(
        "HTTP/1.1 {status} Too Many Connections\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        let _permit = permit;
        let mut stream = stream;
        if tokio::time::timeout(REFUSAL_WAIT, stream.readable())
            .await
            .is_ok()
        {
            let mut sink = [0u8; 4096];
            let _ = stream.try_read(&mut sink);
        }
        let _ = tokio::time::timeout(REFUSAL_WAIT, stream.write_all(response.as_bytes())).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves a router with a `who` endpoint (the peer's uid as the
    /// handler sees it) and a `slow` one (answers after 1.5 s).
    async fn start(
        header_timeout: Duration,
    ) -> (tempfile::TempDir, std::path::PathBuf, CancellationToken) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let router = Router::new()
            .route(
                "/who",
                get(|ConnectInfo(p): ConnectInfo<PeerCred>| async move { p.uid.to_string() }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    "done"
                }),
            );
        let stop = CancellationToken::new();
        let limits = ServeLimits {
            header_read_timeout: header_timeout,
            caps: ConnCaps {
                total: 8,
                per_user: 4,
            },
        };
        let s = stop.clone();
        tokio::spawn(serve(listener, router, limits, async move {
            s.cancelled().await
        }));
        (dir, path, stop)
    }

    async fn get_once(stream: &mut UnixStream, path: &str) -> String {
        let req = format!("GET {path} HTTP/1.1\r\nhost: hangar\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// Reads until the server closes; returns how long that took.
    async fn time_to_close(stream: &mut UnixStream, within: Duration) -> Duration {
        let began = Instant::now();
        let mut buf = vec![0u8; 4096];
        tokio::time::timeout(within, async {
            while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
        })
        .await
        .expect("the server closes the connection");
        began.elapsed()
    }

    #[tokio::test]
    async fn handlers_see_the_peer_credentials_of_the_connection() {
        let (_dir, path, _stop) = start(Duration::from_secs(5)).await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        let answer = get_once(&mut s, "/who").await;
        let uid = nix::unistd::geteuid().as_raw().to_string();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with(&format!("\r\n\r\n{uid}")), "{answer}");
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_request_head_is_cut() {
        let (_dir, path, _stop) = start(Duration::from_millis(500)).await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"GET /who HTTP/1.1\r\nhost: hangar\r\nx-slow: ")
            .await
            .unwrap();
        let took = time_to_close(&mut s, Duration::from_secs(5)).await;
        assert!(
            took >= Duration::from_millis(400),
            "cut too early: {took:?}"
        );
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (_dir, path, _stop) = start(Duration::from_millis(500)).await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        assert!(get_once(&mut s, "/who").await.starts_with("HTTP/1.1 200"));
        time_to_close(&mut s, Duration::from_secs(5)).await;
    }

    #[tokio::test]
    async fn a_request_served_longer_than_the_header_timeout_is_not_cut() {
        let (_dir, path, _stop) = start(Duration::from_millis(300)).await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        let answer = get_once(&mut s, "/slow").await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
    }

    #[tokio::test]
    async fn stopping_ends_the_accept_loop_and_finishes_requests_in_flight() {
        let (_dir, path, stop) = start(Duration::from_secs(5)).await;
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"GET /slow HTTP/1.1\r\nhost: hangar\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.cancel();
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&buf);
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
    }
}

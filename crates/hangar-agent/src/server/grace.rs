//! The login grace time (OpenSSH's `LoginGraceTime`): a connection that has
//! not logged in by then is dropped, so stalled or abandoned handshakes do
//! not hold memory and file descriptors in the guest forever.
//!
//! It wraps the TCP stream rather than asking russh to disconnect: russh
//! handles no requests from outside while a key exchange is in progress,
//! which is exactly where a stalled client sits. Once the deadline passes
//! without a login, the next read fails and the session ends.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// OpenSSH's default.
pub const DEFAULT_LOGIN_GRACE: Duration = Duration::from_secs(120);

/// A stream whose reads fail once `deadline` passes unless `logged_in`
/// was set first.
pub struct GraceStream<S> {
    inner: S,
    deadline: Pin<Box<Sleep>>,
    logged_in: Arc<AtomicBool>,
}

impl<S> GraceStream<S> {
    pub fn new(inner: S, grace: Duration, logged_in: Arc<AtomicBool>) -> GraceStream<S> {
        GraceStream {
            inner,
            deadline: Box::pin(tokio::time::sleep(grace)),
            logged_in,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GraceStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Polling the deadline also wakes this read when it passes.
        if !self.logged_in.load(Ordering::Acquire) && self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no login within the login grace time",
            )));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GraceStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_read_fails_after_the_grace_time_unless_logged_in() {
        let (a, _peer) = tokio::io::duplex(64);
        let mut stalled = GraceStream::new(
            a,
            Duration::from_millis(100),
            Arc::new(AtomicBool::new(false)),
        );
        let mut buf = [0u8; 8];
        let err = stalled.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        let (b, mut peer) = tokio::io::duplex(64);
        let logged_in = Arc::new(AtomicBool::new(false));
        let mut ok = GraceStream::new(b, Duration::from_millis(100), Arc::clone(&logged_in));
        logged_in.store(true, Ordering::Release);
        tokio::time::sleep(Duration::from_millis(300)).await;
        peer.write_all(b"hi").await.unwrap();
        let n = ok.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hi");
    }
}

//! Request bodies of the upload endpoints, drained when their handler
//! lets go of them early. A handler that refuses an upload before reading
//! it (a size over the limit, a taken name) answers at once; if the
//! connection then stopped reading, the client, still writing its body,
//! would see a broken pipe instead of the answer. So what is left of a
//! dropped body is read and thrown away in the background, for a bounded
//! time, while the client reads the answer and stops sending.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body::Body as _;
use http_body_util::BodyExt;

/// How long a dropped body is read on at most.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// `body`, drained in the background when dropped before its end.
pub fn on_drop(body: Body) -> Body {
    Body::new(Draining { inner: Some(body) })
}

/// The body until its end (or error); `None` after, so that only a body
/// dropped before its end is drained.
struct Draining {
    inner: Option<Body>,
}

impl http_body::Body for Draining {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.inner = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take().filter(|b| !b.is_end_stream()) else {
            return;
        };
        // Outside a runtime (never, for a request) the body just goes.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tokio::time::timeout(DRAIN_LIMIT, async {
                    while let Some(Ok(_)) = body.frame().await {}
                })
                .await;
            });
        }
    }
}

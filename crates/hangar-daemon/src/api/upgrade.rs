//! The HTTP upgrade shared by the stream endpoints (exec, TCP, attach):
//! check the `Upgrade` header names the endpoint's protocol, take the
//! pending upgrade and the connection's slot out of the request, and build
//! the `101 Switching Protocols` answer.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hangar_api::ApiError;
use hyper::upgrade::OnUpgrade;

use super::conn_limit::ConnSlot;
use super::HttpError;

/// What an upgraded stream needs from its request.
pub struct Pending {
    pub on_upgrade: OnUpgrade,
    /// The connection's slot: the stream outlives the HTTP exchange and
    /// keeps counting against the user's connection cap.
    pub slot: Option<Arc<ConnSlot>>,
}

/// Takes the upgrade out of `req` if it asks for `protocol`; else an
/// `invalid` error that names the headers and the CLI command (`hint`).
pub fn take(req: &mut Request, protocol: &'static str, hint: &str) -> Result<Pending, HttpError> {
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(protocol));
    if !wants {
        return Err(HttpError(ApiError::invalid(format!(
            "this endpoint needs `Connection: Upgrade` and `Upgrade: {protocol}` (use `{hint}`)"
        ))));
    }
    let on_upgrade = req
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or_else(|| HttpError(ApiError::invalid("this connection cannot be upgraded")))?;
    let slot = req.extensions_mut().remove::<Arc<ConnSlot>>();
    Ok(Pending { on_upgrade, slot })
}

/// `101 Switching Protocols` to `protocol`.
pub fn switching(protocol: &'static str) -> Response {
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(protocol));
    resp
}

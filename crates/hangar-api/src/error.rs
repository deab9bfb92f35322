//! API errors: a stable `kind` that maps one-to-one to an HTTP status, and a
//! message a person can act on.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Stable error classes of the API. Each maps to exactly one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The named thing does not exist (404).
    NotFound,
    /// The request conflicts with current state, e.g. a duplicate name (409).
    Conflict,
    /// The request is malformed or a value is out of range (400).
    Invalid,
    /// The host lacks something the request needs, e.g. a VMM binary (412).
    Unavailable,
    /// The operation was cancelled (499-like; reported as 409 on the wire).
    Cancelled,
    /// A deadline passed, e.g. the guest did not answer SSH in time (504).
    Timeout,
    /// Anything else: a bug or an unexpected host failure (500).
    Internal,
}

impl ErrorKind {
    /// Every kind, in documentation order (the OpenAPI document lists the
    /// kinds each error status can carry from this).
    pub const ALL: [ErrorKind; 7] = [
        ErrorKind::NotFound,
        ErrorKind::Conflict,
        ErrorKind::Invalid,
        ErrorKind::Unavailable,
        ErrorKind::Cancelled,
        ErrorKind::Timeout,
        ErrorKind::Internal,
    ];

    /// The HTTP status this kind is reported with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Invalid => 400,
            ErrorKind::Unavailable => 412,
            ErrorKind::Cancelled => 409,
            ErrorKind::Timeout => 504,
            ErrorKind::Internal => 500,
        }
    }

    /// The kind a bare HTTP status most likely means (used when a body is
    /// not JSON, e.g. a proxy error).
    pub fn from_http_status(status: u16) -> Self {
        match status {
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            400 | 405 | 411 | 413 | 415 | 422 => ErrorKind::Invalid,
            412 => ErrorKind::Unavailable,
            504 => ErrorKind::Timeout,
            _ => ErrorKind::Internal,
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Stable class of the error; each kind has one HTTP status.
    pub kind: ErrorKind,
    /// What went wrong and what to do about it, for a person.
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn cancelled(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Cancelled, message)
    }
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Timeout, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_status_except_cancelled() {
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::Invalid,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Internal,
        ] {
            assert_eq!(ErrorKind::from_http_status(kind.http_status()), kind);
        }
    }

    #[test]
    fn error_serializes_with_snake_case_kind() {
        let e = ApiError::not_found("no VM named \"x\"");
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"kind":"not_found","message":"no VM named \"x\""}"#
        );
    }
}

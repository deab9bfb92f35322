//! The one place where daemon work meets the operations registry: work
//! returns a [`DaemonError`](crate::error::DaemonError); the registry keeps
//! (and persists) the wire error it maps to.

use std::future::Future;

use hangar_api::{ApiError, OpKind, Operation};
use hangar_ops::{OpHandle, OpRegistry};

use crate::error::Result;

/// Begins an operation running `work`; see [`OpRegistry::begin`].
pub fn begin<F, Fut>(ops: &OpRegistry, kind: OpKind, target: &str, work: F) -> Operation
where
    F: FnOnce(OpHandle) -> Fut + Send + 'static,
    Fut: Future<Output = Result<serde_json::Value>> + Send + 'static,
{
    ops.begin(kind, target, move |op| async move {
        work(op).await.map_err(ApiError::from)
    })
}

//! The operation state machine, as pure functions: Running becomes
//! Succeeded, Failed or Cancelled exactly once.

use hangar_api::{ApiError, ErrorKind, OpState, Operation};
use serde_json::Value;

/// How the work ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Done(Value),
    Failed(ApiError),
    /// The work panicked; the payload's message.
    Panicked(String),
}

/// The terminal state and what goes with it.
#[derive(Debug, PartialEq)]
pub(crate) struct Terminal {
    pub state: OpState,
    pub result: Option<Value>,
    pub error: Option<ApiError>,
}

/// A second finish of the same operation.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("the operation already {}", .0.as_str())]
pub(crate) struct AlreadyFinished(pub OpState);

/// The terminal state of an operation in `current` whose work ended with
/// `outcome`. An error after a cancel request (or any error of kind
/// cancelled) is a cancellation; success wins even after a cancel request,
/// because the work did complete; a panic is a failure whatever happened.
pub(crate) fn finish(
    current: OpState,
    cancel_requested: bool,
    outcome: Outcome,
) -> Result<Terminal, AlreadyFinished> {
    if current.is_terminal() {
        return Err(AlreadyFinished(current));
    }
    Ok(match outcome {
        Outcome::Done(v) => Terminal {
            state: OpState::Succeeded,
            result: Some(v),
            error: None,
        },
        Outcome::Failed(e) if e.kind == ErrorKind::Cancelled => Terminal {
            state: OpState::Cancelled,
            result: None,
            error: Some(e),
        },
        Outcome::Failed(e) if cancel_requested => Terminal {
            state: OpState::Cancelled,
            result: None,
            error: Some(ApiError::cancelled(format!(
                "the operation was cancelled: {}",
                e.message
            ))),
        },
        Outcome::Failed(e) => Terminal {
            state: OpState::Failed,
            result: None,
            error: Some(e),
        },
        Outcome::Panicked(msg) => Terminal {
            state: OpState::Failed,
            result: None,
            error: Some(ApiError::internal(format!(
                "the operation stopped on an internal bug ({msg}); see the daemon log and report it"
            ))),
        },
    })
}

/// Whether `op` may be cancelled: only running operations can be.
pub(crate) fn check_cancellable(op: &Operation) -> Result<(), ApiError> {
    if op.state.is_terminal() {
        return Err(ApiError::conflict(format!(
            "operation {} already {}; only running operations can be cancelled",
            op.id,
            op.state.as_str()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hangar_api::{OpKind, Progress};
    use serde_json::json;

    #[test]
    fn ok_ends_succeeded_with_result() {
        let t = finish(OpState::Running, false, Outcome::Done(json!(1))).unwrap();
        assert_eq!(
            t,
            Terminal {
                state: OpState::Succeeded,
                result: Some(json!(1)),
                error: None
            }
        );
    }

    #[test]
    fn ok_after_cancel_request_still_succeeds() {
        let t = finish(OpState::Running, true, Outcome::Done(json!(1))).unwrap();
        assert_eq!(t.state, OpState::Succeeded);
    }

    #[test]
    fn error_ends_failed_with_that_error() {
        let e = ApiError::timeout("no SSH");
        let t = finish(OpState::Running, false, Outcome::Failed(e.clone())).unwrap();
        assert_eq!(t.state, OpState::Failed);
        assert_eq!(t.error, Some(e));
        assert_eq!(t.result, None);
    }

    #[test]
    fn error_after_cancel_request_ends_cancelled_with_cancelled_kind() {
        let t = finish(
            OpState::Running,
            true,
            Outcome::Failed(ApiError::internal("stopped qemu")),
        )
        .unwrap();
        assert_eq!(t.state, OpState::Cancelled);
        let e = t.error.unwrap();
        assert_eq!(e.kind, ErrorKind::Cancelled);
        assert!(e.message.contains("stopped qemu"));
    }

    #[test]
    fn cancelled_error_without_request_ends_cancelled() {
        let e = ApiError::cancelled("shutting down");
        let t = finish(OpState::Running, false, Outcome::Failed(e.clone())).unwrap();
        assert_eq!(t.state, OpState::Cancelled);
        assert_eq!(t.error, Some(e));
    }

    #[test]
    fn panic_ends_failed_internal_even_after_cancel_request() {
        let t = finish(OpState::Running, true, Outcome::Panicked("boom".into())).unwrap();
        assert_eq!(t.state, OpState::Failed);
        let e = t.error.unwrap();
        assert_eq!(e.kind, ErrorKind::Internal);
        assert!(e.message.contains("boom"));
    }

    #[test]
    fn finishing_a_finished_op_is_refused() {
        for s in [OpState::Succeeded, OpState::Failed, OpState::Cancelled] {
            let r = finish(s, false, Outcome::Done(json!(null)));
            assert_eq!(r, Err(AlreadyFinished(s)));
        }
    }

    fn op(state: OpState) -> Operation {
        Operation {
            id: "op-1".into(),
            kind: OpKind::VmStart,
            target: "dev".into(),
            state,
            progress: Progress::default(),
            result: None,
            error: None,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn running_op_is_cancellable() {
        assert!(check_cancellable(&op(OpState::Running)).is_ok());
    }

    #[test]
    fn finished_op_is_not_cancellable_and_says_its_state() {
        let e = check_cancellable(&op(OpState::Succeeded)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Conflict);
        assert!(e.message.contains("already succeeded"), "{}", e.message);
    }
}

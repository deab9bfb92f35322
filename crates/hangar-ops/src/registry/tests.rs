use std::time::Instant;

use hangar_api::ErrorKind;
use serde_json::json;

use super::*;

const LONG: Duration = Duration::from_secs(10);

fn registry() -> (OpRegistry, Arc<Store>) {
    let store = Arc::new(Store::open_in_memory().unwrap());
    (
        OpRegistry::new(Arc::clone(&store), Duration::from_secs(3600)),
        store,
    )
}

/// Work that runs until cancelled, then reports it cleaned up.
async fn until_cancelled(h: OpHandle) -> Result<serde_json::Value, ApiError> {
    h.cancel_token().cancelled().await;
    Err(ApiError::internal("removed the half-made disk"))
}

#[tokio::test]
async fn begin_returns_running_snapshot_and_persists_it() {
    let (reg, store) = registry();

    let op = reg.begin(OpKind::VmCreate, "dev", until_cancelled);

    assert_eq!(op.state, OpState::Running);
    assert_eq!(op.target, "dev");
    assert!(op.id.starts_with("op-") && op.id.len() == 15, "{}", op.id);
    assert_eq!(store.get_op(&op.id).unwrap().state, OpState::Running);
    reg.cancel(&op.id).unwrap();
}

#[tokio::test]
async fn successful_work_ends_succeeded_with_result_in_memory_and_store() {
    let (reg, store) = registry();

    let op = reg.begin(OpKind::ImagePull, "debian-12", |_| async {
        Ok(json!({"ok": true}))
    });
    let done = reg.wait(&op.id, LONG).await.unwrap();

    assert_eq!(done.state, OpState::Succeeded);
    assert_eq!(done.result, Some(json!({"ok": true})));
    reg.drain(LONG).await;
    assert_eq!(store.get_op(&op.id).unwrap(), done);
}

#[tokio::test]
async fn failing_work_ends_failed_with_its_error() {
    let (reg, store) = registry();

    let op = reg.begin(OpKind::VmStart, "dev", |_| async {
        Err(ApiError::timeout("the guest did not answer SSH"))
    });
    let done = reg.wait(&op.id, LONG).await.unwrap();

    assert_eq!(done.state, OpState::Failed);
    assert_eq!(
        done.error,
        Some(ApiError::timeout("the guest did not answer SSH"))
    );
    reg.drain(LONG).await;
    assert_eq!(store.get_op(&op.id).unwrap().state, OpState::Failed);
}

#[tokio::test]
async fn cancelled_work_returning_err_ends_cancelled() {
    let (reg, store) = registry();
    let op = reg.begin(OpKind::VmCreate, "dev", until_cancelled);

    let snapshot = reg.cancel(&op.id).unwrap();
    let done = reg.wait(&op.id, LONG).await.unwrap();

    assert_eq!(snapshot.state, OpState::Running);
    assert_eq!(done.state, OpState::Cancelled);
    assert_eq!(done.error.as_ref().unwrap().kind, ErrorKind::Cancelled);
    reg.drain(LONG).await;
    assert_eq!(store.get_op(&op.id).unwrap().state, OpState::Cancelled);
}

#[tokio::test]
async fn cancelled_work_returning_ok_ends_succeeded() {
    let (reg, _store) = registry();
    let op = reg.begin(OpKind::VmStop, "dev", |h| async move {
        h.cancel_token().cancelled().await;
        Ok(json!("finished anyway"))
    });

    reg.cancel(&op.id).unwrap();
    let done = reg.wait(&op.id, LONG).await.unwrap();

    assert_eq!(done.state, OpState::Succeeded);
}

#[tokio::test]
async fn panicking_work_ends_failed_internal() {
    let (reg, store) = registry();

    let op = reg.begin(OpKind::VmCreate, "dev", |_| async {
        if true {
            panic!("index out of bounds");
        }
        Ok(json!(null))
    });
    let done = reg.wait(&op.id, LONG).await.unwrap();

    assert_eq!(done.state, OpState::Failed);
    let err = done.error.clone().unwrap();
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(
        err.message.contains("index out of bounds"),
        "{}",
        err.message
    );
    reg.drain(LONG).await;
    assert_eq!(store.get_op(&op.id).unwrap(), done);
}

#[tokio::test]
async fn panic_before_the_future_exists_ends_failed_internal() {
    let (reg, _store) = registry();

    let op = reg.begin(OpKind::VmCreate, "dev", |_| -> std::future::Ready<_> {
        panic!("bad argument")
    });
    let done = reg.wait(&op.id, LONG).await.unwrap();

    assert_eq!(done.state, OpState::Failed);
    assert!(done.error.unwrap().message.contains("bad argument"));
}

#[tokio::test]
async fn cancel_of_finished_op_returns_conflict_naming_state() {
    let (reg, _store) = registry();
    let op = reg.begin(OpKind::VmStart, "dev", |_| async { Ok(json!(1)) });
    reg.wait(&op.id, LONG).await.unwrap();

    let err = reg.cancel(&op.id).unwrap_err();

    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("already succeeded"), "{}", err.message);
}

#[tokio::test]
async fn cancel_of_op_finished_by_previous_daemon_returns_conflict() {
    let (reg, store) = registry();
    let op = reg.begin(OpKind::VmStart, "dev", |_| async {
        Err(ApiError::internal("x"))
    });
    reg.drain(LONG).await;
    let fresh = OpRegistry::new(store, Duration::from_secs(3600));

    let err = fresh.cancel(&op.id).unwrap_err();

    assert_eq!(err.kind, ErrorKind::Conflict);
    assert!(err.message.contains("already failed"), "{}", err.message);
}

#[tokio::test]
async fn cancel_twice_is_harmless() {
    let (reg, _store) = registry();
    // The work's clean-up lasts until the test says so, so the second
    // cancel surely meets an operation that is still cleaning up.
    let (cleaned_up, cleanup_done) = tokio::sync::oneshot::channel::<()>();
    let op = reg.begin(OpKind::VmCreate, "dev", |h| async move {
        h.cancel_token().cancelled().await;
        let _ = cleanup_done.await;
        Err(ApiError::internal("cleaned up"))
    });
    reg.cancel(&op.id).unwrap();

    let second = reg.cancel(&op.id);

    assert!(second.is_ok(), "{second:?}");
    cleaned_up.send(()).unwrap();
    assert_eq!(
        reg.wait(&op.id, LONG).await.unwrap().state,
        OpState::Cancelled
    );
}

#[tokio::test]
async fn cancel_unknown_op_returns_not_found() {
    let (reg, _store) = registry();

    let err = reg.cancel("op-000000000000").unwrap_err();

    assert_eq!(err.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn get_unknown_op_returns_not_found() {
    let (reg, _store) = registry();

    let err = reg.get("op-nope").unwrap_err();

    assert_eq!(
        err,
        ApiError::not_found(r#"no operation with id "op-nope""#)
    );
}

#[tokio::test]
async fn get_falls_back_to_the_store_after_restart() {
    let (reg, store) = registry();
    let op = reg.begin(OpKind::ImagePull, "alpine", |_| async { Ok(json!("done")) });
    reg.drain(LONG).await;
    let fresh = OpRegistry::new(store, Duration::from_secs(3600));

    let got = fresh.get(&op.id).unwrap();

    assert_eq!(got.state, OpState::Succeeded);
    assert_eq!(got.result, Some(json!("done")));
}

#[tokio::test]
async fn wait_returns_running_snapshot_after_timeout() {
    let (reg, _store) = registry();
    let op = reg.begin(OpKind::VmCreate, "dev", until_cancelled);
    let start = Instant::now();

    let got = reg.wait(&op.id, Duration::from_millis(200)).await.unwrap();

    assert_eq!(got.state, OpState::Running);
    assert!(start.elapsed() >= Duration::from_millis(200));
    reg.cancel(&op.id).unwrap();
}

#[tokio::test]
async fn wait_returns_as_soon_as_the_op_finishes() {
    let (reg, _store) = registry();
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let op = reg.begin(OpKind::VmCreate, "dev", |_| async {
        let _ = finished.await;
        Ok(json!(1))
    });
    let start = Instant::now();
    let wait = reg.wait(&op.id, LONG);
    tokio::pin!(wait);
    // The work waits for `finish`, so the first poll must find it running.
    assert!(futures::poll!(&mut wait).is_pending());

    finish.send(()).unwrap();
    let got = wait.await.unwrap();

    assert_eq!(got.state, OpState::Succeeded);
    assert!(start.elapsed() < LONG / 2, "{:?}", start.elapsed());
}

#[tokio::test]
async fn wait_on_unknown_op_returns_not_found() {
    let (reg, _store) = registry();

    let err = reg.wait("op-nope", LONG).await.unwrap_err();

    assert_eq!(err.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn progress_is_visible_at_once_and_phase_changes_are_persisted() {
    let (reg, store) = registry();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (reported, phase_set) = tokio::sync::oneshot::channel::<()>();
    let op = reg.begin(OpKind::ImagePull, "debian-12", |h| async move {
        h.phase("debootstrap");
        let _ = reported.send(());
        let _ = rx.await;
        Ok(json!(null))
    });
    phase_set.await.unwrap();

    let live = reg.get(&op.id).unwrap();
    let stored = store.get_op(&op.id).unwrap();

    assert_eq!(live.progress.phase, "debootstrap");
    assert_eq!(stored.progress.phase, "debootstrap");
    tx.send(()).unwrap();
}

#[tokio::test]
async fn same_phase_progress_is_throttled_in_the_store_but_not_in_memory() {
    let (reg, store) = registry();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (reported, progress_sent) = tokio::sync::oneshot::channel::<()>();
    let op = reg.begin(OpKind::ImagePull, "debian-12", |h| async move {
        h.phase("download");
        for i in 1..=10u64 {
            h.progress(Progress {
                phase: "download".into(),
                current: Some(i),
                total: Some(10),
                unit: Some("bytes".into()),
                detail: None,
            });
        }
        let _ = reported.send(());
        let _ = rx.await;
        Ok(json!(null))
    });
    progress_sent.await.unwrap();

    let live = reg.get(&op.id).unwrap();
    let stored = store.get_op(&op.id).unwrap();

    assert_eq!(live.progress.current, Some(10));
    assert_eq!(stored.progress.current, None);
    tx.send(()).unwrap();
    reg.drain(LONG).await;
    assert_eq!(store.get_op(&op.id).unwrap().progress.current, Some(10));
}

#[tokio::test]
async fn progress_after_finish_is_ignored() {
    let (reg, _store) = registry();
    let (htx, hrx) = tokio::sync::oneshot::channel::<OpHandle>();
    let op = reg.begin(OpKind::VmStart, "dev", |h| async move {
        let _ = htx.send(h);
        Ok(json!(null))
    });
    let handle = hrx.await.unwrap();
    let done = reg.wait(&op.id, LONG).await.unwrap();

    handle.phase("late");

    assert_eq!(reg.get(&op.id).unwrap(), done);
}

#[tokio::test]
async fn list_merges_memory_and_store_newest_first() {
    let (reg, store) = registry();
    let old = reg.begin(OpKind::VmStart, "a", |_| async { Ok(json!(1)) });
    reg.drain(LONG).await;
    let fresh = OpRegistry::new(store, Duration::from_secs(3600));
    // Timestamps have millisecond precision: wait until the clock has
    // moved past `old`'s, so "newest first" has one right answer.
    while now_utc() <= old.created_at {
        tokio::task::yield_now().await;
    }
    let new = fresh.begin(OpKind::VmStop, "b", until_cancelled);

    let ids: Vec<String> = fresh.list().into_iter().map(|o| o.id).collect();

    assert_eq!(ids, [new.id.clone(), old.id]);
    fresh.cancel(&new.id).unwrap();
}

/// Makes operation `id` look last updated two hours ago, in memory and in
/// the store (instead of sleeping through a retention).
fn backdate_two_hours(reg: &OpRegistry, store: &Store, id: &str) {
    let two_hours_ago = format_utc(OffsetDateTime::now_utc() - time::Duration::hours(2));
    let slot = reg.inner.slot(id).unwrap();
    slot.tx.send_modify(|op| op.updated_at = two_hours_ago);
    store.update_op(&slot.snapshot()).unwrap();
}

#[tokio::test]
async fn prune_removes_only_old_finished_ops() {
    let (reg, store) = registry(); // one hour of retention
    let old = reg.begin(OpKind::VmStart, "old", |_| async { Ok(json!(1)) });
    let recent = reg.begin(OpKind::VmStop, "recent", |_| async { Ok(json!(1)) });
    // Both finished and persisted before anything looks at them.
    reg.drain(LONG).await;
    backdate_two_hours(&reg, &store, &old.id);
    let running = reg.begin(OpKind::VmCreate, "running", until_cancelled);
    // Old but running: must survive the prune all the same.
    backdate_two_hours(&reg, &store, &running.id);

    let pruned = reg.prune();

    assert_eq!(pruned, 1);
    assert_eq!(reg.get(&old.id).unwrap_err().kind, ErrorKind::NotFound);
    assert!(store.get_op(&old.id).is_err());
    assert_eq!(reg.get(&running.id).unwrap().state, OpState::Running);
    assert_eq!(reg.get(&recent.id).unwrap().state, OpState::Succeeded);
    reg.cancel(&running.id).unwrap();
}

#[tokio::test]
async fn drain_returns_once_running_ops_finish() {
    let (reg, _store) = registry();
    let (finish, finished) = tokio::sync::oneshot::channel::<()>();
    let op = reg.begin(OpKind::VmCreate, "dev", |_| async {
        let _ = finished.await;
        Ok(json!(1))
    });
    let drain = reg.drain(LONG);
    tokio::pin!(drain);
    assert!(futures::poll!(&mut drain).is_pending(), "the op still runs");

    finish.send(()).unwrap();
    drain.await;

    assert_eq!(reg.get(&op.id).unwrap().state, OpState::Succeeded);
}

#[tokio::test]
async fn drain_gives_up_after_timeout() {
    let (reg, _store) = registry();
    let op = reg.begin(OpKind::VmCreate, "dev", until_cancelled);
    let start = Instant::now();

    reg.drain(Duration::from_millis(150)).await;

    assert!(start.elapsed() >= Duration::from_millis(150));
    assert_eq!(reg.get(&op.id).unwrap().state, OpState::Running);
    reg.cancel(&op.id).unwrap();
}

#[tokio::test]
async fn cancel_all_then_drain_leaves_nothing_running() {
    let (reg, _store) = registry();
    let a = reg.begin(OpKind::VmCreate, "a", until_cancelled);
    let b = reg.begin(OpKind::VmCreate, "b", until_cancelled);

    let n = reg.cancel_all();
    reg.drain(LONG).await;

    assert_eq!(n, 2);
    assert_eq!(reg.get(&a.id).unwrap().state, OpState::Cancelled);
    assert_eq!(reg.get(&b.id).unwrap().state, OpState::Cancelled);
}

#[tokio::test]
async fn pruner_task_can_be_spawned_and_aborted() {
    let (reg, _store) = registry();

    let task = reg.spawn_pruner();
    task.abort();

    assert!(task.await.unwrap_err().is_cancelled());
}

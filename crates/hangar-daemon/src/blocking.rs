//! Blocking file work (removing image and VM directories, flushing image
//! files) runs on tokio's blocking pool, never on the async workers: a
//! multi-gigabyte `remove_dir_all` or `fsync` there would stall every API
//! request scheduled on the same worker.

use crate::error::{DaemonError, Result};

/// Runs `work` on the blocking pool and waits for it.
pub async fn off_runtime<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| DaemonError::Task { what, source })
}

/// Removes a directory tree on the blocking pool; a tree already gone is
/// fine. Returns the error to log, if any.
pub async fn remove_tree(dir: std::path::PathBuf) -> Option<std::io::Error> {
    let removed = off_runtime("directory removal", move || std::fs::remove_dir_all(&dir)).await;
    match removed {
        Ok(Ok(())) => None,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(std::io::Error::other(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remove_tree_removes_a_tree_and_accepts_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/f"), b"x").unwrap();
        assert!(remove_tree(tree.clone()).await.is_none());
        assert!(!tree.exists());
        assert!(remove_tree(tree).await.is_none(), "a missing tree is fine");
    }
}

//! Finding binaries the way a shell does.

use std::path::{Path, PathBuf};

/// Resolves `bin` on `PATH`, or checks it as is when it names a path (has a
/// `/`). `None` when there is no such file.
pub fn which(bin: &Path) -> Option<PathBuf> {
    if bin.components().count() > 1 {
        return bin.is_file().then(|| bin.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_sh_on_path_and_checks_explicit_paths() {
        assert!(which(Path::new("sh")).is_some());
        assert!(which(Path::new("hangar-no-such-binary")).is_none());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tool");
        assert!(which(&f).is_none());
        std::fs::write(&f, "").unwrap();
        assert_eq!(which(&f), Some(f));
    }
}

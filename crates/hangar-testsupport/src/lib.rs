//! What tests need from the machine, checked in one place.
//!
//! A test with a need is marked `#[ignore = "needs …"]` so a plain
//! `cargo test` reports it as ignored (with that reason) instead of passing
//! without running; `scripts/test.sh` runs it where the need is met. Once a
//! test runs, an unmet need is a failure: the helpers here panic with a
//! message naming the need and how to meet it, never return quietly.
//! The whole convention is described at the top of `scripts/test.sh`.

pub mod registry;
pub mod sshd;
pub mod token_server;

use std::path::PathBuf;

/// Panics unless the test runs as root; `why` says what needs it
/// (e.g. "network namespaces and TAP devices").
#[track_caller]
pub fn require_root(why: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "needs root ({why}); this test is #[ignore]d for that reason: run it as root \
         (scripts/test.sh does), e.g. sudo -E cargo test -- --include-ignored"
    );
}

/// The path in environment variable `var`, which must name an existing
/// file; panics naming the variable and `what` it should point at.
#[track_caller]
pub fn require_env_file(var: &str, what: &str) -> PathBuf {
    let Some(value) = std::env::var_os(var) else {
        panic!("needs {what}: set {var}=/path/to/it");
    };
    let path = PathBuf::from(value);
    assert!(
        path.is_file(),
        "needs {what}: {var}={} is not a file",
        path.display()
    );
    path
}

/// The folder of shared reference material the tests read (Firecracker's
/// API description, …): `shared/` beside this repository's checkout.
pub fn shared_dir() -> PathBuf {
    // crates/hangar-testsupport -> crates -> the repo -> its parent.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
}

/// `rel` inside [`shared_dir`]; panics naming the missing path when the
/// folder (or the file) is not there, e.g. in a bare clone.
#[track_caller]
pub fn shared_path(rel: &str) -> PathBuf {
    let path = shared_dir().join(rel);
    assert!(
        path.exists(),
        "missing {}: tests that read reference material expect the `shared/` folder \
         beside the repository checkout (../shared from the repo root) holding {rel}",
        path.display()
    );
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "missing")]
    fn shared_path_of_a_missing_file_panics_naming_it() {
        shared_path("no-such-dir/no-such-file.yaml");
    }

    #[test]
    #[should_panic(expected = "needs a test binary: set HANGAR_TESTSUPPORT_UNSET_VAR")]
    fn require_env_file_panics_naming_the_variable_when_unset() {
        require_env_file("HANGAR_TESTSUPPORT_UNSET_VAR", "a test binary");
    }

    #[test]
    #[should_panic(expected = "is not a file")]
    fn require_env_file_panics_when_the_path_is_not_a_file() {
        // Only this test sets this variable, so no other test sees it.
        std::env::set_var("HANGAR_TESTSUPPORT_DIR_VAR", "/");
        require_env_file("HANGAR_TESTSUPPORT_DIR_VAR", "a test binary");
    }

    #[test]
    fn require_env_file_returns_the_named_file() {
        let file = std::env::current_exe().unwrap();
        std::env::set_var("HANGAR_TESTSUPPORT_FILE_VAR", &file);
        assert_eq!(
            require_env_file("HANGAR_TESTSUPPORT_FILE_VAR", "a test binary"),
            file
        );
    }
}

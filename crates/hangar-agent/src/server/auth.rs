//! Public-key authentication against the config drive's keys only: the
//! keys in `authorized_keys` (the daemon's) may log in as anyone, those in
//! `authorized_keys.<login>` (the user's) only as `<login>`, the same two
//! files the image's sshd reads (`AuthorizedKeysFile … authorized_keys.%u`).
//! The files are read on each attempt: they are small, and a key the
//! daemon rewrites takes effect at once.

use std::path::{Path, PathBuf};

use russh::keys::PublicKey;

/// The keys in an OpenSSH `authorized_keys` file. Options before the key
/// type (`from=…`, `command=…`) are not supported: such lines are skipped
/// rather than granted without their restriction.
pub fn load_authorized_keys(path: &Path) -> Vec<PublicKey> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read authorized keys");
            return Vec::new();
        }
    };
    parse_authorized_keys(&text)
}

pub fn parse_authorized_keys(text: &str) -> Vec<PublicKey> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|line| match PublicKey::from_openssh(line) {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::warn!(error = %e, "authorized_keys: skipping a line that is not a plain public key");
                None
            }
        })
        .collect()
}

/// The file of keys that may log in as `user` only, beside `any_user`.
/// `None` for a name that could not be a login (so no path is built from
/// what a client sent). The rule is `hangar_api::name::validate_login_name`
/// (the daemon's, which names the file); the agent links no host crate,
/// so it is restated here.
pub fn login_keys_path(any_user: &Path, user: &str) -> Option<PathBuf> {
    let ok = !user.is_empty()
        && user.len() <= 32
        && user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    let name = any_user.file_name()?.to_str()?;
    ok.then(|| any_user.with_file_name(format!("{name}.{user}")))
}

/// May `offered` log in as `user`?
pub fn may_log_in(any_user: &Path, user: &str, offered: &PublicKey) -> bool {
    is_authorized(&load_authorized_keys(any_user), offered)
        || login_keys_path(any_user, user).is_some_and(|p| {
            // Most logins have no such file: not worth a warning.
            p.exists() && is_authorized(&load_authorized_keys(&p), offered)
        })
}

/// Is `offered` allowed for some login (the answer to a key offer, before
/// the client proves it holds the key)?
pub fn is_known(any_user: &Path, offered: &PublicKey) -> bool {
    if is_authorized(&load_authorized_keys(any_user), offered) {
        return true;
    }
    let (Some(dir), Some(name)) = (any_user.parent(), any_user.file_name()) else {
        return false;
    };
    let prefix = format!("{}.", name.to_string_lossy());
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .any(|e| is_authorized(&load_authorized_keys(&e.path()), offered))
}

/// True when `offered` is one of `keys` (compared by key material; the
/// comment does not matter).
pub fn is_authorized(keys: &[PublicKey], offered: &PublicKey) -> bool {
    keys.iter().any(|k| k.key_data() == offered.key_data())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHKYs2CENvZT80Z895SoOCIlFAubxEVnp8PP9kp0qymA daemon";
    const B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIkMPBKb+fwP1RCDEOZl/FvVnhegfKFOKftWV9SXUfNr user@laptop";

    #[test]
    fn keys_are_matched_by_material_and_option_lines_are_not_granted() {
        let text = format!("# keys\n{A}\n\ncommand=\"/bin/false\" {B}\n");
        let keys = parse_authorized_keys(&text);
        assert_eq!(keys.len(), 1);
        let a = PublicKey::from_openssh(&A.replace(" daemon", " other-comment")).unwrap();
        let b = PublicKey::from_openssh(B).unwrap();
        assert!(is_authorized(&keys, &a));
        assert!(!is_authorized(&keys, &b));
    }

    #[test]
    fn a_users_key_logs_in_as_that_user_only_and_the_daemons_as_anyone() {
        let dir = tempfile::tempdir().unwrap();
        let any = dir.path().join("authorized_keys");
        std::fs::write(&any, format!("{A}\n")).unwrap();
        std::fs::write(dir.path().join("authorized_keys.dev"), format!("{B}\n")).unwrap();
        let a = PublicKey::from_openssh(A).unwrap();
        let b = PublicKey::from_openssh(B).unwrap();

        assert!(may_log_in(&any, "root", &a));
        assert!(may_log_in(&any, "dev", &a));
        assert!(may_log_in(&any, "dev", &b));
        assert!(
            !may_log_in(&any, "root", &b),
            "the user's key is not root's"
        );
        assert!(!may_log_in(&any, "other", &b));
        assert!(is_known(&any, &b) && is_known(&any, &a));
        // A user name that would climb out of the config dir builds no path.
        assert_eq!(login_keys_path(&any, "../dev"), None);
        assert_eq!(login_keys_path(&any, ""), None);
        assert!(!may_log_in(&any, "x/../dev", &b));
    }

    #[test]
    fn a_missing_file_grants_nothing() {
        assert!(load_authorized_keys(Path::new("/nonexistent/authorized_keys")).is_empty());
    }
}

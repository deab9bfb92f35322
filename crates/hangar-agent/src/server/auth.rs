//! Public-key authentication against the config drive's `authorized_keys`
//! only (the daemon's key and the user's keys). The file is read on each
//! attempt: it is small, and a key the daemon rewrites takes effect at once.

use std::path::Path;

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
    fn a_missing_file_grants_nothing() {
        assert!(load_authorized_keys(Path::new("/nonexistent/authorized_keys")).is_empty());
    }
}

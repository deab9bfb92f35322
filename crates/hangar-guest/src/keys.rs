//! Key material: the daemon's own key pair (kept on disk) and per-VM host
//! keys (generated fresh, handed to the guest at boot, then pinned).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use russh::keys::ssh_key::{HashAlg, LineEnding};
use russh::keys::{key::safe_rng, Algorithm, PrivateKey, PublicKey};

use crate::error::GuestError;

const DAEMON_KEY_FILE: &str = "id_ed25519";
const DAEMON_PUB_FILE: &str = "id_ed25519.pub";
const DAEMON_COMMENT: &str = "hangar-daemon";
const HOST_COMMENT: &str = "hangar-guest-host";

/// The daemon's ed25519 identity, used to log in to every guest.
#[derive(Clone)]
pub struct DaemonKey {
    private: Arc<PrivateKey>,
}

impl std::fmt::Debug for DaemonKey {
    // Never print the private half.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonKey")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl DaemonKey {
    /// Loads keys_dir/id_ed25519 (OpenSSH private key format, mode 0600) or
    /// generates and writes it (and id_ed25519.pub) atomically.
    ///
    /// A new key is published without ever replacing an existing file (two
    /// processes racing end up with the same key), and a missing or stale
    /// `.pub` beside an existing key is rewritten, so a crash between the
    /// two writes heals on the next start.
    pub fn load_or_generate(keys_dir: &Path) -> Result<DaemonKey, GuestError> {
        let key_path = keys_dir.join(DAEMON_KEY_FILE);
        // Also tightens a keys dir an older version made 0755.
        create_dir_private(keys_dir)?;
        let key = if key_path.exists() {
            load_private(&key_path)?
        } else {
            let key = new_ed25519(DAEMON_COMMENT)?;
            let pem = key
                .to_openssh(LineEnding::LF)
                .map_err(|source| GuestError::KeyGenerate { source })?;
            if publish_new(&key_path, pem.as_bytes())? {
                tracing::info!(path = %key_path.display(), "generated the daemon SSH key");
                key
            } else {
                // Another process published a key first; use that one so
                // every process agrees on the identity.
                load_private(&key_path)?
            }
        };
        let daemon = DaemonKey {
            private: Arc::new(key),
        };
        daemon.ensure_public_file(&keys_dir.join(DAEMON_PUB_FILE))?;
        Ok(daemon)
    }

    /// The public half as one authorized_keys line:
    /// `ssh-ed25519 AAAA... hangar-daemon`.
    pub fn public_openssh(&self) -> String {
        let mut public = self.private.public_key().clone();
        public.set_comment(DAEMON_COMMENT);
        // Encoding an in-memory ed25519 key cannot fail; fall back to the
        // bare key data rather than panicking if it ever does.
        public
            .to_openssh()
            .unwrap_or_else(|_| format!("ssh-ed25519 <unencodable> {DAEMON_COMMENT}"))
    }

    /// SHA256 fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.private.fingerprint(HashAlg::Sha256).to_string()
    }

    pub(crate) fn private(&self) -> Arc<PrivateKey> {
        Arc::clone(&self.private)
    }

    fn ensure_public_file(&self, pub_path: &Path) -> Result<(), GuestError> {
        let line = format!("{}\n", self.public_openssh());
        match fs::read_to_string(pub_path) {
            Ok(existing) if existing == line => Ok(()),
            // Private like every file of Hangar's, though it is public.
            Ok(_) | Err(_) => write_atomic(pub_path, line.as_bytes()),
        }
    }
}

/// A per-VM host key in OpenSSH formats.
#[derive(Clone)]
pub struct HostKey {
    /// What sshd reads from /etc/ssh/ssh_host_ed25519_key.
    pub private_openssh: String,
    /// What the daemon pins for the VM (`ssh-ed25519 AAAA... comment`).
    pub public_openssh: String,
}

impl std::fmt::Debug for HostKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostKey")
            .field("public_openssh", &self.public_openssh)
            .finish_non_exhaustive()
    }
}

/// A fresh per-VM ed25519 host key in OpenSSH formats (the private one is
/// what sshd reads from /etc/ssh/ssh_host_ed25519_key).
pub fn generate_host_key() -> Result<HostKey, GuestError> {
    let key = new_ed25519(HOST_COMMENT)?;
    let private_openssh = key
        .to_openssh(LineEnding::LF)
        .map_err(|source| GuestError::KeyGenerate { source })?
        .to_string();
    let public_openssh = key
        .public_key()
        .to_openssh()
        .map_err(|source| GuestError::KeyGenerate { source })?;
    Ok(HostKey {
        private_openssh,
        public_openssh,
    })
}

/// Parses a pinned `ssh-ed25519 AAAA... comment` line.
pub(crate) fn parse_public(line: &str) -> Result<PublicKey, GuestError> {
    PublicKey::from_openssh(line.trim())
        .map_err(|source| GuestError::InvalidPinnedHostKey { source })
}

fn new_ed25519(comment: &str) -> Result<PrivateKey, GuestError> {
    let mut key = PrivateKey::random(&mut safe_rng(), Algorithm::Ed25519)
        .map_err(|source| GuestError::KeyGenerate { source })?;
    key.set_comment(comment);
    Ok(key)
}

fn load_private(path: &Path) -> Result<PrivateKey, GuestError> {
    let pem = fs::read_to_string(path).map_err(|source| GuestError::KeyFile {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    let key = PrivateKey::from_openssh(pem.as_bytes()).map_err(|source| GuestError::KeyParse {
        path: path.to_path_buf(),
        source,
    })?;
    if key.algorithm() != Algorithm::Ed25519 {
        return Err(GuestError::KeyAlgorithm {
            path: path.to_path_buf(),
            algorithm: key.algorithm().to_string(),
        });
    }
    tighten_mode(path)?;
    Ok(key)
}

/// A private key readable by others is a leak waiting to happen; fix the
/// mode instead of refusing to start.
fn tighten_mode(path: &Path) -> Result<(), GuestError> {
    let meta = fs::metadata(path).map_err(|source| GuestError::KeyFile {
        action: "inspect",
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "daemon key was readable by others; setting mode 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| {
            GuestError::KeyFile {
                action: "set mode 0600 on",
                path: path.to_path_buf(),
                source,
            }
        })?;
    }
    Ok(())
}

fn create_dir_private(dir: &Path) -> Result<(), GuestError> {
    hangar_host::private::create_private_dir(dir).map_err(|source| GuestError::KeyFile {
        action: "create the directory for",
        path: dir.to_path_buf(),
        source,
    })
}

/// Creates `tmp` (which must not exist) 0600 from the start, writes
/// `bytes` and syncs them: the first half of both ways to publish a file.
fn write_new_synced(tmp: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = hangar_host::private::create_new_private_file(tmp)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Writes `bytes` to a temporary file beside `path`, 0600 from the
/// start (never briefly world-readable), syncs it and renames it into
/// place, so readers see either the old file or the whole new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), GuestError> {
    let tmp = temp_path(path);
    let result = write_new_synced(&tmp, bytes).and_then(|()| fs::rename(&tmp, path));
    result.map_err(|source| {
        let _ = fs::remove_file(&tmp);
        GuestError::KeyFile {
            action: "write",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Like [`write_atomic`] but never replaces an existing file: the complete
/// temporary file is hard-linked into place, which fails if `path` exists.
/// Returns `false` when someone else's file was already there.
fn publish_new(path: &Path, bytes: &[u8]) -> Result<bool, GuestError> {
    let tmp = temp_path(path);
    let written = write_new_synced(&tmp, bytes);
    let linked = written.and_then(|()| match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(err),
    });
    let _ = fs::remove_file(&tmp);
    linked.map_err(|source| GuestError::KeyFile {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_then_load_gives_same_public_key() {
        let dir = tempfile::tempdir().expect("tempdir");

        let first = DaemonKey::load_or_generate(dir.path()).expect("generate");
        let second = DaemonKey::load_or_generate(dir.path()).expect("load");

        assert_eq!(first.public_openssh(), second.public_openssh());
    }

    #[test]
    fn generated_key_files_are_0600_in_a_0700_dir() {
        let dir = tempfile::tempdir().expect("tempdir");

        DaemonKey::load_or_generate(dir.path()).expect("generate");

        let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("id_ed25519")), 0o600);
        assert_eq!(mode(&dir.path().join("id_ed25519.pub")), 0o600);
        assert_eq!(mode(dir.path()), 0o700, "the keys dir");
    }

    #[test]
    fn generated_public_file_matches_public_openssh() {
        let dir = tempfile::tempdir().expect("tempdir");

        let key = DaemonKey::load_or_generate(dir.path()).expect("generate");

        let pub_file = fs::read_to_string(dir.path().join("id_ed25519.pub")).expect("read pub");
        assert_eq!(pub_file, format!("{}\n", key.public_openssh()));
        assert!(pub_file.starts_with("ssh-ed25519 AAAA"));
        assert!(pub_file.trim_end().ends_with(" hangar-daemon"));
    }

    #[test]
    fn generate_creates_missing_keys_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys_dir = dir.path().join("a/b/keys");

        DaemonKey::load_or_generate(&keys_dir).expect("generate");

        assert!(keys_dir.join("id_ed25519").is_file());
    }

    #[test]
    fn load_rewrites_missing_public_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = DaemonKey::load_or_generate(dir.path()).expect("generate");
        fs::remove_file(dir.path().join("id_ed25519.pub")).expect("rm pub");

        DaemonKey::load_or_generate(dir.path()).expect("load");

        let pub_file = fs::read_to_string(dir.path().join("id_ed25519.pub")).expect("read pub");
        assert_eq!(pub_file.trim_end(), key.public_openssh());
    }

    #[test]
    fn load_tightens_loose_mode_to_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        DaemonKey::load_or_generate(dir.path()).expect("generate");
        let key_path = dir.path().join("id_ed25519");
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).expect("chmod");

        DaemonKey::load_or_generate(dir.path()).expect("load");

        let mode = fs::metadata(&key_path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn publish_new_does_not_replace_an_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        fs::write(&path, "first").expect("write");

        let published = publish_new(&path, b"second").expect("publish");

        assert!(!published);
        assert_eq!(fs::read_to_string(&path).expect("read"), "first");
        assert_eq!(
            fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "temp file left behind"
        );
    }

    #[test]
    fn load_of_garbage_file_returns_parse_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("id_ed25519"), "not a key").expect("write");

        let err = DaemonKey::load_or_generate(dir.path()).expect_err("must fail");

        assert!(matches!(err, GuestError::KeyParse { .. }), "{err}");
    }

    #[test]
    fn host_keys_are_fresh_and_parse_back() {
        let a = generate_host_key().expect("a");
        let b = generate_host_key().expect("b");

        let private =
            PrivateKey::from_openssh(a.private_openssh.as_bytes()).expect("parse private");
        let public = parse_public(&a.public_openssh).expect("parse public");

        assert_ne!(a.public_openssh, b.public_openssh);
        assert_eq!(private.public_key().key_data(), public.key_data());
        assert!(a
            .private_openssh
            .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
    }
}

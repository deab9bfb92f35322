//! Per-VM identity and the config drive that carries it into the guest.
//!
//! Format: a plain ustar archive, zero-padded to a whole number of
//! [`CONFIG_DRIVE_BYTES`] (so drives of different VMs have the same size and
//! a boot snapshot of one fits the others), attached read-only. Its first member is named
//! `HANGAR-CONFIG-V1`, so the first 16 bytes of the device are that marker:
//! the initramfs finds the drive by content, not by device order, and
//! unpacks it with busybox tar into `/run/hangar` (tmpfs) of the new root.
//! Members (owner root):
//! - `hostname`, `hosts`, `resolv.conf` (`/etc/*` in the image link here)
//! - `network.env`: `HANGAR_IP`, `HANGAR_PREFIX`, `HANGAR_GATEWAY`,
//!   `HANGAR_DNS`, `HANGAR_MAC` (a restored guest's NIC has the snapshot's)
//! - `authorized_keys`: the daemon's key, which may log in as any user;
//!   `authorized_keys.<login>` (when the VM has user keys): the user's
//!   keys, which may log in as `<login>` only. The agent and the image's
//!   sshd (`AuthorizedKeysFile … authorized_keys.%u`) read them alike.
//! - `ssh_host_ed25519_key` (0600) and `.pub`: the only host key.
//! - `random-seed` (0600): fresh host randomness the guest mixes into its
//!   kernel RNG before sshd starts, so VMs restored from one snapshot draw
//!   different numbers.
//!
//! A drive that starts with [`SNAPSHOT_MARKER`] instead holds no identity:
//! it asks the guest to wait for the real drive (see the initramfs init).

use std::net::Ipv4Addr;
use std::path::Path;

use crate::ImageError;

/// Marker: name of the first archive member, so the first bytes of the drive.
pub const CONFIG_MARKER: &str = "HANGAR-CONFIG-V1";
/// First bytes of a drive that makes the guest wait at its snapshot point.
pub const SNAPSHOT_MARKER: &str = "HANGAR-SNAPSHOT1";
/// What the initramfs prints on the console when it waits at its snapshot
/// point: the daemon's cue to save the VM.
pub const SNAPSHOT_POINT_MESSAGE: &str = "hangar-initramfs: waiting for the config drive";
/// Config drives are padded to a multiple of this.
pub const CONFIG_DRIVE_BYTES: usize = 1 << 20;
/// Length of the per-VM `random-seed`.
pub const RANDOM_SEED_BYTES: usize = 64;

/// What makes one VM itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestIdentity {
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    /// OpenSSH public key lines allowed to log in as any user (the
    /// daemon's).
    pub authorized_keys: Vec<String>,
    /// The user's keys and the one login they may use.
    pub login_keys: Option<LoginKeys>,
    /// OpenSSH private host key (ed25519, `-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub host_key_private_openssh: String,
    pub host_key_public_openssh: String,
    /// The VM's MAC (`02:48:47:..`), set on the guest's NIC.
    pub mac: String,
    /// Host randomness for the guest's RNG (see the module docs).
    pub random_seed: Vec<u8>,
}

/// Keys that may log in as one user only (`vm create --ssh-user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKeys {
    pub user: String,
    pub keys: Vec<String>,
}

/// The config drive member with the keys of login `user`.
pub fn login_keys_member(user: &str) -> String {
    format!("authorized_keys.{user}")
}

fn check_key_lines(keys: &[String]) -> Result<(), ImageError> {
    match keys
        .iter()
        .find(|k| k.trim().is_empty() || k.contains('\n') || k.contains('\r'))
    {
        Some(k) => Err(ImageError::BadIdentity(format!(
            "authorized key {k:?} must be one non-empty line"
        ))),
        None => Ok(()),
    }
}

fn key_file(keys: &[String]) -> Vec<u8> {
    keys.iter()
        .map(|k| format!("{}\n", k.trim()))
        .collect::<String>()
        .into_bytes()
}

impl GuestIdentity {
    fn validate(&self) -> Result<(), ImageError> {
        let h = &self.hostname;
        let ok_label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if h.is_empty() || h.len() > 253 || !h.split('.').all(ok_label) {
            return Err(ImageError::BadIdentity(format!(
                "hostname {h:?} must be letters, digits, '-' and '.' (RFC 1123)"
            )));
        }
        if self.prefix_len == 0 || self.prefix_len > 32 {
            return Err(ImageError::BadIdentity(format!(
                "prefix length {} must be 1..=32",
                self.prefix_len
            )));
        }
        check_key_lines(&self.authorized_keys)?;
        if let Some(login) = &self.login_keys {
            // The name becomes part of a file name in the guest.
            hangar_api::name::validate_login_name(&login.user).map_err(ImageError::BadIdentity)?;
            check_key_lines(&login.keys)?;
        }
        if !self
            .host_key_private_openssh
            .contains("BEGIN OPENSSH PRIVATE KEY")
        {
            return Err(ImageError::BadIdentity(
                "host key must be an OpenSSH private key (ssh-keygen -t ed25519)".to_string(),
            ));
        }
        let mac_ok = self.mac.len() == 17
            && self.mac.split(':').count() == 6
            && self
                .mac
                .split(':')
                .all(|b| b.len() == 2 && b.chars().all(|c| c.is_ascii_hexdigit()));
        if !mac_ok {
            return Err(ImageError::BadIdentity(format!(
                "MAC {:?} must be six hex pairs separated by ':'",
                self.mac
            )));
        }
        if self.host_key_public_openssh.trim().contains('\n') {
            return Err(ImageError::BadIdentity(
                "host public key must be one line".to_string(),
            ));
        }
        Ok(())
    }

    /// The files of the drive, in archive order (marker first).
    pub fn files(&self) -> Result<Vec<(String, Vec<u8>, u32)>, ImageError> {
        self.validate()?;
        let dns = self
            .dns
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let network = format!(
            "HANGAR_IP={}\nHANGAR_PREFIX={}\nHANGAR_GATEWAY={}\nHANGAR_DNS=\"{}\"\nHANGAR_MAC={}\n",
            self.ip, self.prefix_len, self.gateway, dns, self.mac
        );
        let mut resolv: String = self
            .dns
            .iter()
            .map(|d| format!("nameserver {d}\n"))
            .collect();
        if resolv.is_empty() {
            resolv.push_str("# no DNS configured\n");
        }
        let short = self.hostname.split('.').next().unwrap_or(&self.hostname);
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{} {}\n",
            self.hostname, short
        );
        let mut private = self.host_key_private_openssh.clone();
        if !private.ends_with('\n') {
            private.push('\n');
        }
        let mut files = vec![
            (
                CONFIG_MARKER.to_string(),
                b"hangar config drive, format v1\n".to_vec(),
                0o644,
            ),
            (
                "hostname".into(),
                format!("{}\n", self.hostname).into_bytes(),
                0o644,
            ),
            ("hosts".into(), hosts.into_bytes(), 0o644),
            ("resolv.conf".into(), resolv.into_bytes(), 0o644),
            ("network.env".into(), network.into_bytes(), 0o644),
            (
                "authorized_keys".into(),
                key_file(&self.authorized_keys),
                0o644,
            ),
            ("ssh_host_ed25519_key".into(), private.into_bytes(), 0o600),
            (
                "ssh_host_ed25519_key.pub".into(),
                format!("{}\n", self.host_key_public_openssh.trim()).into_bytes(),
                0o644,
            ),
            ("random-seed".into(), self.random_seed.clone(), 0o600),
        ];
        if let Some(login) = self.login_keys.as_ref().filter(|l| !l.keys.is_empty()) {
            files.push((login_keys_member(&login.user), key_file(&login.keys), 0o644));
        }
        Ok(files)
    }
}

/// The bytes of the config drive for `id`.
pub fn config_drive_bytes(id: &GuestIdentity) -> Result<Vec<u8>, ImageError> {
    let files = id.files()?;
    let build = |e: std::io::Error| ImageError::io("build config drive", Path::new("-"), e);
    let mut builder = tar::Builder::new(Vec::new());
    for (name, body, mode) in &files {
        let mut header = tar::Header::new_ustar();
        header.set_size(body.len() as u64);
        header.set_mode(*mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, body.as_slice())
            .map_err(build)?;
    }
    let mut data = builder.into_inner().map_err(build)?;
    data.resize(
        data.len().div_ceil(CONFIG_DRIVE_BYTES) * CONFIG_DRIVE_BYTES,
        0,
    );
    Ok(data)
}

/// Writes the config drive for `id` to `path` (replacing it).
pub fn write_config_drive(path: &Path, id: &GuestIdentity) -> Result<(), ImageError> {
    let data = config_drive_bytes(id)?;
    let tmp = path.with_extension("tmp");
    // Private: the drive holds the VM's SSH host private key.
    hangar_host::private::write_private(&tmp, &data)
        .map_err(|e| ImageError::io("write config drive", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ImageError::io("write config drive", path, e))
}

/// Writes a drive of [`CONFIG_DRIVE_BYTES`] that makes the guest wait at
/// its snapshot point (replacing `path`).
pub fn write_snapshot_drive(path: &Path) -> Result<(), ImageError> {
    let mut data = vec![0u8; CONFIG_DRIVE_BYTES];
    data[..SNAPSHOT_MARKER.len()].copy_from_slice(SNAPSHOT_MARKER.as_bytes());
    let tmp = path.with_extension("tmp");
    hangar_host::private::write_private(&tmp, &data)
        .map_err(|e| ImageError::io("write snapshot drive", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ImageError::io("write snapshot drive", path, e))
}

/// True if the drive at `path` is a snapshot drive: a guest booted with it
/// waits at its snapshot point until the drive is filled.
pub fn is_snapshot_drive(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; SNAPSHOT_MARKER.len()];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == SNAPSHOT_MARKER.as_bytes()
}

/// Overwrites the drive at `path`, which a running VMM has open, with the
/// config drive for `id`: in place (same inode), so the waiting guest
/// reads it. The new content must not be larger than the drive.
pub fn fill_config_drive(path: &Path, id: &GuestIdentity) -> Result<(), ImageError> {
    use std::os::unix::fs::FileExt;
    let data = config_drive_bytes(id)?;
    let io = |e| ImageError::io("fill config drive", path, e);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    if data.len() as u64 > size {
        return Err(ImageError::BadIdentity(format!(
            "config drive needs {} bytes but the attached drive has {size}",
            data.len()
        )));
    }
    // The marker goes last: a guest that sees it sees the whole drive.
    let (head, rest) = data.split_at(CONFIG_MARKER.len());
    f.write_all_at(rest, head.len() as u64).map_err(io)?;
    f.write_all_at(head, 0).map_err(io)?;
    f.sync_data().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> GuestIdentity {
        GuestIdentity {
            hostname: "dev".into(),
            ip: Ipv4Addr::new(10, 213, 0, 2),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 213, 0, 1),
            dns: vec![Ipv4Addr::new(10, 213, 0, 1)],
            authorized_keys: vec!["ssh-ed25519 AAAAC3Nza test@host".into()],
            login_keys: Some(LoginKeys {
                user: "dev".into(),
                keys: vec!["ssh-ed25519 AAAAuser me@laptop".into()],
            }),
            host_key_private_openssh:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
            host_key_public_openssh: "ssh-ed25519 AAAAhost".into(),
            mac: "02:48:47:d5:00:02".into(),
            random_seed: vec![7; RANDOM_SEED_BYTES],
        }
    }

    fn entries(path: &Path) -> Vec<(String, String, u32)> {
        let f = std::fs::File::open(path).expect("open");
        let mut ar = tar::Archive::new(f);
        let mut out = Vec::new();
        for e in ar.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = e.path().expect("path").to_string_lossy().into_owned();
            let mode = e.header().mode().expect("mode");
            let mut s = String::new();
            e.read_to_string(&mut s).expect("read");
            out.push((name, s, mode));
        }
        out
    }

    #[test]
    fn drive_starts_with_marker_and_is_sector_aligned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("config.img");

        write_config_drive(&p, &sample()).expect("write");

        let data = std::fs::read(&p).expect("read");
        assert_eq!(&data[..16], CONFIG_MARKER.as_bytes());
        assert_eq!(data.len(), CONFIG_DRIVE_BYTES, "one size for every VM");
    }

    #[test]
    fn the_initramfs_knows_the_markers_and_prints_the_snapshot_point_message() {
        let init = crate::assets::INITRAMFS_INIT;
        assert!(init.contains(&format!("MARKER=\"{CONFIG_MARKER}\"")));
        assert!(init.contains(&format!("SNAPSHOT_MARKER=\"{SNAPSHOT_MARKER}\"")));
        assert!(init.contains(SNAPSHOT_POINT_MESSAGE));
    }

    #[test]
    fn snapshot_drive_has_the_config_drive_size_and_the_wait_marker() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("config.img");

        write_snapshot_drive(&p).expect("write");

        let data = std::fs::read(&p).expect("read");
        assert_eq!(&data[..16], SNAPSHOT_MARKER.as_bytes());
        assert_eq!(data.len(), CONFIG_DRIVE_BYTES);
        assert!(is_snapshot_drive(&p));
        write_config_drive(&p, &sample()).expect("write");
        assert!(!is_snapshot_drive(&p));
        assert!(!is_snapshot_drive(&dir.path().join("none")));
    }

    #[test]
    fn filling_a_snapshot_drive_keeps_its_inode_and_makes_it_a_config_drive() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("config.img");
        write_snapshot_drive(&p).expect("write");
        let open = std::fs::File::open(&p).expect("open");

        fill_config_drive(&p, &sample()).expect("fill");

        assert_eq!(
            std::fs::metadata(&p).expect("stat").ino(),
            open.metadata().expect("fstat").ino(),
            "a running VMM keeps its open file"
        );
        assert_eq!(entries(&p)[0].0, CONFIG_MARKER);
        assert_eq!(std::fs::read(&p).expect("read").len(), CONFIG_DRIVE_BYTES);
    }

    #[test]
    fn filling_a_drive_too_small_for_the_config_fails_and_leaves_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("config.img");
        std::fs::write(&p, vec![0u8; 4096]).expect("write");

        let err = fill_config_drive(&p, &sample()).expect_err("must fail");

        assert!(err.to_string().contains("4096"), "{err}");
        assert_eq!(std::fs::read(&p).expect("read"), vec![0u8; 4096]);
    }

    #[test]
    fn drive_carries_the_mac_and_the_random_seed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("config.img");

        write_config_drive(&p, &sample()).expect("write");

        let e = entries(&p);
        let env = &e.iter().find(|x| x.0 == "network.env").expect("env").1;
        assert!(env.contains("HANGAR_MAC=02:48:47:d5:00:02\n"), "{env}");
        let seed = e.iter().find(|x| x.0 == "random-seed").expect("seed");
        assert_eq!(seed.2, 0o600);
    }

    #[test]
    fn malformed_mac_is_rejected() {
        for mac in [
            "",
            "02:48:47:d5:00",
            "02:48:47:d5:00:0g",
            "02-48-47-d5-00-02",
        ] {
            let mut id = sample();
            id.mac = mac.into();
            assert!(
                matches!(id.files(), Err(ImageError::BadIdentity(_))),
                "{mac}"
            );
        }
    }

    #[test]
    fn drive_holds_network_keys_and_hostname() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("config.img");

        write_config_drive(&p, &sample()).expect("write");

        let e = entries(&p);
        let get = |n: &str| e.iter().find(|x| x.0 == n).cloned().expect(n);
        assert_eq!(get("hostname").1, "dev\n");
        assert!(get("network.env").1.contains("HANGAR_IP=10.213.0.2\n"));
        assert!(get("network.env").1.contains("HANGAR_PREFIX=24\n"));
        assert!(get("network.env").1.contains("HANGAR_GATEWAY=10.213.0.1\n"));
        assert_eq!(get("resolv.conf").1, "nameserver 10.213.0.1\n");
        assert_eq!(
            get("authorized_keys").1,
            "ssh-ed25519 AAAAC3Nza test@host\n"
        );
        assert_eq!(
            get("authorized_keys.dev").1,
            "ssh-ed25519 AAAAuser me@laptop\n",
            "the user's keys, for their login only"
        );
        assert_eq!(get("ssh_host_ed25519_key").2, 0o600);
        assert!(get("hosts").1.contains("127.0.1.1\tdev dev\n"));
    }

    #[test]
    fn hostname_with_shell_characters_is_rejected() {
        let mut id = sample();
        id.hostname = "a;rm -rf /".into();

        let err = write_config_drive(Path::new("/nonexistent/x"), &id).expect_err("must fail");

        assert!(matches!(err, ImageError::BadIdentity(_)));
    }

    #[test]
    fn multi_line_authorized_key_is_rejected() {
        let mut id = sample();
        id.authorized_keys = vec!["ssh-ed25519 A\nssh-rsa B".into()];

        let err = id.files().expect_err("must fail");

        assert!(matches!(err, ImageError::BadIdentity(_)));
    }

    #[test]
    fn a_login_name_that_could_climb_out_of_the_drive_dir_is_rejected() {
        for user in ["../root", "a/b", "", "Root"] {
            let mut id = sample();
            id.login_keys = Some(LoginKeys {
                user: user.into(),
                keys: vec!["ssh-ed25519 A".into()],
            });
            let err = id.files().expect_err(user);
            assert!(err.to_string().contains("login name"), "{err}");
        }
    }
}

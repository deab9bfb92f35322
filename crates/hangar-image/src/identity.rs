//! Per-VM identity and the config drive that carries it into the guest.
//!
//! Format: a plain ustar archive (a multiple of 512 bytes, so it is a valid
//! block device image), attached read-only. Its first member is named
//! `HANGAR-CONFIG-V1`, so the first 16 bytes of the device are that marker:
//! the initramfs finds the drive by content, not by device order, and
//! unpacks it with busybox tar into `/run/hangar` (tmpfs) of the new root.
//! Members (owner root):
//! - `hostname`, `hosts`, `resolv.conf` (`/etc/*` in the image link here)
//! - `network.env`: `HANGAR_IP`, `HANGAR_PREFIX`, `HANGAR_GATEWAY`, `HANGAR_DNS`
//! - `authorized_keys` (root's only keys), `ssh_host_ed25519_key` (0600)
//!   and `.pub`: sshd's only host key.

use std::net::Ipv4Addr;
use std::path::Path;

use crate::ImageError;

/// Marker: name of the first archive member, so the first bytes of the drive.
pub const CONFIG_MARKER: &str = "HANGAR-CONFIG-V1";

/// What makes one VM itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestIdentity {
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    /// OpenSSH public key lines allowed to log in as root.
    pub authorized_keys: Vec<String>,
    /// OpenSSH private host key (ed25519, `-----BEGIN OPENSSH PRIVATE KEY-----`).
    pub host_key_private_openssh: String,
    pub host_key_public_openssh: String,
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
        if let Some(k) = self
            .authorized_keys
            .iter()
            .find(|k| k.trim().is_empty() || k.contains('\n') || k.contains('\r'))
        {
            return Err(ImageError::BadIdentity(format!(
                "authorized key {k:?} must be one non-empty line"
            )));
        }
        if !self
            .host_key_private_openssh
            .contains("BEGIN OPENSSH PRIVATE KEY")
        {
            return Err(ImageError::BadIdentity(
                "host key must be an OpenSSH private key (ssh-keygen -t ed25519)".to_string(),
            ));
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
            "HANGAR_IP={}\nHANGAR_PREFIX={}\nHANGAR_GATEWAY={}\nHANGAR_DNS=\"{}\"\n",
            self.ip, self.prefix_len, self.gateway, dns
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
        let keys: String = self
            .authorized_keys
            .iter()
            .map(|k| format!("{}\n", k.trim()))
            .collect();
        let mut private = self.host_key_private_openssh.clone();
        if !private.ends_with('\n') {
            private.push('\n');
        }
        Ok(vec![
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
            ("authorized_keys".into(), keys.into_bytes(), 0o644),
            ("ssh_host_ed25519_key".into(), private.into_bytes(), 0o600),
            (
                "ssh_host_ed25519_key.pub".into(),
                format!("{}\n", self.host_key_public_openssh.trim()).into_bytes(),
                0o644,
            ),
        ])
    }
}

/// Writes the config drive for `id` to `path` (replacing it).
pub fn write_config_drive(path: &Path, id: &GuestIdentity) -> Result<(), ImageError> {
    let files = id.files()?;
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
            .map_err(|e| ImageError::io("build config drive", path, e))?;
    }
    let mut data = builder
        .into_inner()
        .map_err(|e| ImageError::io("build config drive", path, e))?;
    // Pad to whole 4 KiB so every VMM accepts it as a disk.
    let padded = data.len().div_ceil(4096) * 4096;
    data.resize(padded, 0);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &data).map_err(|e| ImageError::io("write config drive", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| ImageError::io("write config drive", path, e))
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
            host_key_private_openssh:
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n"
                    .into(),
            host_key_public_openssh: "ssh-ed25519 AAAAhost".into(),
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
        assert_eq!(data.len() % 512, 0);
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
}

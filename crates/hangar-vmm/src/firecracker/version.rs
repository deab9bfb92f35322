//! The Firecracker version check `doctor` and the driver show. Parsing is
//! the host's one version parser ([`hangar_host::version::Version`]); what
//! lives here is Firecracker's policy: which versions can boot our guests.

use hangar_host::version::Version;

/// The oldest Firecracker that describes virtio-mmio devices in ACPI.
pub const MIN_ACPI_VERSION: Version = Version::new(1, 8, 0);

/// The version in `firecracker --version` (or `jailer --version`) output
/// ("Firecracker v1.16.1", possibly followed by more lines), or in a bare
/// version ("1.16.1", "v1.8.0-dev").
pub fn parse_firecracker_version(output: &str) -> Option<Version> {
    Version::find_in(output)
}

/// A warning for versions this product cannot boot its guests on, `None`
/// when the version is fine.
pub fn firecracker_version_warning(v: Version) -> Option<String> {
    (v < MIN_ACPI_VERSION).then(|| {
        format!(
            "Firecracker {v}: Firecracker < 1.8 does not describe virtio-mmio devices in \
             ACPI; the cloud kernel cannot find its disks. Install Firecracker 1.8 or newer."
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, patch: u32) -> Version {
        Version::new(major, minor, patch)
    }

    #[test]
    fn parse_reads_release_output() {
        assert_eq!(
            parse_firecracker_version(
                "Firecracker v1.16.1\n\nSupported snapshot data format versions: v8.0.0\n"
            ),
            Some(v(1, 16, 1))
        );
        assert_eq!(
            parse_firecracker_version("Jailer v1.10.1\n"),
            Some(v(1, 10, 1))
        );
    }

    #[test]
    fn parse_ignores_suffix_after_patch() {
        assert_eq!(
            parse_firecracker_version("Firecracker v1.16.1-fake"),
            Some(v(1, 16, 1))
        );
        assert_eq!(parse_firecracker_version("v1.8.0-dev"), Some(v(1, 8, 0)));
    }

    #[test]
    fn parse_accepts_bare_version() {
        assert_eq!(parse_firecracker_version("1.7.0"), Some(v(1, 7, 0)));
    }

    #[test]
    fn parse_without_version_returns_none() {
        assert_eq!(parse_firecracker_version("Firecracker"), None);
        assert_eq!(parse_firecracker_version(""), None);
        assert_eq!(parse_firecracker_version("v1.x.2"), None);
    }

    #[test]
    fn warning_below_1_8_mentions_acpi_and_disks() {
        let w = firecracker_version_warning(v(1, 7, 0)).unwrap();
        assert!(w.contains("Firecracker < 1.8 does not describe virtio-mmio devices in ACPI; the cloud kernel cannot find its disks"), "{w}");
        assert!(w.contains("1.7.0"), "{w}");
    }

    #[test]
    fn warning_for_1_8_and_newer_is_none() {
        assert_eq!(firecracker_version_warning(v(1, 8, 0)), None);
        assert_eq!(firecracker_version_warning(v(1, 16, 1)), None);
        assert_eq!(firecracker_version_warning(v(2, 0, 0)), None);
    }
}

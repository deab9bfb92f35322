//! Firecracker version parsing and the compatibility warning `doctor` and
//! `check` show. Pure functions, so every format seen in the wild is a
//! unit test.

/// The oldest Firecracker that describes virtio-mmio devices in ACPI.
pub const MIN_ACPI_VERSION: (u32, u32, u32) = (1, 8, 0);

/// Parses `major.minor.patch` out of `firecracker --version` output
/// ("Firecracker v1.16.1", possibly followed by more lines) or out of a
/// bare version ("1.16.1", "v1.8.0-dev"). Suffixes after the patch number
/// are ignored.
pub fn parse_firecracker_version(output: &str) -> Option<(u32, u32, u32)> {
    output
        .split_whitespace()
        .find_map(|word| parse_triple(word.trim_start_matches('v')))
}

fn parse_triple(s: &str) -> Option<(u32, u32, u32)> {
    let mut parts = s.splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let rest = parts.next()?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let patch = digits.parse().ok()?;
    Some((major, minor, patch))
}

/// A warning for versions this product cannot boot its guests on, `None`
/// when the version is fine.
pub fn firecracker_version_warning(v: (u32, u32, u32)) -> Option<String> {
    (v < MIN_ACPI_VERSION).then(|| {
        format!(
            "Firecracker {}.{}.{}: Firecracker < 1.8 does not describe virtio-mmio devices in \
             ACPI; the cloud kernel cannot find its disks. Install Firecracker 1.8 or newer.",
            v.0, v.1, v.2
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_release_output() {
        assert_eq!(
            parse_firecracker_version(
                "Firecracker v1.16.1\n\nSupported snapshot data format versions: v8.0.0\n"
            ),
            Some((1, 16, 1))
        );
    }

    #[test]
    fn parse_ignores_suffix_after_patch() {
        assert_eq!(
            parse_firecracker_version("Firecracker v1.16.1-fake"),
            Some((1, 16, 1))
        );
        assert_eq!(parse_firecracker_version("v1.8.0-dev"), Some((1, 8, 0)));
    }

    #[test]
    fn parse_accepts_bare_version() {
        assert_eq!(parse_firecracker_version("1.7.0"), Some((1, 7, 0)));
    }

    #[test]
    fn parse_without_version_returns_none() {
        assert_eq!(parse_firecracker_version("Firecracker"), None);
        assert_eq!(parse_firecracker_version(""), None);
        assert_eq!(parse_firecracker_version("v1.x.2"), None);
    }

    #[test]
    fn warning_below_1_8_mentions_acpi_and_disks() {
        let w = firecracker_version_warning((1, 7, 0)).unwrap();
        assert!(w.contains("Firecracker < 1.8 does not describe virtio-mmio devices in ACPI; the cloud kernel cannot find its disks"), "{w}");
        assert!(w.contains("1.7.0"), "{w}");
    }

    #[test]
    fn warning_for_1_8_and_newer_is_none() {
        assert_eq!(firecracker_version_warning((1, 8, 0)), None);
        assert_eq!(firecracker_version_warning((1, 16, 1)), None);
        assert_eq!(firecracker_version_warning((2, 0, 0)), None);
    }
}

//! Sizes as people write them: `4G`, `512M`, `2GiB`, or a byte count
//! (binary units). The config, the CLI's `--disk`/`--memory` and catalog
//! entries all read sizes this one way.

/// The smallest VM disk: the daemon, the config and catalogs hold to it.
pub const MIN_DISK_BYTES: u64 = 64 << 20;
/// The largest VM disk.
pub const MAX_DISK_BYTES: u64 = 16 << 40;

/// Checks a VM disk size against [`MIN_DISK_BYTES`]..=[`MAX_DISK_BYTES`],
/// with the message to show when it is out of range.
pub fn check_disk_bytes(bytes: u64) -> Result<u64, String> {
    if (MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!(
            "disk size {bytes} bytes is out of range ({} MiB to {} TiB)",
            MIN_DISK_BYTES >> 20,
            MAX_DISK_BYTES >> 40
        ))
    }
}

/// Parses a size like `4G`, `512M`, `2GiB`, `1073741824` into bytes
/// (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 4G, 512M or a byte count"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{s:?} has unknown unit {other:?}; use K, M, G or T"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("0").is_err());
        assert!(parse_size("4X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("big").is_err());
        assert!(check_disk_bytes(4 << 30).is_ok());
        assert!(check_disk_bytes(1 << 20)
            .unwrap_err()
            .contains("64 MiB to 16 TiB"));
        assert!(check_disk_bytes(17 << 40).is_err());
    }
}

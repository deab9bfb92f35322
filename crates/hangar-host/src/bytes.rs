//! Byte counts for people: the one formatter the CLI's tables and the
//! disk errors share, so both print the same "512.1 MiB".

/// Human-readable byte count in binary units, one decimal above bytes
/// ("512 B", "512.1 MiB").
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn small_counts_are_shown_in_bytes() {
        assert_eq!(human_bytes(512), "512 B");
    }

    #[test]
    fn larger_counts_get_a_binary_unit_with_one_decimal() {
        assert_eq!(human_bytes(2 << 30), "2.0 GiB");
        assert_eq!(human_bytes(1536 << 10), "1.5 MiB");
        assert_eq!(human_bytes(512 * 1024 * 1024 + 100 * 1024), "512.1 MiB");
    }
}

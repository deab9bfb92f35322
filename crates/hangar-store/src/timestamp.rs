//! RFC 3339 UTC timestamps in one fixed shape (millisecond precision, `Z`),
//! so every timestamp hangar writes sorts correctly as text too.

use time::format_description::BorrowedFormatItem;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_utc(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    // Formatting fails only for years outside 0..=9999, which a clock does
    // not produce; fall back to seconds since the epoch rather than panic.
    t.format(FORMAT)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// The current time, formatted by [`format_utc`].
pub fn now_utc() -> String {
    format_utc(OffsetDateTime::now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn formats_utc_with_milliseconds_and_z() {
        let t = datetime!(2024-02-03 04:05:06.789123 +02:00);
        assert_eq!(format_utc(t), "2024-02-03T02:05:06.789Z");
    }
}

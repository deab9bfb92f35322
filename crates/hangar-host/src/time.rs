//! The one timestamp format hangar writes (store rows, operations, image
//! manifests, API records): RFC 3339 in UTC with millisecond precision and
//! a `Z`, fixed width, so timestamps also sort correctly as text.

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

/// Unix seconds, formatted by [`format_utc`] (out-of-range values as the
/// epoch: the clock that made them was wrong).
pub fn format_unix(secs: i64) -> String {
    format_utc(OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH))
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

    #[test]
    fn whole_seconds_keep_their_milliseconds_so_text_order_is_time_order() {
        let whole = format_utc(datetime!(2024-02-03 04:05:06 UTC));
        let later = format_utc(datetime!(2024-02-03 04:05:06.5 UTC));

        assert_eq!(whole, "2024-02-03T04:05:06.000Z");
        assert!(whole < later);
    }

    #[test]
    fn now_is_parseable_rfc3339() {
        let now = now_utc();

        let parsed = OffsetDateTime::parse(&now, &time::format_description::well_known::Rfc3339);

        assert!(parsed.is_ok(), "{now}");
    }
}

//! RFC 3339 timestamps as the store and API carry them.

/// Now, in UTC, as RFC 3339 (`2026-11-26T11:00:00Z`).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

//! Reading timestamps from the wire: RFC 3339 with an offset is converted to UTC, and
//! one without an offset is refused with a message that says so.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer};

/// Longest piece of a refused timestamp quoted back in the error.
const QUOTED: usize = 64;

/// Parses an RFC 3339 timestamp with an offset (`Z`, `+02:00`; `T` or a space
/// between date and time) into UTC.
///
/// # Errors
///
/// A message naming the problem: no offset, or not a timestamp at all.
pub fn parse_utc(text: &str) -> Result<DateTime<Utc>, String> {
    let quoted: String = text.chars().take(QUOTED).collect();
    match text.parse::<DateTime<FixedOffset>>() {
        Ok(at) => Ok(at.with_timezone(&Utc)),
        Err(_) if text.parse::<NaiveDateTime>().is_ok() => Err(format!(
            "timestamp {quoted:?} has no UTC offset: write it with one, e.g. {quoted}Z"
        )),
        Err(e) => Err(format!("{quoted:?} is not an RFC 3339 timestamp: {e}")),
    }
}

/// `deserialize_with` for a required timestamp.
pub(crate) fn utc<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_utc(&text).map_err(serde::de::Error::custom)
}

/// `deserialize_with` for an optional timestamp (`nil` or absent is `None`).
pub(crate) fn utc_option<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|text| parse_utc(&text).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_converted_to_utc() {
        let at = parse_utc("2026-03-29T03:30:00+02:00").expect("parses");
        assert_eq!(at.to_rfc3339(), "2026-03-29T01:30:00+00:00");
        assert!(parse_utc("2026-03-29 01:30:00Z").is_ok());
    }

    #[test]
    fn a_timestamp_without_offset_is_refused_as_such() {
        let error = parse_utc("2026-03-29T01:30:00").expect_err("no offset");
        assert!(error.contains("has no UTC offset"), "{error}");
        assert!(error.contains("2026-03-29T01:30:00Z"), "{error}");
        let error = parse_utc(&"x".repeat(10_000)).expect_err("garbage");
        assert!(error.len() < 200, "{error}");
    }
}

//! W3C trace context for jobs: the `traceparent` (and `tracestate`) a job carries in
//! its message headers, checked in this one place.
//!
//! A job's trace context is tenant input. A value that is not exactly a version-`00`
//! `traceparent` is refused: the job runs as it would without one (a new root trace
//! when the worker exports spans) and the refusal is reported, never an error for
//! the job. See `docs/wire-format.md` ("Trace context") for the format.

use std::fmt;

use async_nats::HeaderMap;
use async_nats::header::HeaderName;

/// The message header that carries a job's `traceparent`.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The message header that carries a job's `tracestate`.
pub const TRACESTATE_HEADER: &str = "tracestate";

/// The header names as static names: a lookup by `&str` would allocate the name.
fn header_names() -> (HeaderName, HeaderName) {
    (
        HeaderName::from_static(TRACEPARENT_HEADER),
        HeaderName::from_static(TRACESTATE_HEADER),
    )
}

/// Length of a version-`00` `traceparent`: `00-<32 hex>-<16 hex>-<2 hex>`.
pub const TRACEPARENT_LEN: usize = 55;

/// Longest `tracestate` kept, in bytes.
///
/// Why: W3C trace context asks vendors to pass on at least 512 characters of
/// `tracestate`; more than that is cut by most tracers anyway, and the header is
/// tenant input that every event and span would otherwise copy.
pub const MAX_TRACESTATE_BYTES: usize = 512;

/// Most list members in a `tracestate` (the W3C limit).
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A valid trace context: a version-`00` `traceparent` and, optionally, a bounded
/// `tracestate`. Made only by [`TraceContext::parse`] or [`TraceContext::new`], so
/// every value is safe to put in a header, an event or a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: String,
    tracestate: Option<String>,
}

/// Why a trace context was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidTraceContext {
    /// The `traceparent` is not exactly [`TRACEPARENT_LEN`] bytes.
    Length,
    /// Not version `00`, or the separators are not where they belong.
    Format,
    /// The trace id is not 32 lowercase hex digits, or it is all zeros.
    TraceId,
    /// The parent id is not 16 lowercase hex digits, or it is all zeros.
    ParentId,
    /// The flags are not 2 lowercase hex digits.
    Flags,
    /// The message carries more than one `traceparent`.
    Repeated,
    /// The `tracestate` is too long, has too many members or characters outside
    /// printable ASCII (the `traceparent` is kept without it).
    TraceState,
}

impl InvalidTraceContext {
    /// A short lowercase name, used as a metric label and an event detail.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::Format => "format",
            Self::TraceId => "trace_id",
            Self::ParentId => "parent_id",
            Self::Flags => "flags",
            Self::Repeated => "repeated",
            Self::TraceState => "tracestate",
        }
    }
}

impl fmt::Display for InvalidTraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Self::Length => "traceparent is not 55 characters long",
            Self::Format => "traceparent is not version 00 with '-' separators",
            Self::TraceId => "traceparent's trace id is not 32 lowercase hex digits, not all zero",
            Self::ParentId => {
                "traceparent's parent id is not 16 lowercase hex digits, not all zero"
            }
            Self::Flags => "traceparent's flags are not 2 lowercase hex digits",
            Self::Repeated => "more than one traceparent header",
            Self::TraceState => "tracestate is too long or not printable ASCII",
        };
        f.write_str(what)
    }
}

impl std::error::Error for InvalidTraceContext {}

/// What a job message's headers say about its trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncomingTrace {
    /// The valid context, if there is one.
    pub context: Option<TraceContext>,
    /// Why a `traceparent` or `tracestate` that was there is not used.
    pub refused: Option<InvalidTraceContext>,
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_all_zero(s: &str) -> bool {
    s.bytes().all(|b| b == b'0')
}

impl TraceContext {
    /// Checks a `traceparent` and an optional `tracestate`.
    ///
    /// # Errors
    ///
    /// The first thing wrong with the `traceparent`; a `tracestate` that is too long
    /// or not printable ASCII gives [`InvalidTraceContext::TraceState`].
    ///
    /// # Example
    ///
    /// ```
    /// let ctx = jobbox::trace::TraceContext::parse(
    ///     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ///     None,
    /// )?;
    /// assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert!(ctx.sampled());
    /// assert!(jobbox::trace::TraceContext::parse("00-garbage", None).is_err());
    /// # Ok::<(), jobbox::trace::InvalidTraceContext>(())
    /// ```
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Result<Self, InvalidTraceContext> {
        check_traceparent(traceparent)?;
        if let Some(state) = tracestate {
            check_tracestate(state)?;
        }
        Ok(Self {
            traceparent: traceparent.to_string(),
            tracestate: tracestate.map(str::to_string),
        })
    }

    /// A context for `trace_id` whose parent is `parent_id`, with the sampled flag
    /// set as given. `None` if either id is all zeros.
    #[must_use]
    pub fn new(trace_id: [u8; 16], parent_id: [u8; 8], sampled: bool) -> Option<Self> {
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        let flags = if sampled { "01" } else { "00" };
        Some(Self {
            traceparent: format!(
                "00-{}-{}-{flags}",
                hex::encode(trace_id),
                hex::encode(parent_id)
            ),
            tracestate: None,
        })
    }

    /// The trace context of a job message's headers: the valid one, and why one that
    /// was there is refused. Never fails; costs one header lookup when there is none.
    #[must_use]
    pub fn from_headers(headers: Option<&HeaderMap>) -> IncomingTrace {
        let Some(headers) = headers else {
            return IncomingTrace::default();
        };
        let (traceparent, tracestate) = header_names();
        let mut parents = headers.get_all(traceparent);
        let Some(parent) = parents.next() else {
            return IncomingTrace::default();
        };
        if parents.next().is_some() {
            return IncomingTrace {
                context: None,
                refused: Some(InvalidTraceContext::Repeated),
            };
        }
        if let Err(refused) = check_traceparent(parent.as_str()) {
            return IncomingTrace {
                context: None,
                refused: Some(refused),
            };
        }
        // A bad tracestate is dropped and the traceparent kept (W3C trace context).
        let mut states = headers.get_all(tracestate);
        let (tracestate, refused) = match (states.next(), states.next()) {
            (None, _) => (None, None),
            (Some(state), None) => match check_tracestate(state.as_str()) {
                Ok(()) => (Some(state.as_str().to_string()), None),
                Err(e) => (None, Some(e)),
            },
            (Some(_), Some(_)) => (None, Some(InvalidTraceContext::TraceState)),
        };
        IncomingTrace {
            context: Some(Self {
                traceparent: parent.as_str().to_string(),
                tracestate,
            }),
            refused,
        }
    }

    /// Adds the `traceparent` (and `tracestate`) headers.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap) {
        // Both were checked to be printable ASCII: inserting cannot panic.
        let (traceparent, tracestate) = header_names();
        headers.insert(traceparent, self.traceparent.as_str());
        if let Some(state) = &self.tracestate {
            headers.insert(tracestate, state.as_str());
        }
    }

    /// The whole `traceparent` header value.
    #[must_use]
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The `tracestate` header value, if there is one.
    #[must_use]
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The trace id: 32 lowercase hex digits.
    #[must_use]
    pub fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    /// The parent (span) id: 16 lowercase hex digits.
    #[must_use]
    pub fn parent_id(&self) -> &str {
        &self.traceparent[36..52]
    }

    /// The trace flags byte.
    #[must_use]
    pub fn flags(&self) -> u8 {
        u8::from_str_radix(&self.traceparent[53..55], 16).unwrap_or(0)
    }

    /// Whether the caller sampled this trace (flag `01`).
    #[must_use]
    pub fn sampled(&self) -> bool {
        self.flags() & 1 == 1
    }
}

fn check_traceparent(value: &str) -> Result<(), InvalidTraceContext> {
    if value.len() != TRACEPARENT_LEN {
        return Err(InvalidTraceContext::Length);
    }
    // Bytes, not chars: a multi-byte character would make the slices below panic.
    let bytes = value.as_bytes();
    if !value.is_ascii() || &bytes[..3] != b"00-" || bytes[35] != b'-' || bytes[52] != b'-' {
        return Err(InvalidTraceContext::Format);
    }
    let trace_id = &value[3..35];
    if !is_lower_hex(trace_id) || is_all_zero(trace_id) {
        return Err(InvalidTraceContext::TraceId);
    }
    let parent_id = &value[36..52];
    if !is_lower_hex(parent_id) || is_all_zero(parent_id) {
        return Err(InvalidTraceContext::ParentId);
    }
    if !is_lower_hex(&value[53..55]) {
        return Err(InvalidTraceContext::Flags);
    }
    Ok(())
}

fn check_tracestate(value: &str) -> Result<(), InvalidTraceContext> {
    let printable = value.bytes().all(|b| (0x20..=0x7e).contains(&b));
    let members = value.split(',').filter(|m| !m.trim().is_empty()).count();
    if value.len() > MAX_TRACESTATE_BYTES || !printable || members > MAX_TRACESTATE_MEMBERS {
        return Err(InvalidTraceContext::TraceState);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_example_parses() {
        let ctx = TraceContext::parse(GOOD, Some("congo=t61rcWkgMzE")).expect("valid");
        assert_eq!(ctx.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(ctx.parent_id(), "00f067aa0ba902b7");
        assert_eq!(ctx.flags(), 1);
        assert!(ctx.sampled());
        assert_eq!(ctx.tracestate(), Some("congo=t61rcWkgMzE"));
        let unsampled = TraceContext::parse(&GOOD.replace("-01", "-00"), None).expect("valid");
        assert!(!unsampled.sampled());
    }

    #[test]
    fn hostile_traceparents_are_refused() {
        use InvalidTraceContext as E;
        let cases: Vec<(String, E)> = vec![
            (String::new(), E::Length),
            (format!("{GOOD}0"), E::Length),
            ("x".repeat(10 * 1024), E::Length),
            (GOOD.replace("00-4b", "01-4b"), E::Format),
            (GOOD.replace("00-4b", "ff-4b"), E::Format),
            (GOOD.replacen('-', "_", 2), E::Format),
            (
                format!("00-{}-00f067aa0ba902b7-01", "g".repeat(32)),
                E::TraceId,
            ),
            (GOOD.to_uppercase(), E::TraceId),
            (
                format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
                E::TraceId,
            ),
            (
                format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", "0".repeat(16)),
                E::ParentId,
            ),
            (GOOD.replace("-01", "-0x"), E::Flags),
            (GOOD.replace("-01", "-0\n"), E::Flags),
            // 55 bytes with a multi-byte character where a separator belongs.
            (
                format!("00-{}é{}-01", "a".repeat(31), "b".repeat(16)),
                E::Format,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(
                TraceContext::parse(&value, None),
                Err(want),
                "{:?}",
                &value[..value.len().min(60)]
            );
        }
    }

    #[test]
    fn tracestate_is_bounded() {
        for state in [
            "a=".to_string() + &"b".repeat(MAX_TRACESTATE_BYTES),
            "a=b\nc=d".to_string(),
            (0..33)
                .map(|i| format!("k{i}=v"))
                .collect::<Vec<_>>()
                .join(","),
        ] {
            assert_eq!(
                TraceContext::parse(GOOD, Some(&state)),
                Err(InvalidTraceContext::TraceState)
            );
        }
    }

    #[test]
    fn headers_are_read_strictly() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            TraceContext::from_headers(Some(&headers)),
            IncomingTrace::default()
        );
        headers.insert(TRACEPARENT_HEADER, GOOD);
        headers.insert(TRACESTATE_HEADER, "x".repeat(4096).as_str());
        let incoming = TraceContext::from_headers(Some(&headers));
        let ctx = incoming.context.expect("the traceparent stands");
        assert_eq!((ctx.trace_id(), ctx.tracestate()), (&GOOD[3..35], None));
        assert_eq!(incoming.refused, Some(InvalidTraceContext::TraceState));

        headers.append(TRACEPARENT_HEADER, GOOD);
        let incoming = TraceContext::from_headers(Some(&headers));
        assert_eq!(incoming.context, None);
        assert_eq!(incoming.refused, Some(InvalidTraceContext::Repeated));
    }

    #[test]
    fn contexts_are_made_and_written() {
        assert_eq!(TraceContext::new([0; 16], [1; 8], true), None);
        let ctx = TraceContext::new([0xab; 16], [0x01; 8], true).expect("ids are not zero");
        assert_eq!(
            ctx.traceparent(),
            format!("00-{}-{}-01", "ab".repeat(16), "01".repeat(8))
        );
        let mut headers = HeaderMap::new();
        ctx.write_headers(&mut headers);
        assert_eq!(
            TraceContext::from_headers(Some(&headers)).context,
            Some(ctx)
        );
    }
}

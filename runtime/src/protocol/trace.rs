//! W3C Trace Context (level 1) as a publish carries it: `Publish.traceparent` and
//! `Publish.tracestate` (or a gRPC call's metadata of those names), checked the way the
//! specification asks of a receiver, and written to the record as the Kafka headers of the
//! same names (the "Trace Context: Kafka" convention).
//!
//! ```text
//!  traceparent   00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01
//!                ^^ ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^ ^^^^^^^^^^^^^^^^ ^^
//!           version trace-id (16 bytes)              parent-id (8)    flags (bit 0: sampled)
//!                lowercase hex; ids not all zero; version ff is invalid
//!  tracestate    congo=t61rcWkgMzE,rojo=00f067aa0ba902b7
//!                at most 32 list members and 512 characters; keys unique
//! ```
//!
//! A context that fails these checks is ignored, never an error: the specification tells a
//! receiver to restart the trace rather than refuse the request.

/// The header (Kafka record header, gRPC metadata) of the parent span.
pub(crate) const TRACEPARENT: &str = "traceparent";
/// The header of the vendor-specific trace state.
pub(crate) const TRACESTATE: &str = "tracestate";
/// Most characters of a `tracestate` the gateway passes on (the least the specification
/// asks receivers to propagate); a longer one is dropped.
pub(crate) const MAX_TRACESTATE_CHARS: usize = 512;
/// Most list members of a `tracestate` (the specification's maximum).
pub(crate) const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Most characters of a `traceparent` of a version newer than 00 (which may append fields
/// after the 55 characters of version 00); bounds what lands in a Kafka header.
const MAX_TRACEPARENT_CHARS: usize = 256;
/// The length of a version 00 `traceparent`.
const TRACEPARENT_00_CHARS: usize = 55;

/// Why a trace context was ignored (logged at debug, counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidTraceContext {
    /// Not `version-traceid-parentid-flags` in lowercase hex, or a version 00 header that is
    /// not exactly 55 characters.
    #[error("traceparent is not 00-<32 lowercase hex>-<16 lowercase hex>-<2 lowercase hex>")]
    Format,
    /// Version `ff`, which the specification forbids.
    #[error("traceparent version ff is invalid")]
    Version,
    /// The trace-id is all zeros.
    #[error("traceparent trace-id is all zeros")]
    ZeroTraceId,
    /// The parent-id is all zeros.
    #[error("traceparent parent-id is all zeros")]
    ZeroParentId,
    /// The `tracestate` is longer than [`MAX_TRACESTATE_CHARS`].
    #[error("tracestate is longer than 512 characters")]
    TraceStateTooLong,
    /// The `tracestate` has more than [`MAX_TRACESTATE_MEMBERS`] members.
    #[error("tracestate has more than 32 list members")]
    TraceStateTooManyMembers,
    /// A `tracestate` member is not `key=value` with a valid key and value.
    #[error("tracestate has a list member that is not key=value")]
    TraceStateMember,
    /// Two `tracestate` members have the same key.
    #[error("tracestate has a key twice")]
    TraceStateDuplicateKey,
}

impl InvalidTraceContext {
    /// The header the problem is in.
    pub(crate) fn header(self) -> &'static str {
        match self {
            Self::Format | Self::Version | Self::ZeroTraceId | Self::ZeroParentId => TRACEPARENT,
            _ => TRACESTATE,
        }
    }
}

/// The fields of a valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceParent {
    /// The version (00 is the one this code writes; newer ones are read as 00 is).
    pub(crate) version: u8,
    /// The trace id, never all zeros.
    pub(crate) trace_id: [u8; 16],
    /// The id of the caller's span, never all zeros.
    pub(crate) parent_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub(crate) flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value (optional white space around it is ignored).
    pub(crate) fn parse(value: &str) -> Result<TraceParent, InvalidTraceContext> {
        let s = trim_ows(value).as_bytes();
        if s.len() < TRACEPARENT_00_CHARS || !s.iter().all(u8::is_ascii_graphic) {
            return Err(InvalidTraceContext::Format);
        }
        let version = hex_byte(&s[0..2]).ok_or(InvalidTraceContext::Format)?;
        if version == 0xff {
            return Err(InvalidTraceContext::Version);
        }
        // Version 00 is exactly 55 characters; a newer version may append "-..." fields.
        let length_ok = match version {
            0 => s.len() == TRACEPARENT_00_CHARS,
            _ => s.len() <= MAX_TRACEPARENT_CHARS && (s.len() == TRACEPARENT_00_CHARS || s[55] == b'-'),
        };
        if !length_ok || s[2] != b'-' || s[35] != b'-' || s[52] != b'-' {
            return Err(InvalidTraceContext::Format);
        }
        let mut trace_id = [0u8; 16];
        hex_into(&s[3..35], &mut trace_id).ok_or(InvalidTraceContext::Format)?;
        let mut parent_id = [0u8; 8];
        hex_into(&s[36..52], &mut parent_id).ok_or(InvalidTraceContext::Format)?;
        let flags = hex_byte(&s[53..55]).ok_or(InvalidTraceContext::Format)?;
        if trace_id == [0; 16] {
            return Err(InvalidTraceContext::ZeroTraceId);
        }
        if parent_id == [0; 8] {
            return Err(InvalidTraceContext::ZeroParentId);
        }
        Ok(TraceParent { version, trace_id, parent_id, flags })
    }

    /// The version 00 `traceparent` of this trace id, parent id and flags.
    #[cfg(any(feature = "opentelemetry", test))]
    pub(crate) fn to_header(self) -> String {
        let mut out = String::with_capacity(TRACEPARENT_00_CHARS);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.parent_id);
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }
}

/// A publisher's valid trace context, as it is to be passed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceContext {
    /// The parsed `traceparent`.
    pub(crate) parent: TraceParent,
    /// The `traceparent` as received (white space around it removed).
    pub(crate) traceparent: String,
    /// The `tracestate` as received (white space around it removed), when there was a valid one.
    pub(crate) tracestate: Option<String>,
}

/// What [`TraceContext::parse`] found: the context to pass on (if any) and why part or all
/// of what was received was ignored (if it was).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ParsedTraceContext {
    /// The valid context, `None` without a valid `traceparent`.
    pub(crate) context: Option<TraceContext>,
    /// Set when a non-empty `traceparent` or `tracestate` was ignored.
    pub(crate) ignored: Option<InvalidTraceContext>,
}

impl TraceContext {
    /// Checks a received `traceparent` and `tracestate` (each may be empty). An invalid
    /// `traceparent` drops both; an invalid `tracestate` drops only itself. A `tracestate`
    /// without a `traceparent` is not looked at (the specification: no tracestate without
    /// a traceparent).
    pub(crate) fn parse(traceparent: &str, tracestate: &str) -> ParsedTraceContext {
        let traceparent = trim_ows(traceparent);
        if traceparent.is_empty() {
            return ParsedTraceContext::default();
        }
        let parent = match TraceParent::parse(traceparent) {
            Ok(p) => p,
            Err(e) => return ParsedTraceContext { context: None, ignored: Some(e) },
        };
        let tracestate = trim_ows(tracestate);
        let (tracestate, ignored) = match check_tracestate(tracestate) {
            Ok(()) if tracestate.is_empty() => (None, None),
            Ok(()) => (Some(tracestate.to_owned()), None),
            Err(e) => (None, Some(e)),
        };
        ParsedTraceContext {
            context: Some(TraceContext { parent, traceparent: traceparent.to_owned(), tracestate }),
            ignored,
        }
    }
}

/// Checks a `tracestate` value against the level 1 grammar: comma-separated `key=value`
/// members (empty members and white space around members allowed), unique keys.
fn check_tracestate(value: &str) -> Result<(), InvalidTraceContext> {
    if value.len() > MAX_TRACESTATE_CHARS {
        return Err(InvalidTraceContext::TraceStateTooLong);
    }
    let mut keys: Vec<&str> = Vec::new();
    for member in value.split(',').map(trim_ows).filter(|m| !m.is_empty()) {
        if keys.len() == MAX_TRACESTATE_MEMBERS {
            return Err(InvalidTraceContext::TraceStateTooManyMembers);
        }
        let (key, val) = member.split_once('=').ok_or(InvalidTraceContext::TraceStateMember)?;
        if !valid_key(key) || !valid_value(val) {
            return Err(InvalidTraceContext::TraceStateMember);
        }
        if keys.contains(&key) {
            return Err(InvalidTraceContext::TraceStateDuplicateKey);
        }
        keys.push(key);
    }
    Ok(())
}

/// `simple-key = lcalpha 0*255(lcalpha / DIGIT / "_" / "-" / "*" / "/")`, or
/// `tenant-id "@" system-id`: `(lcalpha / DIGIT) 0*240(...)` "@" `lcalpha 0*13(...)`.
fn valid_key(key: &str) -> bool {
    let rest_ok = |s: &[u8], max: usize| {
        s.len() <= max && s.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(&c))
    };
    match key.split_once('@') {
        None => match key.as_bytes().split_first() {
            Some((first, rest)) => first.is_ascii_lowercase() && rest_ok(rest, 255),
            None => false,
        },
        Some((tenant, system)) => {
            let tenant_ok = match tenant.as_bytes().split_first() {
                Some((first, rest)) => (first.is_ascii_lowercase() || first.is_ascii_digit()) && rest_ok(rest, 240),
                None => false,
            };
            let system_ok = match system.as_bytes().split_first() {
                Some((first, rest)) => first.is_ascii_lowercase() && rest_ok(rest, 13),
                None => false,
            };
            tenant_ok && system_ok
        }
    }
}

/// `value = 0*255(chr) nblk-chr`: 1 to 256 printable ASCII characters but `,` and `=`, the
/// last one not a space.
fn valid_value(value: &str) -> bool {
    let v = value.as_bytes();
    (1..=256).contains(&v.len())
        && v.iter().all(|&c| (0x20..=0x7e).contains(&c) && c != b',' && c != b'=')
        && v.last() != Some(&b' ')
}

/// Removes optional white space (spaces and tabs) around a header value or list member.
fn trim_ows(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// Two lowercase hex digits.
fn hex_byte(s: &[u8]) -> Option<u8> {
    match s {
        [hi, lo] => Some(hex_digit(*hi)? << 4 | hex_digit(*lo)?),
        _ => None,
    }
}

/// Lowercase hex digits into `out` (twice as many digits as bytes).
fn hex_into(s: &[u8], out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    for (byte, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *byte = hex_byte(pair)?;
    }
    Some(())
}

#[cfg(any(feature = "opentelemetry", test))]
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The examples of the W3C Trace Context recommendation (level 1).
    const SPEC_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const SPEC_NOT_SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    const SPEC_TRACESTATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

    #[test]
    fn the_specification_examples_are_valid_and_round_trip() {
        let p = TraceParent::parse(SPEC_TRACEPARENT).expect("valid");
        assert_eq!(p.version, 0);
        assert_eq!(p.trace_id[..4], [0x4b, 0xf9, 0x2f, 0x35]);
        assert_eq!(p.parent_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(p.flags, 1);
        assert_eq!(p.to_header(), SPEC_TRACEPARENT);
        assert_eq!(TraceParent::parse(SPEC_NOT_SAMPLED).expect("valid").flags, 0);

        let parsed = TraceContext::parse(SPEC_TRACEPARENT, SPEC_TRACESTATE);
        assert_eq!(parsed.ignored, None);
        let cx = parsed.context.expect("a valid traceparent");
        assert_eq!(cx.traceparent, SPEC_TRACEPARENT);
        assert_eq!(cx.tracestate.as_deref(), Some(SPEC_TRACESTATE));
        // Multi-tenant keys, empty members and white space around members are allowed.
        let state = "fw529a3039@dt=abc , ,congo=t61rcWkgMzE\t";
        let cx = TraceContext::parse(&format!(" {SPEC_TRACEPARENT}\t"), state).context.expect("a valid traceparent");
        assert_eq!(cx.traceparent, SPEC_TRACEPARENT, "white space around the value is not part of it");
        assert_eq!(cx.tracestate.as_deref(), Some("fw529a3039@dt=abc , ,congo=t61rcWkgMzE"));
    }

    #[test]
    fn uppercase_hex_is_invalid() {
        let upper = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01";
        assert_eq!(TraceParent::parse(upper), Err(InvalidTraceContext::Format));
        let parsed = TraceContext::parse(upper, SPEC_TRACESTATE);
        assert_eq!((parsed.context, parsed.ignored), (None, Some(InvalidTraceContext::Format)));
        assert_eq!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A").err(),
            Some(InvalidTraceContext::Format)
        );
    }

    #[test]
    fn all_zero_ids_are_invalid() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        assert_eq!(TraceParent::parse(zero_trace), Err(InvalidTraceContext::ZeroTraceId));
        assert_eq!(TraceParent::parse(zero_parent), Err(InvalidTraceContext::ZeroParentId));
        assert_eq!(TraceContext::parse(zero_parent, "").ignored.map(InvalidTraceContext::header), Some(TRACEPARENT));
    }

    #[test]
    fn version_ff_is_invalid_and_newer_versions_are_read_as_00() {
        let ff = "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceParent::parse(ff), Err(InvalidTraceContext::Version));
        // A future version may append fields after a dash; version 00 may not.
        let future = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds";
        let p = TraceParent::parse(future).expect("valid");
        assert_eq!((p.version, p.flags), (0xcc, 1));
        assert_eq!(
            TraceContext::parse(future, "").context.expect("a valid traceparent").traceparent,
            future,
            "passed on as received"
        );
        let long_00 = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(TraceParent::parse(long_00), Err(InvalidTraceContext::Format));
        let future_no_dash = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(TraceParent::parse(future_no_dash), Err(InvalidTraceContext::Format));
    }

    #[test]
    fn malformed_traceparents_are_invalid() {
        for bad in [
            "0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\u{e9}",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736 00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), Err(InvalidTraceContext::Format), "{bad:?}");
        }
        assert_eq!(TraceContext::parse("", SPEC_TRACESTATE), ParsedTraceContext::default(), "nothing to ignore");
    }

    #[test]
    fn an_invalid_tracestate_is_dropped_and_the_traceparent_kept() {
        let cases = [
            // 513 characters (the length is checked first).
            (format!("k={}", "v".repeat(511)), InvalidTraceContext::TraceStateTooLong),
            (
                (0..33).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(","),
                InvalidTraceContext::TraceStateTooManyMembers,
            ),
            ("rojo".to_owned(), InvalidTraceContext::TraceStateMember),
            ("Rojo=1".to_owned(), InvalidTraceContext::TraceStateMember),
            ("rojo=a,b".to_owned(), InvalidTraceContext::TraceStateMember),
            ("rojo=".to_owned(), InvalidTraceContext::TraceStateMember),
            ("1rojo=x".to_owned(), InvalidTraceContext::TraceStateMember),
            ("t@Sys=x".to_owned(), InvalidTraceContext::TraceStateMember),
            ("t@systemidtoolong=x".to_owned(), InvalidTraceContext::TraceStateMember),
            ("rojo=1,congo=2,rojo=3".to_owned(), InvalidTraceContext::TraceStateDuplicateKey),
        ];
        for (state, why) in cases {
            let parsed = TraceContext::parse(SPEC_TRACEPARENT, &state);
            assert_eq!(parsed.ignored, Some(why), "{state:?}");
            assert_eq!(why.header(), TRACESTATE);
            let cx = parsed.context.expect("a valid traceparent");
            assert_eq!((cx.traceparent.as_str(), cx.tracestate), (SPEC_TRACEPARENT, None), "{state:?}");
        }
        // 32 members, and exactly 512 characters, are fine.
        let most = (0..32).map(|i| format!("k{i:02}=v")).collect::<Vec<_>>().join(",");
        assert_eq!(TraceContext::parse(SPEC_TRACEPARENT, &most).ignored, None);
        let values = (0..2).map(|i| format!("k{i}={}", "v".repeat(250))).collect::<Vec<_>>().join(",");
        let exactly_512 = format!("{values},z={}", "v".repeat(512 - values.len() - 3));
        assert_eq!(exactly_512.len(), 512);
        assert_eq!(TraceContext::parse(SPEC_TRACEPARENT, &exactly_512).ignored, None);
        assert!(!valid_value(&"v".repeat(257)), "a value is at most 256 characters");
    }
}

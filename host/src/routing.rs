//! Routing: which object a request path addresses, and the path that object sees.
//!
//! `/{namespace}/{object-name}/{rest...}` goes to `object-name` of `namespace`, which sees
//! `/{rest}` with the query kept as sent. This is pure (no I/O, no HTTP types) so that it can be
//! unit-tested and fuzzed on its own (`fuzz/fuzz_targets/routing.rs`); [`crate::http`] maps its
//! errors to responses.

use crate::names::{self, NameError};

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// The namespace: it passed [`names::check_namespace`].
    pub namespace: &'a str,
    /// The object name, percent-decoded: it passed [`names::decode_object_name`].
    pub name: String,
    /// The path the object sees: `/{rest}` (still percent-encoded, as sent) and `?query` if the
    /// request had one.
    pub path: String,
}

/// Why a path addresses no object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The first segment cannot be a namespace. Answered like a namespace that is not deployed
    /// (404), since to the client the two are the same thing. Holds at most 80 characters of it.
    #[error("no namespace {0:?} is deployed; objects live at /{{namespace}}/{{object-name}}/...")]
    UnknownNamespace(String),
    /// The object name is empty, too long or not UTF-8.
    #[error(transparent)]
    Name(#[from] NameError),
}

/// Splits a request path (and its query) into the object it addresses and the path it sees.
pub fn parse_target<'a>(path: &'a str, query: Option<&str>) -> Result<Target<'a>, RouteError> {
    let mut segments = path.strip_prefix('/').unwrap_or(path).splitn(3, '/');
    let namespace = segments.next().unwrap_or_default();
    if names::check_namespace(namespace).is_err() {
        return Err(RouteError::UnknownNamespace(
            namespace.chars().take(80).collect(),
        ));
    }
    let name = names::decode_object_name(segments.next().unwrap_or_default())?;
    let mut path = format!("/{}", segments.next().unwrap_or_default());
    if let Some(q) = query {
        path.push('?');
        path.push_str(q);
    }
    Ok(Target {
        namespace,
        name,
        path,
    })
}

/// The offset of the first `%` not followed by two hex digits, if any. Decoders disagree about
/// such a path (most keep it as it is, some refuse it), so the host refuses it rather than guess.
pub fn invalid_escape(path: &str) -> Option<usize> {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().find_map(|(i, &b)| {
        let valid = b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        (!valid).then_some(i)
    })
}

/// What [`encode_segment`] leaves as it is: RFC 3986's unreserved characters.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes `s` as one path segment (object names and storage keys may hold `/`, `?` or
/// spaces): what [`crate::names::decode_object_name`] undoes. For the CLI and clients.
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_encoded_segment_decodes_to_itself() {
        for name in ["plain", "a/b c?d#e%f", "é 𝄞", ""] {
            let encoded = super::encode_segment(name);
            assert!(!encoded.contains(['/', ' ', '?', '#']), "{encoded}");
            let decoded = percent_encoding::percent_decode_str(&encoded)
                .decode_utf8()
                .unwrap();
            assert_eq!(decoded, name);
        }
    }

    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("/counter/alice", None).unwrap();
        assert_eq!(
            (t.namespace, t.name.as_str(), t.path.as_str()),
            ("counter", "alice", "/")
        );
        let t = parse_target("/counter/alice/", Some("x=1")).unwrap();
        assert_eq!(t.path, "/?x=1");
        let t = parse_target("/counter/a%20b/x/y%2Fz", Some("q=%20")).unwrap();
        assert_eq!(
            (t.name.as_str(), t.path.as_str()),
            ("a b", "/x/y%2Fz?q=%20")
        );
        assert!(matches!(
            parse_target("/", None),
            Err(RouteError::UnknownNamespace(_))
        ));
        assert!(matches!(
            parse_target("/Counter/a", None),
            Err(RouteError::UnknownNamespace(_))
        ));
        assert_eq!(
            parse_target("/counter", None),
            Err(RouteError::Name(NameError::ObjectLength(0)))
        );
        assert_eq!(
            parse_target("/counter/", None),
            Err(RouteError::Name(NameError::ObjectLength(0)))
        );
        assert_eq!(
            parse_target("/counter/%FF", None),
            Err(RouteError::Name(NameError::ObjectUtf8))
        );
        let long = format!("/counter/{}", "a".repeat(257));
        assert_eq!(
            parse_target(&long, None),
            Err(RouteError::Name(NameError::ObjectLength(257)))
        );
    }

    #[test]
    fn unknown_namespace_is_truncated() {
        let long = "X".repeat(1000);
        match parse_target(&format!("/{long}/a"), None) {
            Err(RouteError::UnknownNamespace(shown)) => assert_eq!(shown.len(), 80),
            other => panic!("expected UnknownNamespace, got {other:?}"),
        }
    }

    #[test]
    fn percent_escapes() {
        for good in ["/", "/t/a%20b/c", "/t/%C3%a9/", "/t/%00/x", "/%41"] {
            assert_eq!(invalid_escape(good), None, "{good}");
        }
        for (bad, at) in [("/t/%zz/", 3), ("/t/a%4", 4), ("/t/%", 3), ("/t/%%41", 3)] {
            assert_eq!(invalid_escape(bad), Some(at), "{bad}");
        }
    }
}

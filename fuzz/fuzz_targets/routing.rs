//! Routing and name decoding: any path and query either route or are refused, never panic, and
//! what routes is consistent with the documented rules.
#![no_main]

use dohost::names::{self, MAX_NAMESPACE_BYTES, MAX_OBJECT_NAME_BYTES, NameError, ObjectId};
use dohost::routing::{RouteError, parse_target};
use libfuzzer_sys::fuzz_target;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

fuzz_target!(|input: (&str, Option<&str>)| {
    let (path, query) = input;
    match parse_target(path, query) {
        Ok(t) => {
            // The namespace is the first segment and matches the documented charset.
            let ns_ok = !t.namespace.is_empty()
                && t.namespace.len() <= MAX_NAMESPACE_BYTES
                && t.namespace
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            assert!(ns_ok, "namespace {:?} passed the check", t.namespace);
            let rest = path.strip_prefix('/').unwrap_or(path);
            assert!(rest.starts_with(t.namespace));
            // The name is what its segment decodes to.
            let segment = rest[t.namespace.len()..]
                .strip_prefix('/')
                .expect("a '/' follows the namespace")
                .split('/')
                .next()
                .unwrap();
            assert_eq!(names::decode_object_name(segment).as_ref(), Ok(&t.name));
            assert!(!t.name.is_empty() && t.name.len() <= MAX_OBJECT_NAME_BYTES);
            // The object sees `/{rest}` and the query as sent.
            assert!(t.path.starts_with('/'));
            match query {
                Some(q) => assert!(t.path.ends_with(&format!("?{q}"))),
                None => assert!(
                    !t.path.contains('?') || path.contains('?'),
                    "no query, yet {:?}",
                    t.path
                ),
            }
            // Re-encoding the name routes to the same object, whose id is stable.
            let encoded = utf8_percent_encode(&t.name, NON_ALPHANUMERIC).to_string();
            let rerouted = format!("/{}/{encoded}/x", t.namespace);
            let again = parse_target(&rerouted, None).expect("a re-encoded name routes");
            assert_eq!((again.namespace, &again.name), (t.namespace, &t.name));
            assert_eq!(again.path, "/x");
            let id = ObjectId::new(t.namespace, &t.name);
            assert_eq!(id, ObjectId::new(again.namespace, &again.name));
            assert_eq!(id.to_hex().len(), 64);
        }
        Err(RouteError::UnknownNamespace(shown)) => {
            assert!(shown.chars().count() <= 80);
            let first = path
                .strip_prefix('/')
                .unwrap_or(path)
                .split('/')
                .next()
                .unwrap();
            assert!(names::check_namespace(first).is_err());
        }
        Err(RouteError::Name(e)) => match e {
            NameError::ObjectLength(n) => assert!(n == 0 || n > MAX_OBJECT_NAME_BYTES),
            NameError::ObjectUtf8 => {}
            NameError::Namespace(_) => panic!("a namespace error from the name: {e}"),
        },
    }
    // The two name functions alone, on the whole input.
    if names::check_namespace(path).is_ok() {
        assert!(path.len() <= MAX_NAMESPACE_BYTES && !path.contains('/'));
    }
    if let Ok(name) = names::decode_object_name(path) {
        let encoded = utf8_percent_encode(&name, NON_ALPHANUMERIC).to_string();
        assert_eq!(names::decode_object_name(&encoded), Ok(name));
    }
});

//! Names and ids: what a namespace or object may be called, and the id an object is known by;
//! and how a secret someone presents is compared with the one expected.
//!
//! Validation lives here, in one place, so that routing, deploy and the admin CLI refuse the same
//! names with the same words.

use sha2::{Digest, Sha256};
use std::fmt;

/// The longest object name, in bytes after percent-decoding.
pub const MAX_OBJECT_NAME_BYTES: usize = 256;

/// The longest namespace name.
pub const MAX_NAMESPACE_BYTES: usize = 63;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("namespace names are 1 to 63 characters of a-z, 0-9 and '-', got {0:?}")]
    Namespace(String),
    #[error("object names are 1 to 256 bytes of UTF-8, got {0} bytes")]
    ObjectLength(usize),
    #[error("object name is not valid UTF-8 after percent-decoding")]
    ObjectUtf8,
}

/// Checks a namespace name: `[a-z0-9-]{1,63}`, so it is safe in URLs, file names and logs.
pub fn check_namespace(name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAMESPACE_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(NameError::Namespace(name.chars().take(80).collect()))
    }
}

/// Checks an object name given as text (through a stub): 1 to 256 bytes.
pub fn check_object_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() || name.len() > MAX_OBJECT_NAME_BYTES {
        return Err(NameError::ObjectLength(name.len()));
    }
    Ok(())
}

/// Percent-decodes one path segment into an object name and checks it.
pub fn decode_object_name(segment: &str) -> Result<String, NameError> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
    if bytes.is_empty() || bytes.len() > MAX_OBJECT_NAME_BYTES {
        return Err(NameError::ObjectLength(bytes.len()));
    }
    String::from_utf8(bytes).map_err(|_| NameError::ObjectUtf8)
}

/// An object's id: SHA-256 of the namespace, a zero byte and the name.
///
/// The id is the key prefix of every stored entry of the object, so one object's keys are adjacent
/// on disk and two objects can never share a key. The zero byte keeps `("a", "bc")` and
/// `("ab", "c")` apart.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 32]);

impl ObjectId {
    /// The id of `name` in `namespace`.
    pub fn new(namespace: &str, name: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(namespace.as_bytes());
        hasher.update([0u8]);
        hasher.update(name.as_bytes());
        ObjectId(hasher.finalize().into())
    }

    /// An id from its raw bytes, as stored.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ObjectId(bytes)
    }

    /// The raw 32 bytes, as used in storage keys.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.to_hex())
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A fresh random name: 64 lowercase hex digits from 256 random bits.
pub fn new_unique_name() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Who an object is: its namespace, its name, and the id derived from them.
#[derive(Debug, Clone)]
pub struct ObjectIdentity {
    pub namespace: String,
    pub name: String,
    pub id: ObjectId,
}

impl ObjectIdentity {
    pub fn new(namespace: &str, name: &str) -> Self {
        ObjectIdentity {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            id: ObjectId::new(namespace, name),
        }
    }
}

/// Whether `given` is `expected`, in time that does not tell how much of it matched.
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(expected.as_bytes()),
    );
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(check_namespace("counter").is_ok());
        assert!(check_namespace("a-1").is_ok());
        assert!(check_namespace(&"a".repeat(63)).is_ok());
        for bad in ["", "Counter", "a_b", "a/b", "é", &"a".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn object_names() {
        assert_eq!(decode_object_name("alice").unwrap(), "alice");
        assert_eq!(decode_object_name("a%20b%2Fc").unwrap(), "a b/c");
        assert_eq!(decode_object_name("%C3%A9").unwrap(), "é");
        assert_eq!(decode_object_name(""), Err(NameError::ObjectLength(0)));
        assert_eq!(decode_object_name("%FF"), Err(NameError::ObjectUtf8));
        assert!(decode_object_name(&"a".repeat(256)).is_ok());
        assert_eq!(
            decode_object_name(&"a".repeat(257)),
            Err(NameError::ObjectLength(257))
        );
    }

    #[test]
    fn ids_are_deterministic_and_separate_namespaces() {
        let a = ObjectId::new("counter", "alice");
        assert_eq!(a, ObjectId::new("counter", "alice"));
        assert_ne!(a, ObjectId::new("other", "alice"));
        assert_ne!(ObjectId::new("a", "bc"), ObjectId::new("ab", "c"));
        let hex = a.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(new_unique_name(), new_unique_name());
    }
}

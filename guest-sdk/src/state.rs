//! Who the object is, and the way to its storage.

use crate::__private::dohost::object::identity;
use crate::Storage;

/// The object's identity and storage, handed to [`DurableObject::new`](crate::DurableObject::new).
///
/// A zero-sized handle: keep it in your object and copy it freely. The identity is the same on
/// every instance of the same object, so it can be used as a stable label.
#[derive(Clone, Copy, Debug)]
pub struct State {
    _private: (),
}

impl State {
    pub(crate) fn new() -> Self {
        State { _private: () }
    }

    /// The object's id: 64 lowercase hex digits, the SHA-256 of the namespace, a zero byte and
    /// the name. Stable forever and unique across namespaces.
    pub fn id(&self) -> String {
        identity::id()
    }

    /// The object's name within its namespace, as the client addressed it (percent-decoded).
    pub fn name(&self) -> String {
        identity::name()
    }

    /// The namespace the object lives in: the name its class was deployed under.
    pub fn namespace(&self) -> String {
        identity::namespace()
    }

    /// The object's private, transactional storage.
    pub fn storage(&self) -> Storage {
        Storage::new()
    }
}

/// A fresh random object name: 64 lowercase hex digits, 256 random bits.
///
/// For objects with no natural name, such as a new chat room: hand the name to the client, whose
/// first request to it creates the object.
pub fn new_unique_name() -> String {
    identity::new_unique_name()
}

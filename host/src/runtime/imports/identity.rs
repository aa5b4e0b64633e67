//! `dohost:object/identity`: who the object is.

use crate::names;
use crate::runtime::bindings::dohost::object::identity;
use crate::runtime::state::HostState;

impl identity::Host for HostState {
    fn namespace(&mut self) -> String {
        self.identity.namespace.clone()
    }

    fn name(&mut self) -> String {
        self.identity.name.clone()
    }

    fn id(&mut self) -> String {
        self.identity.id.to_hex()
    }

    fn new_unique_name(&mut self) -> String {
        names::new_unique_name()
    }
}

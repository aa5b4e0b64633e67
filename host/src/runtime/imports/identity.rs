//! `dohost:object/identity`: who the object is. The same in 0.2.0 and 0.3.0.

use crate::names;
use crate::runtime::state::HostState;

macro_rules! identity_host {
    ($version:ident) => {
        impl crate::runtime::bindings::$version::dohost::object::identity::Host for HostState {
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
    };
}

identity_host!(v0_2);
identity_host!(v0_3);

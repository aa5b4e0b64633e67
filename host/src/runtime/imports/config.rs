//! `dohost:object/config`: the app's variables and secrets.

use crate::runtime::bindings::v0_3::dohost::object::config;
use crate::runtime::state::HostState;

impl config::Host for HostState {
    fn get(&mut self, name: String) -> Option<String> {
        self.env.get(&name)
    }
}

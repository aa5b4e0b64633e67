//! What an app gives its guests: the bindings their stubs name, its variables and secrets, and
//! the destinations of its outbound HTTP requests. A class deployed alone gets an empty one: it
//! can reach no other app's objects and send no request.
//!
//! Shared by every instance of the app's worker and classes; secrets change in place (`dohost
//! secret put`), so a new value reaches the next read without a redeploy.

use crate::config::OUTBOUND_MAX_PER_APP;
use crate::outbound::AllowList;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use tokio::sync::Semaphore;

/// The environment of one app.
#[derive(Debug)]
pub struct Env {
    /// The app's name; `None` for a class deployed alone.
    pub app: Option<String>,
    /// Binding name (`ROOMS`) → namespace (`chat-rooms`).
    bindings: BTreeMap<String, String>,
    /// The namespaces of the app's classes, public or not.
    namespaces: BTreeSet<String>,
    vars: BTreeMap<String, String>,
    secrets: RwLock<BTreeMap<String, String>>,
    /// Where the app's guests may send HTTP requests (`[outbound] allow`).
    pub outbound: AllowList,
    /// The app's share of outbound requests in flight, for all its instances together.
    pub(crate) outbound_slots: Arc<Semaphore>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            app: None,
            bindings: BTreeMap::new(),
            namespaces: BTreeSet::new(),
            vars: BTreeMap::new(),
            secrets: RwLock::default(),
            outbound: AllowList::default(),
            outbound_slots: Arc::new(Semaphore::new(OUTBOUND_MAX_PER_APP)),
        }
    }
}

impl Env {
    pub fn new(
        app: String,
        bindings: BTreeMap<String, String>,
        vars: BTreeMap<String, String>,
        secrets: BTreeMap<String, String>,
        outbound: AllowList,
    ) -> Self {
        Env {
            app: Some(app),
            namespaces: bindings.values().cloned().collect(),
            bindings,
            vars,
            secrets: RwLock::new(secrets),
            outbound,
            ..Env::default()
        }
    }

    /// The namespace a stub's `binding` names, and whether it is one of the app's own classes:
    /// a binding of the app, else the name itself taken as a namespace.
    pub fn resolve<'a>(&'a self, binding: &'a str) -> (&'a str, bool) {
        match self.bindings.get(binding) {
            Some(namespace) => (namespace, true),
            None => (binding, self.namespaces.contains(binding)),
        }
    }

    /// A variable or secret.
    pub fn get(&self, name: &str) -> Option<String> {
        if let Some(value) = self.vars.get(name) {
            return Some(value.clone());
        }
        self.secrets.read().unwrap().get(name).cloned()
    }

    /// Sets a secret for the app's instances to read from now on.
    pub fn set_secret(&self, name: String, value: String) {
        self.secrets.write().unwrap().insert(name, value);
    }

    /// Whether `name` is one of the app's variables (a secret may not take its name).
    pub fn has_var(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_names_a_namespace_and_a_namespace_names_itself() {
        let bindings = BTreeMap::from([("ROOMS".to_owned(), "chat-rooms".to_owned())]);
        let env = Env::new(
            "chat".into(),
            bindings,
            BTreeMap::new(),
            BTreeMap::new(),
            AllowList::default(),
        );
        assert_eq!(env.resolve("ROOMS"), ("chat-rooms", true));
        assert_eq!(env.resolve("chat-rooms"), ("chat-rooms", true));
        assert_eq!(env.resolve("counter"), ("counter", false));
        assert_eq!(Env::default().resolve("ROOMS"), ("ROOMS", false));
    }

    #[test]
    fn variables_and_secrets_are_read_and_secrets_change_in_place() {
        let vars = BTreeMap::from([("A".to_owned(), "1".to_owned())]);
        let env = Env::new(
            "app".into(),
            BTreeMap::new(),
            vars,
            BTreeMap::new(),
            AllowList::default(),
        );
        assert_eq!(env.get("A").as_deref(), Some("1"));
        assert_eq!(env.get("KEY"), None);
        env.set_secret("KEY".into(), "s3cret".into());
        assert_eq!(env.get("KEY").as_deref(), Some("s3cret"));
        assert!(env.has_var("A") && !env.has_var("KEY"));
    }
}

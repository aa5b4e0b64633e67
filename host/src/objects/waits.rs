//! Which object is waiting for a call to which: the wait-for graph of stub calls, to refuse a call
//! that would close a loop of waits.
//!
//! The call chain catches a loop within one chain (A → B → A). Two chains can also wait on each
//! other crosswise: A's event calls B while B's event, from another request, calls A. Each object
//! runs one event at a time, so neither call would ever be answered. An object's guest is
//! synchronous, so it waits on at most one call at a time: the graph is a map from caller to
//! callee, and a loop is found by walking it from the callee.

use crate::names::{ObjectId, ObjectIdentity};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The calls objects are waiting on.
#[derive(Default)]
pub(super) struct Waits {
    waiting_on: Mutex<HashMap<ObjectId, ObjectIdentity>>,
}

/// A wait in the graph, removed when dropped (the call was answered, failed or abandoned).
pub(super) struct Waiting {
    waits: Arc<Waits>,
    caller: ObjectId,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.waits.waiting_on.lock().unwrap().remove(&self.caller);
    }
}

impl Waits {
    /// Records that `caller` waits on `callee`, unless `callee` already waits (through any number
    /// of calls) on `caller`: then the loop, as `a/x → b/y → a/x`.
    pub(super) fn wait(
        self: &Arc<Self>,
        caller: &ObjectIdentity,
        callee: &ObjectIdentity,
    ) -> Result<Waiting, String> {
        let mut waiting_on = self.waiting_on.lock().unwrap();
        let mut path = vec![caller, callee];
        let mut at = callee;
        // Each object waits on at most one other, so the walk visits each at most once; the
        // bound only guards against a graph no code should build.
        for _ in 0..waiting_on.len() {
            let Some(next) = waiting_on.get(&at.id) else {
                break;
            };
            path.push(next);
            if next.id == caller.id {
                let names: Vec<String> = path
                    .iter()
                    .map(|o| format!("{}/{}", o.namespace, o.name))
                    .collect();
                return Err(names.join(" → "));
            }
            at = next;
        }
        waiting_on.insert(caller.id, callee.clone());
        Ok(Waiting {
            waits: self.clone(),
            caller: caller.id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> ObjectIdentity {
        ObjectIdentity::new("ns", name)
    }

    #[test]
    fn a_wait_that_closes_a_loop_is_refused_and_an_ended_wait_is_forgotten() {
        let waits = Arc::new(Waits::default());
        let (a, b, c) = (object("a"), object("b"), object("c"));
        let a_on_b = waits.wait(&a, &b).unwrap();
        let b_on_c = waits.wait(&b, &c).unwrap();
        assert_eq!(
            waits.wait(&c, &a).err().as_deref(),
            Some("ns/c → ns/a → ns/b → ns/c")
        );
        assert!(waits.wait(&b, &a).is_err(), "b → a while a waits on b");
        drop(b_on_c);
        let c_on_a = waits.wait(&c, &a).expect("b no longer waits on c");
        drop((a_on_b, c_on_a));
        assert!(waits.waiting_on.lock().unwrap().is_empty());
    }
}

//! The counter of `examples/counter`, registered as a class of the world `shared-object`: its
//! state lives in storage only, so the host may serve many counters from one instance, and a
//! counter that wakes costs no new instance (BENCHMARKS.md: increments over 1,000,000 objects).
//! Same requests, same answers.

#[path = "../../counter/src/counter.rs"]
mod counter;

dohost_sdk::shared_object!(counter::Counter);

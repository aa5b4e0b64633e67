//! The smallest useful Durable Object: a counter per name.
//!
//! Shows typed storage (`get` / `put` of a JSON number) and why state lives in storage rather
//! than in fields: the instance may be dropped between requests. `POST` increments the count and
//! `GET` reads it, both answering `{"count":n}`; other methods get a 405.

mod counter;

dohost_sdk::durable_object!(counter::Counter);

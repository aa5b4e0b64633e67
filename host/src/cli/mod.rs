//! The binary's commands that are more than a call to the admin API.

pub mod dev;

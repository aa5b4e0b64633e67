//! What every handler shares.

use crate::alarms::Alarms;
use crate::objects::Objects;
use crate::registry::Registry;
use crate::sockets::Sockets;
use std::sync::Arc;
use std::time::Duration;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub objects: Objects,
    pub sockets: Arc<Sockets>,
    pub alarms: Arc<Alarms>,
    pub registry: Arc<Registry>,
    pub admin_token: Arc<str>,
    pub max_request_body: usize,
    pub max_component_bytes: usize,
    /// How long a request body may take to arrive, from the end of its head.
    pub body_timeout: Duration,
}

//! What every handler shares.

use super::error::ApiError;
use super::limits::{BodyBudget, BodyDeadline, BodyShare, read_body};
use crate::alarms::Alarms;
use crate::cluster::Cluster;
use crate::objects::Objects;
use crate::registry::Registry;
use crate::sockets::Sockets;
use crate::storage::Storage;
use crate::workers::Workers;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub objects: Objects,
    /// What all request bodies together may hold of the host's memory.
    pub bodies: Arc<BodyBudget>,
    pub workers: Arc<Workers>,
    pub sockets: Arc<Sockets>,
    pub alarms: Arc<Alarms>,
    pub registry: Arc<Registry>,
    /// The database (backups) and the store of objects' state (the inventory, alarms).
    pub storage: Storage,
    /// The cluster this host is a node of, if any: where requests for objects go.
    pub cluster: Option<Arc<Cluster>>,
    /// Where backups are written before they are sent.
    pub data_dir: PathBuf,
    /// One permit: one backup at a time.
    pub backups: Arc<Semaphore>,
    pub admin_token: Arc<str>,
    pub max_request_body: usize,
    pub max_component_bytes: usize,
    /// How long a request body may take to arrive, from the end of its head.
    pub body_timeout: Duration,
}

/// The IP address of the client at the other end of a request's connection, put in the
/// request's extensions by [`crate::server::serve`].
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

impl AppState {
    /// A request body for an object: whole within `--body-timeout` of the head, at most
    /// `--max-request-body`, and counted in the bodies' budget while its share is held.
    pub(super) async fn read_object_body(
        &self,
        body: axum::body::Body,
        headers: &axum::http::HeaderMap,
    ) -> Result<(Vec<u8>, Option<BodyShare>), ApiError> {
        let deadline = BodyDeadline::Whole(self.body_timeout);
        read_body(
            body,
            headers,
            self.max_request_body,
            deadline,
            Some(&self.bodies),
        )
        .await
    }
}

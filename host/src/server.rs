//! Assembling a host from its data dir: the database, the commit thread, the deployed
//! namespaces, the live objects and the routes; and the admin token kept beside them.

use crate::alarms::Alarms;
use crate::config::HostConfig;
use crate::http::{self, AppState};
use crate::objects::{LifecycleConfig, Objects};
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::storage::{Committer, Db, DbError};
use crate::websockets::Sockets;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file in the data dir that holds the generated admin token.
pub const TOKEN_FILE: &str = "admin-token";

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("starting the WebAssembly engine: {0}")]
    Engine(String),
    #[error("starting the commit thread: {0}")]
    Thread(std::io::Error),
}

/// A running host's parts.
pub struct Host {
    pub router: axum::Router,
    pub objects: Objects,
    pub registry: Arc<Registry>,
    pub sockets: Arc<Sockets>,
}

impl Host {
    /// Opens the data dir, brings back every deployed namespace and starts the alarm loop.
    /// Blocking; call it within a tokio runtime (e.g. from `spawn_blocking`).
    pub fn start(config: &HostConfig) -> Result<Host, StartError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| StartError::DataDir(dir.clone(), e))?;
        let db = Arc::new(Db::open(&dir.join("dohost.redb"))?);
        let runtime = Arc::new(
            Runtime::new(config.event, config.max_live_objects)
                .map_err(|e| StartError::Engine(format!("{e:#}")))?,
        );
        let alarms = Arc::new(Alarms::default());
        alarms.load(db.all_alarms()?);
        let sink = alarms.clone();
        let (committer, _thread) = Committer::start(
            db.clone(),
            Box::new(move |id, alarm| sink.changed(id, alarm)),
        )
        .map_err(StartError::Thread)?;
        let registry = Arc::new(Registry::load(
            runtime.clone(),
            db.clone(),
            dir.join("cache"),
        )?);
        let sockets = Arc::new(Sockets::new(config.max_ws_message));
        let objects = Objects::new(
            runtime,
            sockets.clone(),
            registry.clone(),
            db,
            committer,
            LifecycleConfig {
                idle_timeout: config.idle_timeout,
                max_live_objects: config.max_live_objects,
                storage: config.storage,
            },
        );
        let runtime = tokio::runtime::Handle::current();
        runtime.spawn(alarms.clone().run(objects.clone()));
        runtime.spawn(hand_back_memory(objects.clone()));
        let router = http::router(AppState {
            objects: objects.clone(),
            sockets: sockets.clone(),
            alarms,
            registry: registry.clone(),
            admin_token: config.admin_token.as_str().into(),
            max_request_body: config.max_request_body,
            max_component_bytes: config.max_component_bytes,
        });
        Ok(Host {
            router,
            objects,
            registry,
            sockets,
        })
    }
}

/// After instances are dropped, hands the memory they freed back to the kernel.
///
/// glibc keeps what its per-thread arenas free, so after a burst of thousands of objects went to
/// sleep the host would stay as big as at the peak. `malloc_trim` returns the free pages; it runs
/// at most once a second, and only when some instance was dropped since the last time.
async fn hand_back_memory(objects: Objects) {
    let mut trimmed_at = 0;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let dropped = objects.dropped_instances();
        if dropped != trimmed_at {
            trimmed_at = dropped;
            // SAFETY: malloc_trim only releases free memory of the allocator in use (glibc's).
            let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
        }
    }
}

/// The admin token kept in the data dir, created (random, mode 0600) on first use.
pub fn load_or_create_token(data_dir: &Path) -> std::io::Result<String> {
    if let Some(token) = read_token(data_dir)? {
        return Ok(token);
    }
    std::fs::create_dir_all(data_dir)?;
    let token = crate::names::new_unique_name();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(data_dir.join(TOKEN_FILE))?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    Ok(token)
}

/// The admin token kept in the data dir, if there is one.
pub fn read_token(data_dir: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(data_dir.join(TOKEN_FILE)) {
        Ok(t) => Ok(Some(t.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

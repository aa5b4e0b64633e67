//! Assembling a host from its data dir: the database, the commit thread, the deployed
//! namespaces, the live objects and the routes; and the admin token kept beside them.

use crate::alarms::Alarms;
use crate::cluster::Cluster;
use crate::config::HostConfig;
use crate::cpu_share::{CpuShare, DEMOTION};
use crate::http::{self, AppState, BodyBudget, ClientAddress};
use crate::memory::MemoryBudget;
use crate::objects::{Durability, LifecycleConfig, Objects};
use crate::registry::Registry;
use crate::runtime::{IdleLimits, Runtime};
use crate::sockets::{Backlog, Sockets};
use crate::storage::{Committer, Db, DbError, ObjectStore, Storage};
use crate::workers::Workers;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
    #[error("starting the background threads: {0}")]
    Background(std::io::Error),
    #[error(
        "--max-live-objects {wanted} needs more memory mappings than the kernel allows \
         (vm.max_map_count {map_limit}: room for {fits} live instances); lower it, or raise \
         the kernel's limit, e.g. `sysctl vm.max_map_count={needed}`"
    )]
    TooManyInstances {
        wanted: usize,
        map_limit: u64,
        fits: usize,
        needed: u64,
    },
}

/// A running host's parts.
pub struct Host {
    pub router: axum::Router,
    /// `/metrics` alone, for `--metrics-listen`.
    pub metrics_router: axum::Router,
    pub objects: Objects,
    pub registry: Arc<Registry>,
    pub sockets: Arc<Sockets>,
    /// The cluster this host is a node of, if any: it leaves it when stopped cleanly.
    pub cluster: Option<Arc<Cluster>>,
}

/// The database's file in the data dir.
pub const DATABASE_FILE: &str = "dohost.redb";

impl Host {
    /// Opens the data dir, brings back every deployed namespace and starts the alarm loop.
    /// Blocking; call it within a tokio runtime (e.g. from `spawn_blocking`).
    pub fn start(config: &HostConfig) -> Result<Host, StartError> {
        check_map_limit(config.max_live_objects)?;
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir).map_err(|e| StartError::DataDir(dir.clone(), e))?;
        let db = Db::open(&dir.join(DATABASE_FILE), config.storage_cache)?;
        match &config.cluster {
            None => Host::start_with_db(config, db),
            Some(cluster) => {
                // Objects' state is the cluster's; the data dir keeps this node's registry.
                let cluster = Cluster::open(cluster.clone())?;
                let store: Arc<dyn ObjectStore> = cluster.store().clone();
                let storage = Storage::new(Arc::new(db), store)?;
                Host::start_with_storage(config, storage, Some(cluster))
            }
        }
    }

    /// Starts like [`Host::start`] on `db` rather than the data dir's database: for tests on a
    /// [`SimulatedDisk`](crate::storage::SimulatedDisk). The data dir holds the rest.
    pub fn start_with_db(config: &HostConfig, db: Db) -> Result<Host, StartError> {
        Host::start_with_storage(config, Storage::local(db)?, None)
    }

    /// Starts on `storage` (this machine's database, and the store of objects' state), as a node
    /// of `cluster` if given.
    fn start_with_storage(
        config: &HostConfig,
        storage: Storage,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Host, StartError> {
        check_map_limit(config.max_live_objects)?;
        let memory = Arc::new(MemoryBudget::new(config.max_memory));
        let runtime = Arc::new(
            Runtime::new(config.event, config.max_live_objects, memory)
                .map_err(|e| StartError::Engine(format!("{e:#}")))?,
        );
        let alarms = Arc::new(Alarms::default());
        if cluster.is_none() {
            // A cluster's node schedules each shard's alarms as it takes the shard.
            alarms.load(storage.local.all_alarms()?);
        }
        let sink = alarms.clone();
        let (committer, _thread) = Committer::start(
            storage.objects.clone(),
            Box::new(move |id, alarm| sink.changed(id, alarm)),
        )
        .map_err(StartError::Thread)?;
        let registry = Arc::new(Registry::load(
            runtime.clone(),
            storage.local.clone(),
            config.compile_cache.clone(),
        )?);
        let backlog = Backlog::new(config.max_ws_backlog, config.max_ws_backlog_total);
        let sockets = Arc::new(Sockets::new(config.max_ws_message, backlog));
        let cpu_share = CpuShare::start(DEMOTION).map_err(StartError::Background)?;
        let objects = Objects::new(
            runtime,
            cpu_share,
            sockets.clone(),
            registry.clone(),
            Durability {
                storage: storage.clone(),
                committer,
                cluster: cluster
                    .clone()
                    .map(|c| c as Arc<dyn crate::objects::Placement>),
            },
            LifecycleConfig {
                idle_timeout: config.idle_timeout,
                max_live_objects: config.max_live_objects,
                queue: config.queue,
                storage: config.storage,
            },
        );
        let runtime = tokio::runtime::Handle::current();
        runtime.spawn(alarms.clone().run(objects.clone()));
        let state = AppState {
            workers: Workers::start(
                objects.clone(),
                config.idle_timeout,
                IdleLimits::share_of(config.max_live_objects, config.max_memory),
            ),
            bodies: BodyBudget::new(config.max_request_bodies_total),
            objects: objects.clone(),
            sockets: sockets.clone(),
            alarms,
            registry: registry.clone(),
            admin_token: config.admin_token.as_str().into(),
            max_request_body: config.max_request_body,
            max_component_bytes: config.max_component_bytes,
            body_timeout: config.body_timeout,
            storage,
            cluster: cluster.clone(),
            data_dir: config.data_dir.clone(),
            backups: Arc::new(tokio::sync::Semaphore::new(1)),
        };
        if let Some(cluster) = &cluster {
            // The deployments first, then the shards: a node serves only code it has.
            let (applying, local) = (state.clone(), state.storage.local.clone());
            cluster.follow_deploys(
                Box::new(move |change| http::apply_change(&applying, change)),
                local,
            )?;
            cluster.start(objects.clone(), state.alarms.clone())?;
        }
        Ok(Host {
            metrics_router: http::metrics_router(state.clone()),
            router: http::router(state),
            objects,
            registry,
            sockets,
            cluster,
        })
    }
}

/// Refuses a live-instance cap whose mappings the kernel would not allow: the host would abort
/// when it reached it.
fn check_map_limit(wanted: usize) -> Result<(), StartError> {
    let Some(map_limit) = crate::memory::map_limit() else {
        return Ok(());
    };
    let fits = crate::memory::max_instances_for_maps(map_limit);
    if wanted <= fits {
        return Ok(());
    }
    let needed = crate::memory::maps_needed(wanted);
    Err(StartError::TooManyInstances {
        wanted,
        map_limit,
        fits,
        needed,
    })
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

/// How long a write to a client may wait for the client to take any of it before the connection
/// is closed: a response, a stream or a WebSocket whose client stopped reading.
pub const WRITE_STALL: Duration = Duration::from_secs(60);

/// At shutdown, the longest the host goes on accepting connections that were already waiting.
const ACCEPT_QUEUE_DRAIN: Duration = Duration::from_millis(100);

/// How long open connections are still served once the host stops listening, before each is
/// closed when its request in progress (if any) is answered.
const SHUTDOWN_LINGER: Duration = Duration::from_millis(250);

/// How many connections the kernel may hold complete but not yet accepted (it caps this at
/// `net.core.somaxconn`). tokio's `bind` asks for 1,024: a burst of more new connections than that
/// overflowed it, and the kernel reset some of them after their request was sent.
const LISTEN_BACKLOG: u32 = 65_535;

/// A listener on `addr` (host:port, the first address it resolves to) with a deep accept queue.
pub async fn listen(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    let resolved = tokio::net::lookup_host(addr).await?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "resolves to no address")
    })?;
    let socket = if resolved.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(resolved)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves `router` on `listener` over HTTP/1.1 until `shutdown` completes, then lets every
/// connection finish the request it is on (upgraded WebSockets are not its to wait for).
///
/// This is hyper driven directly rather than `axum::serve`, which gives hyper no timer, so hyper's
/// header-read timeout would never fire: a client sending half a request head and stalling would
/// hold its connection and a file descriptor for ever. hyper answers what it cannot parse with
/// the bare status (400, 414, 431) and closes; a head not complete within
/// `header_timeout` ([`HostConfig::header_timeout`]) closes the connection without an answer.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    // Dropped at shutdown: every connection's `changed()` then returns.
    let (stop, stopped) = tokio::sync::watch::channel(());
    // Each connection holds a sender; `recv` returns `None` once the last one has finished.
    let (alive, mut finished) = tokio::sync::mpsc::channel::<()>(1);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    tokio::pin!(shutdown);
    // Set once the shutdown future is done: until when connections already waiting are taken.
    let mut draining: Option<tokio::time::Instant> = None;
    loop {
        if draining.is_some_and(|until| tokio::time::Instant::now() >= until) {
            break;
        }
        let (tcp, peer) = tokio::select! {
            // In this order: the shutdown is seen under a flood of connections, and while
            // draining every connection waiting is taken before the end.
            biased;
            () = &mut shutdown, if draining.is_none() => {
                draining = Some(tokio::time::Instant::now() + ACCEPT_QUEUE_DRAIN);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) if draining.is_some() => break,
                Err(e) => {
                    // Out of file descriptors or memory: wait for some to be freed rather than
                    // spin. Any other error (a connection reset before it was accepted) is that
                    // client's alone.
                    let exhausted = [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM];
                    if e.raw_os_error().is_some_and(|code| exhausted.contains(&code)) {
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    continue;
                }
            },
            // Closing the listener resets the connections the kernel completed but the host did
            // not accept yet, requests perhaps sent: those waiting are accepted first.
            () = std::future::ready(()), if draining.is_some() => break,
        };
        // Every request learns its client's address (a worker may rate-limit by it).
        let service = router
            .clone()
            .layer(axum::Extension(ClientAddress(peer.ip())));
        // hyper has no write timeout: a client that stops reading a large or streamed response
        // would hold its connection for ever.
        let mut io = tokio_io_timeout::TimeoutStream::new(tcp);
        io.set_write_timeout(Some(WRITE_STALL));
        let connection = builder
            .serve_connection(
                TokioIo::new(Box::pin(io)),
                TowerToHyperService::new(service),
            )
            .with_upgrades();
        let (mut stopped, alive) = (stopped.clone(), alive.clone());
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped.changed() => {
                    // A request may be on its way on an idle connection: serve it rather than
                    // close the connection under it, then shut down.
                    let linger = tokio::time::sleep(SHUTDOWN_LINGER);
                    tokio::select! {
                        _ = connection.as_mut() => {}
                        () = linger => {
                            connection.as_mut().graceful_shutdown();
                            let _ = connection.await;
                        }
                    }
                }
            }
            drop(alive);
        });
    }
    drop(listener);
    drop(stop);
    drop(alive);
    let _ = finished.recv().await;
}

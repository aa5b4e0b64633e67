//! The `dohost` command: serve objects, deploy components and apps, set secrets, list
//! namespaces.

// The commands that are more than a call to the admin API, each in a module of its own.
mod cli;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use dohost::cluster::ClusterConfig;
use dohost::config::{self, EventLimits, HostConfig, Seconds};
use dohost::manifest::Manifest;
use dohost::registry::AppSpec;
use dohost::routing::encode_segment;
use dohost::server::{self, Host};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Parser)]
#[command(version, about = "A self-hosted Durable Objects host")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every deployed namespace over HTTP.
    Serve(Box<ServeArgs>),
    /// Deploy an app from its manifest (dohost.toml), or one component as a namespace, on a
    /// running host.
    Deploy(DeployArgs),
    /// Manage an app's secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// List the deployed namespaces of a running host.
    Namespaces(NamespacesArgs),
    /// Save a consistent snapshot of everything a running host keeps (objects' storage, alarms,
    /// deployed code, apps and their secrets) to FILE, while it serves.
    Backup(BackupArgs),
    /// Bring a host back from a backup: puts FILE in place as the database of a new data dir.
    /// Start `dohost serve --data DIR` on it afterwards.
    Restore(RestoreArgs),
    /// Watch a running host live: requests answered, guests' log lines, failed events, alarms.
    Tail(TailArgs),
    /// Develop a guest crate or an app: build it, serve it on a host of its own, and build and
    /// deploy it again on every saved change, printing each request and log line.
    Dev(cli::dev::DevArgs),
    /// List a namespace's objects: name, size, keys, last write, alarm, awake or asleep.
    Objects(ObjectsArgs),
    /// Read or write one object's storage, between its events.
    Storage(StorageArgs),
    /// Write every entry of a namespace's objects (or one object's) to standard output, one JSON
    /// line each: `{"object", "key", "value"}`, the value in base64.
    Export(ExportArgs),
    /// Write the entries of an export (standard input) into a namespace's objects.
    Import(ImportArgs),
    /// A cluster's nodes, their leases and how many shards each owns, as any node's database
    /// sees them (`dohost serve --cluster`).
    #[command(subcommand)]
    Cluster(ClusterCommand),
}

#[derive(Args)]
struct ObjectsArgs {
    namespace: String,
    /// `name`, `size` (largest first) or `last-write` (latest first).
    #[arg(long, value_enum, default_value_t = Sort::Name)]
    sort: Sort,
    /// Most objects shown.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// By name: start after this one (the `next` a page ends with).
    #[arg(long)]
    after: Option<String>,
    /// `text`, a table, or `json`, as the admin API answers.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    format: LogFormat,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Sort {
    Name,
    Size,
    LastWrite,
}

#[derive(Args)]
struct StorageArgs {
    namespace: String,
    /// The object's name.
    object: String,
    #[command(subcommand)]
    op: StorageCommand,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum StorageCommand {
    /// The object's keys and values, ascending.
    List {
        #[arg(long)]
        prefix: Option<String>,
    },
    /// One value, as it is stored (bytes to standard output).
    Get {
        key: String,
    },
    /// Store VALUE under KEY, or standard input without VALUE.
    Put {
        key: String,
        value: Option<String>,
    },
    Delete {
        key: String,
    },
}

#[derive(Args)]
struct ExportArgs {
    namespace: String,
    /// Only this object.
    #[arg(long)]
    object: Option<String>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct ImportArgs {
    namespace: String,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct TailArgs {
    /// Only this namespace (or app, for its worker's requests).
    namespace: Option<String>,
    /// Only this object.
    #[arg(long)]
    object: Option<String>,
    /// `text`, one readable line each, or `json`, one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    format: LogFormat,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct NamespacesArgs {
    #[command(subcommand)]
    op: Option<NamespacesCommand>,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Show the nodes, their leases and shard counts.
    Status(AdminArgs),
}

#[derive(Subcommand)]
enum NamespacesCommand {
    /// Delete a lone namespace: its code, and every object's storage and alarm. It cannot be
    /// undone: take a backup first.
    Delete {
        name: String,
        /// Really delete it.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Args)]
struct BackupArgs {
    /// Where to write the backup; it is written beside it first, and moved there once complete
    /// and checked.
    file: PathBuf,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Args)]
struct RestoreArgs {
    /// A file written by `dohost backup`.
    file: PathBuf,
    /// The data dir to restore into: new, or without a database.
    #[arg(long)]
    data: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = config::DEFAULT_LISTEN)]
    listen: String,
    /// Where everything durable lives: the database, compiled components, the admin token.
    #[arg(long, default_value = config::DEFAULT_DATA_DIR)]
    data: PathBuf,
    /// Also serve the Prometheus metrics at `/metrics` on this address, without the admin token
    /// (they are always at `/_admin/metrics` with it).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// The host's own log lines on standard error: `text`, or `json` (one object per line, for
    /// a log collector).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// The admin API's bearer token; without it one is generated and kept in the data dir.
    #[arg(long, env = "DOHOST_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Where compiled components are kept, by the SHA-256 of their bytes [default: DATA/cache].
    /// Hosts may share one, so that a component is compiled once for all of them.
    #[arg(long, value_name = "DIR")]
    compile_cache: Option<PathBuf>,
    /// Seconds an instance may sit idle before it is dropped (its storage stays).
    #[arg(long, default_value_t = config::DEFAULT_IDLE_TIMEOUT)]
    idle_timeout: Seconds,
    /// Most live instances; past it the least recently used idle ones are dropped. Default
    /// 10,000, or fewer where the kernel's limit on memory mappings (vm.max_map_count) would not
    /// hold them; a value it would not hold is refused.
    #[arg(long)]
    max_live_objects: Option<usize>,
    /// Most MiB of linear memory all live instances may hold together; past it the least
    /// recently used idle ones are dropped. Default half the machine's memory.
    #[arg(long)]
    max_memory: Option<u64>,
    /// CPU budget of one event, in milliseconds of guest execution (10 million instructions per
    /// millisecond).
    #[arg(long, default_value_t = config::DEFAULT_CPU_LIMIT_MS)]
    cpu_limit: u64,
    /// Wall-clock seconds one event may take, time inside host calls included; past it the event
    /// fails with `time_limit_exceeded`.
    #[arg(long, default_value_t = config::DEFAULT_EVENT_TIMEOUT)]
    event_timeout: Seconds,
    /// Largest linear memory of one instance, in MiB.
    #[arg(long, default_value_t = config::DEFAULT_MEMORY_LIMIT_MIB)]
    memory_limit: u64,
    /// Most bytes (keys plus values) one object may store.
    #[arg(long, default_value_t = config::DEFAULT_MAX_OBJECT_STORAGE)]
    max_object_storage: u64,
    /// Most bytes all objects of one namespace may store together; past it their writes that
    /// grow are refused with `limit-exceeded`. Default a quarter of the data dir's filesystem.
    #[arg(long, value_name = "BYTES")]
    max_namespace_storage: Option<u64>,
    /// MiB of the database's page cache, which keeps the pages last written and read.
    #[arg(long, default_value_t = config::DEFAULT_STORAGE_CACHE_MIB)]
    storage_cache: u64,
    /// Largest request body delivered to an object, in bytes.
    #[arg(long, default_value_t = config::DEFAULT_MAX_REQUEST_BODY)]
    max_request_body: usize,
    /// Largest response body an object may return, in bytes; a larger one fails the event with
    /// `response_too_large`.
    #[arg(long, default_value_t = config::DEFAULT_MAX_RESPONSE_BODY)]
    max_response_body: usize,
    /// Largest incoming WebSocket message, in bytes; a larger one closes the socket with 1009.
    #[arg(long, default_value_t = config::DEFAULT_MAX_WS_MESSAGE)]
    max_ws_message: usize,
    /// Most bytes sent to one WebSocket and not yet written to its client; past it the client is
    /// too slow and the socket is closed with 1008.
    #[arg(long, default_value_t = config::DEFAULT_MAX_WS_BACKLOG)]
    max_ws_backlog: usize,
    /// Most such bytes for all sockets together; past it the sockets with the most waiting are
    /// closed first. Default a sixteenth of the machine's memory.
    #[arg(long)]
    max_ws_backlog_total: Option<usize>,
    /// Most bytes of request bodies held for all requests together; past it no further body is
    /// read until some are answered, and one that cannot start within the body timeout is
    /// answered 503. Default a sixteenth of the machine's memory.
    #[arg(long)]
    max_request_bodies_total: Option<usize>,
    /// Most events one object may have waiting or running; past it a request to it is answered
    /// 503 `overloaded` and a WebSocket message closes its socket with 1013.
    #[arg(long, default_value_t = config::DEFAULT_MAX_OBJECT_QUEUE)]
    max_object_queue: usize,
    /// Most bytes of requests and messages waiting for one object, likewise.
    #[arg(long, default_value_t = config::DEFAULT_MAX_OBJECT_QUEUE_BYTES)]
    max_object_queue_bytes: usize,
    /// Seconds a client may take to send a request's head; past it the connection is closed.
    /// An idle keep-alive connection is closed after this long too.
    #[arg(long, default_value_t = config::DEFAULT_HEADER_TIMEOUT)]
    header_timeout: Seconds,
    /// Seconds a client may take to send a request's body, after its head; past it the answer
    /// is 408 `body_timeout`. For a deploy upload, seconds it may go without sending more.
    #[arg(long, default_value_t = config::DEFAULT_BODY_TIMEOUT)]
    body_timeout: Seconds,
    /// Run as a node of the cluster whose state is in this PostgreSQL database
    /// (`postgres://user@host:port/db`): objects' storage, their owners and the nodes' leases live
    /// there; the data dir keeps this node's copy of the deployments.
    #[arg(
        long,
        env = "DOHOST_CLUSTER",
        hide_env_values = true,
        requires = "cluster_secret"
    )]
    cluster: Option<String>,
    /// This node's name, unique in the cluster (default: the listening address).
    #[arg(long, requires = "cluster")]
    node_name: Option<String>,
    /// The URL the other nodes reach this one at (default: http:// and the listening address).
    #[arg(long, requires = "cluster")]
    advertise: Option<String>,
    /// The secret every node of the cluster shares: node-to-node requests carry it.
    #[arg(
        long,
        env = "DOHOST_CLUSTER_SECRET",
        hide_env_values = true,
        requires = "cluster"
    )]
    cluster_secret: Option<String>,
    /// Seconds a node's heartbeat holds its shards: a node silent for longer loses them to the
    /// others.
    #[arg(long, default_value_t = config::DEFAULT_LEASE, requires = "cluster")]
    lease: Seconds,
}

#[derive(Args)]
struct AdminArgs {
    /// The running host's address.
    #[arg(long, global = true, default_value = config::DEFAULT_URL)]
    url: String,
    /// The admin token; else DOHOST_ADMIN_TOKEN; else the token file in --data.
    #[arg(
        long,
        global = true,
        env = "DOHOST_ADMIN_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The host's data dir, to find its token file.
    #[arg(long, global = true, default_value = config::DEFAULT_DATA_DIR)]
    data: PathBuf,
}

#[derive(Args)]
struct DeployArgs {
    /// A component (.wasm built for wasm32-wasip2) to deploy alone, as the namespace `--name`.
    /// Without it, the app of the manifest (`--config`) is deployed.
    #[arg(requires = "name")]
    file: Option<PathBuf>,
    /// The namespace of a lone component: [a-z0-9-]{1,63}. Its objects are then at
    /// /{name}/{object-name}/.
    #[arg(long)]
    name: Option<String>,
    /// The app manifest.
    #[arg(long, default_value = "dohost.toml", conflicts_with = "file")]
    config: PathBuf,
    #[command(flatten)]
    admin: AdminArgs,
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Set a secret of the manifest's app to the value read from standard input (a trailing
    /// newline dropped). The host keeps it in its data dir and never shows it back.
    Put(SecretArgs),
}

#[derive(Args)]
struct SecretArgs {
    /// The secret's name, as guests read it: a letter or _, then letters, digits or _.
    name: String,
    /// The app manifest, for the app's name.
    #[arg(long, default_value = "dohost.toml")]
    config: PathBuf,
    #[command(flatten)]
    admin: AdminArgs,
}

/// jemalloc rather than glibc's malloc: it keeps size classes apart, so the pages of freed
/// buffers go back whole instead of staying resident around a few long-lived records (README,
/// *Hibernation*, has the figure). Set here, not in the library, so that its other users (the fuzz
/// targets under a sanitizer) keep theirs.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: one background thread returns freed pages about a second after they are
/// freed (the default is ten), so the host shrinks back soon after objects go to sleep.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

fn main() -> Result<()> {
    let cli = Cli::parse();
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr);
    match &cli.command {
        Command::Serve(args) if args.log_format == LogFormat::Json => log.json().init(),
        _ => log.init(),
    }
    // Before the runtime's threads exist: they inherit it.
    dohost::scheduling::use_short_slices();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(*args)),
        Command::Deploy(args) => runtime.block_on(deploy(args)),
        Command::Secret(SecretCommand::Put(args)) => runtime.block_on(put_secret(args)),
        Command::Namespaces(args) => runtime.block_on(namespaces(args)),
        Command::Backup(args) => runtime.block_on(backup(args)),
        Command::Restore(args) => restore(&args),
        Command::Tail(args) => runtime.block_on(tail(args)),
        Command::Dev(args) => runtime.block_on(cli::dev::run(args)),
        Command::Objects(args) => runtime.block_on(objects(args)),
        Command::Storage(args) => runtime.block_on(storage(args)),
        Command::Export(args) => runtime.block_on(export(args)),
        Command::Import(args) => runtime.block_on(import(args)),
        Command::Cluster(ClusterCommand::Status(args)) => runtime.block_on(cluster_status(args)),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let token = match args.admin_token {
        Some(t) if !t.is_empty() => t,
        _ => server::load_or_create_token(&args.data)
            .with_context(|| format!("admin token in {}", args.data.display()))?,
    };
    let mut config = HostConfig::new(args.data.clone(), token);
    config.idle_timeout = args.idle_timeout.0;
    config.max_live_objects = args.max_live_objects.unwrap_or(config.max_live_objects);
    if let Some(mib) = args.max_memory {
        config.max_memory = usize::try_from(mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
    }
    config.max_request_body = args.max_request_body;
    config.max_ws_message = args.max_ws_message;
    config.max_ws_backlog = args.max_ws_backlog;
    config.max_ws_backlog_total = args
        .max_ws_backlog_total
        .unwrap_or(config.max_ws_backlog_total);
    config.max_request_bodies_total = args
        .max_request_bodies_total
        .unwrap_or(config.max_request_bodies_total);
    config.queue.events = args.max_object_queue;
    config.queue.bytes = args.max_object_queue_bytes;
    config.header_timeout = args.header_timeout.0;
    config.body_timeout = args.body_timeout.0;
    config.event = EventLimits::new(args.cpu_limit, args.memory_limit);
    config.event.timeout = args.event_timeout.0;
    config.event.max_response_body = args.max_response_body;
    config.storage.max_object_bytes = args.max_object_storage;
    if let Some(bytes) = args.max_namespace_storage {
        config.storage.max_namespace_bytes = bytes;
    }
    config.storage_cache = config::mib_to_bytes(args.storage_cache);
    if let Some(dir) = args.compile_cache {
        config.compile_cache = dir;
    }
    let header_timeout = config.header_timeout;
    // Listening first: a node advertises the address it got.
    let listener = dohost::server::listen(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if let Some(url) = args.cluster {
        let secret = args.cluster_secret.unwrap_or_default();
        if secret.len() < 16 {
            anyhow::bail!("--cluster-secret must be at least 16 characters");
        }
        config.cluster = Some(ClusterConfig {
            url,
            node: args.node_name.unwrap_or_else(|| addr.to_string()),
            advertise: args.advertise.unwrap_or_else(|| format!("http://{addr}")),
            secret,
            lease: args.lease.0,
        });
    }
    let host = tokio::task::spawn_blocking(move || Host::start(&config)).await??;
    let data = std::fs::canonicalize(&args.data).unwrap_or(args.data);
    tracing::info!(
        "dohost listening on http://{addr}, data dir {}, {} namespace(s)",
        data.display(),
        host.registry.list().len()
    );
    if let Some(listen) = &args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening for metrics on {listen}"))?;
        let at = listener.local_addr()?;
        tracing::info!("metrics at http://{at}/metrics");
        // Scripts and tests that ask for port 0 learn the port from this line.
        println!("metrics on http://{at}/metrics");
        let router = host.metrics_router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await });
    }
    // A machine-readable line for scripts and tests that start the host on port 0.
    println!("listening on http://{addr}");
    let sockets = host.sockets.clone();
    let (cluster, objects) = (host.cluster.clone(), host.objects.clone());
    server::serve(listener, host.router, header_timeout, async move {
        shutdown_signal().await;
        // A node hands its shards over at once, rather than after its lease, then serves on for
        // half a lease (forwarding to the new owners, each answer closing its connection) so
        // that its clients move away before it stops listening.
        if let Some(cluster) = cluster {
            cluster.leave(&objects).await;
            tokio::time::sleep(cluster.config().lease / 2).await;
        }
        // Upgraded connections are not the server's to drain: close them, 1001 "going away",
        // and give the writers a moment to send the frames.
        sockets.close_all(1001, "host shutting down");
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    Ok(())
}

/// Ctrl-C or SIGTERM: stop accepting connections and let requests in flight finish.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

fn admin_token(args: &AdminArgs) -> Result<String> {
    if let Some(t) = &args.token {
        return Ok(t.clone());
    }
    server::read_token(&args.data)?.with_context(|| {
        format!(
            "no admin token: pass --token, set DOHOST_ADMIN_TOKEN, or point --data at the host's data dir (no {} in {})",
            server::TOKEN_FILE,
            args.data.display()
        )
    })
}

async fn admin_call(
    args: &AdminArgs,
    request: impl FnOnce(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> Result<serde_json::Value> {
    let response = admin_send(args, request).await?;
    Ok(response
        .json()
        .await
        .unwrap_or_else(|e| serde_json::json!({ "error": format!("unreadable answer: {e}") })))
}

/// Sends an admin request with the token; the response if it succeeded (for a body to stream),
/// else the host's error.
async fn admin_send(
    args: &AdminArgs,
    request: impl FnOnce(&reqwest::Client, &str) -> reqwest::RequestBuilder,
) -> Result<reqwest::Response> {
    let token = admin_token(args)?;
    let url = args.url.trim_end_matches('/');
    let client = reqwest::Client::new();
    let response = request(&client, url)
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the host at {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        bail!(
            "{status}: {}",
            body["error"].as_str().unwrap_or("no message")
        );
    }
    Ok(response)
}

async fn backup(args: BackupArgs) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let mut response =
        admin_send(&args.admin, |c, url| c.get(format!("{url}/_admin/backup"))).await?;
    let mut partial = args.file.clone().into_os_string();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut out = tokio::fs::File::create(&partial)
        .await
        .with_context(|| format!("creating {}", partial.display()))?;
    while let Some(chunk) = response.chunk().await.context("receiving the backup")? {
        out.write_all(&chunk).await?;
    }
    out.sync_all().await?;
    drop(out);
    let checked = partial.clone();
    let size = tokio::task::spawn_blocking(move || dohost::storage::check_backup(&checked))
        .await?
        .with_context(|| format!("the backup received in {} does not open", partial.display()))?;
    std::fs::rename(&partial, &args.file)?;
    println!(
        "backed up {} entries ({} bytes of keys and values) to {}",
        size.entries,
        size.bytes,
        args.file.display()
    );
    Ok(())
}

async fn tail(args: TailArgs) -> Result<()> {
    let mut query = Vec::new();
    if let Some(namespace) = &args.namespace {
        query.push(("namespace", namespace.as_str()));
    }
    if let Some(object) = &args.object {
        query.push(("object", object.as_str()));
    }
    let mut response = admin_send(&args.admin, |c, url| {
        c.get(format!("{url}/_admin/tail")).query(&query)
    })
    .await?;
    use std::io::Write;
    let mut pending = Vec::new();
    while let Some(chunk) = response.chunk().await.context("the tail ended")? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]).into_owned();
            let shown = match args.format {
                LogFormat::Json => line,
                LogFormat::Text => tail_text(&line),
            };
            let mut out = std::io::stdout().lock();
            writeln!(out, "{shown}")?;
            out.flush()?;
        }
    }
    Ok(())
}

/// A tail line, readable: `HH:MM:SS.mmm  kind  namespace/object  what happened`.
fn tail_text(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_owned();
    };
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let ms = v["ts"].as_u64().unwrap_or(0);
    let day = ms % 86_400_000;
    let time = format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3_600_000,
        day / 60_000 % 60,
        day / 1000 % 60,
        day % 1000
    );
    let who = match s("object").as_str() {
        "" => s("namespace"),
        object => format!("{}/{object}", s("namespace")),
    };
    let what = match s("type").as_str() {
        "request" => format!(
            "{} {} {} {:.1} ms {}",
            s("method"),
            s("path"),
            v["status"],
            v["ms"].as_f64().unwrap_or(0.0),
            s("code")
        ),
        "log" => format!("{} {}", s("level"), s("message")),
        "failure" => format!("{} {}", s("code"), s("error")),
        "alarm" => format!("{} (due {})", s("outcome"), v["due"]),
        "lagged" => format!("{} lines missed: the tail read too slowly", v["missed"]),
        other => other.to_owned(),
    };
    format!("{time}  {:<7}  {who}  {}", s("type"), what.trim_end())
}

/// The admin API's address of an object's storage.
fn storage_url(url: &str, namespace: &str, object: &str) -> String {
    format!(
        "{url}/_admin/namespaces/{}/objects/{}/storage",
        encode_segment(namespace),
        encode_segment(object)
    )
}

async fn objects(args: ObjectsArgs) -> Result<()> {
    let sort = match args.sort {
        Sort::Name => "name",
        Sort::Size => "size",
        Sort::LastWrite => "last_write",
    };
    let mut query = vec![("sort", sort.to_owned()), ("limit", args.limit.to_string())];
    if let Some(after) = &args.after {
        query.push(("after", after.clone()));
    }
    let namespace = encode_segment(&args.namespace);
    let body = admin_call(&args.admin, |c, url| {
        c.get(format!("{url}/_admin/namespaces/{namespace}/objects"))
            .query(&query)
    })
    .await?;
    if args.format == LogFormat::Json {
        println!("{body}");
        return Ok(());
    }
    let mut table = comfy_table::Table::new();
    table.load_style(comfy_table::presets::NOTHING);
    table.set_header([
        "name",
        "bytes",
        "keys",
        "last write",
        "alarm",
        "awake",
        "id",
    ]);
    let time = |v: &serde_json::Value| v.as_u64().map_or("-".to_owned(), format_time);
    for o in body["objects"].as_array().cloned().unwrap_or_default() {
        table.add_row([
            o["name"].as_str().unwrap_or_default().to_owned(),
            o["bytes"].to_string(),
            o["keys"].to_string(),
            time(&o["last_write_ms"]),
            time(&o["alarm"]),
            if o["awake"] == true {
                "awake"
            } else {
                "asleep"
            }
            .to_owned(),
            o["id"].as_str().unwrap_or_default()[..16].to_owned(),
        ]);
    }
    println!("{table}");
    if let Some(next) = body["next"].as_str() {
        println!("more: --after {next:?}");
    }
    Ok(())
}

async fn storage(args: StorageArgs) -> Result<()> {
    use base64::Engine;
    let base = |url: &str| storage_url(url, &args.namespace, &args.object);
    match &args.op {
        StorageCommand::List { prefix } => {
            let mut after: Option<String> = None;
            loop {
                let mut query = vec![("limit", "1000".to_owned())];
                if let Some(p) = prefix {
                    query.push(("prefix", p.clone()));
                }
                if let Some(a) = &after {
                    query.push(("start_after", a.clone()));
                }
                let body = admin_call(&args.admin, |c, url| c.get(base(url)).query(&query)).await?;
                for e in body["entries"].as_array().cloned().unwrap_or_default() {
                    let shown = match e["text"].as_str() {
                        Some(text) => text.to_owned(),
                        None => format!("(binary, base64) {}", e["value"].as_str().unwrap_or("")),
                    };
                    println!("{}\t{shown}", e["key"].as_str().unwrap_or_default());
                }
                match body["next"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => return Ok(()),
                }
            }
        }
        StorageCommand::Get { key } => {
            let body = admin_call(&args.admin, |c, url| {
                c.get(format!("{}/{}", base(url), encode_segment(key)))
            })
            .await?;
            let value = base64::engine::general_purpose::STANDARD
                .decode(body["value"].as_str().unwrap_or_default())?;
            use std::io::Write;
            std::io::stdout().write_all(&value)?;
        }
        StorageCommand::Put { key, value } => {
            let value = match value {
                Some(v) => v.clone().into_bytes(),
                None => {
                    let mut v = Vec::new();
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)?;
                    v
                }
            };
            admin_send(&args.admin, |c, url| {
                c.put(format!("{}/{}", base(url), encode_segment(key)))
                    .body(value)
            })
            .await?;
        }
        StorageCommand::Delete { key } => {
            let body = admin_call(&args.admin, |c, url| {
                c.delete(format!("{}/{}", base(url), encode_segment(key)))
            })
            .await?;
            if body["deleted"] != true {
                println!("no such key");
            }
        }
    }
    Ok(())
}

async fn export(args: ExportArgs) -> Result<()> {
    use std::io::Write;
    let names = match &args.object {
        Some(object) => vec![object.clone()],
        None => {
            let mut names = Vec::new();
            let namespace = encode_segment(&args.namespace);
            let mut after: Option<String> = None;
            loop {
                let mut query = vec![("limit", "1000".to_owned())];
                if let Some(a) = &after {
                    query.push(("after", a.clone()));
                }
                let body = admin_call(&args.admin, |c, url| {
                    c.get(format!("{url}/_admin/namespaces/{namespace}/objects"))
                        .query(&query)
                })
                .await?;
                for o in body["objects"].as_array().cloned().unwrap_or_default() {
                    names.push(o["name"].as_str().unwrap_or_default().to_owned());
                }
                match body["next"].as_str() {
                    Some(next) => after = Some(next.to_owned()),
                    None => break names,
                }
            }
        }
    };
    let mut out = std::io::stdout().lock();
    let (mut objects, mut entries) = (0, 0);
    for name in names {
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("limit", "1000".to_owned())];
            if let Some(a) = &after {
                query.push(("start_after", a.clone()));
            }
            let body = admin_call(&args.admin, |c, url| {
                c.get(storage_url(url, &args.namespace, &name))
                    .query(&query)
            })
            .await?;
            for e in body["entries"].as_array().cloned().unwrap_or_default() {
                let line =
                    serde_json::json!({ "object": name, "key": e["key"], "value": e["value"] });
                writeln!(out, "{line}")?;
                entries += 1;
            }
            match body["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        objects += 1;
    }
    out.flush()?;
    eprintln!("exported {entries} entries of {objects} objects");
    Ok(())
}

async fn import(args: ImportArgs) -> Result<()> {
    use std::io::BufRead;
    // One object's entries at a time, in batches of a guest's put-many.
    let mut batch: Vec<serde_json::Value> = Vec::new();
    let mut object: Option<String> = None;
    let mut imported = 0;
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: serde_json::Value =
            serde_json::from_str(&line).with_context(|| format!("line {} is not JSON", n + 1))?;
        let (Some(name), Some(key), Some(value)) = (
            entry["object"].as_str(),
            entry["key"].as_str(),
            entry["value"].as_str(),
        ) else {
            bail!("line {} lacks object, key or value: {line}", n + 1);
        };
        if object.as_deref() != Some(name) || batch.len() == 128 {
            if let Some(previous) = object.take() {
                imported += batch.len();
                import_batch(&args, &previous, std::mem::take(&mut batch)).await?;
            }
            object = Some(name.to_owned());
        }
        batch.push(serde_json::json!({ "key": key, "value": value }));
    }
    if let Some(last) = object {
        imported += batch.len();
        import_batch(&args, &last, batch).await?;
    }
    eprintln!("imported {imported} entries into {}", args.namespace);
    Ok(())
}

/// Writes one batch of an import into `object`.
async fn import_batch(
    args: &ImportArgs,
    object: &str,
    batch: Vec<serde_json::Value>,
) -> Result<()> {
    let body = serde_json::json!({ "put": batch });
    admin_call(&args.admin, |c, url| {
        c.post(storage_url(url, &args.namespace, object))
            .json(&body)
    })
    .await
    .with_context(|| format!("importing into {object}"))?;
    Ok(())
}

async fn delete_namespace(admin: &AdminArgs, name: &str, yes: bool) -> Result<()> {
    if !yes {
        bail!(
            "this deletes {name}'s code and every one of its objects' storage and alarms, for \
             good: pass --yes to do it (and take a backup first)"
        );
    }
    let body = admin_call(admin, |c, url| {
        c.delete(format!("{url}/_admin/namespaces/{}", encode_segment(name)))
    })
    .await
    .with_context(|| format!("deleting {name}"))?;
    println!(
        "deleted {name} and {} objects' storage",
        body["objects_deleted"]
    );
    Ok(())
}

fn restore(args: &RestoreArgs) -> Result<()> {
    let size = dohost::storage::check_backup(&args.file)
        .with_context(|| format!("{} is not a dohost backup", args.file.display()))?;
    let database = args.data.join(server::DATABASE_FILE);
    if database.exists() {
        bail!(
            "{} already has a database: restore into a new data dir, or move {} away first",
            args.data.display(),
            database.display()
        );
    }
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating {}", args.data.display()))?;
    let partial = database.with_extension("redb.partial");
    std::fs::copy(&args.file, &partial)?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, &database)?;
    println!(
        "restored {} entries ({} bytes of keys and values) into {}; start it with `dohost serve --data {}`",
        size.entries,
        size.bytes,
        args.data.display(),
        args.data.display()
    );
    Ok(())
}

async fn deploy(args: DeployArgs) -> Result<()> {
    let (Some(file), Some(name)) = (&args.file, &args.name) else {
        return deploy_app(&args.config, &args.admin).await;
    };
    deploy_component(&args.admin, file, name).await
}

/// Deploys the component at `file` as the lone namespace `name`.
async fn deploy_component(admin: &AdminArgs, file: &Path, name: &str) -> Result<()> {
    let bytes = read_component(file)?;
    let info = admin_call(admin, |c, url| {
        c.put(format!("{url}/_admin/namespaces/{name}")).body(bytes)
    })
    .await
    .with_context(|| format!("deploying {} as {name}", file.display()))?;
    println!(
        "deployed {} as {name}, version {}",
        file.display(),
        info["version"]
    );
    Ok(())
}

/// Deploys the app of a manifest: every component read here, uploaded in one request, switched
/// all or nothing by the host.
async fn deploy_app(config: &Path, admin: &AdminArgs) -> Result<()> {
    use base64::Engine;
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    let manifest = Manifest::load(config)?;
    let worker = match &manifest.worker {
        Some(w) => Some(b64(read_component(&w.component)?)),
        None => None,
    };
    let mut classes = serde_json::Map::new();
    for class in &manifest.objects {
        let bytes = read_component(&class.component)?;
        classes.insert(class.namespace.clone(), b64(bytes).into());
    }
    let body = serde_json::json!({
        "spec": AppSpec::from(&manifest),
        "worker": worker,
        "classes": classes,
    });
    let name = &manifest.name;
    let info = admin_call(admin, |c, url| {
        c.put(format!("{url}/_admin/apps/{name}")).json(&body)
    })
    .await
    .with_context(|| format!("deploying app {name} from {}", config.display()))?;
    println!(
        "deployed app {name}, version {}: {} class(es){}",
        info["version"],
        manifest.objects.len(),
        if manifest.worker.is_some() {
            " and a worker"
        } else {
            ""
        }
    );
    Ok(())
}

async fn put_secret(args: SecretArgs) -> Result<()> {
    use std::io::Read;
    let manifest = Manifest::load(&args.config)?;
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .context("reading the secret from standard input")?;
    let value = value.strip_suffix('\n').unwrap_or(&value);
    let value = value.strip_suffix('\r').unwrap_or(value).to_owned();
    let (app, name) = (&manifest.name, &args.name);
    admin_call(&args.admin, |c, url| {
        c.put(format!("{url}/_admin/apps/{app}/secrets/{name}"))
            .body(value)
    })
    .await
    .with_context(|| format!("setting secret {name} of app {app}"))?;
    println!("secret {name} of app {app} set");
    Ok(())
}

fn read_component(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

async fn cluster_status(args: AdminArgs) -> Result<()> {
    let body = admin_call(&args, |c, url| c.get(format!("{url}/_admin/cluster"))).await?;
    println!(
        "{:<24} {:<32} {:>5} {:>12} {:>7}",
        "NODE", "ADVERTISES", "LIVE", "LEASE (ms)", "SHARDS"
    );
    for node in body["nodes"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<24} {:<32} {:>5} {:>12} {:>7}",
            node["name"].as_str().unwrap_or(""),
            node["advertise"].as_str().unwrap_or(""),
            if node["live"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            node["lease_left_ms"].as_i64().unwrap_or(0),
            node["shards"].as_u64().unwrap_or(0),
        );
    }
    println!(
        "shards without a live owner: {}; asked: {}",
        body["unowned_shards"].as_u64().unwrap_or(0),
        body["node"].as_str().unwrap_or("")
    );
    Ok(())
}

async fn namespaces(args: NamespacesArgs) -> Result<()> {
    if let Some(NamespacesCommand::Delete { name, yes }) = &args.op {
        return delete_namespace(&args.admin, name, *yes).await;
    }
    let args = args.admin;
    let body = admin_call(&args, |c, url| c.get(format!("{url}/_admin/namespaces"))).await?;
    let list = body["namespaces"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        println!("no namespaces deployed");
        return Ok(());
    }
    println!(
        "{:<32} {:>8}  {:<24}  {:>10}  {:<9}  CLASS",
        "NAMESPACE", "VERSION", "DEPLOYED (UTC)", "BYTES", "INSTANCES"
    );
    for ns in list {
        let at = ns["deployed_at_ms"].as_u64().unwrap_or(0);
        let class = match ns["background_for_ms"].as_u64() {
            Some(ms) => {
                let why = match ns["background_cause"].as_str() {
                    Some("share") => "it ran more than its share of the CPU",
                    _ => "an event hit a limit",
                };
                format!("background ({:.1} s more: {why})", ms as f64 / 1e3)
            }
            None => "foreground".to_owned(),
        };
        // Shared: the world `shared-object`, its objects served from shared instances.
        let instances = if ns["shared_instances"] == true {
            "shared"
        } else {
            "own"
        };
        println!(
            "{:<32} {:>8}  {:<24}  {:>10}  {instances:<9}  {class}",
            ns["namespace"].as_str().unwrap_or("?"),
            ns["version"],
            format_time(at),
            ns["size"]
        );
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) for milliseconds since the epoch.
fn format_time(ms: u64) -> String {
    // RFC 3339 has four-digit years; a later time would make the formatter fail.
    const LAST_MS: u64 = 253_402_300_799_999; // 9999-12-31 23:59:59.999
    if ms > LAST_MS {
        return format!("{ms} ms after 1970");
    }
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    // RFC 3339: `YYYY-MM-DDTHH:MM:SSZ`.
    let rfc = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} {}", &rfc[..10], &rfc[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The README's CLI section shows every flag's default as `[--flag DEFAULT]`, from the same
    /// constants the flags take theirs from.
    #[test]
    fn the_readme_shows_the_flags_defaults() {
        let readme = include_str!("../../README.md");
        let cli = Cli::command();
        let mut checked = 0;
        for command in cli.get_subcommands() {
            for arg in command.get_arguments() {
                let (Some(long), [default]) = (arg.get_long(), arg.get_default_values()) else {
                    continue;
                };
                let shown = format!("[--{long} {}]", default.to_string_lossy());
                assert!(
                    readme.contains(&shown),
                    "the README's CLI section lacks {shown}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 15, "only {checked} defaults found");
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00");
        assert_eq!(format_time(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(format_time(1_700_000_000_999), "2023-11-14 22:13:20");
        assert_eq!(format_time(253_402_300_799_999), "9999-12-31 23:59:59");
        assert_eq!(format_time(u64::MAX), format!("{} ms after 1970", u64::MAX));
    }
}

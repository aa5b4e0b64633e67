//! Deployed namespaces and apps: checking an uploaded component, compiling it, keeping it, and
//! bringing every namespace and app back after a restart. Apps are in `apps.rs`.
//!
//! The uploaded bytes are the source of truth and live in the database; the compiled machine code
//! is only a cache (`<data>/cache/<sha256>.cwasm`), so a restart loads in milliseconds instead of
//! recompiling, and a cache written by another wasmtime version is simply rebuilt.

mod apps;

pub use apps::{
    App, AppError, AppInfo, AppSpec, AppUpload, ClassSpec, MAX_CLASSES, MAX_SECRET_BYTES,
};

use crate::clock::now_ms;
use crate::env::Env;
use crate::names::{self, NameError};
use crate::runtime::{Pre, Role, Runtime};
use crate::storage::{COMPONENTS, DEPLOYMENTS, Db, DbError};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use wasmtime::component::Component;

/// What is known about a namespace's current code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeploymentInfo {
    pub namespace: String,
    /// 1 for the first deploy, one more for each later one.
    pub version: u64,
    /// Milliseconds since the Unix epoch.
    pub deployed_at_ms: u64,
    /// SHA-256 of the uploaded component, hex.
    pub sha256: String,
    /// Size of the uploaded component in bytes.
    pub size: u64,
    /// The app the class belongs to; `None` for a class deployed alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// Whether clients reach the class at `/{namespace}/{name}/`; a class of an app may be
    /// reachable only through stubs. A class deployed alone always is.
    #[serde(default = "public_by_default")]
    pub public: bool,
    /// Whether the host serves many of the class's objects from one instance: its component
    /// implements the world `shared-object`.
    #[serde(default)]
    pub shared_instances: bool,
}

fn public_by_default() -> bool {
    true
}

/// A namespace's code, ready to instantiate.
pub struct Deployment {
    pub info: DeploymentInfo,
    pub pre: Pre,
    /// What its app gives its instances (empty for a class deployed alone).
    pub env: Arc<Env>,
    pub public: bool,
    /// Unique to this deployment in this process, and larger for later ones: instances kept for
    /// reuse are matched by it, never by the version, which starts again at 1 when a namespace is
    /// deleted and deployed anew.
    pub serial: u64,
}

impl Deployment {
    pub fn new(info: DeploymentInfo, pre: Pre, env: Arc<Env>) -> Self {
        static SERIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Deployment {
            public: info.public,
            info,
            pre,
            env,
            serial: SERIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// A deployed namespace: a handle that stays while its code is replaced. A request looks the
/// namespace up once and its event carries the handle, which gives the code current when the
/// event runs (so an event queued before a redeploy runs the new code).
pub struct Namespace {
    pub name: String,
    current: RwLock<Arc<Deployment>>,
}

impl Namespace {
    /// The namespace's code now.
    pub fn current(&self) -> Arc<Deployment> {
        self.current.read().unwrap().clone()
    }
}

/// Why a deploy was refused. The namespace keeps its old code.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Namespace(#[from] NameError),
    #[error("not a WebAssembly file (it does not start with the \\0asm magic number)")]
    NotWasm,
    #[error(
        "this is a core WebAssembly module, not a component: build for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error(
        "the component is not a Durable Object (world dohost:object/durable-object, 0.2.0 or 0.3.0): {0}"
    )]
    WrongWorld(String),
    #[error(
        "the component is not a worker (world dohost:object/worker@0.3.0, or \
         dohost:object/http-worker@0.3.0): {0}"
    )]
    NotAWorker(String),
    #[error("namespace {namespace:?} belongs to app {app:?}: deploy the app (dohost deploy)")]
    OwnedByApp { namespace: String, app: String },
    #[error(transparent)]
    Db(#[from] DbError),
}

impl DeployError {
    /// Whether the uploader is at fault (a 4xx) rather than the host (a 5xx).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, DeployError::Db(_))
    }
}

/// Every deployed namespace.
pub struct Registry {
    runtime: Arc<Runtime>,
    db: Arc<Db>,
    cache_dir: PathBuf,
    namespaces: RwLock<BTreeMap<String, Arc<Namespace>>>,
    apps: RwLock<BTreeMap<String, Arc<App>>>,
    /// Deploys of one host run one at a time, so versions are assigned without races.
    deploying: Mutex<()>,
}

impl Registry {
    /// Loads every deployed namespace. Blocking: compiles what the cache lacks. A namespace whose
    /// stored component no longer loads is logged and left out; the others serve.
    pub fn load(runtime: Arc<Runtime>, db: Arc<Db>, cache_dir: PathBuf) -> Result<Self, DbError> {
        std::fs::create_dir_all(&cache_dir)
            .map_err(|e| DbError::new(format!("creating {}: {e}", cache_dir.display())))?;
        let registry = Registry {
            runtime,
            db,
            cache_dir,
            namespaces: RwLock::new(BTreeMap::new()),
            apps: RwLock::new(BTreeMap::new()),
            deploying: Mutex::new(()),
        };
        registry.load_apps()?;
        // The guard goes at once: at start-up nothing can reopen the database under the reads.
        let txn = registry.db.redb()?.begin_read()?;
        let infos = txn.open_table(DEPLOYMENTS)?;
        let components = txn.open_table(COMPONENTS)?;
        for item in infos.iter()? {
            let (ns, info) = item?;
            let ns = ns.value().to_owned();
            let loaded = serde_json::from_slice::<DeploymentInfo>(info.value())
                .map_err(|e| format!("bad metadata: {e}"))
                .and_then(|mut info| {
                    let bytes = components
                        .get(ns.as_str())
                        .map_err(|e| e.to_string())?
                        .ok_or("its component is missing")?;
                    let pre = registry.load_cached(&info.sha256, bytes.value(), Role::Object)?;
                    info.shared_instances = pre.shares_instances();
                    let env = registry.env_of(info.app.as_deref());
                    Ok(Deployment::new(info, pre, env))
                });
            match loaded {
                Ok(d) => {
                    tracing::info!(namespace = %ns, version = d.info.version, "loaded");
                    apps::install(&mut registry.namespaces.write().unwrap(), Arc::new(d));
                }
                Err(e) => tracing::error!(namespace = %ns, "cannot load deployed component: {e}"),
            }
        }
        Ok(registry)
    }

    /// A deployed namespace.
    pub fn namespace(&self, namespace: &str) -> Option<Arc<Namespace>> {
        self.namespaces.read().unwrap().get(namespace).cloned()
    }

    /// A namespace's current code.
    pub fn get(&self, namespace: &str) -> Option<Arc<Deployment>> {
        self.namespace(namespace).map(|n| n.current())
    }

    /// Every namespace, by name.
    pub fn list(&self) -> Vec<DeploymentInfo> {
        let namespaces = self.namespaces.read().unwrap();
        namespaces
            .values()
            .map(|n| n.current().info.clone())
            .collect()
    }

    /// Checks, compiles and stores a component as the namespace's new code. Blocking (compiling
    /// takes from tens of milliseconds to seconds): call it off the async workers. The next event
    /// of every object of the namespace runs the new code; events already running finish on the
    /// old.
    pub fn deploy(&self, namespace: &str, bytes: &[u8]) -> Result<DeploymentInfo, DeployError> {
        names::check_namespace(namespace)?;
        let (sha256, pre) = self.compile(bytes, Role::Object)?;

        let _one_at_a_time = self.deploying.lock().unwrap();
        if let Some(app) = self.get(namespace).and_then(|d| d.info.app.clone()) {
            return Err(DeployError::OwnedByApp {
                namespace: namespace.to_owned(),
                app,
            });
        }
        let version = self.get(namespace).map_or(1, |d| d.info.version + 1);
        let info = DeploymentInfo {
            namespace: namespace.to_owned(),
            version,
            deployed_at_ms: now_ms(),
            sha256,
            size: bytes.len() as u64,
            app: None,
            public: true,
            shared_instances: pre.shares_instances(),
        };
        let meta = serde_json::to_vec(&info).expect("deployment info serializes");
        self.db.write(|db| {
            let txn = db.begin_write()?;
            {
                let mut components = txn.open_table(COMPONENTS)?;
                components.insert(namespace, bytes)?;
                let mut infos = txn.open_table(DEPLOYMENTS)?;
                infos.insert(namespace, meta.as_slice())?;
            }
            Ok(txn.commit()?)
        })?;
        let deployment = Arc::new(Deployment::new(info.clone(), pre, Arc::default()));
        apps::install(&mut self.namespaces.write().unwrap(), deployment);
        tracing::info!(namespace, version, size = bytes.len(), "deployed");
        Ok(info)
    }

    /// Stops serving a lone namespace (not an app's class: deploy the app without it): its
    /// requests are `unknown_namespace` from now on. Its code and data are the caller's to
    /// delete ([`Db::drop_namespace`]).
    pub fn forget(&self, namespace: &str) -> Result<DeploymentInfo, ForgetError> {
        let _one_at_a_time = self.deploying.lock().unwrap();
        let deployment = self
            .get(namespace)
            .ok_or_else(|| ForgetError::Unknown(namespace.to_owned()))?;
        if let Some(app) = deployment.info.app.clone() {
            return Err(ForgetError::OwnedByApp {
                namespace: namespace.to_owned(),
                app,
            });
        }
        self.namespaces.write().unwrap().remove(namespace);
        tracing::info!(namespace, "deleted");
        Ok(deployment.info.clone())
    }

    /// Checks and compiles an uploaded component, or takes its compiled code from the cache if
    /// these very bytes were compiled before (a JavaScript component takes seconds to compile).
    /// Returns its SHA-256 and the code, ready to instantiate.
    fn compile(&self, bytes: &[u8], role: Role) -> Result<(String, Pre), DeployError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        // SAFETY: as in `load_cached`.
        let cached =
            unsafe { Component::deserialize_file(self.runtime.engine(), self.cache_path(&sha256)) };
        let pre = match cached {
            Ok(component) => check(&self.runtime, &component, role)?,
            Err(_) => {
                let (component, pre) = validate(&self.runtime, bytes, role)?;
                self.write_cache(&sha256, &component);
                pre
            }
        };
        Ok((sha256, pre))
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir.join(format!("{sha256}.cwasm"))
    }

    /// Loads compiled code from the cache, or compiles (and caches) the stored bytes.
    fn load_cached(&self, sha256: &str, bytes: &[u8], role: Role) -> Result<Pre, String> {
        let path = self.cache_path(sha256);
        // SAFETY: the cache holds only what this host serialized into its own data dir; wasmtime
        // still checks that the file was made by a compatible engine and refuses it otherwise.
        let cached = unsafe { Component::deserialize_file(self.runtime.engine(), &path) };
        let component = match cached {
            Ok(c) => c,
            Err(_) => {
                let c =
                    Component::new(self.runtime.engine(), bytes).map_err(|e| format!("{e:#}"))?;
                self.write_cache(sha256, &c);
                c
            }
        };
        self.runtime.prepare(&component, role)
    }

    /// Best effort: a missing cache only costs a compile at the next start.
    fn write_cache(&self, sha256: &str, component: &Component) {
        let path = self.cache_path(sha256);
        // A name of its own: hosts sharing a cache may write the same component at once.
        static WRITES: AtomicU64 = AtomicU64::new(0);
        let n = WRITES.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}-{n}.tmp", std::process::id()));
        let written = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|code| std::fs::write(&tmp, code).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()));
        if let Err(e) = written {
            tracing::warn!("cannot cache compiled component at {}: {e}", path.display());
        }
    }
}

/// Why a namespace cannot be deleted.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error("no namespace {0:?} is deployed")]
    Unknown(String),
    #[error("{namespace:?} is a class of the app {app:?}: deploy the app without it")]
    OwnedByApp { namespace: String, app: String },
}

/// Checks and compiles an uploaded component without storing anything: everything a deploy
/// checks before it changes what a namespace runs. A separate function so that the checks can be
/// exercised (and fuzzed: `fuzz/fuzz_targets/deploy.rs`) without a database or a server.
///
/// Blocking: compiling takes from tens of milliseconds to seconds.
pub fn validate(
    runtime: &Runtime,
    bytes: &[u8],
    role: Role,
) -> Result<(Component, Pre), DeployError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(DeployError::NotWasm);
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(DeployError::CoreModule);
    }
    let component = Component::new(runtime.engine(), bytes)
        .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
    let pre = check(runtime, &component, role)?;
    Ok((component, pre))
}

/// The checks of a compiled component: its memories, and the world it implements.
fn check(runtime: &Runtime, component: &Component, role: Role) -> Result<Pre, DeployError> {
    crate::runtime::check_memories(component).map_err(DeployError::Invalid)?;
    runtime.prepare(component, role).map_err(|e| match role {
        Role::Object => DeployError::WrongWorld(e),
        Role::Worker => DeployError::NotAWorker(e),
    })
}

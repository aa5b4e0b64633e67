//! Deployed apps: a worker with its routes in front of object classes, their variables, secrets
//! and outbound rules. An app deploys all or nothing: every component is checked and compiled
//! before anything switches, and its classes, worker and routes switch together.

use super::{DeployError, Deployment, DeploymentInfo, Namespace, Registry};
use crate::clock::now_ms;
use crate::env::Env;
use crate::manifest::{self, Route};
use crate::names;
use crate::outbound::AllowList;
use crate::runtime::{Pre, Role};
use crate::storage::{APPS, COMPONENTS, DEPLOYMENTS, DbError, SECRETS, WORKERS};
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The most classes one app may have.
pub const MAX_CLASSES: usize = 32;

/// The longest secret value, in bytes.
pub const MAX_SECRET_BYTES: usize = 4096;

/// What an app deploy asks for: `dohost.toml` without the local paths of its components.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The worker's routes; empty for an app without a worker.
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub objects: Vec<ClassSpec>,
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub outbound: AllowList,
}

/// One class of an app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassSpec {
    pub binding: String,
    pub namespace: String,
    #[serde(default)]
    pub public: bool,
}

impl From<&manifest::Manifest> for AppSpec {
    fn from(m: &manifest::Manifest) -> Self {
        AppSpec {
            routes: m
                .worker
                .as_ref()
                .map(|w| w.routes.clone())
                .unwrap_or_default(),
            objects: m
                .objects
                .iter()
                .map(|o| ClassSpec {
                    binding: o.binding.clone(),
                    namespace: o.namespace.clone(),
                    public: o.public,
                })
                .collect(),
            vars: m.vars.clone(),
            outbound: m.outbound.clone(),
        }
    }
}

/// An app deploy: the spec and the bytes of its components.
pub struct AppUpload {
    pub spec: AppSpec,
    pub worker: Option<Vec<u8>>,
    /// Namespace → component.
    pub classes: BTreeMap<String, Vec<u8>>,
}

/// What is known about a deployed app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInfo {
    pub name: String,
    /// 1 for the first deploy, one more for each later one.
    pub version: u64,
    pub deployed_at_ms: u64,
    pub spec: AppSpec,
    /// SHA-256 of the worker's component, hex, if the app has a worker.
    pub worker_sha256: Option<String>,
}

/// A deployed app, ready to serve.
pub struct App {
    pub name: String,
    pub version: u64,
    pub info: AppInfo,
    pub env: Arc<Env>,
    /// The worker's compiled code.
    pub worker: Option<Pre>,
}

/// Why an app deploy was refused. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the app's name: {0}")]
    Name(names::NameError),
    #[error("{0}")]
    Spec(String),
    #[error("{what}: {error}")]
    Component {
        what: String,
        #[source]
        error: DeployError,
    },
    #[error("namespace {namespace:?} belongs to app {owner:?}: remove it from that app first")]
    Taken { namespace: String, owner: String },
    #[error("no app {0:?} is deployed")]
    UnknownApp(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl AppError {
    /// Whether the uploader is at fault (a 4xx) rather than the host (a 5xx).
    pub fn is_client_error(&self) -> bool {
        match self {
            AppError::Db(_) => false,
            AppError::Component { error, .. } => error.is_client_error(),
            _ => true,
        }
    }
}

impl AppSpec {
    /// Checks what the manifest checks, again: the admin API takes specs from anywhere.
    fn check(&self, upload_worker: bool) -> Result<(), AppError> {
        let spec = |m: String| Err(AppError::Spec(m));
        if self.objects.len() > MAX_CLASSES {
            return spec(format!(
                "{} classes; an app has at most {MAX_CLASSES}",
                self.objects.len()
            ));
        }
        if upload_worker && self.routes.is_empty() {
            return spec("the worker has no routes".into());
        }
        if !upload_worker && !self.routes.is_empty() {
            return spec("routes without a worker".into());
        }
        if !upload_worker && self.objects.is_empty() {
            return spec("an app needs a worker or at least one class".into());
        }
        for (i, class) in self.objects.iter().enumerate() {
            names::check_namespace(&class.namespace).map_err(|e| AppError::Spec(e.to_string()))?;
            manifest::check_binding(&class.binding)
                .map_err(|e| AppError::Spec(format!("objects[{i}].binding: {e}")))?;
            let twice =
                |f: fn(&ClassSpec) -> &str| self.objects[..i].iter().any(|o| f(o) == f(class));
            if twice(|o| &o.binding) {
                return spec(format!("binding {} is used twice", class.binding));
            }
            if twice(|o| &o.namespace) {
                return spec(format!("namespace {} is used twice", class.namespace));
            }
        }
        Ok(())
    }
}

impl Registry {
    /// A deployed app.
    pub fn app(&self, name: &str) -> Option<Arc<App>> {
        self.apps.read().unwrap().get(name).cloned()
    }

    /// Every deployed app.
    pub fn list_apps(&self) -> Vec<AppInfo> {
        self.apps
            .read()
            .unwrap()
            .values()
            .map(|a| a.info.clone())
            .collect()
    }

    /// The app whose worker route best matches a request, and the match's length (see
    /// [`Route::matches`]).
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<(Arc<App>, usize)> {
        let apps = self.apps.read().unwrap();
        let routes = apps
            .values()
            .flat_map(|app| app.info.spec.routes.iter().map(move |r| (r, app)));
        let app = manifest::best_match(routes, host, path)?;
        let length = app
            .info
            .spec
            .routes
            .iter()
            .filter_map(|r| r.matches(host, path))
            .max()
            .unwrap_or(0);
        Some((app.clone(), length))
    }

    /// Deploys an app, all or nothing. Blocking (compiles): call it off the async workers.
    ///
    /// Its classes are deployed as namespaces of the app (a namespace deployed alone may be
    /// taken over; one of another app may not); classes the new spec no longer lists stop
    /// being served, their storage kept.
    pub fn deploy_app(&self, name: &str, upload: AppUpload) -> Result<AppInfo, AppError> {
        names::check_namespace(name).map_err(AppError::Name)?;
        let AppUpload {
            spec,
            worker,
            classes,
        } = upload;
        spec.check(worker.is_some())?;
        for class in &spec.objects {
            if !classes.contains_key(&class.namespace) {
                return Err(AppError::Spec(format!(
                    "no component uploaded for class {} ({})",
                    class.binding, class.namespace
                )));
            }
        }
        if let Some(extra) = classes
            .keys()
            .find(|ns| !spec.objects.iter().any(|o| &o.namespace == *ns))
        {
            return Err(AppError::Spec(format!(
                "a component for {extra:?}, which the spec does not list"
            )));
        }

        // Everything is checked and compiled before anything changes.
        let worker = match &worker {
            Some(bytes) => {
                let (sha256, pre) =
                    self.compile(bytes, Role::Worker)
                        .map_err(|error| AppError::Component {
                            what: "the worker".into(),
                            error,
                        })?;
                Some((bytes, sha256, pre))
            }
            None => None,
        };
        let mut compiled = Vec::new();
        for class in &spec.objects {
            let bytes = &classes[&class.namespace];
            let (sha256, pre) =
                self.compile(bytes, Role::Object)
                    .map_err(|error| AppError::Component {
                        what: format!("class {} ({})", class.binding, class.namespace),
                        error,
                    })?;
            compiled.push((class, bytes, sha256, pre));
        }

        let _one_at_a_time = self.deploying.lock().unwrap();
        for class in &spec.objects {
            if let Some(owner) = self.get(&class.namespace).and_then(|d| d.info.app.clone())
                && owner != name
            {
                return Err(AppError::Taken {
                    namespace: class.namespace.clone(),
                    owner,
                });
            }
        }
        let old = self.app(name);
        let info = AppInfo {
            name: name.to_owned(),
            version: old.as_ref().map_or(1, |a| a.version + 1),
            deployed_at_ms: now_ms(),
            spec: spec.clone(),
            worker_sha256: worker.as_ref().map(|(_, sha, _)| sha.clone()),
        };
        let dropped: Vec<String> = old
            .iter()
            .flat_map(|a| a.info.spec.objects.iter())
            .filter(|o| !spec.objects.iter().any(|n| n.namespace == o.namespace))
            .map(|o| o.namespace.clone())
            .collect();
        let infos = self.db.write(|db| {
            let mut infos = Vec::new();
            let txn = db.begin_write()?;
            {
                let mut components = txn.open_table(COMPONENTS)?;
                let mut deployments = txn.open_table(DEPLOYMENTS)?;
                for (class, bytes, sha256, pre) in &compiled {
                    let version = self.get(&class.namespace).map_or(1, |d| d.info.version + 1);
                    let class_info = DeploymentInfo {
                        namespace: class.namespace.clone(),
                        version,
                        deployed_at_ms: info.deployed_at_ms,
                        sha256: sha256.clone(),
                        size: bytes.len() as u64,
                        app: Some(name.to_owned()),
                        public: class.public,
                        shared_instances: pre.shares_instances(),
                    };
                    let meta = serde_json::to_vec(&class_info).expect("deployment info serializes");
                    components.insert(class.namespace.as_str(), bytes.as_slice())?;
                    deployments.insert(class.namespace.as_str(), meta.as_slice())?;
                    infos.push(class_info);
                }
                for namespace in &dropped {
                    components.remove(namespace.as_str())?;
                    deployments.remove(namespace.as_str())?;
                }
                let mut workers = txn.open_table(WORKERS)?;
                match &worker {
                    Some((bytes, _, _)) => {
                        workers.insert(name, bytes.as_slice())?;
                    }
                    None => {
                        workers.remove(name)?;
                    }
                }
                let meta = serde_json::to_vec(&info).expect("app info serializes");
                let mut apps = txn.open_table(APPS)?;
                apps.insert(name, meta.as_slice())?;
            }
            txn.commit()?;
            Ok(infos)
        })?;

        let secrets = self.secrets_of(name)?;
        let env = Arc::new(app_env(&info, secrets));
        let app = Arc::new(App {
            name: name.to_owned(),
            version: info.version,
            info: info.clone(),
            env: env.clone(),
            worker: worker.map(|(_, _, pre)| pre),
        });
        // The switch: classes, then the app and its routes, under both locks.
        let mut namespaces = self.namespaces.write().unwrap();
        let mut apps = self.apps.write().unwrap();
        for ((_, _, _, pre), class_info) in compiled.into_iter().zip(infos) {
            let deployment = Arc::new(Deployment::new(class_info, pre, env.clone()));
            install(&mut namespaces, deployment);
        }
        for namespace in &dropped {
            namespaces.remove(namespace);
        }
        apps.insert(name.to_owned(), app);
        drop((namespaces, apps));
        tracing::info!(app = name, version = info.version, "app deployed");
        Ok(info)
    }

    /// Sets a secret of an app: its instances read the new value from now on.
    pub fn put_secret(&self, app: &str, secret: &str, value: &str) -> Result<(), AppError> {
        let deployed = self
            .app(app)
            .ok_or_else(|| AppError::UnknownApp(app.to_owned()))?;
        manifest::check_var_name(secret).map_err(|e| AppError::Spec(e.to_string()))?;
        if value.len() > MAX_SECRET_BYTES {
            return Err(AppError::Spec(format!(
                "a secret of {} bytes; at most {MAX_SECRET_BYTES}",
                value.len()
            )));
        }
        if deployed.env.has_var(secret) {
            return Err(AppError::Spec(format!(
                "{secret} is one of the app's [vars]: a secret may not take its name"
            )));
        }
        self.db.write(|db| {
            let txn = db.begin_write()?;
            {
                let mut secrets = txn.open_table(SECRETS)?;
                secrets.insert(format!("{app}\0{secret}").as_str(), value)?;
            }
            Ok(txn.commit()?)
        })?;
        deployed.env.set_secret(secret.to_owned(), value.to_owned());
        tracing::info!(app, secret, "secret set");
        Ok(())
    }

    /// An app's secrets, from the database.
    fn secrets_of(&self, app: &str) -> Result<BTreeMap<String, String>, DbError> {
        let (start, end) = (format!("{app}\0"), format!("{app}\u{1}"));
        self.db.read(|db| {
            let table = db.begin_read()?.open_table(SECRETS)?;
            let mut secrets = BTreeMap::new();
            for item in table.range(start.as_str()..end.as_str())? {
                let (key, value) = item?;
                let name = key.value()[start.len()..].to_owned();
                secrets.insert(name, value.value().to_owned());
            }
            Ok(secrets)
        })
    }

    /// Loads every deployed app (before the namespaces, which take their environment from it).
    /// An app whose worker no longer loads is logged and left out.
    pub(super) fn load_apps(&self) -> Result<(), DbError> {
        // The guard goes at once (`secrets_of` takes its own): at start-up nothing can reopen the
        // database under the reads.
        let txn = self.db.redb()?.begin_read()?;
        let apps = txn.open_table(APPS)?;
        let workers = txn.open_table(WORKERS)?;
        for item in apps.iter()? {
            let (name, meta) = item?;
            let name = name.value().to_owned();
            let loaded = serde_json::from_slice::<AppInfo>(meta.value())
                .map_err(|e| format!("bad metadata: {e}"))
                .and_then(|info| {
                    let worker = match &info.worker_sha256 {
                        Some(sha256) => {
                            let bytes = workers
                                .get(name.as_str())
                                .map_err(|e| e.to_string())?
                                .ok_or("its worker is missing")?;
                            Some(self.load_cached(sha256, bytes.value(), Role::Worker)?)
                        }
                        None => None,
                    };
                    Ok((info, worker))
                });
            match loaded {
                Ok((info, worker)) => {
                    let env = Arc::new(app_env(&info, self.secrets_of(&name)?));
                    let app = App {
                        name: name.clone(),
                        version: info.version,
                        info,
                        env,
                        worker,
                    };
                    self.apps.write().unwrap().insert(name, Arc::new(app));
                }
                Err(e) => tracing::error!(app = %name, "cannot load deployed app: {e}"),
            }
        }
        Ok(())
    }

    /// The environment a loaded class of `app` shares with the app's other instances.
    pub(super) fn env_of(&self, app: Option<&str>) -> Arc<Env> {
        app.and_then(|a| self.app(a))
            .map(|a| a.env.clone())
            .unwrap_or_default()
    }
}

/// Puts a deployment in place: the namespace's handle stays, its code changes.
pub(super) fn install(
    namespaces: &mut BTreeMap<String, Arc<Namespace>>,
    deployment: Arc<Deployment>,
) {
    let name = deployment.info.namespace.clone();
    match namespaces.get(&name) {
        Some(deployed) => *deployed.current.write().unwrap() = deployment,
        None => {
            let deployed = Namespace {
                name: name.clone(),
                current: RwLock::new(deployment),
            };
            namespaces.insert(name, Arc::new(deployed));
        }
    }
}

fn app_env(info: &AppInfo, secrets: BTreeMap<String, String>) -> Env {
    let bindings = info
        .spec
        .objects
        .iter()
        .map(|o| (o.binding.clone(), o.namespace.clone()))
        .collect();
    Env::new(
        info.name.clone(),
        bindings,
        info.spec.vars.clone(),
        secrets,
        info.spec.outbound.clone(),
    )
}

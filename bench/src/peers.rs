//! The two servers: starting `dohost serve` and deploying to it; installing workerd from npm,
//! writing its config and starting `workerd serve`. Both listen on 127.0.0.1 at a free port,
//! keep their state in a temporary directory, and are killed when dropped.

use crate::{Kind, Target, load};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hyper::Method;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The workerd release compared against: the npm package `workerd@WORKERD_VERSION`.
pub const WORKERD_VERSION: &str = "1.20261117.1";

/// The workerd config: `@ADDRESS@` and `@STORAGE@` are filled in.
const WORKERD_CONFIG: &str = include_str!("../workerd/config.capnp");

/// The workerd side's objects and router (ES modules), embedded by the config.
const WORKERD_WORKER: &str = include_str!("../workerd/worker.js");

/// The workspace root (the folder holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ has a parent")
        .to_owned()
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where a guest package's component is built: `target/wasm32-wasip2/release/{crate}.wasm`.
pub fn guest_wasm(package: &str) -> PathBuf {
    target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", package.replace('-', "_")))
}

/// A free TCP port on 127.0.0.1 (bound and released: the server binds it right after).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The last `max` bytes of a log file, for error messages.
fn log_tail(path: &Path, max: usize) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut text);
    }
    let start = text.len().saturating_sub(max);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_owned()
}

/// Polls `GET path` until it answers 200, at most `limit`.
async fn wait_ready(addr: SocketAddr, path: &str, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok((status, _)) =
            load::request_once(addr, Method::GET, path, &[], Bytes::new()).await
            && status == 200
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{addr} did not answer GET {path} with 200 within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `dohost serve`, killed (SIGKILL) when dropped.
pub struct Dohost {
    child: Child,
    bin: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its admin token.
    pub token: String,
    /// Its data dir.
    pub data: PathBuf,
    /// Its stderr (`RUST_LOG=warn`).
    pub log: PathBuf,
    idle_timeout: f64,
}

impl Dohost {
    /// Starts `bin serve --listen 127.0.0.1:<free port> --data <data> --admin-token <random>
    /// --idle-timeout <idle_timeout>`, with stderr to `<data>.log` beside the data dir, and waits
    /// for its `listening on` line.
    pub fn start(bin: &Path, data: &Path, idle_timeout: f64) -> Result<Dohost> {
        Self::start_with(bin, data, idle_timeout, &[])
    }

    /// [`Dohost::start`] with more `serve` arguments (a cluster's node: `--cluster ...`).
    pub fn start_with(
        bin: &Path,
        data: &Path,
        idle_timeout: f64,
        args: &[String],
    ) -> Result<Dohost> {
        let token = crate::nonce() + &crate::nonce();
        Self::spawn(bin, data, idle_timeout, token, free_port()?, args)
    }

    fn spawn(
        bin: &Path,
        data: &Path,
        idle_timeout: f64,
        token: String,
        port: u16,
        args: &[String],
    ) -> Result<Dohost> {
        if !bin.exists() {
            bail!("{} is missing", bin.display());
        }
        std::fs::create_dir_all(data)?;
        let log = data.with_extension("log");
        let listen = format!("127.0.0.1:{port}");
        let mut child = Command::new(bin)
            .arg("serve")
            .args(["--listen", &listen, "--data"])
            .arg(data)
            .args(["--admin-token", &token])
            .args(["--idle-timeout", &idle_timeout.to_string()])
            .args(args)
            .env_remove("DOHOST_ADMIN_TOKEN")
            .env(
                "RUST_LOG",
                std::env::var("DOHOST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                File::options()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .with_context(|| format!("creating {}", log.display()))?,
            )
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on http://") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.parse().context("the listening line")?,
            Err(_) => {
                let _ = child.kill();
                bail!(
                    "dohost did not print `listening on` within 60 s; its log:\n{}",
                    log_tail(&log, 4000)
                );
            }
        };
        Ok(Dohost {
            child,
            bin: bin.to_owned(),
            addr,
            token,
            data: data.to_owned(),
            log,
            idle_timeout,
        })
    }

    /// The scenarios' view of it.
    pub fn target(&self) -> Target {
        Target {
            name: "dohost",
            addr: self.addr,
            pid: self.child.id(),
            kind: Kind::Dohost {
                token: self.token.clone(),
            },
        }
    }

    /// `PUT /_admin/namespaces/{namespace}` with the component: it must answer 200.
    pub async fn deploy(&self, namespace: &str, component: Bytes) -> Result<()> {
        let auth = format!("Bearer {}", self.token);
        let (status, body) = load::deploy_once(
            self.addr,
            &format!("/_admin/namespaces/{namespace}"),
            &[("authorization", &auth)],
            component,
        )
        .await
        .with_context(|| format!("deploying {namespace}"))?;
        if status != 200 {
            bail!(
                "deploying {namespace}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// Deploys counter (also as a shared class), chat, pubsub, hello and the JavaScript counter; the app `bench`: its front worker on `/w/`, calling
    /// the public counters and its own relay class (as workerd's front worker does); and the app
    /// `bench-download`, an http-worker on `/d/`.
    pub async fn deploy_all(&self) -> Result<()> {
        for (namespace, package) in [
            ("counter", "counter"),
            ("shared-counter", "shared-counter"),
            ("chat", "chat-room"),
            ("pubsub", "pubsub"),
            ("hello", "hello"),
        ] {
            self.deploy_guest(namespace, package).await?;
        }
        // The JavaScript counter (examples/js/counter, built by scripts/build-js): the same class
        // as workerd's `Counter`.
        let js = target_dir().join("js/counter.wasm");
        let component = std::fs::read(&js)
            .with_context(|| format!("{}: run `bash scripts/build-js`", js.display()))?;
        self.deploy("js-counter", component.into()).await?;
        let spec = serde_json::json!({
            "routes": ["/w/"],
            "objects": [{ "binding": "RELAY", "namespace": "w-relay" }],
        });
        self.deploy_app("bench", spec, "bench-front", &[("w-relay", "bench-relay")])
            .await?;
        let spec = serde_json::json!({ "routes": ["/d/"], "objects": [] });
        self.deploy_app("bench-download", spec, "bench-download", &[])
            .await
    }

    /// Deploys an app through the admin API: `spec` as `dohost.toml` gives it, the worker and
    /// each class (`(namespace, package)`) from the built guests.
    pub async fn deploy_app(
        &self,
        app: &str,
        spec: serde_json::Value,
        worker: &str,
        classes: &[(&str, &str)],
    ) -> Result<()> {
        use base64::Engine;
        let b64 = |package: &str| -> Result<String> {
            let path = guest_wasm(package);
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
        };
        let mut components = serde_json::Map::new();
        for (namespace, package) in classes {
            components.insert(namespace.to_string(), b64(package)?.into());
        }
        let body =
            serde_json::json!({ "spec": spec, "worker": b64(worker)?, "classes": components });
        let auth = format!("Bearer {}", self.token);
        let (status, answer) = load::deploy_once(
            self.addr,
            &format!("/_admin/apps/{app}"),
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            Bytes::from(serde_json::to_vec(&body)?),
        )
        .await
        .with_context(|| format!("deploying app {app}"))?;
        if status != 200 {
            bail!(
                "deploying app {app}: {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(())
    }

    /// Deploys `target/wasm32-wasip2/release/{package}.wasm` as `namespace`.
    pub async fn deploy_guest(&self, namespace: &str, package: &str) -> Result<()> {
        let path = guest_wasm(package);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        self.deploy(namespace, bytes.into()).await
    }

    /// Kills the process with SIGKILL (nothing flushed) and starts it again on the same data
    /// dir, port and token.
    pub fn kill_and_restart(&mut self) -> Result<()> {
        self.kill();
        let restarted = Self::spawn(
            &self.bin.clone(),
            &self.data.clone(),
            self.idle_timeout,
            self.token.clone(),
            self.addr.port(),
            &[],
        )?;
        *self = restarted;
        Ok(())
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dohost {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where `npm install --prefix bench/.workerd` puts things.
pub fn workerd_prefix() -> PathBuf {
    workspace_root().join("bench/.workerd")
}

/// Whether `path` is an ELF executable (the npm package's `bin/workerd` is a Node script that
/// finds the platform binary; we want the binary itself, so that its pid is the server's).
fn is_elf(path: &Path) -> bool {
    let mut magic = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|_| &magic == b"\x7fELF")
}

/// The workerd binary inside `prefix/node_modules`, if installed at [`WORKERD_VERSION`].
pub fn find_workerd(prefix: &Path) -> Option<PathBuf> {
    let modules = prefix.join("node_modules");
    let package: serde_json::Value =
        serde_json::from_slice(&std::fs::read(modules.join("workerd/package.json")).ok()?).ok()?;
    if package["version"] != WORKERD_VERSION {
        return None;
    }
    let scoped = modules.join("@cloudflare");
    let mut candidates = vec![scoped.join("workerd-linux-64/bin/workerd")];
    if let Ok(entries) = std::fs::read_dir(&scoped) {
        candidates.extend(entries.flatten().map(|e| e.path().join("bin/workerd")));
    }
    candidates.into_iter().find(|p| is_elf(p))
}

/// Installs `workerd@WORKERD_VERSION` from the npm registry into `bench/.workerd/` unless it is
/// there, and returns the binary's path.
pub fn install_workerd() -> Result<PathBuf> {
    let prefix = workerd_prefix();
    if let Some(bin) = find_workerd(&prefix) {
        return Ok(bin);
    }
    std::fs::create_dir_all(&prefix)?;
    let spec = format!("workerd@{WORKERD_VERSION}");
    println!(
        "installing workerd: npm install --prefix {} {spec} --no-audit --no-fund",
        prefix.display()
    );
    let status = Command::new("npm")
        .arg("install")
        .arg("--prefix")
        .arg(&prefix)
        .args([spec.as_str(), "--no-audit", "--no-fund"])
        .status()
        .context("running npm (is Node.js installed?)")?;
    if !status.success() {
        bail!("npm install {spec} failed: {status}");
    }
    find_workerd(&prefix).with_context(|| {
        format!(
            "npm installed {spec}, but no workerd binary was found under {}",
            prefix.join("node_modules/@cloudflare").display()
        )
    })
}

/// `workerd --version`, e.g. `workerd 2026-11-17`.
pub fn workerd_version(bin: &Path) -> Result<String> {
    let out = Command::new(bin).arg("--version").output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A running `workerd serve`, killed (SIGKILL) when dropped.
pub struct Workerd {
    child: Child,
    bin: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The directory holding `config.capnp`, `worker.js`, `do-storage/` and `workerd.log`.
    pub dir: PathBuf,
}

impl Workerd {
    /// Writes the config and the worker into `dir`, with Durable Object storage on disk in
    /// `dir/do-storage`, and starts `bin serve dir/config.capnp` on 127.0.0.1 at a free port.
    /// Waits until `/hello/x/` answers.
    pub async fn start(bin: &Path, dir: &Path) -> Result<Workerd> {
        std::fs::create_dir_all(dir.join("do-storage"))?;
        let storage = std::fs::canonicalize(dir.join("do-storage"))?;
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let config = WORKERD_CONFIG
            .replace("@ADDRESS@", &addr.to_string())
            .replace("@STORAGE@", &storage.to_string_lossy());
        std::fs::write(dir.join("config.capnp"), config)?;
        std::fs::write(dir.join("worker.js"), WORKERD_WORKER)?;
        Self::spawn(bin, dir, addr).await
    }

    async fn spawn(bin: &Path, dir: &Path, addr: SocketAddr) -> Result<Workerd> {
        let log = dir.join("workerd.log");
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(dir.join("config.capnp"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(File::options().create(true).append(true).open(&log)?)
            .stderr(File::options().create(true).append(true).open(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        if let Err(e) = wait_ready(addr, "/hello/x/", Duration::from_secs(30)).await {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{e}; workerd's log:\n{}", log_tail(&log, 4000));
        }
        Ok(Workerd {
            child,
            bin: bin.to_owned(),
            addr,
            dir: dir.to_owned(),
        })
    }

    /// The scenarios' view of it.
    pub fn target(&self) -> Target {
        Target {
            name: "workerd",
            addr: self.addr,
            pid: self.child.id(),
            kind: Kind::Workerd,
        }
    }

    /// Where the Durable Objects of class `uniqueKey` keep their SQLite files.
    pub fn storage_dir(&self, unique_key: &str) -> PathBuf {
        self.dir.join("do-storage").join(unique_key)
    }

    /// Kills the process with SIGKILL and starts it again on the same config and storage.
    pub async fn kill_and_restart(&mut self) -> Result<()> {
        self.kill();
        let restarted = Self::spawn(&self.bin.clone(), &self.dir.clone(), self.addr).await?;
        *self = restarted;
        Ok(())
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Workerd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `(files, bytes)` of the `*.sqlite*` files directly in `dir`.
pub fn sqlite_files(dir: &Path) -> (usize, u64) {
    let mut files = 0;
    let mut bytes = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().contains(".sqlite")
                && let Ok(meta) = entry.metadata()
            {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes)
}

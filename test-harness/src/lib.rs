//! Test Durable Object classes from `cargo test`, in the spirit of vitest-pool-workers: a real
//! dohost runs inside the test process, on a temporary data dir of its own and a free loopback
//! port, and the test talks to it as clients and operators do.
//!
//! ```no_run
//! # async fn example() -> Result<(), dohost_test::Error> {
//! let host = dohost_test::TestHost::start().await?;
//! host.deploy("counter", "target/wasm32-wasip2/release/counter.wasm").await?;
//! let first = host.post("/counter/a/", "").await?.text().await?;
//! host.evict("counter", "a").await?; // hibernate it: only storage survives
//! let second = host.post("/counter/a/", "").await?.text().await?;
//! assert_eq!((first.as_str(), second.as_str()), (r#"{"count":1}"#, r#"{"count":2}"#));
//! assert_eq!(host.storage_get("counter", "a", "count").await?, Some(b"2".to_vec()));
//! # Ok(()) }
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use dohost::config::HostConfig;
use dohost::routing::encode_segment;
use dohost::server::{Host, listen, serve};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use tokio::sync::oneshot;

/// Live instances a test host keeps: few, so that its memory is small and eviction is reachable.
const LIVE_OBJECTS: usize = 64;
/// The admin token of every test host.
const TOKEN: &str = "dohost-test";

/// Why a step of a test failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("starting the host: {0}")]
    Start(String),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the host answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    #[error(transparent)]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
}

/// A WebSocket to an object.
pub type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A dohost serving on a loopback port, inside this process. Dropping it stops it and deletes its
/// data dir.
pub struct TestHost {
    url: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _data: tempfile::TempDir,
}

impl TestHost {
    /// Starts a host on a fresh data dir, with the default limits but few live instances.
    pub async fn start() -> Result<TestHost, Error> {
        let data = tempfile::tempdir().map_err(|e| Error::Start(e.to_string()))?;
        let mut config = HostConfig::new(data.path().to_owned(), TOKEN.to_owned());
        config.max_live_objects = LIVE_OBJECTS;
        config.max_memory = LIVE_OBJECTS * (128 << 20);
        let header_timeout = config.header_timeout;
        let host = tokio::task::spawn_blocking(move || Host::start(&config))
            .await
            .map_err(|e| Error::Start(e.to_string()))?
            .map_err(|e| Error::Start(e.to_string()))?;
        let listener = listen("127.0.0.1:0")
            .await
            .map_err(|e| Error::Start(e.to_string()))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Start(e.to_string()))?;
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(serve(listener, host.router, header_timeout, async {
            let _ = stopped.await;
        }));
        Ok(TestHost {
            url: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            stop: Some(stop),
            _data: data,
        })
    }

    /// The host's address, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Deploys the component at `wasm` (built for wasm32-wasip2) as `namespace`.
    pub async fn deploy(&self, namespace: &str, wasm: impl AsRef<Path>) -> Result<(), Error> {
        let path = wasm.as_ref();
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.display().to_string(),
            source,
        })?;
        let url = format!("{}/_admin/namespaces/{namespace}", self.url);
        self.admin(self.http.put(url).body(bytes)).await?;
        Ok(())
    }

    /// Sends `request` (a `reqwest` request built on [`Self::client`]) as is.
    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// `GET path` (`/namespace/object/...`): the response, whatever its status.
    pub async fn get(&self, path: &str) -> Result<reqwest::Response, Error> {
        Ok(self.http.get(format!("{}{path}", self.url)).send().await?)
    }

    /// `POST path` with `body`: the response, whatever its status.
    pub async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<reqwest::Response, Error> {
        Ok(self
            .http
            .post(format!("{}{path}", self.url))
            .body(body)
            .send()
            .await?)
    }

    /// Opens a WebSocket to `path`.
    pub async fn websocket(&self, path: &str) -> Result<WebSocket, Error> {
        let url = format!("ws{}{path}", self.url.trim_start_matches("http"));
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(ws)
    }

    /// Runs the object's alarm now, as if it were due; the time it was set for, or `None` if it
    /// has none.
    pub async fn run_alarm(&self, namespace: &str, object: &str) -> Result<Option<u64>, Error> {
        let url = self.object_url(namespace, object, "alarm");
        match self.admin(self.http.post(url)).await {
            Ok(body) => Ok(body["alarm"].as_u64()),
            Err(Error::Refused { status: 404, body }) if body.contains("no_alarm") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Ends the object's live instance once its events are done, as hibernation does: what is
    /// not in its storage is gone (its WebSockets stay open).
    pub async fn evict(&self, namespace: &str, object: &str) -> Result<(), Error> {
        let url = self.object_url(namespace, object, "evict");
        self.admin(self.http.post(url)).await?;
        Ok(())
    }

    /// The namespace's objects that store something or have an alarm, by name, as
    /// `dohost objects` shows them (`name`, `bytes`, `keys`, `alarm`, `awake`, ...).
    pub async fn objects(&self, namespace: &str) -> Result<Vec<Value>, Error> {
        let url = format!(
            "{}/_admin/namespaces/{namespace}/objects?limit=1000",
            self.url
        );
        let body = self.admin(self.http.get(url)).await?;
        Ok(body["objects"].as_array().cloned().unwrap_or_default())
    }

    /// The value the object stores under `key`.
    pub async fn storage_get(
        &self,
        namespace: &str,
        object: &str,
        key: &str,
    ) -> Result<Option<Vec<u8>>, Error> {
        let url = format!(
            "{}/{}",
            self.object_url(namespace, object, "storage"),
            encode_segment(key)
        );
        match self.admin(self.http.get(url)).await {
            Ok(body) => Ok(Some(
                BASE64
                    .decode(body["value"].as_str().unwrap_or_default())
                    .unwrap_or_default(),
            )),
            Err(Error::Refused { status: 404, body }) if body.contains("no_such_key") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `value` under `key` in the object's storage, as an event of its own: to seed a
    /// test. The object's live instance is ended, so that its next event reads it.
    pub async fn storage_put(
        &self,
        namespace: &str,
        object: &str,
        key: &str,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), Error> {
        let url = format!(
            "{}/{}",
            self.object_url(namespace, object, "storage"),
            encode_segment(key)
        );
        self.admin(self.http.put(url).body(value.into())).await?;
        Ok(())
    }

    fn object_url(&self, namespace: &str, object: &str, what: &str) -> String {
        format!(
            "{}/_admin/namespaces/{namespace}/objects/{}/{what}",
            self.url,
            encode_segment(object)
        )
    }

    /// Sends an admin request; its JSON answer (`null` for none), or `Refused`.
    async fn admin(&self, request: reqwest::RequestBuilder) -> Result<Value, Error> {
        let response = request.bearer_auth(TOKEN).send().await?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        if !(200..300).contains(&status) {
            return Err(Error::Refused { status, body });
        }
        Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

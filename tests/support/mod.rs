//! What every end-to-end test needs: the real `dohost` binary started on an ephemeral port with a
//! fresh data dir, the guests built to wasm32-wasip2, and an HTTP client.

#![allow(dead_code)] // each test binary uses its own part of this module

pub mod chaos_load;
pub mod chaos_model;
pub mod in_process;
pub mod metrics;
pub mod postgres;
pub mod raw;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const TOKEN: &str = "test-admin-token";

/// The workspace's `target/` folder, or `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The path of a guest component built by `scripts/test`.
pub fn wasm(name: &str) -> PathBuf {
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `bash scripts/test`, which builds the guests first",
        path.display()
    );
    path
}

/// A JavaScript component built by `scripts/test` with `guest-sdk/js/dohost-js`.
pub fn js_wasm(name: &str) -> PathBuf {
    let path = target_dir().join("js").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `bash scripts/test`, which builds the JavaScript \
         components first",
        path.display()
    );
    path
}

/// A compile cache shared by every test host that runs JavaScript (`--compile-cache`): such a
/// component takes seconds to compile, so each is compiled once for the whole suite.
pub fn compile_cache() -> String {
    target_dir()
        .join("test-compile-cache")
        .display()
        .to_string()
}

/// A `dohost serve` process, killed when dropped.
pub struct Host {
    child: Child,
    pub url: String,
    pub data: PathBuf,
    args: Vec<String>,
    token: Option<String>,
    /// Environment variables the process is started with.
    env: Vec<(String, String)>,
}

impl Host {
    /// Starts a host on a new temporary data dir.
    pub fn start(args: &[&str]) -> (Host, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        (Host::start_in(dir.path(), args), dir)
    }

    /// Starts a host on `data` with extra `serve` arguments and the test token.
    pub fn start_in(data: &Path, args: &[&str]) -> Host {
        Host::start_with_token(data, args, Some(TOKEN))
    }

    /// Starts a host with `--admin-token token`, or with none (it then generates and keeps one
    /// in the data dir).
    pub fn start_with_token(data: &Path, args: &[&str], token: Option<&str>) -> Host {
        Host::start_with_env(data, args, token, &[])
    }

    /// Starts a host on `data` with extra `serve` arguments, `token`, and environment variables.
    pub fn start_with_env(
        data: &Path,
        args: &[&str],
        token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Host {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_dohost"));
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(&args)
            .env_remove("DOHOST_ADMIN_TOKEN")
            .envs(env.iter().copied());
        if let Some(token) = token {
            command.args(["--admin-token", token]);
        }
        let mut child = command
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn dohost");
        let url = listening_url(&mut child);
        Host {
            child,
            url,
            data: data.to_owned(),
            args,
            token: token.map(str::to_owned),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Kills the host with SIGKILL (no chance to flush anything) and starts it again on the same
    /// data dir.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        *self = Host::start_with_env(&self.data.clone(), &args, self.token.as_deref(), &env);
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `{url}{path}`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The address the host listens on, `IP:PORT`.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_owned()
    }

    /// Deploys through the admin API; returns status and JSON body.
    pub async fn deploy_bytes(&self, namespace: &str, bytes: Vec<u8>) -> (u16, serde_json::Value) {
        let r = client()
            .put(self.at(&format!("/_admin/namespaces/{namespace}")))
            .bearer_auth(TOKEN)
            .body(bytes)
            .send()
            .await
            .expect("deploy request");
        let status = r.status().as_u16();
        (status, r.json().await.expect("deploy answers JSON"))
    }

    /// Deploys a built guest and checks it worked.
    pub async fn deploy(&self, namespace: &str, guest: &str) {
        self.deploy_file(namespace, &wasm(guest)).await;
    }

    /// Deploys a component file and checks it worked.
    pub async fn deploy_file(&self, namespace: &str, path: &Path) {
        let (status, body) = self
            .deploy_bytes(namespace, std::fs::read(path).unwrap())
            .await;
        assert_eq!(
            status,
            200,
            "deploying {} as {namespace}: {body}",
            path.display()
        );
    }

    /// Deploys an app through the admin API: `spec` as `dohost.toml` would give it, the worker
    /// and each class (`(namespace, guest)`) from built guests. Returns status and JSON body.
    pub async fn deploy_app(
        &self,
        app: &str,
        spec: serde_json::Value,
        worker: Option<&str>,
        classes: &[(&str, &str)],
    ) -> (u16, serde_json::Value) {
        let worker = worker.map(wasm);
        let classes: Vec<(&str, PathBuf)> = classes
            .iter()
            .map(|(ns, guest)| (*ns, wasm(guest)))
            .collect();
        let classes: Vec<(&str, &Path)> =
            classes.iter().map(|(ns, p)| (*ns, p.as_path())).collect();
        self.deploy_app_files(app, spec, worker.as_deref(), &classes)
            .await
    }

    /// [`Host::deploy_app`] with component files.
    pub async fn deploy_app_files(
        &self,
        app: &str,
        spec: serde_json::Value,
        worker: Option<&Path>,
        classes: &[(&str, &Path)],
    ) -> (u16, serde_json::Value) {
        use base64::Engine;
        let b64 = |path: &Path| {
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
        };
        let classes: serde_json::Map<_, _> = classes
            .iter()
            .map(|(ns, path)| (ns.to_string(), b64(path).into()))
            .collect();
        let body = serde_json::json!({
            "spec": spec,
            "worker": worker.map(b64),
            "classes": classes,
        });
        json(
            client()
                .put(self.at(&format!("/_admin/apps/{app}")))
                .bearer_auth(TOKEN)
                .json(&body),
        )
        .await
    }

    /// Runs a `dohost` admin subcommand against this host, with `--data` pointing at its data
    /// dir and no token given otherwise: the command must find the token file there.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_dohost"))
            .args(args)
            .args(["--url", &self.url, "--data"])
            .arg(&self.data)
            .env_remove("DOHOST_ADMIN_TOKEN")
            .output()
            .expect("run dohost")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A shared HTTP client with generous limits for concurrent tests.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Checks an answer the host may give under overload: a 200, or a 503 `overloaded` that says
/// when to retry. Returns whether it was a 200.
pub async fn served_or_overloaded(r: reqwest::Response) -> bool {
    let status = r.status().as_u16();
    if status == 200 {
        return true;
    }
    let retry = r.headers().get("retry-after").cloned();
    let body: serde_json::Value = r.json().await.expect("a JSON error");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "overloaded", "{body}");
    assert_eq!(retry.as_ref().map(|v| v.to_str().unwrap()), Some("1"));
    false
}

/// Sends a request and returns status and body parsed as JSON.
pub async fn json(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
    (status, value)
}

/// `POST /{namespace}/{object}/ops` with a list of `test_object` storage operations; the status
/// and the results.
pub async fn ops(
    host: &Host,
    namespace: &str,
    object: &str,
    ops: serde_json::Value,
) -> (u16, serde_json::Value) {
    json(
        client()
            .post(host.at(&format!("/{namespace}/{object}/ops")))
            .json(&ops),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Lifecycle beyond `kill`: restart after a pause, SIGTERM, the process id.
// ---------------------------------------------------------------------------------------------

impl Host {
    /// Starts the host again on the same data dir with the same arguments, after `kill` (or after
    /// it exited by itself).
    pub fn restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        *self = Host::start_with_env(&self.data.clone(), &args, self.token.as_deref(), &env);
    }

    /// The process id of the running `dohost serve`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM: the host should shut down gracefully.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// Waits at most `timeout` for the process to exit; its exit status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `ws://ADDR{path}`.
    pub fn ws(&self, path: &str) -> String {
        format!("{}{path}", self.url.replacen("http://", "ws://", 1))
    }

    /// `GET /_admin/stats`, checked to be a 200.
    pub async fn stats(&self) -> serde_json::Value {
        stats(&self.url).await
    }

    /// Waits (at most 10 s) until the host reports no live instance: every object hibernated.
    pub async fn wait_hibernated(&self) -> serde_json::Value {
        for _ in 0..200 {
            let s = self.stats().await;
            if s["live_instances"] == 0 {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("instances still live after 10 s: {}", self.stats().await);
    }
}

/// `GET {url}/_admin/stats` with the test token, checked to be a 200.
pub async fn stats(url: &str) -> serde_json::Value {
    let (status, body) = json(
        client()
            .get(format!("{url}/_admin/stats"))
            .bearer_auth(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "stats: {body}");
    body
}

/// Polls `probe` every `every` until it returns `Some`, at most `limit`; panics with `what`
/// otherwise.
pub async fn poll<T, F, Fut>(what: &str, limit: Duration, every: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(every).await;
    }
}

/// A process's resident memory (`VmRSS`), in bytes.
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

// ---------------------------------------------------------------------------------------------
// WebSocket client helpers (tokio-tungstenite). Every wait is bounded.
// ---------------------------------------------------------------------------------------------

pub use tokio_tungstenite::tungstenite::Message;
pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;
pub use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A client WebSocket.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for a message it expects.
pub const WS_WAIT: Duration = Duration::from_secs(10);

/// Opens a WebSocket to `url` (`ws://...`), which must be accepted; panics otherwise.
pub async fn ws_connect(url: &str) -> Ws {
    match ws_try_connect(url).await {
        Ok(ws) => ws,
        Err(e) => panic!("WebSocket to {url} refused: {e}"),
    }
}

/// Opens a WebSocket to `url`; the handshake error (with the HTTP status if any) otherwise.
pub async fn ws_try_connect(url: &str) -> Result<Ws, String> {
    match tokio::time::timeout(WS_WAIT, tokio_tungstenite::connect_async(url)).await {
        Err(_) => Err(format!("no handshake within {WS_WAIT:?}")),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err(format!("HTTP {status}: {body}"))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok((ws, response))) => {
            assert_eq!(response.status().as_u16(), 101);
            Ok(ws)
        }
    }
}

/// Sends a text message.
pub async fn ws_send(ws: &mut Ws, text: &str) {
    use futures::SinkExt;
    tokio::time::timeout(WS_WAIT, ws.send(Message::text(text)))
        .await
        .expect("send timed out")
        .expect("send failed");
}

/// The next data or close message, skipping pings and pongs; `None` if the stream ended (or
/// failed) first. Panics if nothing arrives within `wait`.
pub async fn ws_next_within(ws: &mut Ws, wait: Duration) -> Option<Message> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no WebSocket message within {wait:?}"),
            Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
            Ok(Some(Ok(m))) => return Some(m),
        }
    }
}

/// The next data or close message within [`WS_WAIT`]; panics if the stream ended.
pub async fn ws_next(ws: &mut Ws) -> Message {
    ws_next_within(ws, WS_WAIT)
        .await
        .expect("the WebSocket ended while a message was expected")
}

/// The next message, which must be text.
pub async fn ws_text(ws: &mut Ws) -> String {
    match ws_next(ws).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// The next message, which must be text holding JSON.
pub async fn ws_json(ws: &mut Ws) -> serde_json::Value {
    let text = ws_text(ws).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

/// The next JSON message whose `"type"` is `kind`, skipping others (at most 100).
pub async fn ws_json_of_type(ws: &mut Ws, kind: &str) -> serde_json::Value {
    for _ in 0..100 {
        let v = ws_json(ws).await;
        if v["type"] == kind {
            return v;
        }
    }
    panic!("no message of type {kind} among the next 100");
}

/// Waits `quiet` and returns whatever data message arrived meanwhile (pings skipped), if any.
pub async fn ws_quiet(ws: &mut Ws, quiet: Duration) -> Option<Message> {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + quiet;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return None,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
            Ok(Some(Ok(m))) => return Some(m),
            Ok(Some(Err(e))) => panic!("WebSocket failed while quiet: {e}"),
            Ok(None) => panic!("WebSocket ended while quiet"),
        }
    }
}

/// Waits for the server's close frame, skipping data messages, and drives the closing handshake
/// to its end. Returns the code and reason (code 1005 if the frame had none).
pub async fn ws_expect_close(ws: &mut Ws) -> (u16, String) {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + WS_WAIT;
    let mut skipped = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no close frame within {WS_WAIT:?}; got {skipped:?}"),
            Ok(None) => panic!("the stream ended without a close frame; got {skipped:?}"),
            Ok(Some(Err(e))) => {
                panic!("the connection failed without a close frame: {e}; got {skipped:?}")
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                let result = match frame {
                    Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                    None => (1005, String::new()),
                };
                // Let tungstenite send its reply and see the end of the stream.
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                return result;
            }
            Ok(Some(Ok(m))) => skipped.push(m),
        }
    }
}

/// Closes from the client side with `code` and `reason` and waits (bounded) for the server's
/// reply.
pub async fn ws_close(ws: &mut Ws, code: u16, reason: &str) {
    use futures::StreamExt;
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    };
    tokio::time::timeout(WS_WAIT, ws.close(Some(frame)))
        .await
        .expect("close timed out")
        .expect("close failed");
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Waits (at most 60 s) for a starting host to print `listening on URL` and returns the URL;
/// a thread keeps draining its stdout afterwards.
fn listening_url(child: &mut std::process::Child) -> String {
    let (line, _) = PrintedLines::stdout_of(child)
        .next(Duration::from_secs(60), |l| l.starts_with("listening on "));
    line["listening on ".len()..].to_owned()
}

/// The lines a child process prints on its standard output, as they come, read by a thread of
/// their own (so the child never blocks on a full pipe).
pub struct PrintedLines(mpsc::Receiver<String>);

impl PrintedLines {
    /// Takes `child`'s piped standard output.
    pub fn stdout_of(child: &mut Child) -> PrintedLines {
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        PrintedLines(rx)
    }

    /// The next line `wanted` accepts, within `within`, and the lines skipped on the way;
    /// panics, showing them, if none comes.
    pub fn next(&self, within: Duration, wanted: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let until = std::time::Instant::now() + within;
        let mut skipped = Vec::new();
        while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
            match self.0.recv_timeout(left) {
                Ok(line) if wanted(&line) => return (line, skipped),
                Ok(line) => skipped.push(line),
                Err(_) => break,
            }
        }
        panic!("no such line within {within:?}; printed: {skipped:#?}");
    }

    /// The next line, if one comes within `within`.
    pub fn try_next(&self, within: Duration) -> Option<String> {
        self.0.recv_timeout(within).ok()
    }
}

// ---------------------------------------------------------------------------------------------
// A host whose log the test reads.
// ---------------------------------------------------------------------------------------------

/// The lines a host wrote to standard error so far, collected by a thread that keeps draining
/// the pipe (so a chatty host never blocks on it).
pub type StderrLines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Starts a host like [`Host::start`], with `RUST_LOG=rust_log`, and captures its standard
/// error instead of passing it through.
pub fn start_capturing_stderr(
    args: &[&str],
    rust_log: &str,
) -> (Host, tempfile::TempDir, StderrLines) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dohost"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(args)
        .args(["--admin-token", TOKEN])
        .env_remove("DOHOST_ADMIN_TOKEN")
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dohost");
    let lines = StderrLines::default();
    let stderr = child.stderr.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let url = listening_url(&mut child);
    let host = Host {
        child,
        url,
        data: dir.path().to_owned(),
        args: args.iter().map(|s| s.to_string()).collect(),
        token: Some(TOKEN.to_owned()),
        env: Vec::new(),
    };
    (host, dir, lines)
}

//! What every end-to-end test needs: the real `dohost` binary started on an ephemeral port with a
//! fresh data dir, the guests built to wasm32-wasip2, and an HTTP client.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const TOKEN: &str = "test-admin-token";

/// The path of a guest component built by `scripts/test`.
pub fn wasm(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run the tests with `bash scripts/test`, which builds the guests first",
        path.display()
    );
    path
}

/// A `dohost serve` process, killed when dropped.
pub struct Host {
    child: Child,
    pub url: String,
    pub data: PathBuf,
    args: Vec<String>,
    token: Option<String>,
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
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_dohost"));
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(&args)
            .env_remove("DOHOST_ADMIN_TOKEN");
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
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("listening on ") {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("dohost did not start within 60 s");
        Host {
            child,
            url,
            data: data.to_owned(),
            args,
            token: token.map(str::to_owned),
        }
    }

    /// Kills the host with SIGKILL (no chance to flush anything) and starts it again on the same
    /// data dir.
    pub fn kill_and_restart(&mut self) {
        self.kill();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        *self = Host::start_with_token(&self.data.clone(), &args, self.token.as_deref());
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `{url}{path}`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
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
        let (status, body) = self
            .deploy_bytes(namespace, std::fs::read(wasm(guest)).unwrap())
            .await;
        assert_eq!(status, 200, "deploying {guest} as {namespace}: {body}");
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

/// Sends a request and returns status and body parsed as JSON.
pub async fn json(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let r = req.send().await.expect("request");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("not JSON ({e}), status {status}: {text:?}"));
    (status, value)
}

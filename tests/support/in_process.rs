//! A host started inside the test process on a database the test gives it (a simulated disk),
//! which the test can stop abruptly: its runtime goes, and every task with it, with no graceful
//! shutdown and nothing flushed.

use dohost::config::HostConfig;
use dohost::server::{self, Host};
use dohost::storage::Db;
use std::path::Path;

/// A host serving on an ephemeral port of 127.0.0.1, on a runtime of its own.
pub struct InProcessHost {
    runtime: Option<tokio::runtime::Runtime>,
    pub url: String,
}

impl InProcessHost {
    /// Starts a host on `db`, with `config`. May be called from within the test's runtime: the
    /// host's own is built and entered on a thread of its own.
    pub fn start(config: &HostConfig, db: Db) -> InProcessHost {
        let config = config.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("the host's runtime");
            let url = runtime.block_on(async move {
                let header_timeout = config.header_timeout;
                let host = tokio::task::spawn_blocking(move || Host::start_with_db(&config, db))
                    .await
                    .expect("starting the host panicked")
                    .expect("the host starts");
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let url = format!("http://{}", listener.local_addr().unwrap());
                tokio::spawn(server::serve(
                    listener,
                    host.router,
                    header_timeout,
                    std::future::pending(),
                ));
                url
            });
            InProcessHost {
                runtime: Some(runtime),
                url,
            }
        })
        .join()
        .expect("starting the host panicked")
    }

    /// `{url}{path}`.
    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Drops every task of the host at once, connections included, without waiting for any.
    pub fn stop_abruptly(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for InProcessHost {
    fn drop(&mut self) {
        self.stop_abruptly();
    }
}

/// A host configuration for tests in process: the test token, a small instance pool (each host
/// reserves its instances' memory when it starts), compiled components kept in `data`.
pub fn test_config(data: &Path) -> HostConfig {
    let mut config = HostConfig::new(data.to_owned(), super::TOKEN.to_owned());
    config.max_live_objects = 64;
    config.storage_cache = 16 << 20;
    config
}

//! `dohost dev`: the development loop. Builds the project, starts a host of its own in this
//! process (on `PATH/.dohost-dev` unless told otherwise), deploys, prints one line per request
//! and per guest log line, and on every saved change builds and deploys again: sockets stay
//! connected, as on any deploy, and a build that fails is shown while the last good version keeps
//! serving. Ctrl-C stops the host and any build under way.
//!
//! The project: an app (a `dohost.toml` in PATH, or PATH itself), or a guest crate (a
//! `Cargo.toml`), built with `cargo build --release --target wasm32-wasip2`; or anything else with
//! `--build CMD --wasm FILE` (a JavaScript class: `--build "dohost-js build src/room.ts --class
//! Room -o room.wasm" --wasm room.wasm`).

use crate::{AdminArgs, deploy_app, deploy_component, tail_text};
use anyhow::{Context, Result, bail};
use clap::Args;
use dohost::config::HostConfig;
use dohost::server::{Host, serve};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Changes that come within this long of each other are one change: an editor's save is often
/// several writes.
const SETTLE: Duration = Duration::from_millis(300);

/// Folders whose changes are the build's own output, or not the project's.
const IGNORED: [&str; 5] = ["target", "node_modules", ".git", ".dohost-dev", ".cache"];

#[derive(Args)]
pub struct DevArgs {
    /// The project: a folder with `dohost.toml` (an app) or `Cargo.toml` (a guest crate), or
    /// the manifest itself.
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Build with this shell command (run in the project's folder) instead.
    #[arg(long, value_name = "CMD", requires = "wasm")]
    build: Option<String>,
    /// The component the build command writes (with `--build`).
    #[arg(long, value_name = "FILE")]
    wasm: Option<PathBuf>,
    /// The namespace to deploy a lone component as [default: the crate's or the file's name].
    #[arg(long)]
    name: Option<String>,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: String,
    /// The host's data dir [default: PATH/.dohost-dev].
    #[arg(long)]
    data: Option<PathBuf>,
}

/// What is built and how it is deployed.
enum Project {
    App {
        manifest: PathBuf,
        build: String,
    },
    Component {
        build: String,
        wasm: PathBuf,
        namespace: String,
    },
}

impl Project {
    /// The folder builds run in and changes are watched in, and what to deploy.
    fn detect(args: &DevArgs) -> Result<(PathBuf, Project)> {
        let cargo = "cargo build --release --target wasm32-wasip2".to_owned();
        let path = &args.path;
        let (dir, manifest) = if path.is_file() && path.extension().is_some_and(|e| e == "toml") {
            let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
            (dir, Some(path.clone()))
        } else {
            let manifest = path.join("dohost.toml");
            (path.clone(), manifest.exists().then_some(manifest))
        };
        if let Some(manifest) = manifest {
            let build = args.build.clone().unwrap_or(cargo);
            return Ok((dir, Project::App { manifest, build }));
        }
        if let (Some(build), Some(wasm)) = (&args.build, &args.wasm) {
            let namespace = match &args.name {
                Some(name) => name.clone(),
                None => namespace_of(wasm)?,
            };
            let wasm = dir.join(wasm);
            let build = build.clone();
            return Ok((
                dir,
                Project::Component {
                    build,
                    wasm,
                    namespace,
                },
            ));
        }
        if !dir.join("Cargo.toml").exists() {
            bail!(
                "{} has neither a dohost.toml nor a Cargo.toml: give --build CMD --wasm FILE",
                dir.display()
            );
        }
        let (package, target) = cargo_package(&dir)?;
        let wasm = target
            .join("wasm32-wasip2/release")
            .join(format!("{}.wasm", package.replace('-', "_")));
        let namespace = args.name.clone().unwrap_or(package);
        Ok((
            dir,
            Project::Component {
                build: cargo,
                wasm,
                namespace,
            },
        ))
    }

    fn build_command(&self) -> &str {
        match self {
            Project::App { build, .. } | Project::Component { build, .. } => build,
        }
    }

    async fn deploy(&self, admin: &AdminArgs) -> Result<()> {
        match self {
            Project::App { manifest, .. } => deploy_app(manifest, admin).await,
            Project::Component {
                wasm, namespace, ..
            } => deploy_component(admin, wasm, namespace).await,
        }
    }
}

/// The namespace a component's file name makes: `chat_room.wasm` → `chat-room`.
fn namespace_of(wasm: &Path) -> Result<String> {
    let stem = wasm
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let name = stem.replace('_', "-").to_ascii_lowercase();
    dohost::names::check_namespace(&name)
        .with_context(|| format!("{} makes no namespace name: give --name", wasm.display()))?;
    Ok(name)
}

/// The crate in `dir`: its package name and cargo's target directory.
fn cargo_package(dir: &Path) -> Result<(String, PathBuf)> {
    let out = std::process::Command::new("cargo")
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(dir)
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let manifest = std::fs::canonicalize(dir.join("Cargo.toml"))?;
    let package = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .is_some_and(|m| Path::new(m) == manifest)
        })
        .and_then(|p| p["name"].as_str())
        .with_context(|| format!("{} is not a package (a workspace?)", dir.display()))?;
    let target = meta["target_directory"].as_str().unwrap_or("target");
    Ok((package.to_owned(), PathBuf::from(target)))
}

pub async fn run(args: DevArgs) -> Result<()> {
    let (dir, project) = Project::detect(&args)?;
    let data = args.data.clone().unwrap_or_else(|| dir.join(".dohost-dev"));
    let token = format!("dev-{}", rand::random::<u64>());
    let config = HostConfig::new(data.clone(), token.clone());
    let header_timeout = config.header_timeout;
    let host = tokio::task::spawn_blocking(move || Host::start(&config)).await??;
    let listener = crate::server::listen(&args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    // Watched before the server starts, so that no request goes unprinted.
    let mut lines = host
        .objects
        .runtime()
        .tail()
        .watch()
        .context("watching the host")?
        .lines;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, host.router, header_timeout, async {
        let _ = stopped.await;
    }));
    tokio::spawn(async move {
        while let Ok(line) = lines.recv().await {
            println!("{}", tail_text(&line.json.to_string()));
        }
    });
    // Scripts and tests learn the address from this line, as from `serve`.
    println!("listening on {url}, data dir {}", data.display());
    let admin = AdminArgs {
        url: url.clone(),
        token: Some(token),
        data,
    };

    let (changed, mut changes) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && event.paths.iter().any(|p| !ignored(p))
        {
            let _ = changed.send(());
        }
    })?;
    notify::Watcher::watch(&mut watcher, &dir, notify::RecursiveMode::Recursive)?;

    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            () = rebuild(&dir, &project, &admin) => {}
            _ = &mut ctrl_c => break,
        }
        // A change made during the build is seen here, and builds once more.
        tokio::select! {
            Some(()) = changes.recv() => {
                // One save is often several writes: wait for them to settle.
                while tokio::time::timeout(SETTLE, changes.recv()).await.is_ok() {}
                println!("changed: building again");
            }
            _ = &mut ctrl_c => break,
        }
    }
    println!("stopping");
    host.sockets.close_all(1001, "going away");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

/// Builds and, if that worked, deploys; a failure is printed, and the last good version serves
/// on. Dropped (Ctrl-C), it kills the build.
async fn rebuild(dir: &Path, project: &Project, admin: &AdminArgs) {
    let command = project.build_command();
    println!("building: {command}");
    let built = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(dir)
        .kill_on_drop(true)
        .status()
        .await;
    match built {
        Ok(status) if status.success() => {}
        Ok(status) => {
            println!("build failed ({status}): the last good version keeps serving");
            return;
        }
        Err(e) => {
            println!("cannot run the build: {e}; the last good version keeps serving");
            return;
        }
    }
    if let Err(e) = project.deploy(admin).await {
        println!("deploy failed: {e:#}; the last good version keeps serving");
    }
}

/// Whether a changed path is the build's own output or outside the project's sources.
fn ignored(path: &Path) -> bool {
    path.components().any(|c| {
        c.as_os_str()
            .to_str()
            .is_some_and(|name| IGNORED.contains(&name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(path: &Path) -> DevArgs {
        DevArgs {
            path: path.to_owned(),
            build: None,
            wasm: None,
            name: None,
            listen: "127.0.0.1:0".into(),
            data: None,
        }
    }

    #[test]
    fn a_folder_with_a_manifest_is_an_app() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dohost.toml"), "name = \"a\"\n").unwrap();
        let (found, project) = Project::detect(&args(dir.path())).unwrap();
        assert_eq!(found, dir.path());
        assert!(
            matches!(project, Project::App { manifest, .. } if manifest == dir.path().join("dohost.toml"))
        );
    }

    #[test]
    fn a_crate_deploys_its_component_as_its_package_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            "[package]\nname = \"my-room\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/lib.rs"), "").unwrap();
        let (_, project) = Project::detect(&args(dir.path())).unwrap();
        let Project::Component {
            build,
            wasm,
            namespace,
        } = project
        else {
            panic!("not a component");
        };
        assert_eq!(namespace, "my-room");
        assert!(
            wasm.ends_with("wasm32-wasip2/release/my_room.wasm"),
            "{}",
            wasm.display()
        );
        assert!(build.starts_with("cargo build --release --target wasm32-wasip2"));
    }

    #[test]
    fn anything_else_needs_a_build_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = Project::detect(&args(dir.path()))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--build CMD --wasm FILE"), "{err}");
        assert_eq!(
            namespace_of(Path::new("out/chat_room.wasm")).unwrap(),
            "chat-room"
        );
    }
}

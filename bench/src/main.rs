//! `cargo run --release -p dohost-bench -- [--quick] [--no-workerd] [--only TEXT] [--out FILE]`
//!
//! Builds what is missing (the release `dohost` and the guests), installs workerd from npm into
//! `bench/.workerd/`, starts both servers on loopback with the same three objects (counter, chat
//! room, hello), drives both with the same load generator, prints the table and writes
//! `BENCHMARKS.md`. See `bench/README.md`.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Parser;
use dohost_bench::calls::{self, StubCalls};
use dohost_bench::load::{self, LoadResult};
use dohost_bench::peers::{self, Dohost, Workerd};
use dohost_bench::report::{self, Better, Cell, Environment, Row, Unit};
use dohost_bench::{Kind, Memory, Settings, Target, download, fd_limit, sse, ws};
use hyper::Method;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Benchmarks dohost against workerd (Cloudflare's open-source Workers runtime) on this machine:
/// the same Durable Objects (a counter, a chat room, a trivial handler), the same URLs, the same
/// load generator. Prints a table and writes it, with the machine and versions, to a Markdown
/// file.
#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Short runs: 1.5 s per load scenario and a tenth of the sockets and objects. Checks that
    /// everything works; the numbers are not for quoting. Writes target/BENCHMARKS-quick.md unless
    /// --out is given.
    #[arg(long)]
    quick: bool,

    /// Benchmark dohost alone: no npm install, no workerd; the workerd column shows n/a.
    #[arg(long)]
    no_workerd: bool,

    /// Where to write the Markdown report. Default: BENCHMARKS.md in the workspace root
    /// (target/BENCHMARKS-quick.md with --quick).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Run only the scenarios whose title contains TEXT (case-insensitive), e.g. `--only fan-out`:
    /// for profiling one path. Writes target/BENCHMARKS-partial.md unless --out is given.
    #[arg(long, value_name = "TEXT")]
    only: Option<String>,
}

/// How long to wait for a server to go quiet between two measurements.
const SETTLE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let started = Instant::now();
    let root = peers::workspace_root();
    let s = if cli.quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    let out = cli.out.clone().unwrap_or_else(|| {
        if cli.only.is_some() {
            peers::target_dir().join("BENCHMARKS-partial.md")
        } else if cli.quick {
            peers::target_dir().join("BENCHMARKS-quick.md")
        } else {
            root.join("BENCHMARKS.md")
        }
    });

    let dohost_bin = ensure_built(&root)?;
    let workerd_bin = if cli.no_workerd {
        None
    } else {
        Some(peers::install_workerd()?)
    };
    let workerd_version = match &workerd_bin {
        Some(bin) => format!(
            "{} (npm workerd@{})",
            peers::workerd_version(bin)?,
            peers::WORKERD_VERSION
        ),
        None => "not run (--no-workerd)".into(),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = if args.is_empty() {
        "cargo run --release -p dohost-bench".to_owned()
    } else {
        format!("cargo run --release -p dohost-bench -- {}", args.join(" "))
    };
    let env = Environment::collect(&root, &dohost_bin, workerd_version, command);
    println!(
        "dohost-bench: {} ({} cores), {}",
        env.cpu, env.cores, env.date
    );
    println!("  dohost commit {}; {}", env.dohost_commit, env.workerd);
    let load1: f64 = env
        .load_at_start
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    if load1 > 0.5 {
        println!(
            "  warning: load average {} — other work on this machine will skew the numbers",
            env.load_at_start
        );
    }

    let tmp = tempfile::Builder::new().prefix("dohost-bench-").tempdir()?;
    let mut bench = Bench {
        s,
        only: cli.only.as_deref().map(str::to_lowercase),
        rows: Vec::new(),
        details: Vec::new(),
    };
    bench
        .memory_phase(&dohost_bin, workerd_bin.as_deref(), tmp.path())
        .await?;
    bench
        .main_phase(&dohost_bin, workerd_bin.as_deref(), tmp.path())
        .await?;

    let table = report::text_table(&bench.rows);
    println!(
        "\nratio: above 1 means dohost did better (dohost/workerd for throughput, workerd/dohost for latency and memory)\n"
    );
    print!("{table}");
    let elapsed = started.elapsed();
    bench.details.push(format!(
        "The whole run took {:.0} s.",
        elapsed.as_secs_f64()
    ));
    let mut mode = if cli.quick {
        "--quick: short runs, small counts; not numbers to quote".to_owned()
    } else {
        "full run".to_owned()
    };
    if let Some(only) = &cli.only {
        mode += &format!("; only the scenarios matching {only:?}");
    }
    let markdown = report::markdown(&env, &bench.rows, &mode, &bench.details, &notes(&bench.s));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, markdown).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "\nwrote {} ({:.0} s in all)",
        out.display(),
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// Builds (or brings up to date: cargo does nothing when they are fresh) the release `dohost` and
/// the guests, so a run never measures a stale binary; returns the binary's path.
fn ensure_built(root: &Path) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let bin = peers::target_dir().join("release/dohost");
    let run = |args: &[&str]| -> Result<()> {
        println!("building: cargo {}", args.join(" "));
        let status = Command::new(&cargo).args(args).current_dir(root).status()?;
        if !status.success() {
            bail!("cargo {} failed: {status}", args.join(" "));
        }
        Ok(())
    };
    run(&["build", "--release", "-p", "dohost"])?;
    let mut args = vec!["build", "--release", "--target", "wasm32-wasip2"];
    for g in dohost_bench::GUESTS {
        args.extend(["-p", g]);
    }
    run(&args)?;
    // The JavaScript counter, with the JS SDK's build command.
    println!("building: bash scripts/build-js");
    let status = Command::new("bash")
        .arg("scripts/build-js")
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("bash scripts/build-js failed: {status}");
    }
    Ok(bin)
}

/// One request of each kind and one WebSocket, so that the first measurement does not pay for
/// first-time setup.
async fn warm(t: &Target) -> Result<()> {
    for (method, path) in [
        (Method::POST, "/counter/warm/"),
        (Method::GET, "/counter/warm/"),
        (Method::GET, "/hello/x/"),
        (Method::POST, "/w/counter/warm/"),
        (Method::POST, "/w/relay/warm/"),
    ] {
        let (status, body) = load::request_once(t.addr, method, path, &[], Bytes::new()).await?;
        if status != 200 {
            bail!(
                "{} {path}: {status} {}",
                t.name,
                String::from_utf8_lossy(&body)
            );
        }
    }
    let socket = ws::join(t, "warm", "warm").await?;
    ws::close_all(vec![socket], 1).await;
    Ok(())
}

/// The servers of one phase: dohost, and workerd unless `--no-workerd`.
struct Servers {
    dohost: Dohost,
    workerd: Option<Workerd>,
}

impl Servers {
    async fn start(
        dohost_bin: &Path,
        workerd_bin: Option<&Path>,
        dir: &Path,
        idle_timeout: f64,
    ) -> Result<Servers> {
        let dohost = Dohost::start(dohost_bin, &dir.join("dohost-data"), idle_timeout)?;
        dohost.deploy_all().await?;
        let workerd = match workerd_bin {
            Some(bin) => Some(Workerd::start(bin, &dir.join("workerd")).await?),
            None => None,
        };
        let servers = Servers { dohost, workerd };
        for t in servers.targets().into_iter().flatten() {
            warm(&t).await?;
        }
        Ok(servers)
    }

    fn targets(&self) -> [Option<Target>; 2] {
        [
            Some(self.dohost.target()),
            self.workerd.as_ref().map(Workerd::target),
        ]
    }
}

/// One result per side: `None` if the side did not run.
type Pair<T> = [Option<Result<T>>; 2];

/// A side's cell: `f` gives `None` where the row does not apply to that side.
fn cell<T>(r: &Option<Result<T>>, f: impl Fn(&T) -> Option<f64>) -> Cell {
    match r {
        None => Cell::NotApplicable,
        Some(Err(_)) => Cell::Failed,
        Some(Ok(v)) => f(v).map_or(Cell::NotApplicable, Cell::Value),
    }
}

struct Bench {
    s: Settings,
    /// `--only`, lowercased: scenarios whose title lacks it are skipped.
    only: Option<String>,
    rows: Vec<Row>,
    details: Vec<String>,
}

impl Bench {
    /// Whether `--only` leaves out the scenario titled `title`.
    fn skips(&self, title: &str) -> bool {
        self.only
            .as_ref()
            .is_some_and(|only| !title.to_lowercase().contains(only))
    }

    /// Runs `f` on each side in turn (dohost first), prints and records a one-line description
    /// of each result, and lets the server go quiet afterwards. A scenario `--only` leaves out
    /// runs on neither side, and its rows are left out of the table.
    async fn each<T>(
        &mut self,
        targets: &[Option<Target>; 2],
        title: &str,
        mut f: impl AsyncFnMut(&Target) -> Result<T>,
        describe: impl Fn(&T) -> String,
    ) -> Pair<T> {
        let mut out: Pair<T> = [None, None];
        if self.skips(title) {
            return out;
        }
        println!("{title}");
        let mut parts = Vec::new();
        for (slot, target) in out.iter_mut().zip(targets) {
            let Some(t) = target else { continue };
            let result = f(t).await;
            let line = match &result {
                Ok(v) => describe(v),
                Err(e) => format!("FAILED: {e:#}"),
            };
            println!("  {:<8} {line}", t.name);
            parts.push(format!("{}: {line}", t.name));
            if let Err(e) = t.settle(SETTLE).await {
                println!("  {:<8} (could not watch it settle: {e:#})", t.name);
            }
            *slot = Some(result);
        }
        self.details
            .push(format!("**{title}** — {}", parts.join("; ")));
        out
    }

    fn row<T>(
        &mut self,
        scenario: String,
        unit: Unit,
        better: Better,
        pair: &Pair<T>,
        f: impl Fn(&T) -> f64,
    ) {
        self.row_where(scenario, unit, better, pair, |v| Some(f(v)));
    }

    /// [`Self::row`] for a figure only some results have (`f` gives `None` for the others).
    fn row_where<T>(
        &mut self,
        scenario: String,
        unit: Unit,
        better: Better,
        pair: &Pair<T>,
        f: impl Fn(&T) -> Option<f64>,
    ) {
        if pair.iter().all(Option::is_none) {
            return;
        }
        self.rows.push(Row {
            scenario,
            unit,
            better,
            dohost: cell(&pair[0], &f),
            workerd: cell(&pair[1], &f),
        });
    }

    /// Increments past the live-instance cap: throughput and latency, and what the server holds
    /// at the end of it.
    async fn fresh(&mut self, targets: &[Option<Target>; 2]) {
        let s = self.s.clone();
        let title = format!(
            "Increment, {} objects (none created before; past the live cap), {} conns",
            thousands(s.fresh_objects),
            s.conns
        );
        let pair = self
            .each(
                targets,
                &title,
                async |t| load::increment_fresh(t, s.conns, &s).await,
                |f| {
                    format!(
                        "{} req/s, p50 {:.2} ms, p99 {:.2} ms ({} ok, {} failed in {:.1} s); then RSS {:.1} MiB, {} memory mappings",
                        report::format_value(f.load.rps(), Unit::Count),
                        f.load.p50_ms(),
                        f.load.p99_ms(),
                        f.load.ok,
                        f.load.failed,
                        f.load.window.as_secs_f64(),
                        f.rss_kib as f64 / 1024.0,
                        f.maps
                    )
                },
            )
            .await;
        let rows: [FreshRow; 5] = [
            ("throughput", Unit::ReqPerSec, Better::Higher, |f| {
                f.load.rps()
            }),
            ("p50", Unit::Ms, Better::Lower, |f| f.load.p50_ms()),
            ("p99", Unit::Ms, Better::Lower, |f| f.load.p99_ms()),
            ("RSS at the end", Unit::Bytes, Better::Lower, |f| {
                f.rss_kib as f64 * 1024.0
            }),
            (
                "memory mappings at the end",
                Unit::Count,
                Better::Lower,
                |f| f.maps as f64,
            ),
        ];
        for (what, unit, better, value) in rows {
            self.row(format!("{title}: {what}"), unit, better, &pair, value);
        }
    }

    /// A load scenario: three rows (req/s, p50, p99).
    async fn load(
        &mut self,
        targets: &[Option<Target>; 2],
        title: &str,
        f: impl AsyncFnMut(&Target) -> Result<LoadResult>,
    ) {
        let pair = self.each(targets, title, f, describe_load).await;
        self.load_rows(title, &pair, |r| r);
    }

    /// The three rows of a load scenario (req/s, p50, p99), from what `load` finds in a result.
    fn load_rows<T>(&mut self, title: &str, pair: &Pair<T>, load: impl Fn(&T) -> &LoadResult) {
        self.row(
            format!("{title}: throughput"),
            Unit::ReqPerSec,
            Better::Higher,
            pair,
            |r| load(r).rps(),
        );
        self.row(
            format!("{title}: p50"),
            Unit::Ms,
            Better::Lower,
            pair,
            |r| load(r).p50_ms(),
        );
        self.row(
            format!("{title}: p99"),
            Unit::Ms,
            Better::Lower,
            pair,
            |r| load(r).p99_ms(),
        );
    }

    /// Worker → object → object under load; on dohost also its own count of the relay's calls
    /// to the counter: what they cost beyond the counter's events.
    async fn relay(&mut self, targets: &[Option<Target>; 2]) {
        let s = self.s.clone();
        let title = format!(
            "Worker → object → object (/w/relay/: a relay calls the counter), {} conns",
            s.conns
        );
        let pair = self
            .each(
                targets,
                &title,
                async |t| {
                    let load = load::increment_through_relay(t, s.conns, &s);
                    match t.kind {
                        Kind::Dohost { .. } => {
                            let (load, calls) = calls::around(t, load).await?;
                            Ok((load, Some(calls)))
                        }
                        Kind::Workerd => Ok((load.await?, None)),
                    }
                },
                |(load, calls)| match calls {
                    Some(calls) => format!("{}; {}", describe_load(load), calls.describe()),
                    None => describe_load(load),
                },
            )
            .await;
        self.load_rows(&title, &pair, |(load, _)| load);
        self.row_where(
            "Stub call between two objects, under that load: overhead over the callee's own event (dohost's count), median".into(),
            Unit::Us,
            Better::Lower,
            &pair,
            |(_, calls)| calls.as_ref().map(StubCalls::median_overhead_us),
        );
    }

    /// What the worker hop and a stub call add to a warm increment, on one connection. dohost
    /// only: workerd has no route that skips its front worker.
    async fn hops(&mut self, targets: &[Option<Target>; 2]) {
        let s = self.s.clone();
        let title = "Worker hop and stub call (warm increments on one connection, interleaved: direct, through the worker, through the worker and a relay)";
        let only_dohost = [targets[0].clone(), None];
        let pair = self
            .each(
                &only_dohost,
                title,
                async |t| calls::around(t, load::hops(t, &s)).await,
                |(h, calls)| {
                    format!(
                        "medians: direct {:.3} ms, through the worker {:.3} ms, worker → relay → counter {:.3} ms; the worker adds {:.1} µs, the stub call {:.1} µs; {}",
                        h.direct_ms(),
                        h.worker_ms(),
                        h.relay_ms(),
                        h.worker_us(),
                        h.stub_us(),
                        calls.describe()
                    )
                },
            )
            .await;
        self.row(
            "Worker hop: added to a warm increment, median".into(),
            Unit::Us,
            Better::Lower,
            &pair,
            |(h, _)| h.worker_us(),
        );
        self.row(
            "Stub call between two objects: added to the callee's event, median (the relay's whole event included)".into(),
            Unit::Us,
            Better::Lower,
            &pair,
            |(h, _)| h.stub_us(),
        );
        self.row(
            "Stub call between two objects: overhead over the callee's own event (dohost's count), median".into(),
            Unit::Us,
            Better::Lower,
            &pair,
            |(_, calls)| calls.median_overhead_us(),
        );
        self.row(
            "Stub call between two objects: that overhead without handing the answer back (waking the caller after the callee's commit), mean".into(),
            Unit::Us,
            Better::Lower,
            &pair,
            |(_, calls)| calls.mean_without_handback_us(),
        );
    }

    /// Memory rows, each on fresh servers (so that memory freed by one measurement is not
    /// reused by the next), with dohost at `--idle-timeout 2`.
    async fn memory_phase(
        &mut self,
        dohost_bin: &Path,
        workerd_bin: Option<&Path>,
        tmp: &Path,
    ) -> Result<()> {
        if self.skips("Memory per idle WebSocket, after hibernation")
            && self.skips("Memory per counter object, after hibernation")
            && self.skips("Memory per live JavaScript object (awake)")
        {
            return Ok(());
        }
        println!("\n== memory (fresh servers for each; dohost --idle-timeout 2) ==");
        let s = self.s.clone();
        let describe = |m: &Memory| {
            format!(
                "RSS {:.1} MiB before, {:.1} MiB with {} awake, {:.1} MiB after {} s idle{}: {} each hibernated ({} awake)",
                m.before_kib as f64 / 1024.0,
                m.awake_kib as f64 / 1024.0,
                m.count,
                m.after_kib as f64 / 1024.0,
                m.idle.waited.as_secs(),
                if m.idle.idle { "" } else { " (NOT seen idle)" },
                report::format_value(m.per_item_bytes(), Unit::Bytes),
                report::format_value(m.per_item_awake_bytes(), Unit::Bytes),
            )
        };

        let servers =
            Servers::start(dohost_bin, workerd_bin, &tmp.join("memory-sockets"), 2.0).await?;
        // workerd holds 2 descriptors per socket and 3 per room, and exits when accept() hits
        // its open-files limit: give it as many rooms as fit.
        let workerd_budget = match &servers.workerd {
            Some(w) => Some(ws::socket_budget(&s, fd_limit(w.target().pid)?)),
            None => None,
        };
        let mut title = format!(
            "Memory per idle WebSocket ({} sockets over {} rooms",
            thousands(s.memory_sockets),
            thousands(s.memory_rooms)
        );
        if let Some((sockets, rooms)) =
            workerd_budget.filter(|b| *b != (s.memory_sockets, s.memory_rooms))
        {
            title += &format!(
                "; workerd {} over {}, all its open-files limit allows",
                thousands(sockets),
                thousands(rooms)
            );
        }
        title += ", after hibernation)";
        let pair = self
            .each(
                &servers.targets(),
                &title,
                async |t| {
                    let mut s = s.clone();
                    if let (Kind::Workerd, Some((sockets, rooms))) = (&t.kind, workerd_budget) {
                        (s.memory_sockets, s.memory_rooms) = (sockets, rooms);
                    }
                    ws::memory_sockets(t, &s).await
                },
                describe,
            )
            .await;
        self.row(
            title,
            Unit::Bytes,
            Better::Lower,
            &pair,
            Memory::per_item_bytes,
        );
        drop(servers);

        let servers =
            Servers::start(dohost_bin, workerd_bin, &tmp.join("memory-objects"), 2.0).await?;
        let title = format!(
            "Memory per counter object ({} touched once, after hibernation)",
            thousands(s.memory_objects)
        );
        let pair = self
            .each(
                &servers.targets(),
                &title,
                async |t| load::memory_objects(t, &s).await,
                describe,
            )
            .await;
        self.row(
            title,
            Unit::Bytes,
            Better::Lower,
            &pair,
            Memory::per_item_bytes,
        );
        drop(servers);

        let servers = Servers::start(dohost_bin, workerd_bin, &tmp.join("memory-js"), 2.0).await?;
        let title = format!(
            "Memory per JavaScript counter object ({} touched once; workerd: the same class)",
            thousands(s.memory_objects / 10)
        );
        let pair = self
            .each(
                &servers.targets(),
                &title,
                async |t| load::memory_objects_js(t, &s).await,
                describe,
            )
            .await;
        self.row(
            "Memory per live JavaScript object (awake)".into(),
            Unit::Bytes,
            Better::Lower,
            &pair,
            Memory::per_item_awake_bytes,
        );
        self.row(
            "Memory per JavaScript object, after hibernation".into(),
            Unit::Bytes,
            Better::Lower,
            &pair,
            Memory::per_item_bytes,
        );
        Ok(())
    }

    /// Everything else, on fresh servers with dohost at `--idle-timeout 10` (workerd evicts an
    /// idle object after about 10 s).
    async fn main_phase(
        &mut self,
        dohost_bin: &Path,
        workerd_bin: Option<&Path>,
        tmp: &Path,
    ) -> Result<()> {
        println!("\n== load (fresh servers; dohost --idle-timeout 10) ==");
        let mut servers = Servers::start(dohost_bin, workerd_bin, &tmp.join("load"), 10.0).await?;
        let targets = servers.targets();
        let s = self.s.clone();

        for conns in [1, s.mid_conns, s.conns] {
            let title = format!(
                "Increment, 1 object, {conns} conn{}",
                if conns == 1 { "" } else { "s" }
            );
            self.load(&targets, &title, async |t| {
                load::increment_one(t, conns, &s).await
            })
            .await;
        }
        let title = format!(
            "JavaScript increment (examples/js/counter; workerd: the same class), 1 object, {} conns",
            s.conns
        );
        self.load(&targets, &title, async |t| {
            load::increment_js(t, s.conns, &s).await
        })
        .await;
        let title = format!(
            "Increment through a front worker (/w/counter/), 1 object, {} conns",
            s.conns
        );
        self.load(&targets, &title, async |t| {
            load::increment_through_worker(t, s.conns, &s).await
        })
        .await;
        self.relay(&targets).await;
        self.hops(&targets).await;
        let title = format!("Read (GET), 1 object, {} conns", s.conns);
        self.load(&targets, &title, async |t| {
            load::read_one(t, s.conns, &s).await
        })
        .await;
        let title = format!(
            "Increment, {} objects, {} conns",
            thousands(s.spread_objects),
            s.conns
        );
        self.load(&targets, &title, async |t| {
            load::increment_spread(t, s.conns, &s).await
        })
        .await;
        self.fresh(&targets).await;
        // Let both servers drop those objects now, not during the next measurements.
        println!(
            "(waiting for the {} objects to hibernate)",
            thousands(s.spread_objects)
        );
        for t in targets.iter().flatten() {
            let idle = t.wait_idle(&s).await?;
            println!(
                "  {:<8} idle after {:.0} s{}",
                t.name,
                idle.waited.as_secs_f64(),
                if idle.idle { "" } else { " (not seen idle)" }
            );
        }
        let title = format!("Trivial handler (/hello/x/), {} conns", s.conns);
        self.load(&targets, &title, async |t| {
            load::hello(t, s.conns, &s).await
        })
        .await;

        let title = format!(
            "Cold start ({} fresh objects, sequential GETs)",
            s.cold_objects
        );
        let pair = self
            .each(&targets, &title, async |t| load::cold_start(t, &s).await, |c| {
                format!(
                    "first request median {:.2} ms (p99 {:.2} ms), second request median {:.2} ms, \
                     trivial handler median {:.2} ms (warm = {:.2}× trivial)",
                    c.cold_ms(),
                    c.cold_p99_ms(),
                    c.warm_ms(),
                    c.trivial_ms(),
                    c.warm_over_trivial()
                )
            })
            .await;
        self.row(
            "Cold start: first request to a new object, median".into(),
            Unit::Ms,
            Better::Lower,
            &pair,
            load::ColdStart::cold_ms,
        );
        self.row(
            "Cold start: same object again (warm), median".into(),
            Unit::Ms,
            Better::Lower,
            &pair,
            load::ColdStart::warm_ms,
        );
        self.row(
            "Trivial handler (/hello/x/), same connection, median".into(),
            Unit::Ms,
            Better::Lower,
            &pair,
            load::ColdStart::trivial_ms,
        );
        let title = format!(
            "JavaScript cold start ({} fresh objects of examples/js/counter, sequential GETs)",
            s.cold_objects
        );
        let pair = self
            .each(&targets, &title, async |t| load::cold_start_js(t, &s).await, |c| {
                format!(
                    "first request median {:.2} ms (p99 {:.2} ms), second request median {:.2} ms",
                    c.cold_ms(),
                    c.cold_p99_ms(),
                    c.warm_ms()
                )
            })
            .await;
        self.row(
            "JavaScript cold start: first request to a new object, median".into(),
            Unit::Ms,
            Better::Lower,
            &pair,
            load::ColdStart::cold_ms,
        );
        self.row(
            "JavaScript: same object again (warm), median".into(),
            Unit::Ms,
            Better::Lower,
            &pair,
            load::ColdStart::warm_ms,
        );

        let title = format!(
            "WebSocket fan-out, {} clients in one room",
            thousands(s.fanout_clients)
        );
        let pair = self
            .each(
                &targets,
                &title,
                async |t| ws::fanout(t, &s).await,
                |f| f.summary("until all", f.clients - 1, "others had it", "joining"),
            )
            .await;
        self.row(
            format!("{title}: send to last receipt, median"),
            Unit::Ms,
            Better::Lower,
            &pair,
            ws::Fanout::median_ms,
        );

        let title = format!(
            "Server-sent events fan-out, {} subscribers of one room",
            thousands(s.fanout_clients)
        );
        let pair = self
            .each(
                &targets,
                &title,
                async |t| sse::fanout(t, &s).await,
                |f| {
                    f.summary(
                        "from the publish until all",
                        f.clients,
                        "had it",
                        "subscribing",
                    )
                },
            )
            .await;
        self.row(
            format!("{title}: publish to last receipt, median"),
            Unit::Ms,
            Better::Lower,
            &pair,
            ws::Fanout::median_ms,
        );

        let title = format!(
            "Streamed download of {} MiB, one connection",
            s.download_bytes >> 20
        );
        let pair = self
            .each(
                &targets,
                &title,
                async |t| download::downloads(t, &s).await,
                |d| {
                    let rates: Vec<String> = d.rates().iter().map(|r| format!("{r:.0}")).collect();
                    format!(
                        "median {:.0} MiB/s over {} downloads (MiB/s: {})",
                        d.median_mib_per_sec(),
                        d.times.len(),
                        rates.join(", ")
                    )
                },
            )
            .await;
        self.row(
            format!("{title}: throughput, median"),
            Unit::MibPerSec,
            Better::Higher,
            &pair,
            download::Downloads::median_mib_per_sec,
        );

        let title = format!(
            "WebSocket throughput, {} clients in one room, all sending",
            s.throughput_clients
        );
        let pair = self
            .each(&targets, &title, async |t| ws::throughput(t, &s).await, |r| {
                format!(
                    "{} deliveries/s ({} messages sent, {} delivered in {:.1} s, {} clients stopped on errors)",
                    report::format_value(r.delivered_per_sec(), Unit::Count),
                    r.sent,
                    r.delivered,
                    r.window.as_secs_f64(),
                    r.errors
                )
            })
            .await;
        self.row(
            format!("{title}: delivered"),
            Unit::MsgPerSec,
            Better::Higher,
            &pair,
            ws::Throughput::delivered_per_sec,
        );

        // Redeploy: dohost only.
        let ticket = Bytes::from(std::fs::read(peers::guest_wasm("ticket-counter"))?);
        let counter = Bytes::from(std::fs::read(peers::guest_wasm("counter"))?);
        let title = format!(
            "Redeploy under load ({} conns of GET /counter/..., ticket-counter over counter)",
            s.mid_conns
        );
        let only_dohost = [targets[0].clone(), None];
        let pair = self
            .each(
                &only_dohost,
                &title,
                async |t| load::redeploy(t, &s, ticket.clone(), counter.clone()).await,
                |r| {
                    format!(
                        "deploy call {:.0} ms; first new-code answer {:+.1} ms after it returned; {} requests, {} failed, {} old-code answers after new",
                        r.deploy_call.as_secs_f64() * 1000.0,
                        r.switch_ms,
                        r.requests,
                        r.failed,
                        r.old_after_new
                    )
                },
            )
            .await;
        self.row(
            "Redeploy: new code answering, after deploy returns".into(),
            Unit::Ms,
            Better::Lower,
            &pair,
            |r| r.switch_ms.max(0.0),
        );
        self.row(
            "Redeploy: deploy call (compile + switch)".into(),
            Unit::Ms,
            Better::Lower,
            &pair,
            |r| r.deploy_call.as_secs_f64() * 1000.0,
        );
        self.row(
            "Redeploy: failed requests".into(),
            Unit::Count,
            Better::Lower,
            &pair,
            |r| r.failed as f64,
        );

        // Durability: the count of /counter/bench/ must survive SIGKILL and a restart.
        if self.skips("Durability check") {
            return Ok(());
        }
        println!("Durability check (kill -9 and restart)");
        let line = match durability(&mut servers.dohost).await {
            Ok(l) => l,
            Err(e) => format!("FAILED: {e:#}"),
        };
        println!("  dohost   {line}");
        let mut parts = vec![format!("dohost: {line}")];
        if let Some(workerd) = servers.workerd.as_mut() {
            let line = match durability_workerd(workerd).await {
                Ok(l) => l,
                Err(e) => format!("FAILED: {e:#}"),
            };
            println!("  workerd  {line}");
            parts.push(format!("workerd: {line}"));
        }
        self.details
            .push(format!("**Durability check** — {}", parts.join("; ")));
        Ok(())
    }
}

/// `GET /counter/bench/`'s count.
async fn bench_count(t: &Target) -> Result<u64> {
    let (status, body) =
        load::request_once(t.addr, Method::GET, "/counter/bench/", &[], Bytes::new()).await?;
    let v: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("{status}: {}", String::from_utf8_lossy(&body)))?;
    v["count"]
        .as_u64()
        .with_context(|| format!("no count in {v}"))
}

async fn durability(dohost: &mut Dohost) -> Result<String> {
    let before = bench_count(&dohost.target()).await?;
    dohost.kill_and_restart()?;
    let after = bench_count(&dohost.target()).await?;
    let db = std::fs::metadata(dohost.data.join("dohost.redb")).map_or(0, |m| m.len());
    let verdict = if before == after {
        "kept"
    } else {
        "LOST WRITES"
    };
    Ok(format!(
        "count {before} before SIGKILL, {after} after restart ({verdict}); dohost.redb is {}",
        report::format_value(db as f64, Unit::Bytes)
    ))
}

async fn durability_workerd(workerd: &mut Workerd) -> Result<String> {
    let before = bench_count(&workerd.target()).await?;
    workerd.kill_and_restart().await?;
    let after = bench_count(&workerd.target()).await?;
    let (files, bytes) = peers::sqlite_files(&workerd.storage_dir("dohost-bench-counter"));
    let verdict = if before == after {
        "kept"
    } else {
        "LOST WRITES"
    };
    Ok(format!(
        "count {before} before SIGKILL, {after} after restart ({verdict}); do-storage/dohost-bench-counter holds {files} SQLite files, {}",
        report::format_value(bytes as f64, Unit::Bytes)
    ))
}

/// A load result's line in the raw numbers.
fn describe_load(r: &LoadResult) -> String {
    format!(
        "{} req/s, p50 {:.2} ms, p99 {:.2} ms ({} ok, {} failed in {:.1} s)",
        report::format_value(r.rps(), Unit::Count),
        r.p50_ms(),
        r.p99_ms(),
        r.ok,
        r.failed,
        r.window.as_secs_f64()
    )
}

fn thousands(n: usize) -> String {
    report::format_value(n as f64, Unit::Count)
}

/// The notes at the end of `BENCHMARKS.md`: how each row is measured.
/// One row of the scenario past the live cap: what, its unit, which way is better, its value.
type FreshRow = (&'static str, Unit, Better, fn(&load::Fresh) -> f64);

fn notes(s: &Settings) -> String {
    format!(
        "## How it is measured\n\n\
- Both servers run on this machine, on 127.0.0.1, with the load generator (`bench/`, tokio + hyper 1 + tokio-tungstenite) in the same {cores}-core box: client and server share the CPUs. workerd runs each isolate on one thread; dohost uses a multi-threaded tokio runtime.\n\
- The same objects on both sides: `examples/counter` and `examples/chat-room` (dohost, WebAssembly components) and a line-for-line JavaScript port of them (`bench/workerd/worker.js`, WebSocket hibernation API); `bench/guests/hello` on dohost and the front worker itself on workerd answer `ok`.\n\
- Storage is on disk on both sides. dohost: redb, one fsync per group commit. workerd: `durableObjectStorage = (localDisk = ...)`, one SQLite file per object in WAL mode; when this harness was written, `strace` showed one `fsync` of the object's WAL per committed increment, so both acknowledge a write only once it is durable. The durability check above kills each server with SIGKILL and reads the count back.\n\
- HTTP load: N keep-alive HTTP/1.1 connections, each sending its next request when the previous answer is read, {warm:.1} s of warm-up, then a {dur:.1} s window; a request counts if it started and ended inside the window. Latencies are per request, from send to the whole body read.\n\
- Increments: `POST /counter/bench/` (one object) and `POST /counter/spread-<i>/` with `i` uniform over {spread} names (each touched once before the window). Past the live cap: `POST /counter/fresh-<i>/` with `i` uniform over {fresh} names, none touched before, so most requests wake or create a sleeping object (dohost keeps at most `--max-live-objects` live, 10,000 by default); then the server's RSS and its memory mappings (lines of `/proc/PID/maps`). Reads: `GET /counter/bench/`.\n\
- Cold start: {cold} never-seen counter objects in turn on one connection, `GET` each twice, then `GET /hello/x/`: the first is the cold start, the second the warm figure, the third the trivial-handler latency the warm figure is read against.\n\
- Fan-out: {fan} clients join one room; client 0 sends, and the round ends when every other client has the broadcast; median of {rounds} rounds.\n\
- Server-sent events fan-out: {fan} subscribers (`GET /pubsub/<room>/events`) of `examples/pubsub` (dohost) and its JavaScript port (workerd, which keeps each subscriber's stream writer in memory: a JavaScript object cannot hand its streams to the runtime to hibernate); one `POST /pubsub/<room>/publish` per round (stored, then written to every subscriber), and the round ends when every subscriber has the event; median of {rounds} rounds.\n\
- Streamed download: `GET /d/<n>` answers n generated bytes with a `content-length`, written in 64 KiB pieces as the client takes them: on dohost an http-worker (`bench/guests/download`, the world `http-worker`), on workerd its front worker (a `FixedLengthStream`). The client reads and discards the body on one connection; each download's time runs from the request to the last byte; median of {downloads} downloads of {download_mib} MiB.\n\
- WebSocket throughput: {tput} clients in one room, each sending a message, waiting for its own copy of the broadcast, then sending the next; every chat message any client receives in the window counts.\n\
- Memory: VmRSS of the server process, on fresh servers, with dohost at `--idle-timeout 2`. Idle: dohost's `/_admin/stats` shows no live instance; workerd has no such view, so at least {widle} s (it evicts an object about 10 s after its last event) then, on both, until two RSS samples a second apart differ by under 1 % (each gets the same chance to hand freed memory back). Per item = (RSS after hibernation − RSS before) ÷ count; the awake figure (RSS right after the last one was set up) is in the raw numbers.\n\
- The load scenarios run with dohost at `--idle-timeout 10`, close to workerd's 10 s eviction.\n\
- Through the front worker: `POST /w/counter/bench/`, dohost's app worker calling the counter through a stub (workerd's front worker does this for every request). Worker → object → object: `POST /w/relay/bench/`, the worker calls a relay object, which calls the counter of the same name.\n\
- Worker hop and stub call (dohost only): warm increments on one connection, in turn straight to the counter, through the worker, and through the worker and the relay; the hop is the difference of the first two medians, the stub call from outside the difference of the last two (the relay's whole event included).\n\
- A stub call's own cost (dohost only): dohost's `/_admin/stats` counts, for each stub call an object makes, the caller's time in `stubs.fetch` less the callee's event (from its event loop taking it up to its release: guest done, commit durable): queueing, waking, copying, returning. Read before and after the scenario (the relay load's warm-up included), for the relay's calls to the counter; the median is interpolated within its histogram's bucket (1–3 µs wide up to 25 µs). Of it, dohost also counts the hand-back, from the counter's release (commit durable) until the relay has the answer: mostly the wake-up of the relay's thread, which a response to a client waits for as well; the row without it is the call's own path there and back (a mean).\n\
- Redeploy (dohost only; workerd cannot replace code under a running process): GET load on counter objects while `examples/ticket-counter` is deployed over `counter` (its GET answers `{{\"issued\":n}}`); the time from the deploy call's answer to the first new-code answer (0 if the new code answered first), and every request that failed.\n",
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
        warm = s.warmup.as_secs_f64(),
        dur = s.duration.as_secs_f64(),
        spread = thousands(s.spread_objects),
        fresh = thousands(s.fresh_objects),
        cold = s.cold_objects,
        fan = thousands(s.fanout_clients),
        rounds = s.fanout_rounds,
        tput = s.throughput_clients,
        downloads = s.downloads,
        download_mib = s.download_bytes >> 20,
        widle = s.workerd_idle_min.as_secs(),
    )
}

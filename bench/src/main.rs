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
use dohost_bench::{Kind, Memory, RUNS, Settings, Target, download, fd_limit, sse, syncs, ws};
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

    /// Run only the cluster section: increments and fan-out on one node on redb, one node on
    /// PostgreSQL (Debian's `postgresql`, a server of the run's own) and three nodes. Writes
    /// target/BENCHMARKS-cluster.md unless --out is given.
    #[arg(long)]
    cluster: bool,
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
    if cli.cluster {
        let out = cli
            .out
            .clone()
            .unwrap_or_else(|| peers::target_dir().join("BENCHMARKS-cluster.md"));
        let tmp = tempfile::Builder::new().prefix("dohost-bench-").tempdir()?;
        let table = dohost_bench::cluster::run(&dohost_bin, tmp.path(), &s).await?;
        println!("\n{table}");
        std::fs::write(&out, table).with_context(|| format!("writing {}", out.display()))?;
        println!(
            "wrote {} ({:.0} s)",
            out.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
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

    if let Err(why) = syncs::available() {
        println!("  warning: {why}: the fsync-per-write rows will say \"not measured\"");
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
        "\neach cell: median (min–max) of {RUNS} runs; ratio: of the medians, above 1 means dohost did better (dohost/workerd for throughput, workerd/dohost for latency and memory), in brackets the range of the paired runs' ratios\n"
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

/// Per side, one result per run, in run order: none if the side did not run.
type Runs<T> = [Vec<Result<T>>; 2];

/// A side's cell: `f` gives `None` where the row does not apply to that side.
fn cell<T>(runs: &[Result<T>], f: impl Fn(&T) -> Option<f64>) -> Cell {
    let failed = runs.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        return Cell::Failed {
            failed,
            runs: runs.len(),
        };
    }
    let values: Vec<f64> = runs.iter().flatten().filter_map(f).collect();
    if values.is_empty() {
        Cell::NotApplicable
    } else {
        Cell::Runs(values)
    }
}

/// A result's line in the raw numbers.
fn line<T>(result: &Result<T>, describe: impl Fn(&T) -> String) -> String {
    match result {
        Ok(v) => describe(v),
        Err(e) => format!("FAILED: {e:#}"),
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

    /// Runs `f` [`RUNS`] times on each side, alternating which side goes first, prints and
    /// records a one-line description of each result, and lets the server go quiet after each.
    /// A scenario `--only` leaves out runs on neither side, and its rows are left out of the
    /// table.
    async fn each<T>(
        &mut self,
        targets: &[Option<Target>; 2],
        title: &str,
        mut f: impl AsyncFnMut(&Target) -> Result<T>,
        describe: impl Fn(&T) -> String,
    ) -> Runs<T> {
        let mut runs: Runs<T> = [Vec::new(), Vec::new()];
        if self.skips(title) {
            return runs;
        }
        println!("{title}");
        for run in 0..RUNS {
            run_once(targets, run, &mut f, &describe, &mut runs).await;
        }
        self.record(title, &runs, describe);
        runs
    }

    /// The raw numbers of a scenario: each side's runs.
    fn record<T>(&mut self, title: &str, runs: &Runs<T>, describe: impl Fn(&T) -> String) {
        let mut text = format!("**{title}**");
        for (side, name) in runs.iter().zip(["dohost", "workerd"]) {
            for (i, result) in side.iter().enumerate() {
                text += &format!("\n  - {name}, run {}: {}", i + 1, line(result, &describe));
            }
        }
        self.details.push(text);
    }

    fn row<T>(
        &mut self,
        scenario: String,
        unit: Unit,
        better: Better,
        runs: &Runs<T>,
        f: impl Fn(&T) -> f64,
    ) {
        self.row_where(scenario, unit, better, runs, |v| Some(f(v)));
    }

    /// [`Self::row`] for a figure only some results have (`f` gives `None` for the others).
    fn row_where<T>(
        &mut self,
        scenario: String,
        unit: Unit,
        better: Better,
        runs: &Runs<T>,
        f: impl Fn(&T) -> Option<f64>,
    ) {
        if runs.iter().all(Vec::is_empty) {
            return;
        }
        self.rows.push(Row {
            scenario,
            unit,
            better,
            dohost: cell(&runs[0], &f),
            workerd: cell(&runs[1], &f),
        });
    }

    /// One more run of an increment scenario on each side, with strace attached to the server:
    /// its fsync-family calls per acknowledged write. A run of its own, since strace slows the
    /// server; a side where strace cannot attach shows why instead.
    async fn syncs<T>(
        &mut self,
        targets: &[Option<Target>; 2],
        title: &str,
        mut f: impl AsyncFnMut(&Target) -> Result<T>,
        writes: impl Fn(&T) -> (u64, String),
    ) {
        if self.skips(title) {
            return;
        }
        let mut cells = [Cell::NotApplicable, Cell::NotApplicable];
        let mut text = format!("**{title}**, under strace");
        for (cell, target) in cells.iter_mut().zip(targets) {
            let Some(t) = target else { continue };
            let line = match syncs::around(t.pid, f(t)).await {
                Err(e) => {
                    *cell = Cell::Failed { failed: 1, runs: 1 };
                    format!("FAILED: {e:#}")
                }
                Ok(Err(why)) => {
                    *cell = Cell::NotMeasured(why.clone());
                    format!("not measured: {why}")
                }
                Ok(Ok((result, calls))) => {
                    let (acknowledged, load) = writes(&result);
                    // No write acknowledged: no figure ("—"), rather than a division by zero.
                    let per_write = calls.total() as f64 / acknowledged as f64;
                    *cell = Cell::Runs(vec![if acknowledged > 0 {
                        per_write
                    } else {
                        f64::NAN
                    }]);
                    format!(
                        "{} fsync-family calls ({}) for {acknowledged} acknowledged writes: {per_write:.3} per write; meanwhile {load}",
                        calls.total(),
                        calls.describe()
                    )
                }
            };
            println!("  {:<8} under strace: {line}", t.name);
            text += &format!("\n  - {}: {line}", t.name);
            if let Err(e) = t.settle(SETTLE).await {
                println!("  {:<8} (could not watch it settle: {e:#})", t.name);
            }
        }
        let [dohost, workerd] = cells;
        self.rows.push(Row {
            scenario: format!(
                "{title}: fsync-family calls per acknowledged write (a run of its own, under strace)"
            ),
            unit: Unit::PerWrite,
            better: Better::Neither,
            dohost,
            workerd,
        });
        self.details.push(text);
    }

    /// Increments past the live-instance cap: throughput and latency, and what the server holds
    /// at the end of it. `shared`: dohost's counter is a shared class (see
    /// [`load::increment_fresh`]).
    async fn fresh(&mut self, targets: &[Option<Target>; 2], shared: bool) {
        let s = self.s.clone();
        let class = if shared {
            "; dohost's class shares instances"
        } else {
            ""
        };
        let title = format!(
            "Increment, {} objects (none created before; past the live cap{class}), {} conns",
            thousands(s.fresh_objects),
            s.conns
        );
        let runs = self
            .each(
                targets,
                &title,
                async |t| {
                    // Each run from an idle server: the end figures are of this run's objects
                    // alone, not also the last run's.
                    t.wait_idle(&s).await?;
                    load::increment_fresh(t, s.conns, &s, shared).await
                },
                |f| {
                    format!(
                        "{}; then RSS {:.1} MiB, {} memory mappings",
                        describe_load(&f.load),
                        f.rss_kib as f64 / 1024.0,
                        f.maps
                    )
                },
            )
            .await;
        let rows: [FreshRow; 4] = [
            ("throughput", Unit::ReqPerSec, Better::Higher, |f| {
                f.load.rps()
            }),
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
            self.row(format!("{title}: {what}"), unit, better, &runs, value);
        }
        self.syncs(
            targets,
            &title,
            async |t| load::increment_fresh(t, s.conns, &s, shared).await,
            |f| load_writes(&f.load),
        )
        .await;
    }

    /// A load scenario: its rows (req/s, p99).
    async fn load(
        &mut self,
        targets: &[Option<Target>; 2],
        title: &str,
        f: impl AsyncFnMut(&Target) -> Result<LoadResult>,
    ) {
        let runs = self.each(targets, title, f, describe_load).await;
        self.load_rows(title, &runs, |r| r);
    }

    /// A load scenario of increments: its rows, then its fsync-family calls per write.
    async fn increments(
        &mut self,
        targets: &[Option<Target>; 2],
        title: &str,
        f: impl AsyncFnMut(&Target) -> Result<LoadResult> + Clone,
    ) {
        self.load(targets, title, f.clone()).await;
        self.syncs(targets, title, f, load_writes).await;
    }

    /// The rows of a load scenario, from what `load` finds in a result: throughput and p99.
    /// No p50: in a closed loop (each connection sends when answered) the mean latency is
    /// connections ÷ throughput, so a p50 row would restate the throughput row.
    fn load_rows<T>(&mut self, title: &str, runs: &Runs<T>, load: impl Fn(&T) -> &LoadResult) {
        self.row(
            format!("{title}: throughput"),
            Unit::ReqPerSec,
            Better::Higher,
            runs,
            |r| load(r).rps(),
        );
        self.row(
            format!("{title}: p99"),
            Unit::Ms,
            Better::Lower,
            runs,
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
        let runs = self
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
        self.load_rows(&title, &runs, |(load, _)| load);
        self.syncs(
            targets,
            &title,
            async |t| load::increment_through_relay(t, s.conns, &s).await,
            load_writes,
        )
        .await;
        self.row_where(
            "Stub call between two objects, under that load: overhead over the callee's own event (dohost's count), median".into(),
            Unit::Us,
            Better::Lower,
            &runs,
            |(_, calls)| calls.as_ref().map(StubCalls::median_overhead_us),
        );
    }

    /// What the worker hop and a stub call add to a warm increment, on one connection. dohost
    /// only: workerd has no route that skips its front worker.
    async fn hops(&mut self, targets: &[Option<Target>; 2]) {
        let s = self.s.clone();
        let title = "Worker hop and stub call (warm increments on one connection, interleaved: direct, through the worker, through the worker and a relay)";
        let only_dohost = [targets[0].clone(), None];
        let runs = self
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
            &runs,
            |(h, _)| h.worker_us(),
        );
        self.row(
            "Stub call between two objects: added to the callee's event, median (the relay's whole event included)".into(),
            Unit::Us,
            Better::Lower,
            &runs,
            |(h, _)| h.stub_us(),
        );
        self.row(
            "Stub call between two objects: overhead over the callee's own event (dohost's count), median".into(),
            Unit::Us,
            Better::Lower,
            &runs,
            |(_, calls)| calls.median_overhead_us(),
        );
        self.row(
            "Stub call between two objects: that overhead without handing the answer back (waking the caller after the callee's commit), mean".into(),
            Unit::Us,
            Better::Lower,
            &runs,
            |(_, calls)| calls.mean_without_handback_us(),
        );
    }

    /// Memory rows: each run of each scenario on fresh servers (so that memory freed by one
    /// measurement is not reused by the next), with dohost at `--idle-timeout 2`.
    async fn memory_phase(
        &mut self,
        dohost_bin: &Path,
        workerd_bin: Option<&Path>,
        tmp: &Path,
    ) -> Result<()> {
        let s = self.s.clone();
        let sockets = format!(
            "Memory per WebSocket ({} sockets over {} rooms",
            thousands(s.memory_sockets),
            thousands(s.memory_rooms)
        );
        let objects = format!(
            "Memory per counter object ({} touched once)",
            thousands(s.memory_objects)
        );
        let js = format!(
            "Memory per JavaScript counter object ({} touched once; workerd: the same class)",
            thousands(s.memory_objects / 10)
        );
        if [&sockets, &objects, &js].iter().all(|t| self.skips(t)) {
            return Ok(());
        }
        println!("\n== memory (fresh servers for each run; dohost --idle-timeout 2) ==");
        let bins = (dohost_bin, workerd_bin);

        // workerd holds 2 descriptors per socket and 3 per room, and exits when accept() hits
        // its open-files limit: give it as many rooms as fit.
        let workerd_budget = match workerd_bin.filter(|_| !self.skips(&sockets)) {
            Some(bin) => {
                let w = Workerd::start(bin, &tmp.join("workerd-limits")).await?;
                Some(ws::socket_budget(&s, fd_limit(w.target().pid)?))
            }
            None => None,
        };
        let mut title = sockets;
        if let Some((sockets, rooms)) =
            workerd_budget.filter(|b| *b != (s.memory_sockets, s.memory_rooms))
        {
            title += &format!(
                "; workerd {} over {}, all its open-files limit allows",
                thousands(sockets),
                thousands(rooms)
            );
        }
        title += ")";
        let runs = self
            .memory_runs(bins, &tmp.join("memory-sockets"), &title, async |t| {
                let mut s = s.clone();
                if let (Kind::Workerd, Some((sockets, rooms))) = (&t.kind, workerd_budget) {
                    (s.memory_sockets, s.memory_rooms) = (sockets, rooms);
                }
                ws::memory_sockets(t, &s).await
            })
            .await?;
        self.memory_rows(&title, "socket", &runs);

        let runs = self
            .memory_runs(bins, &tmp.join("memory-objects"), &objects, async |t| {
                load::memory_objects(t, &s).await
            })
            .await?;
        self.memory_rows(&objects, "object", &runs);

        let runs = self
            .memory_runs(bins, &tmp.join("memory-js"), &js, async |t| {
                load::memory_objects_js(t, &s).await
            })
            .await?;
        self.memory_rows(&js, "object", &runs);
        Ok(())
    }

    /// A memory scenario's runs, each on fresh servers with dohost at `--idle-timeout 2`.
    async fn memory_runs(
        &mut self,
        (dohost_bin, workerd_bin): (&Path, Option<&Path>),
        dir: &Path,
        title: &str,
        mut f: impl AsyncFnMut(&Target) -> Result<Memory>,
    ) -> Result<Runs<Memory>> {
        let mut runs: Runs<Memory> = [Vec::new(), Vec::new()];
        if self.skips(title) {
            return Ok(runs);
        }
        println!("{title}");
        for run in 0..RUNS {
            let dir = dir.join(format!("run-{}", run + 1));
            let servers = Servers::start(dohost_bin, workerd_bin, &dir, 2.0).await?;
            run_once(&servers.targets(), run, &mut f, describe_memory, &mut runs).await;
        }
        self.record(title, &runs, describe_memory);
        Ok(runs)
    }

    /// A memory scenario's rows: each item awake, each after the idle wait, and whether the
    /// server had let its objects go by then.
    fn memory_rows(&mut self, title: &str, item: &str, runs: &Runs<Memory>) {
        self.row(
            format!("{title}: awake, per {item}"),
            Unit::Bytes,
            Better::Lower,
            runs,
            Memory::per_item_awake_bytes,
        );
        self.row(
            format!("{title}: after idle, per {item}"),
            Unit::Bytes,
            Better::Lower,
            runs,
            Memory::per_item_bytes,
        );
        self.row(
            format!(
                "{title}: objects still awake after idle (dohost: live instances; workerd: object databases open)"
            ),
            Unit::Count,
            Better::Neither,
            runs,
            |m| m.still_held() as f64,
        );
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
            self.increments(&targets, &title, async |t| {
                load::increment_one(t, conns, &s).await
            })
            .await;
        }
        let title = format!(
            "JavaScript increment (examples/js/counter; workerd: the same class), 1 object, {} conns",
            s.conns
        );
        self.increments(&targets, &title, async |t| {
            load::increment_js(t, s.conns, &s).await
        })
        .await;
        let title = format!(
            "Increment through a front worker (/w/counter/), 1 object, {} conns",
            s.conns
        );
        self.increments(&targets, &title, async |t| {
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
        self.increments(&targets, &title, async |t| {
            load::increment_spread(t, s.conns, &s).await
        })
        .await;
        self.fresh(&targets, false).await;
        self.fresh(&targets, true).await;
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
        let runs = self
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
            &runs,
            load::ColdStart::cold_ms,
        );
        self.row(
            "Cold start: same object again (warm), median".into(),
            Unit::Ms,
            Better::Lower,
            &runs,
            load::ColdStart::warm_ms,
        );
        self.row(
            "Trivial handler (/hello/x/), same connection, median".into(),
            Unit::Ms,
            Better::Lower,
            &runs,
            load::ColdStart::trivial_ms,
        );
        let title = format!(
            "JavaScript cold start ({} fresh objects of examples/js/counter, sequential GETs)",
            s.cold_objects
        );
        let runs = self
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
            &runs,
            load::ColdStart::cold_ms,
        );
        self.row(
            "JavaScript: same object again (warm), median".into(),
            Unit::Ms,
            Better::Lower,
            &runs,
            load::ColdStart::warm_ms,
        );

        let title = format!(
            "WebSocket fan-out, {} clients in one room",
            thousands(s.fanout_clients)
        );
        let runs = self
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
            &runs,
            ws::Fanout::median_ms,
        );

        let title = format!(
            "Server-sent events fan-out, {} subscribers of one room",
            thousands(s.fanout_clients)
        );
        let runs = self
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
            &runs,
            ws::Fanout::median_ms,
        );

        let title = format!(
            "Streamed download of {} MiB, one connection",
            s.download_bytes >> 20
        );
        let runs = self
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
            &runs,
            download::Downloads::median_mib_per_sec,
        );

        let title = format!(
            "WebSocket throughput, {} clients in one room, all sending",
            s.throughput_clients
        );
        let runs = self
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
            &runs,
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
        let runs = self
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
            &runs,
            |r| r.switch_ms.max(0.0),
        );
        self.row(
            "Redeploy: deploy call (compile + switch)".into(),
            Unit::Ms,
            Better::Lower,
            &runs,
            |r| r.deploy_call.as_secs_f64() * 1000.0,
        );
        self.row(
            "Redeploy: failed requests".into(),
            Unit::Count,
            Better::Lower,
            &runs,
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

/// Run `run` (from 0) of a scenario on each side: the even runs start with dohost, the odd ones
/// with workerd, so that neither always runs on a machine the other has just warmed (or
/// loaded). Each server is let go quiet after its turn.
async fn run_once<T>(
    targets: &[Option<Target>; 2],
    run: usize,
    f: &mut impl AsyncFnMut(&Target) -> Result<T>,
    describe: impl Fn(&T) -> String,
    runs: &mut Runs<T>,
) {
    let order = if run.is_multiple_of(2) {
        [0, 1]
    } else {
        [1, 0]
    };
    for side in order {
        let Some(t) = &targets[side] else { continue };
        let result = f(t).await;
        println!(
            "  {:<8} run {}: {}",
            t.name,
            run + 1,
            line(&result, &describe)
        );
        if let Err(e) = t.settle(SETTLE).await {
            println!("  {:<8} (could not watch it settle: {e:#})", t.name);
        }
        runs[side].push(result);
    }
}

/// The writes a load of increments had acknowledged, and its line.
fn load_writes(r: &LoadResult) -> (u64, String) {
    (r.acknowledged, describe_load(r))
}

/// A memory result's line in the raw numbers.
fn describe_memory(m: &Memory) -> String {
    format!(
        "RSS {:.1} MiB before, {:.1} MiB with {} awake, {:.1} MiB after {} s idle{}: {} each awake, {} each after idle; objects held {} before, {} awake, {} after idle",
        m.before_kib as f64 / 1024.0,
        m.awake_kib as f64 / 1024.0,
        m.count,
        m.after_kib as f64 / 1024.0,
        m.idle.waited.as_secs(),
        if m.idle.idle { "" } else { " (NOT seen idle)" },
        report::format_value(m.per_item_awake_bytes(), Unit::Bytes),
        report::format_value(m.per_item_bytes(), Unit::Bytes),
        thousands(m.held[0] as usize),
        thousands(m.held[1] as usize),
        thousands(m.held[2] as usize),
    )
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
- Runs: each scenario runs {runs} times on each server, alternating which goes first (dohost then workerd, then workerd then dohost, ...), each server let go quiet after its turn. A cell is the median of its runs and, in brackets, the smallest and largest; the ratio is that of the medians and, in brackets, the smallest and largest ratio of the paired runs (run i on one server against run i on the other, taken one after the other). The raw numbers list every run.\n\
- Storage is on disk on both sides. dohost: redb, one fsync per group commit. workerd: `durableObjectStorage = (localDisk = ...)`, one SQLite file per object in WAL mode. Whether each server syncs before it acknowledges is measured, not assumed: after the timed runs of each increment scenario, one more run on each server with `strace -c -f -e trace={syscalls} -p PID` attached to the server for the whole run (warm-up and setup included); the row is the calls counted ÷ the writes that run had acknowledged (every 2xx answer). strace stops the server at every system call, so that run is slower than the timed ones (its throughput is in the raw numbers) and a group commit may gather a different number of writes: the row says whether and about how often a server syncs, not what syncing costs it. Below 1 means writes share syncs (dohost's group commit, under concurrency); 0 would mean writes acknowledged without any sync. Where strace is missing (`{install}`) or cannot attach (ptrace refused), the row says \"not measured\" and why. The durability check kills each server with SIGKILL and reads the count back.\n\
- HTTP load: N keep-alive HTTP/1.1 connections, each sending its next request when the previous answer is read, {warm:.1} s of warm-up, then a {dur:.1} s window; a request counts if it started and ended inside the window. Latencies are per request, from send to the whole body read. In this closed loop the mean latency is N ÷ throughput, so a median-latency row would restate the throughput row: the table shows the p99 (the tail), the raw numbers also the p50.\n\
- Increments: `POST /counter/bench/` (one object) and `POST /counter/spread-<i>/` with `i` uniform over {spread} names (each touched once before the window). Past the live cap: `POST /counter/fresh-<run>-<i>/` with `i` uniform over {fresh} names, none touched before (each run has its own `<run>` and starts once the server is idle), so most requests wake or create a sleeping object (dohost keeps at most `--max-live-objects` live, 10,000 by default); then the server's RSS and its memory mappings (lines of `/proc/PID/maps`). Reads: `GET /counter/bench/`.\n\
- Cold start: {cold} never-seen counter objects in turn on one connection, `GET` each twice, then `GET /hello/x/`: the first is the cold start, the second the warm figure, the third the trivial-handler latency the warm figure is read against.\n\
- Fan-out: {fan} clients join one room; client 0 sends, and the round ends when every other client has the broadcast; median of {rounds} rounds.\n\
- Server-sent events fan-out: {fan} subscribers (`GET /pubsub/<room>/events`) of `examples/pubsub` (dohost) and its JavaScript port (workerd, which keeps each subscriber's stream writer in memory: a JavaScript object cannot hand its streams to the runtime to hibernate); one `POST /pubsub/<room>/publish` per round (stored, then written to every subscriber), and the round ends when every subscriber has the event; median of {rounds} rounds.\n\
- Streamed download: `GET /d/<n>` answers n generated bytes with a `content-length`, written in 64 KiB pieces as the client takes them: on dohost an http-worker (`bench/guests/download`, the world `http-worker`), on workerd its front worker (a `FixedLengthStream`). The client reads and discards the body on one connection; each download's time runs from the request to the last byte; median of {downloads} downloads of {download_mib} MiB.\n\
- WebSocket throughput: {tput} clients in one room, each sending a message, waiting for its own copy of the broadcast, then sending the next; every chat message any client receives in the window counts.\n\
- Memory: VmRSS of the server process, each run on fresh servers, with dohost at `--idle-timeout 2`. Awake, per item = (RSS right after the last one was set up − RSS before) ÷ count; after idle = (RSS after the idle wait − RSS before) ÷ count. The idle wait: dohost, until `/_admin/stats` shows no live instance; workerd has no such view, so at least {widle} s (it evicts an object about 10 s after its last event); then, on both, until two RSS samples a second apart differ by under 1 % (each gets the same chance to hand freed memory back). Whether the objects were let go by then is the row \"objects still awake after idle\", beyond those held before: on dohost its live instances (`/_admin/stats`); on workerd, which has no stats, its open object databases: an awake object holds its SQLite file open (`.sqlite`, with `-wal` and `-shm`), an evicted one does not, so the row counts the `.sqlite` files among the descriptors in `/proc/PID/fd`. The raw numbers give the counts before, awake and after idle: the awake count also shows whether every item was still awake when the setup ended (a server may evict the first objects touched before the last one is, if setting up takes longer than its idle timeout).\n\
- The load scenarios run with dohost at `--idle-timeout 10`, close to workerd's 10 s eviction.\n\
- Through the front worker: `POST /w/counter/bench/`, dohost's app worker calling the counter through a stub (workerd's front worker does this for every request). Worker → object → object: `POST /w/relay/bench/`, the worker calls a relay object, which calls the counter of the same name.\n\
- Worker hop and stub call (dohost only): warm increments on one connection, in turn straight to the counter, through the worker, and through the worker and the relay; the hop is the difference of the first two medians, the stub call from outside the difference of the last two (the relay's whole event included).\n\
- A stub call's own cost (dohost only): dohost's `/_admin/stats` counts, for each stub call an object makes, the caller's time in `stubs.fetch` less the callee's event (from its event loop taking it up to its release: guest done, commit durable): queueing, waking, copying, returning. Read before and after the scenario (the relay load's warm-up included), for the relay's calls to the counter; the median is interpolated within its histogram's bucket (1–3 µs wide up to 25 µs). Of it, dohost also counts the hand-back, from the counter's release (commit durable) until the relay has the answer: mostly the wake-up of the relay's thread, which a response to a client waits for as well; the row without it is the call's own path there and back (a mean).\n\
- Redeploy (dohost only; workerd cannot replace code under a running process): GET load on counter objects while `examples/ticket-counter` is deployed over `counter` (its GET answers `{{\"issued\":n}}`); the time from the deploy call's answer to the first new-code answer (0 if the new code answered first), and every request that failed.\n",
        cores = std::thread::available_parallelism().map_or(0, |n| n.get()),
        runs = RUNS,
        syscalls = syncs::SYSCALLS.join(","),
        install = syncs::INSTALL,
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

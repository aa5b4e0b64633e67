//! The cluster section of the benchmark (`dohost-bench --cluster`): the same scenarios on one
//! node on its embedded redb database, one node on PostgreSQL, and three nodes on PostgreSQL, all
//! on this one machine with the database beside them. The load goes to the first node; with
//! three nodes, two thirds of it is forwarded to the owners. Two cores cannot make three nodes
//! and a database faster than one node: the figures say what the cluster costs, not what it
//! scales to (SCALING.md does that on paper).

#[path = "../../tests/support/postgres.rs"]
#[allow(dead_code)] // the tests' server; the benchmark starts and drops it
mod postgres;

use crate::load::{self, LoadResult};
use crate::peers::Dohost;
use crate::{RUNS, Settings, Target, median_ms, ws};
use anyhow::{Result, bail};
use hyper::Method;
use std::path::Path;
use std::time::{Duration, Instant};

/// A setup under test: its nodes, and PostgreSQL when it has one.
struct Setup {
    name: &'static str,
    nodes: Vec<Dohost>,
    _db: Option<postgres::Postgres>,
}

impl Setup {
    fn start(bin: &Path, dir: &Path, name: &'static str, nodes: usize) -> Result<Setup> {
        if nodes == 0 {
            let node = Dohost::start(bin, &dir.join("redb"), 10.0)?;
            return Ok(Setup {
                name,
                nodes: vec![node],
                _db: None,
            });
        }
        let db = postgres::Postgres::start();
        let secret = crate::nonce() + &crate::nonce();
        let mut started = Vec::new();
        for i in 0..nodes {
            let args = [
                "--cluster",
                &db.url,
                "--cluster-secret",
                &secret,
                "--node-name",
                &format!("node-{i}"),
            ]
            .map(str::to_owned);
            started.push(Dohost::start_with(
                bin,
                &dir.join(format!("{name}-{i}")),
                10.0,
                &args,
            )?);
        }
        Ok(Setup {
            name,
            nodes: started,
            _db: Some(db),
        })
    }

    /// Deploys the benchmark's objects through the first node and waits (at most 60 s) until
    /// every node has them.
    async fn deploy(&self) -> Result<()> {
        self.nodes[0].deploy_all().await?;
        let until = Instant::now() + Duration::from_secs(60);
        for node in &self.nodes {
            let auth = format!("Bearer {}", node.token);
            loop {
                let (status, _) = load::request_once(
                    node.addr,
                    Method::GET,
                    "/_admin/namespaces/chat",
                    &[("authorization", &auth)],
                    bytes::Bytes::new(),
                )
                .await?;
                if status == 200 {
                    break;
                }
                if Instant::now() > until {
                    bail!("the deploys did not reach {} within 60 s", node.addr);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }

    fn target(&self) -> Target {
        self.nodes[0].target()
    }
}

/// One scenario's runs on one setup.
struct Cell {
    values: Vec<f64>,
}

impl Cell {
    fn show(&self, digits: usize) -> String {
        let mut v = self.values.clone();
        v.sort_by(f64::total_cmp);
        let (lo, hi) = (v[0], v[v.len() - 1]);
        let median = v[v.len() / 2];
        let f = |x: f64| format!("{x:.digits$}");
        format!("{} ({}–{})", f(median), f(lo), f(hi))
    }
}

/// Runs the cluster section; answers its Markdown.
pub async fn run(bin: &Path, dir: &Path, s: &Settings) -> Result<String> {
    let setups = [
        ("1 node, redb", 0),
        ("1 node, PostgreSQL", 1),
        ("3 nodes, PostgreSQL", 3),
    ];
    let mut rows: Vec<(String, Vec<String>)> = vec![
        (
            format!("Increment, 1 object, {} conns: req/s", s.conns),
            vec![],
        ),
        (
            format!("Increment, 1 object, {} conns: p99 ms", s.conns),
            vec![],
        ),
        (
            format!(
                "Increment, {} objects, {} conns: req/s",
                s.spread_objects, s.conns
            ),
            vec![],
        ),
        (
            format!(
                "Increment, {} objects, {} conns: p99 ms",
                s.spread_objects, s.conns
            ),
            vec![],
        ),
        (
            format!(
                "WebSocket fan-out, {} clients in one room: ms per round",
                s.fanout_clients
            ),
            vec![],
        ),
    ];
    for (name, nodes) in setups {
        println!("\n== cluster: {name} ==");
        let setup = Setup::start(bin, dir, name, nodes)?;
        setup.deploy().await?;
        let t = setup.target();
        let mut cells: Vec<Cell> = (0..rows.len()).map(|_| Cell { values: vec![] }).collect();
        for run in 0..RUNS {
            let one = load::increment_one(&t, s.conns, s).await?;
            let spread = load::increment_spread(&t, s.conns, s).await?;
            let fan = ws::fanout(&t, s).await?;
            let fan_ms = median_ms(&fan.rounds);
            for (cell, value) in cells.iter_mut().zip([
                one.rps(),
                one.p99_ms(),
                spread.rps(),
                spread.p99_ms(),
                fan_ms,
            ]) {
                cell.values.push(value);
            }
            report_failures(&one, "increment, 1 object");
            report_failures(&spread, "increment, spread");
            println!(
                "  run {}: 1 object {:.0} req/s (p99 {:.1} ms), spread {:.0} req/s (p99 {:.1} ms), fan-out {fan_ms:.1} ms",
                run + 1,
                one.rps(),
                one.p99_ms(),
                spread.rps(),
                spread.p99_ms(),
            );
        }
        for ((_, shown), (i, cell)) in rows.iter_mut().zip(cells.iter().enumerate()) {
            shown.push(cell.show(if i % 2 == 1 || i == 4 { 1 } else { 0 }));
        }
        println!("  ({} stopped)", setup.name);
    }
    let mut md = format!(
        "| each cell: median (min–max) of {RUNS} runs | {} | {} | {} |\n|---|---:|---:|---:|\n",
        setups[0].0, setups[1].0, setups[2].0
    );
    for (title, cells) in rows {
        md += &format!("| {title} | {} |\n", cells.join(" | "));
    }
    Ok(md)
}

fn report_failures(r: &LoadResult, what: &str) {
    if r.failed > 0 {
        println!("  {what}: {} requests failed", r.failed);
    }
}

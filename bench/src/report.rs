//! The results table (terminal and Markdown) and `BENCHMARKS.md`: the machine, the versions,
//! the date, the exact command, the table, the raw numbers behind it and notes.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

/// Which way is better for a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Throughput: the ratio is dohost / workerd.
    Higher,
    /// Latency, memory, failures: the ratio is workerd / dohost.
    Lower,
}

/// A measured value's unit, for formatting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Requests per second.
    ReqPerSec,
    /// WebSocket messages delivered per second.
    MsgPerSec,
    /// Body bytes streamed per second, in MiB.
    MibPerSec,
    /// Milliseconds.
    Ms,
    /// Microseconds, for the small differences between two paths.
    Us,
    /// Bytes (shown in KiB past 1,024).
    Bytes,
    /// A plain count.
    Count,
}

/// One side's value in a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Measured.
    Value(f64),
    /// Not measured on this side by design (workerd has no live redeploy), or skipped
    /// (`--no-workerd`).
    NotApplicable,
    /// The scenario failed on this side; the message is in the report's details.
    Failed,
}

/// One line of the table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured, e.g. "Increment, 1 object, 16 conns: req/s".
    pub scenario: String,
    /// The unit of both values.
    pub unit: Unit,
    /// Which way is better.
    pub better: Better,
    /// dohost's value.
    pub dohost: Cell,
    /// workerd's value.
    pub workerd: Cell,
}

impl Row {
    /// dohost's advantage: dohost/workerd for throughput, workerd/dohost for latency and memory,
    /// so that above 1 always means dohost did better. `None` if either side has no value or
    /// the divisor is zero.
    pub fn ratio(&self) -> Option<f64> {
        let (Cell::Value(d), Cell::Value(w)) = (&self.dohost, &self.workerd) else {
            return None;
        };
        let (num, den) = match self.better {
            Better::Higher => (*d, *w),
            Better::Lower => (*w, *d),
        };
        (den > 0.0 && num.is_finite()).then(|| num / den)
    }
}

/// `1234567.8` as `1,234,568`.
fn thousands(v: f64) -> String {
    let n = v.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// A value with its unit, as shown in the table.
pub fn format_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::ReqPerSec => format!("{} req/s", thousands(v)),
        Unit::MsgPerSec => format!("{} msg/s", thousands(v)),
        Unit::MibPerSec => format!("{v:.0} MiB/s"),
        Unit::Ms if v.abs() >= 100.0 => format!("{v:.0} ms"),
        Unit::Ms if v.abs() >= 10.0 => format!("{v:.1} ms"),
        Unit::Ms => format!("{v:.2} ms"),
        Unit::Us => format!("{v:.1} µs"),
        Unit::Bytes if v.abs() >= 1024.0 * 1024.0 => format!("{:.1} MiB", v / 1024.0 / 1024.0),
        Unit::Bytes if v.abs() >= 1024.0 => format!("{:.1} KiB", v / 1024.0),
        Unit::Bytes => format!("{v:.0} B"),
        Unit::Count => thousands(v),
    }
}

fn format_cell(cell: &Cell, unit: Unit) -> String {
    match cell {
        Cell::Value(v) if v.is_finite() => format_value(*v, unit),
        Cell::Value(_) => "—".into(),
        Cell::NotApplicable => "n/a".into(),
        Cell::Failed => "failed".into(),
    }
}

fn format_ratio(row: &Row) -> String {
    match row.ratio() {
        Some(r) => format!("{r:.2}×"),
        None => "—".into(),
    }
}

/// The table as aligned plain text, for the terminal.
pub fn text_table(rows: &[Row]) -> String {
    let header = ["scenario", "dohost", "workerd", "ratio"];
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                format_cell(&r.dohost, r.unit),
                format_cell(&r.workerd, r.unit),
                format_ratio(r),
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 4]| {
        let mut s = String::new();
        for (i, (c, w)) in cols.iter().zip(widths).enumerate() {
            let pad = w - c.chars().count();
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_owned() + "\n"
    };
    let mut out = line(header);
    out.push_str(&line(
        widths.map(|w| "-".repeat(w)).each_ref().map(String::as_str),
    ));
    for row in &cells {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

/// The table in Markdown.
pub fn markdown_table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | dohost | workerd | ratio (>1: dohost better) |\n|---|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            r.scenario,
            format_cell(&r.dohost, r.unit),
            format_cell(&r.workerd, r.unit),
            format_ratio(r)
        ));
    }
    out
}

/// Where and with what the benchmark ran.
#[derive(Clone, Debug, Default)]
pub struct Environment {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs.
    pub cores: usize,
    /// MemTotal, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// `git rev-parse --short=12 HEAD`, with a note if host/ or guest-sdk/ had local changes.
    pub dohost_commit: String,
    /// When `target/release/dohost` was built (its modification time), UTC.
    pub dohost_built: String,
    /// `workerd --version` and the npm package version, or "not run".
    pub workerd: String,
    /// `rustc --version`.
    pub rustc: String,
    /// When the run started, UTC.
    pub date: String,
    /// The command line as typed.
    pub command: String,
    /// `/proc/loadavg` at the start: other work on the machine skews the numbers.
    pub load_at_start: String,
}

fn command_output(program: &str, args: &[&str], dir: &Path) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time.
pub fn utc_date(unix_secs: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix_secs);
    // RFC 3339: `YYYY-MM-DDTHH:MM:SSZ`.
    let rfc = humantime::format_rfc3339_seconds(at).to_string();
    format!("{} {} UTC", &rfc[..10], &rfc[11..16])
}

impl Environment {
    /// Reads the machine and the versions. `workerd` is what to print for workerd.
    pub fn collect(
        root: &Path,
        dohost_bin: &Path,
        workerd: String,
        command: String,
    ) -> Environment {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let commit = command_output("git", &["rev-parse", "--short=12", "HEAD"], root)
            .unwrap_or_else(|| "unknown".into());
        let dirty = command_output(
            "git",
            &[
                "status",
                "--porcelain",
                "--",
                "host",
                "guest-sdk",
                "examples",
                "wit",
            ],
            root,
        )
        .is_some_and(|s| !s.is_empty());
        let dohost_commit = if dirty {
            format!("{commit} (with uncommitted changes in host/, guest-sdk/, examples/ or wit/)")
        } else {
            commit
        };
        Environment {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: mem_kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            dohost_commit,
            dohost_built: std::fs::metadata(dohost_bin)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or_else(|| "unknown".into(), |d| utc_date(d.as_secs())),
            workerd,
            rustc: command_output("rustc", &["--version"], root)
                .unwrap_or_else(|| "unknown".into()),
            date: utc_date(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
            command,
            load_at_start: std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

/// The whole `BENCHMARKS.md`.
pub fn markdown(
    env: &Environment,
    rows: &[Row],
    mode: &str,
    details: &[String],
    notes: &str,
) -> String {
    let mut out = String::new();
    out.push_str("# Benchmarks: dohost and workerd\n\n");
    out.push_str(&format!(
        "Written by `dohost-bench` ({mode}). Regenerate with:\n\n```sh\n{}\n```\n\n",
        env.command
    ));
    out.push_str("## Machine and versions\n\n");
    out.push_str(&format!(
        "| | |\n|---|---|\n\
         | date | {} |\n\
         | CPU | {} |\n\
         | cores | {} |\n\
         | memory | {:.1} GiB |\n\
         | kernel | Linux {} |\n\
         | load average at start | {} |\n\
         | dohost | commit {}; binary built {} |\n\
         | workerd | {} |\n\
         | rustc | {} |\n\n",
        env.date,
        env.cpu,
        env.cores,
        env.memory_gib,
        env.kernel,
        env.load_at_start,
        env.dohost_commit,
        env.dohost_built,
        env.workerd,
        env.rustc
    ));
    out.push_str("## Results\n\n");
    out.push_str(
        "**How to read the ratio:** it is oriented so that **above 1 means dohost did better**: \
         dohost ÷ workerd for throughput (req/s, msg/s), workerd ÷ dohost for latency, memory and \
         failures. 2.00× means dohost had twice the throughput, or half the latency or memory; \
         0.50× means the reverse. \"n/a\": not applicable to that server.\n\n",
    );
    out.push_str(&markdown_table(rows));
    out.push_str("\n## Raw numbers\n\n");
    for d in details {
        out.push_str(&format!("- {d}\n"));
    }
    out.push('\n');
    out.push_str(notes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn ratios_point_to_dohost() {
        let row = |better, d, w| Row {
            scenario: String::new(),
            unit: Unit::Ms,
            better,
            dohost: Cell::Value(d),
            workerd: Cell::Value(w),
        };
        assert_eq!(row(Better::Higher, 200.0, 100.0).ratio(), Some(2.0));
        assert_eq!(row(Better::Lower, 1.0, 2.0).ratio(), Some(2.0));
        assert_eq!(row(Better::Lower, 0.0, 2.0).ratio(), None);
        assert_eq!(thousands(1_234_567.6), "1,234,568");
        assert_eq!(format_value(2048.0, Unit::Bytes), "2.0 KiB");
    }
}

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
    /// Neither way is better (fsync calls per write: fewer is not better if it means not
    /// durable): no ratio.
    Neither,
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
    /// A count per acknowledged write, to two decimals.
    PerWrite,
}

/// One side's value in a row.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Measured: one value per run, in run order.
    Runs(Vec<f64>),
    /// Not measured on this side by design (workerd has no live redeploy), or skipped
    /// (`--no-workerd`).
    NotApplicable,
    /// Could not be measured, and why (e.g. strace missing, or ptrace refused).
    NotMeasured(String),
    /// The scenario failed on this side in this many of its runs; the messages are in the
    /// report's details.
    Failed { failed: usize, runs: usize },
}

/// The median of some values (the mean of the middle two for an even count); `None` for none.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// The smallest and largest of some values; `None` for none.
fn range(values: &[f64]) -> Option<(f64, f64)> {
    let min = values.iter().copied().reduce(f64::min)?;
    let max = values.iter().copied().reduce(f64::max)?;
    Some((min, max))
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
    /// so that above 1 always means dohost did better.
    fn oriented(&self, d: f64, w: f64) -> Option<f64> {
        let (num, den) = match self.better {
            Better::Higher => (d, w),
            Better::Lower => (w, d),
            Better::Neither => return None,
        };
        (den > 0.0 && num.is_finite()).then(|| num / den)
    }

    /// The ratio of the two sides' medians (see [`Self::oriented`]). `None` if either side has
    /// no value, the divisor is zero, or neither way is better.
    pub fn ratio(&self) -> Option<f64> {
        let (Cell::Runs(d), Cell::Runs(w)) = (&self.dohost, &self.workerd) else {
            return None;
        };
        self.oriented(median(d)?, median(w)?)
    }

    /// The smallest and largest ratio of paired runs (dohost's run i against workerd's run i,
    /// taken one after the other): `None` unless both sides have the same number of runs, more
    /// than one, each with a ratio.
    pub fn ratio_range(&self) -> Option<(f64, f64)> {
        let (Cell::Runs(d), Cell::Runs(w)) = (&self.dohost, &self.workerd) else {
            return None;
        };
        if d.len() != w.len() || d.len() < 2 {
            return None;
        }
        let paired: Option<Vec<f64>> = d
            .iter()
            .zip(w)
            .map(|(d, w)| self.oriented(*d, *w))
            .collect();
        range(&paired?)
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
        Unit::PerWrite => format!("{v:.2}"),
    }
}

/// The unit's suffix as [`format_value`] writes it for `v`, to write it once after a range.
fn unit_suffix(v: f64, unit: Unit) -> &'static str {
    match unit {
        Unit::ReqPerSec => " req/s",
        Unit::MsgPerSec => " msg/s",
        Unit::MibPerSec => " MiB/s",
        Unit::Ms => " ms",
        Unit::Us => " µs",
        Unit::Bytes if v.abs() >= 1024.0 * 1024.0 => " MiB",
        Unit::Bytes if v.abs() >= 1024.0 => " KiB",
        Unit::Bytes => " B",
        Unit::Count | Unit::PerWrite => "",
    }
}

/// A value without its unit; bytes at the scale `suffix` names, so that a range has one.
fn number(v: f64, unit: Unit, suffix: &str) -> String {
    match (unit, suffix) {
        (Unit::Bytes, " MiB") => format!("{:.1}", v / 1024.0 / 1024.0),
        (Unit::Bytes, " KiB") => format!("{:.1}", v / 1024.0),
        (Unit::Bytes, _) => format!("{v:.0}"),
        _ => {
            let text = format_value(v, unit);
            text.strip_suffix(suffix).unwrap_or(&text).to_owned()
        }
    }
}

/// `median (min–max) unit`, or the one value if the runs agree (or there is one).
fn format_runs(values: &[f64], unit: Unit) -> String {
    let (Some(mid), Some((min, max))) = (median(values), range(values)) else {
        return "—".into();
    };
    let suffix = unit_suffix(mid, unit);
    let (mid, min, max) = (
        number(mid, unit, suffix),
        number(min, unit, suffix),
        number(max, unit, suffix),
    );
    if min == max {
        format!("{mid}{suffix}")
    } else {
        format!("{mid} ({min}–{max}){suffix}")
    }
}

fn format_cell(cell: &Cell, unit: Unit) -> String {
    match cell {
        Cell::Runs(values) if values.iter().all(|v| v.is_finite()) => format_runs(values, unit),
        Cell::Runs(_) => "—".into(),
        Cell::NotApplicable => "n/a".into(),
        Cell::NotMeasured(why) => format!("not measured: {why}"),
        Cell::Failed { failed, runs } if failed == runs => "failed".into(),
        Cell::Failed { failed, runs } => format!("failed in {failed} of {runs} runs"),
    }
}

fn format_ratio(row: &Row) -> String {
    match (row.ratio(), row.ratio_range()) {
        (Some(r), Some((min, max))) if format!("{min:.2}") != format!("{max:.2}") => {
            format!("{r:.2}× ({min:.2}–{max:.2})")
        }
        (Some(r), _) => format!("{r:.2}×"),
        (None, _) => "—".into(),
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
         0.50× means the reverse. \"n/a\": not applicable to that server. \"—\" in the \
         ratio column: neither way is better (fsync calls per write, objects still awake).\n\n",
    );
    out.push_str(&format!(
        "**Runs:** each scenario ran {} times, alternating which server went first; a cell is \
         the median and, in brackets, the smallest and largest run. The ratio is that of the \
         medians; in brackets, the smallest and largest ratio of the paired runs (each run on \
         one server against the same run on the other, taken one after the other).\n\n",
        crate::RUNS
    ));
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
        let row = |better, d: &[f64], w: &[f64]| Row {
            scenario: String::new(),
            unit: Unit::Ms,
            better,
            dohost: Cell::Runs(d.to_vec()),
            workerd: Cell::Runs(w.to_vec()),
        };
        assert_eq!(row(Better::Higher, &[200.0], &[100.0]).ratio(), Some(2.0));
        assert_eq!(row(Better::Lower, &[1.0], &[2.0]).ratio(), Some(2.0));
        assert_eq!(row(Better::Lower, &[0.0], &[2.0]).ratio(), None);
        assert_eq!(row(Better::Neither, &[1.0], &[2.0]).ratio(), None);
        // Medians for the ratio; the range from the runs paired in order.
        let r = row(
            Better::Higher,
            &[300.0, 100.0, 200.0],
            &[100.0, 100.0, 50.0],
        );
        assert_eq!(r.ratio(), Some(2.0));
        assert_eq!(r.ratio_range(), Some((1.0, 4.0)));
        assert_eq!(format_ratio(&r), "2.00× (1.00–4.00)");
        assert_eq!(thousands(1_234_567.6), "1,234,568");
        assert_eq!(format_value(2048.0, Unit::Bytes), "2.0 KiB");
    }

    #[test]
    fn cells_show_median_and_range() {
        let runs = |v: &[f64], unit| format_cell(&Cell::Runs(v.to_vec()), unit);
        assert_eq!(
            runs(&[41_102.0, 39_000.4, 42_000.0], Unit::ReqPerSec),
            "41,102 (39,000–42,000) req/s"
        );
        assert_eq!(runs(&[2.5], Unit::Ms), "2.50 ms");
        assert_eq!(runs(&[0.5, 0.5, 0.5], Unit::PerWrite), "0.50");
        // One scale for the three, the median's.
        assert_eq!(
            runs(&[900.0, 2048.0, 1536.0], Unit::Bytes),
            "1.5 (0.9–2.0) KiB"
        );
        assert_eq!(
            format_cell(&Cell::Failed { failed: 1, runs: 3 }, Unit::Ms),
            "failed in 1 of 3 runs"
        );
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}

//! How many fsync-family calls a server makes per acknowledged write: `strace -c -f -e
//! trace=fsync,fdatasync,sync_file_range,msync -p PID` attached to the server for the duration of
//! a scenario, so that "both durable" is measured rather than asserted.
//!
//! strace stops the server at every system call (a `-p` attach cannot use its seccomp filter),
//! which slows it: the count comes from a run of its own, never from a timed one.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The system calls that make written data durable.
pub const SYSCALLS: [&str; 4] = ["fsync", "fdatasync", "sync_file_range", "msync"];

/// How to get strace, for the messages.
pub const INSTALL: &str = "apt-get install strace";

/// Whether `strace` can be run; `Err` says why not, and how to install it.
pub fn available() -> Result<(), String> {
    match Command::new("strace").arg("-V").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`strace -V` failed: {}", out.status)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("strace is not installed ({INSTALL})"))
        }
        Err(e) => Err(format!("cannot run strace: {e}")),
    }
}

/// The calls counted while strace was attached.
#[derive(Clone, Debug, Default)]
pub struct SyncCalls {
    /// Each call of [`SYSCALLS`] made, and how often.
    pub by_call: Vec<(String, u64)>,
}

impl SyncCalls {
    pub fn total(&self) -> u64 {
        self.by_call.iter().map(|(_, n)| n).sum()
    }

    /// `fdatasync 1,234, fsync 5`, or `none`.
    pub fn describe(&self) -> String {
        if self.by_call.is_empty() {
            return "none".into();
        }
        let parts: Vec<String> = self
            .by_call
            .iter()
            .map(|(call, n)| format!("{call} {n}"))
            .collect();
        parts.join(", ")
    }

    /// Reads `strace -c`'s summary: `% time  seconds  usecs/call  calls  [errors]  syscall`
    /// (nothing at all if no call was made).
    pub fn parse(summary: &str) -> Result<SyncCalls> {
        if !summary.trim().is_empty() && !summary.contains("syscall") {
            bail!("not an strace summary: {summary:?}");
        }
        let mut by_call = Vec::new();
        for line in summary.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(call), true) = (fields.last(), fields.len() >= 5) else {
                continue;
            };
            if SYSCALLS.contains(call) {
                let calls = fields[3]
                    .parse()
                    .with_context(|| format!("the calls column of {line:?}"))?;
                by_call.push((call.to_string(), calls));
            }
        }
        Ok(SyncCalls { by_call })
    }
}

/// strace attached to a process, counting; [`Self::finish`] detaches it and reads the count.
pub struct Strace {
    child: Child,
    summary: PathBuf,
    _dir: tempfile::TempDir,
}

impl Strace {
    /// Attaches to every thread of `pid` (and those it starts) and returns once strace says it
    /// is attached. `Err` says why it could not (strace missing, ptrace refused ...).
    pub fn attach(pid: u32) -> Result<Strace, String> {
        available()?;
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        let summary = dir.path().join("strace-summary");
        let mut child = Command::new("strace")
            .args(["-c", "-f", "-e"])
            .arg(format!("trace={}", SYSCALLS.join(",")))
            .arg("-o")
            .arg(&summary)
            .args(["-p", &pid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting strace: {e}"))?;
        // strace reports on stderr: `Process N attached with M threads`, or why it could not.
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut said = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(line) if line.contains(" attached") => break,
                Ok(line) => said.push(line),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let why = said.join("; ");
                    return Err(if why.is_empty() {
                        "strace did not attach within 10 s".into()
                    } else {
                        why.trim_start_matches("strace: ").to_owned()
                    });
                }
            }
        }
        Ok(Strace {
            child,
            summary,
            _dir: dir,
        })
    }

    /// SIGINT: strace detaches from every thread, writes its summary and ends.
    fn interrupt(&mut self) -> Result<std::process::ExitStatus> {
        let pid = libc::pid_t::try_from(self.child.id()).context("strace's pid")?;
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        if unsafe { libc::kill(pid, libc::SIGINT) } != 0 {
            bail!("signalling strace: {}", std::io::Error::last_os_error());
        }
        self.child.wait().context("waiting for strace")
    }

    /// Detaches and reads the count.
    pub fn finish(mut self) -> Result<SyncCalls> {
        let status = self.interrupt()?;
        // Having detached, strace ends itself with the signal that stopped it.
        if !status.success() && status.signal() != Some(libc::SIGINT) {
            bail!("strace ended with {status}");
        }
        let summary = std::fs::read_to_string(&self.summary).context("strace's summary")?;
        SyncCalls::parse(&summary)
    }
}

impl Drop for Strace {
    fn drop(&mut self) {
        // Not finished (the scenario failed): detach all the same, so the server runs on.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.interrupt();
        }
    }
}

/// Runs `scenario` with strace attached to `pid`: its result and the count, or (inside) why
/// nothing could be counted, in which case the scenario does not run. `Err`: the scenario failed.
pub async fn around<T>(
    pid: u32,
    scenario: impl Future<Output = Result<T>>,
) -> Result<Result<(T, SyncCalls), String>> {
    let strace = match Strace::attach(pid) {
        Ok(s) => s,
        Err(why) => return Ok(Err(why)),
    };
    let result = scenario.await?;
    Ok(strace
        .finish()
        .map(|calls| (result, calls))
        .map_err(|e| format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strace_summaries() {
        let summary = "% time     seconds  usecs/call     calls    errors syscall\n\
------ ----------- ----------- --------- --------- ----------------\n\
 53.42    0.005481          60        90           fdatasync\n\
 46.58    0.004780          53        12         1 fsync\n\
------ ----------- ----------- --------- --------- ----------------\n\
100.00    0.010261          57       102         1 total\n";
        let calls = SyncCalls::parse(summary).unwrap();
        assert_eq!(calls.total(), 102);
        assert_eq!(calls.describe(), "fdatasync 90, fsync 12");
        // No call at all: strace writes nothing.
        assert_eq!(SyncCalls::parse("").unwrap().total(), 0);
        assert!(SyncCalls::parse("strace: something else").is_err());
    }
}

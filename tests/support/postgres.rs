//! A throwaway PostgreSQL server for the end-to-end tests, from Debian's `postgresql` package
//! (`scripts/test` installs it): its own data dir and loopback port, so it never meets the
//! system's cluster or another test's server.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a start (or a crash recovery) may take before the test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a starting server is polled.
const POLL: Duration = Duration::from_millis(50);
/// Starts are retried on a new port this many times when another process took the free port
/// between our look and the server's bind.
const PORT_ATTEMPTS: usize = 5;

/// A PostgreSQL server on a fresh data dir, killed and deleted when dropped.
pub struct Postgres {
    /// The database `dohost` on this server: `postgres://postgres@127.0.0.1:PORT/dohost`.
    pub url: String,
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// PostgreSQL refuses to run as root, so as root every command runs as `nobody`.
    as_nobody: bool,
}

impl Postgres {
    /// Creates a cluster in a temporary dir (no password, user `postgres`), starts it on a free
    /// loopback port, waits until it answers queries and creates the database `dohost`.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("dohost-pg")
            .tempdir()
            .expect("temp dir");
        let as_nobody = unsafe { libc::geteuid() } == 0;
        let mut postgres = Postgres {
            url: String::new(),
            port: 0,
            bin,
            dir,
            child: None,
            as_nobody,
        };
        if as_nobody {
            // The temp dir is 0700 and root's; the server needs to own it and its data dir.
            run(Command::new("chown")
                .args(["-R", "nobody:nogroup"])
                .arg(postgres.dir.path()));
            let check = postgres
                .command("test")
                .args(["-w"])
                .arg(postgres.dir.path())
                .status();
            assert!(
                check.is_ok_and(|s| s.success()),
                "user nobody cannot write to {}: its parent dirs must be traversable by all \
                 (set TMPDIR to a dir such as /tmp)",
                postgres.dir.path().display()
            );
        }
        let mut initdb = postgres.command(postgres.bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(postgres.data())
            .args(["-U", "postgres", "--auth=trust"])
            .args(["-E", "UTF8", "--locale=C", "--no-sync"]);
        run(&mut initdb);

        let mut attempts = 0;
        loop {
            attempts += 1;
            postgres.port = free_port();
            match postgres.launch() {
                Ok(()) => break,
                Err(log) if attempts < PORT_ATTEMPTS && log.contains("could not bind") => continue,
                Err(log) => panic!("PostgreSQL did not start; its log:\n{log}"),
            }
        }
        postgres.url = format!("postgres://postgres@127.0.0.1:{}/dohost", postgres.port);
        postgres.psql_in("postgres", "CREATE DATABASE dohost");
        postgres
    }

    /// Kills the postmaster and its backends with SIGKILL, as when PostgreSQL's machine dies:
    /// nothing is shut down cleanly, so `start_again` has to run crash recovery.
    pub fn stop_hard(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        kill_all(&mut child);
        // The lock files name the dead postmaster; its pid may already belong to someone else,
        // which would make the next start refuse, and every process that used them is gone.
        let _ = std::fs::remove_file(self.data().join("postmaster.pid"));
        let _ = std::fs::remove_file(self.dir.path().join(format!(".s.PGSQL.{}.lock", self.port)));
    }

    /// Starts the server again on the same data dir and port, killing it first if it still runs
    /// (PostgreSQL then recovers from its WAL), and waits until it answers queries.
    pub fn start_again(&mut self) {
        self.stop_hard();
        if let Err(log) = self.launch() {
            panic!("PostgreSQL did not start again; its log:\n{log}");
        }
    }

    /// Runs SQL on the database `dohost` with `psql` and returns its unaligned, tuples-only
    /// output, so a test can look at or arrange what dohost stores without a Rust client.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("dohost", sql)
    }

    fn psql_in(&self, database: &str, sql: &str) -> String {
        self.try_psql(database, sql)
            .unwrap_or_else(|err| panic!("psql {sql:?}: {err}"))
    }

    fn try_psql(&self, database: &str, sql: &str) -> Result<String, String> {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() {
            psql
        } else {
            PathBuf::from("psql")
        };
        let output = self
            .command(psql)
            // No psqlrc, no password prompt, bare rows, and a failing statement fails psql.
            .args(["-X", "-w", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "postgres", "-d", database, "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run psql: {err}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    /// Starts the postmaster on `self.port` and waits until it answers; on failure returns what
    /// it logged this time.
    fn launch(&mut self) -> Result<(), String> {
        let log_path = self.dir.path().join("postgres.log");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("PostgreSQL's log file");
        let logged_before = log.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let logged = || {
            let bytes = std::fs::read(&log_path).unwrap_or_default();
            String::from_utf8_lossy(bytes.get(logged_before..).unwrap_or(&bytes)).into_owned()
        };
        let mut postmaster = self.command(self.bin.join("postgres"));
        postmaster
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
            .args(["-c", "max_connections=200", "-c", "shared_buffers=32MB"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        self.child = Some(postmaster.spawn().expect("spawn postgres"));

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!("(postgres exited: {status})\n{}", logged()));
            }
            // The port answers before recovery ends; only a query shows the server is ready.
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                && self.try_psql("postgres", "select 1").is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let mut child = self.child.take().unwrap();
                kill_all(&mut child);
                return Err(format!(
                    "(no answer within {START_TIMEOUT:?})\n{}",
                    logged()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `program` as the user PostgreSQL's processes run as, in the temp dir (the test's working
    /// dir may be closed to `nobody`).
    fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut command = if self.as_nobody {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                .arg(program.as_ref());
            c
        } else {
            Command::new(program.as_ref())
        };
        command.current_dir(self.dir.path());
        command
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // An immediate shutdown (SIGQUIT) has the postmaster end and reap its backends itself,
        // which leaves no zombies; SIGKILL-ing everything is the fallback.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGQUIT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(POLL);
        }
        kill_all(&mut child);
    }
}

/// SIGKILLs the postmaster `child` and every backend. The postmaster is stopped first: it would
/// otherwise answer its backends' deaths by forking new processes, and once dead its backends
/// are no longer found as its children.
fn kill_all(child: &mut Child) {
    let pid = child.id() as libc::pid_t;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let backends = children_of(pid);
    for &backend in &backends {
        unsafe { libc::kill(backend, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
    // A backend still alive holds the shared memory, which keeps a new postmaster from starting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while backends.iter().any(|&b| is_running(b)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The processes whose parent is `parent`, from /proc (no `pgrep` needed).
fn children_of(parent: libc::pid_t) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// Whether `pid` exists and is not a zombie (a zombie has let go of its memory).
fn is_running(pid: libc::pid_t) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// The state and parent pid of a process, from `/proc/PID/stat`.
fn stat(pid: libc::pid_t) -> Option<(char, libc::pid_t)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name in parentheses may hold spaces and parentheses: fields follow the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The newest installed PostgreSQL's `bin` dir, `/usr/lib/postgresql/<N>/bin`.
fn bin_dir() -> PathBuf {
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "no PostgreSQL server in /usr/lib/postgresql/<version>/bin: run the tests with \
             `bash scripts/test`, which installs Debian's postgresql package"
        ),
    }
}

/// A loopback port free right now (the server may still lose it to a race; `start` retries).
fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// Runs a setup command and panics with its output if it fails.
fn run(command: &mut Command) {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

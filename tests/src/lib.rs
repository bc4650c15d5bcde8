//! A throw-away PostgreSQL 15 cluster with memfdw preloaded, for end-to-end tests.
//!
//! The server runs as user `postgres` when the tests run as root (PostgreSQL refuses
//! to run as root). memfdw must be installed (`make install`) first.

use postgres::{Client, NoTls};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use postgres;

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

fn run_as_owner(args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]);
        c.args(args);
        c
    } else {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]);
        c
    };
    // Keep pgrx from appending Rust backtraces to the server's error details.
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE");
    cmd.output().expect("run PostgreSQL tool")
}

pub fn chown_postgres(p: &Path) {
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(p)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {p:?}");
    }
}

/// initdb once per test binary; clusters are copies of this template.
fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let dir = PathBuf::from("/tmp/memfdw-e2e-template");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        chown_postgres(&dir);
        let data = dir.join("data");
        let out = run_as_owner(&[
            &format!("{PG_BIN}/initdb"),
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-instructions",
            "--no-sync",
        ]);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

pub struct Options {
    pub preload: bool,
    pub max_memory: &'static str,
    /// More libraries for shared_preload_libraries (comma-separated), after memfdw.
    pub also_preload: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            preload: true,
            max_memory: "256MB",
            also_preload: "",
        }
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Cluster {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/memfdw-e2e-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ok = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "copy template cluster");
        let port = free_port();
        let conf = dir.join("data/postgresql.conf");
        let mut extra = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 40\nshared_buffers = 32MB\nfsync = off\nrestart_after_crash = on\n",
            dir.display()
        );
        if opts.preload {
            let also = if opts.also_preload.is_empty() {
                String::new()
            } else {
                format!(",{}", opts.also_preload)
            };
            // No automatic ANALYZE: plans the tests check must not change under them
            // (tests of it turn it on).
            extra += &format!(
                "shared_preload_libraries = 'memfdw{also}'\nmemfdw.max_memory = '{}'\nmemfdw.autoanalyze = off\n",
                opts.max_memory
            );
        }
        let mut c = std::fs::read_to_string(&conf).unwrap();
        c += &extra;
        std::fs::write(&conf, c).unwrap();
        chown_postgres(&dir);
        let cluster = Cluster { dir, port };
        cluster.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            cluster.log().to_str().unwrap(),
        ]);
        cluster
    }

    /// SIGKILL to the postmaster and every backend at once (a power cut that keeps
    /// the page cache), then waits until they are gone.
    pub fn kill9(&self) {
        let pidfile =
            std::fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("postmaster.pid");
        let pid: i32 = pidfile.lines().next().unwrap().trim().parse().unwrap();
        // Freeze the postmaster first: between listing its children and killing it, it
        // must not fork one more (it reacts to a child's death by starting others,
        // which would outlive it and keep the shared memory).
        // SAFETY: signalling this test's own server.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        let frozen = Instant::now();
        while frozen.elapsed() < Duration::from_secs(2) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            if matches!(state, Some("T") | Some("t") | None) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let children = Command::new("pgrep")
            .args(["-P", &pid.to_string()])
            .output()
            .unwrap();
        let mut pids: Vec<i32> = String::from_utf8_lossy(&children.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.push(pid);
        for p in &pids {
            // SAFETY: signalling processes of this test's own server.
            unsafe { libc::kill(*p, libc::SIGKILL) };
        }
        let start = Instant::now();
        // SAFETY: probing for existence only.
        while pids.iter().any(|p| unsafe { libc::kill(*p, 0) } == 0) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "server processes survived SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill9`, then `restart`; returns a new session.
    pub fn crash_and_restart(&self) -> Client {
        self.kill9();
        self.restart();
        self.connect()
    }

    /// Starts the server again (after `kill9`).
    pub fn restart(&self) {
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            self.log().to_str().unwrap(),
        ]);
    }

    /// `pg_ctl stop -m fast`; returns how long it took.
    pub fn stop_fast(&self) -> Duration {
        let t = Instant::now();
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
        t.elapsed()
    }

    /// Appends `lines` to postgresql.conf (read at the next start).
    pub fn append_conf(&self, lines: &str) {
        let conf = self.dir.join("data/postgresql.conf");
        let mut c = std::fs::read_to_string(&conf).unwrap();
        c.push('\n');
        c += lines;
        c.push('\n');
        std::fs::write(&conf, c).unwrap();
    }

    /// The directory of memfdw's redo log and checkpoint.
    pub fn redo_dir(&self) -> PathBuf {
        self.dir.join("data/memfdw")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.join("data");
        let mut all = vec![
            format!("{PG_BIN}/pg_ctl"),
            "-D".into(),
            data.to_str().unwrap().into(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = all.iter().map(|s| s.as_str()).collect();
        let out = run_as_owner(&refs);
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
    }

    pub fn conn_str(&self) -> String {
        // No statement may hang a test run: waits end in an error instead.
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=10 \
             options='-c statement_timeout=120s -c lock_timeout=60s'",
            self.port
        )
    }

    /// Connects as role `user` to database `db` (trust authentication).
    /// Runs a PostgreSQL client tool (pg_dump, pg_restore, psql, ...) against this
    /// cluster as postgres; returns its standard output, or its standard error.
    pub fn run_tool(&self, tool: &str, args: &[&str]) -> Result<String, String> {
        let bin = std::process::Command::new("/usr/bin/pg_config")
            .arg("--bindir")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into());
        let port = self.port.to_string();
        let out = std::process::Command::new(format!("{bin}/{tool}"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    pub fn connect_as(&self, user: &str, db: &str) -> Client {
        let s = self
            .conn_str()
            .replace("user=postgres", &format!("user={user}"))
            .replace("dbname=postgres", &format!("dbname={db}"));
        Client::connect(&s, NoTls).unwrap_or_else(|e| panic!("connect as {user}: {e}"))
    }

    pub fn connect(&self) -> Client {
        Client::connect(&self.conn_str(), NoTls)
            .unwrap_or_else(|e| panic!("connect: {e}\n{}", self.log_text()))
    }

    /// Connects, retrying while the server restarts (after a crash).
    pub fn connect_retry(&self, within: Duration) -> Client {
        let start = Instant::now();
        loop {
            match Client::connect(&self.conn_str(), NoTls) {
                Ok(mut c) => {
                    if c.simple_query("SELECT 1").is_ok() {
                        return c;
                    }
                }
                Err(e) if start.elapsed() > within => {
                    panic!("server did not come back: {e}\n{}", self.log_text())
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = run_as_owner(&[
            &format!("{PG_BIN}/pg_ctl"),
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The SQLSTATE of a failed query, if it came from the server.
pub fn sqlstate(e: &postgres::Error) -> Option<String> {
    e.code().map(|c| c.code().to_string())
}

/// Every row of `q` (run as a simple query), its cells as text joined by `|`, NULL as
/// `NULL`, in the order the server returns them.
pub fn text_rows(s: &mut Client, q: &str) -> Vec<String> {
    s.simple_query(q)
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

/// The one value of the one row `q` returns.
pub fn one<T: for<'a> postgres::types::FromSql<'a>>(s: &mut Client, q: &str) -> T {
    s.query_one(q, &[])
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .get(0)
}

/// The plan of `q` (`EXPLAIN (COSTS OFF)`), one line per plan line.
pub fn plan(s: &mut Client, q: &str) -> String {
    s.query(&format!("EXPLAIN (COSTS OFF) {q}"), &[])
        .unwrap_or_else(|e| panic!("{q}: {e}"))
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A deterministic xorshift generator for randomised tests.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

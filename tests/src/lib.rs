//! Harness for dg's multi-node tests: throwaway PostgreSQL clusters on
//! loopback, one coordinator (with dg preloaded) and plain peers.
//!
//! Each node runs the binaries of one installation (`Pg`, named by its
//! `pg_config`): the coordinator that of `DG_PG_BIN` / `PG_CONFIG` (the
//! major dg is installed into), peers that of `DG_PEER_PG_CONFIGS` if set
//! (a comma list of pg_config paths, one per peer, cycling), else the
//! coordinator's. `Cluster::start_on` picks them per node; the
//! mixed-version tests find the other majors' trees in `DG_PG_CONFIG_<NN>`
//! (`Pg::major`), which scripts/versions.sh sets.
//!
//! Tests run as root, but initdb and postgres refuse to, so every server
//! command runs as the `postgres` user through `runuser`. Each node lives in
//! its own directory under `<tmp>/dg-tests/`, owned by `postgres`; the
//! directory name starts with our pid so a later run can reap what a killed
//! run left behind.
//!
//! Nodes stop when dropped (also while a panicking test unwinds). Clusters
//! shared through a `static` are never dropped, so every started node is
//! also registered, and an `atexit` handler stops whatever is still running
//! when the test binary exits.

use postgres::{Client, NoTls};
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

pub use postgres;

pub mod proxy;

/// How dg's PREPARE request to a peer starts: the remote xid is asked in
/// the same request (src/README.md, "Lost commits"). The network tests
/// cut links at it.
pub const PREPARE: &str = "SELECT pg_catalog.pg_current_xact_id(); PREPARE TRANSACTION";

/// One PostgreSQL installation, as its `pg_config` reports it.
#[derive(Debug)]
pub struct Pg {
    pub pg_config: String,
    /// Its programs (initdb, pg_ctl, ...).
    pub bin: String,
    /// Its libraries: every server of this installation runs with it on
    /// `LD_LIBRARY_PATH`. The wheel trees' libpq users (dblink,
    /// postgres_fdw, libpqwalreceiver, dg) carry a run path to
    /// /opt/postgresql/lib, which does not exist, and would otherwise load
    /// whatever libpq the environment names (the system's 15, or another
    /// node's tree).
    pub lib: String,
    /// The major version, from `pg_config --version`.
    pub major: u32,
}

impl Pg {
    /// The installation of `pg_config`, asked once per run.
    pub fn at(pg_config: &str) -> &'static Pg {
        static KNOWN: Mutex<Vec<&'static Pg>> = Mutex::new(Vec::new());
        let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pg) = known.iter().find(|p| p.pg_config == pg_config) {
            return pg;
        }
        let ask = |arg: &str| {
            let out = Command::new(pg_config)
                .arg(arg)
                .output()
                .unwrap_or_else(|e| panic!("cannot run {pg_config} {arg}: {e}"));
            assert!(out.status.success(), "{pg_config} {arg} failed");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let version = ask("--version");
        // "PostgreSQL 18.6", "PostgreSQL 15.20 (Debian 15.20-0+deb12u1)"
        let major = version
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("{pg_config}: no major in {version:?}"));
        let pg: &'static Pg = Box::leak(Box::new(Pg {
            pg_config: pg_config.to_string(),
            bin: ask("--bindir"),
            lib: ask("--libdir"),
            major,
        }));
        known.push(pg);
        pg
    }

    /// The installation dg is installed into, for coordinators:
    /// `DG_PG_BIN` (which scripts/lib.sh exports), else `PG_CONFIG`, else
    /// Debian's PostgreSQL 15.
    pub fn coordinator() -> &'static Pg {
        let pg_config = match std::env::var("DG_PG_BIN") {
            Ok(bin) => format!("{bin}/pg_config"),
            Err(_) => std::env::var("PG_CONFIG")
                .unwrap_or_else(|_| "/usr/lib/postgresql/15/bin/pg_config".into()),
        };
        Pg::at(&pg_config)
    }

    /// The installation of peer `i` (1-based) of a `Cluster::start_with`:
    /// the `i`-th of `DG_PEER_PG_CONFIGS` (cycling), else the coordinator's.
    pub fn peer(i: usize) -> &'static Pg {
        match std::env::var("DG_PEER_PG_CONFIGS") {
            Ok(list) if !list.trim().is_empty() => {
                let configs: Vec<&str> = list.split(',').map(str::trim).collect();
                Pg::at(configs[(i - 1) % configs.len()])
            }
            _ => Pg::coordinator(),
        }
    }

    /// The installation of major `major`, from `DG_PG_CONFIG_<major>`.
    /// Panics when it is not set: a test that needs another major must not
    /// pass having run on the default one.
    pub fn major(major: u32) -> &'static Pg {
        let var = format!("DG_PG_CONFIG_{major}");
        let pg_config = std::env::var(&var).unwrap_or_else(|_| {
            panic!(
                "{var} is not set: the mixed-version tests need the pg_config of each major \
                 they run; `make test-versions` (scripts/versions.sh) sets them"
            )
        });
        let pg = Pg::at(&pg_config);
        assert_eq!(
            pg.major, major,
            "{var}={pg_config} is PostgreSQL {}",
            pg.major
        );
        pg
    }

    fn tool(&self, name: &str) -> String {
        format!("{}/{name}", self.bin)
    }
}

/// Node directories that are (or may be) running, with their installation.
static LIVE: Mutex<Vec<(PathBuf, &'static Pg)>> = Mutex::new(Vec::new());
static AT_EXIT: Once = Once::new();
static SEQ: AtomicUsize = AtomicUsize::new(0);

extern "C" {
    fn atexit(cb: extern "C" fn()) -> std::ffi::c_int;
}

/// Stops every node still registered: those of `static` clusters, which
/// no destructor reaches. libtest ends with `exit()`, which runs this.
extern "C" fn stop_all_at_exit() {
    let dirs = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
    for (dir, pg) in dirs {
        stop_and_remove(&dir, pg);
    }
}

fn base_dir() -> PathBuf {
    std::env::temp_dir().join("dg-tests")
}

/// Runs a program of `pg` as the `postgres` OS user in `cwd` (which that
/// user must be able to enter, or initdb complains), with `pg`'s libraries
/// first on the library path (a server inherits it from pg_ctl).
fn as_postgres(pg: &Pg, cwd: &Path, args: &[&str]) -> Output {
    // Without RUST_BACKTRACE, errors re-raised through pgrx carry no
    // backtrace in their DETAIL.
    Command::new("runuser")
        .env_remove("RUST_BACKTRACE")
        .env("LD_LIBRARY_PATH", &pg.lib)
        .args(["-u", "postgres", "--"])
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?} via runuser: {e}"))
}

/// Immediate shutdown of the server in `data`, if one runs there.
fn pg_stop(data: &Path, pg: &Pg) {
    if data.join("postmaster.pid").exists() {
        let pg_ctl = pg.tool("pg_ctl");
        let _ = as_postgres(
            pg,
            Path::new("/"),
            &[
                &pg_ctl,
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

fn stop_and_remove(dir: &Path, pg: &Pg) {
    pg_stop(&dir.join("data"), pg);
    let _ = fs::remove_dir_all(dir);
}

/// Where a node directory names the pg_config of its installation, for a
/// later run that reaps it.
const PG_CONFIG_FILE: &str = "pg_config";

/// Removes nodes left by test processes that no longer exist (killed
/// before their `atexit` ran).
fn reap_stale() {
    let Ok(entries) = fs::read_dir(base_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().unwrap_or_default();
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|p| Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let pg = fs::read_to_string(entry.path().join(PG_CONFIG_FILE))
                .ok()
                .filter(|p| Path::new(p.trim()).exists())
                .map_or_else(Pg::coordinator, |p| Pg::at(p.trim()));
            stop_and_remove(&entry.path(), pg);
        }
    }
}

fn create_database(node: &Node, name: &str) {
    node.client("postgres")
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("create database {name} on {}: {e}", node.name));
}

/// Makes database `name` on `coordinator` a dg coordinator of `peers`:
/// creates it, installs dg, and names the peers' databases `name`
/// `peer1..peerN`, with a PUBLIC user mapping as `postgres`. For a second
/// coordinator sharing a cluster's peers.
pub fn coordinate(coordinator: &Node, name: &str, peers: &[Node]) {
    coordinate_at(coordinator, name, peers, None)
}

/// `coordinate`, with dg installed at `version` (None: the default).
pub fn coordinate_at(coordinator: &Node, name: &str, peers: &[Node], version: Option<&str>) {
    create_database(coordinator, name);
    let mut c = coordinator.client(name);
    let create = match version {
        Some(v) => format!("CREATE EXTENSION dg VERSION '{v}'"),
        None => "CREATE EXTENSION dg".to_string(),
    };
    c.batch_execute(&create)
        .unwrap_or_else(|e| panic!("{create}: {e}"));
    for (i, peer) in peers.iter().enumerate() {
        c.batch_execute(&format!(
            "CREATE SERVER peer{n} FOREIGN DATA WRAPPER dg
                 OPTIONS (host '127.0.0.1', port '{port}', dbname '{name}');
             CREATE USER MAPPING FOR PUBLIC SERVER peer{n} OPTIONS (user 'postgres');",
            n = i + 1,
            port = peer.port,
        ))
        .expect("create dg server");
    }
}

/// A free loopback port. The listener is closed before postgres binds it,
/// so another process could take it in between; `Node::start` retries.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind 127.0.0.1:0")
        .port()
}

/// One running PostgreSQL server.
pub struct Node {
    pub name: String,
    pub port: u16,
    /// The installation it runs.
    pub pg: &'static Pg,
    dir: PathBuf,
    stopped: AtomicBool,
}

impl Node {
    /// initdb + start a server of the coordinator's installation on a
    /// free port with `extra_conf` lines appended to postgresql.conf.
    pub fn start(name: &str, extra_conf: &[&str]) -> Node {
        Node::start_on(Pg::coordinator(), name, extra_conf)
    }

    /// `start`, with the binaries of `pg`.
    pub fn start_on(pg: &'static Pg, name: &str, extra_conf: &[&str]) -> Node {
        let dir = Node::new_dir(name, pg);
        let data_s = dir.join("data").to_str().unwrap().to_string();
        let initdb = pg.tool("initdb");
        let out = as_postgres(
            pg,
            &dir,
            &[
                &initdb,
                "-D",
                &data_s,
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "--locale=C",
                "-E",
                "UTF8",
            ],
        );
        assert!(
            out.status.success(),
            "initdb for {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Node::launch(pg, name, dir, extra_conf)
    }

    /// A hot standby of this node, streaming from it. Settings of the
    /// node's own (`extra_conf` of its start) are not carried over: pass
    /// what the standby needs in `extra_conf`.
    pub fn standby(&self, name: &str, extra_conf: &[&str]) -> Node {
        let dir = Node::new_dir(name, self.pg);
        self.copy_to(&dir.join("data"));
        fs::write(dir.join("data/standby.signal"), "").expect("write standby.signal");
        let primary = format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user=postgres'",
            self.port
        );
        let mut conf = vec![primary.as_str()];
        conf.extend_from_slice(extra_conf);
        Node::launch(self.pg, name, dir, &conf)
    }

    /// A fresh node directory, owned by `postgres` and registered for
    /// clean-up.
    fn new_dir(name: &str, pg: &'static Pg) -> PathBuf {
        AT_EXIT.call_once(|| {
            reap_stale();
            // SAFETY: registers a plain extern "C" function with no state.
            unsafe { atexit(stop_all_at_exit) };
        });
        let base = base_dir();
        fs::create_dir_all(&base).expect("create dg-tests dir");
        // The postgres user must traverse it (the system temp dir is 1777).
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod dg-tests dir");

        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = base.join(format!("{}-{seq}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir(&dir).expect("create node dir");
        fs::write(dir.join(PG_CONFIG_FILE), &pg.pg_config).expect("write the node's pg_config");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod node dir");
        let chown = Command::new("chown")
            .args(["postgres:postgres", dir.to_str().unwrap()])
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown {dir:?} to postgres failed");
        LIVE.lock().unwrap().push((dir.clone(), pg));
        dir
    }

    /// Starts the server in `dir`/data on a free port.
    fn launch(pg: &'static Pg, name: &str, dir: PathBuf, extra_conf: &[&str]) -> Node {
        let data = dir.join("data");
        let data_s = data.to_str().unwrap().to_string();
        // A port taken between free_port() and the bind makes the start
        // fail; try a few fresh ports before giving up.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let mut conf = vec![
                "listen_addresses = '127.0.0.1'".to_string(),
                format!("port = {port}"),
                format!("unix_socket_directories = '{data_s}'"),
                "max_prepared_transactions = 20".into(),
                "fsync = off".into(),
                "log_line_prefix = '%m [%p] %q%a '".into(),
            ];
            conf.extend(extra_conf.iter().map(|s| s.to_string()));
            fs::write(data.join("postgresql.auto.conf"), conf.join("\n") + "\n")
                .expect("write postgresql.auto.conf");
            let pg_ctl = pg.tool("pg_ctl");
            let log = dir.join("server.log");
            let out = as_postgres(
                pg,
                &dir,
                &[
                    &pg_ctl,
                    "-D",
                    &data_s,
                    "-l",
                    log.to_str().unwrap(),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            );
            if out.status.success() {
                return Node {
                    name: name.to_string(),
                    port,
                    pg,
                    dir,
                    stopped: AtomicBool::new(false),
                };
            }
            last_error = format!(
                "{}\n--- server log ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(&log).unwrap_or_default()
            );
            pg_stop(&data, pg);
            if !last_error.contains("could not bind")
                && !last_error.contains("could not create any TCP/IP sockets")
            {
                break;
            }
        }
        stop_and_remove(&dir, pg);
        panic!("cannot start node {name}: {last_error}");
    }

    /// A coordinator: a node with dg preloaded (its callbacks and worker
    /// need `shared_preload_libraries`).
    pub fn coordinator(name: &str, extra_conf: &[&str]) -> Node {
        Node::coordinator_on(Pg::coordinator(), name, extra_conf)
    }

    /// `coordinator`, with the binaries of `pg` (dg must be installed there).
    /// `DG_TEST_COORDINATOR_CONF` (lines) comes after `extra_conf`, so a
    /// whole suite can run with a setting changed (scripts/test.sh runs
    /// the fault suites again with `dg.synchronous_finish = off`).
    pub fn coordinator_on(pg: &'static Pg, name: &str, extra_conf: &[&str]) -> Node {
        let mut conf = vec!["shared_preload_libraries = 'dg'"];
        conf.extend_from_slice(extra_conf);
        let from_env = std::env::var("DG_TEST_COORDINATOR_CONF").unwrap_or_default();
        conf.extend(from_env.lines().filter(|l| !l.trim().is_empty()));
        Node::start_on(pg, name, &conf)
    }

    /// `server_version_num` as the running server reports it (which
    /// major a test really talks to).
    pub fn server_version_num(&self) -> i64 {
        scalar(
            &mut self.client("postgres"),
            "SELECT current_setting('server_version_num')::bigint",
        )
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// The server log, for failure messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// How often `needle` appears in the server log.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Polls the server log for `needle`: a worker may write its line a
    /// little after the effect a test saw.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    /// Replaces pg_hba.conf with `lines` and reloads the server.
    pub fn set_hba(&self, lines: &str) {
        fs::write(self.dir.join("data/pg_hba.conf"), lines).expect("write pg_hba.conf");
        self.client("postgres")
            .batch_execute("SELECT pg_reload_conf()")
            .expect("reload");
    }

    /// A connection as superuser `postgres` over TCP. The application name
    /// tells the tests' own sessions apart from dg's (`dg`) on the peers.
    pub fn client(&self, db: &str) -> Client {
        let conn = format!(
            "host=127.0.0.1 port={} user=postgres dbname={db} application_name=dg-tests connect_timeout=10",
            self.port
        );
        Client::connect(&conn, NoTls).unwrap_or_else(|e| {
            // The server's words and its log's end: a refused connection
            // is otherwise only "db error".
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(20)..];
            panic!(
                "connect to {} db {db}: {} ({:?})\n{}",
                self.name,
                error_text(&e),
                e.code().map(|c| c.code()),
                tail.join("\n")
            )
        })
    }

    /// Kills the postmaster with SIGKILL, as a crash would, and starts the
    /// server again (crash recovery runs).
    pub fn crash_and_restart(&self) {
        self.kill9();
        self.start_again();
    }

    /// SIGKILL to the postmaster; its children notice and exit.
    pub fn kill9(&self) {
        let pid_file =
            fs::read_to_string(self.dir.join("data/postmaster.pid")).expect("postmaster.pid");
        let pid = pid_file
            .lines()
            .next()
            .expect("pid line")
            .trim()
            .to_string();
        let _ = Command::new("kill").args(["-9", &pid]).status();
    }

    /// Whether the postmaster named in postmaster.pid still runs.
    pub fn postmaster_alive(&self) -> bool {
        fs::read_to_string(self.dir.join("data/postmaster.pid"))
            .ok()
            .and_then(|f| f.lines().next().map(|l| l.trim().to_string()))
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Starts a server whose postmaster died. Until its old children have
    /// exited, the start is refused, so it is retried.
    pub fn start_again(&self) {
        let pg_ctl = self.pg.tool("pg_ctl");
        let data = self.dir.join("data").to_str().unwrap().to_string();
        let log = self.log_path().to_str().unwrap().to_string();
        let started = wait_until(Duration::from_secs(60), || {
            as_postgres(
                self.pg,
                Path::new("/"),
                &[&pg_ctl, "-D", &data, "-l", &log, "-w", "start"],
            )
            .status
            .success()
        });
        assert!(started, "{} did not restart:\n{}", self.name, self.log());
    }

    /// Waits until the server accepts connections again (after a backend
    /// crash the postmaster reinitializes on its own).
    pub fn wait_ready(&self) {
        let conn = format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres connect_timeout=2",
            self.port
        );
        assert!(
            wait_until(Duration::from_secs(60), || Client::connect(&conn, NoTls)
                .is_ok()),
            "{} does not accept connections:\n{}",
            self.name,
            self.log()
        );
    }

    /// postgresql.conf lines that archive the node's WAL into `archive/`
    /// beside its data directory (the archiver runs in the data
    /// directory), for the point-in-time restore tests.
    pub const ARCHIVING: [&'static str; 3] = [
        "wal_level = replica",
        "archive_mode = on",
        "archive_command = 'mkdir -p ../archive && cp %p ../archive/%f'",
    ];

    /// A base backup of the running node into `base/` beside its data
    /// directory (for `restore`).
    pub fn base_backup(&self) {
        self.copy_to(&self.dir.join("base"));
    }

    /// pg_basebackup of the running node into `to`, with the WAL it needs.
    fn copy_to(&self, to: &Path) {
        let port = self.port.to_string();
        let out = as_postgres(
            self.pg,
            &self.dir,
            &[
                &self.pg.tool("pg_basebackup"),
                "-D",
                to.to_str().unwrap(),
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "pg_basebackup of {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops the node at once, puts its base backup in place of its data
    /// directory, and starts it recovering from its archive with the
    /// `recovery_target*` lines of `target`; waits until it is promoted.
    pub fn restore(&self, target: &[&str]) {
        let data = self.dir.join("data");
        pg_stop(&data, self.pg);
        fs::remove_dir_all(&data).expect("remove the data directory");
        let cp = Command::new("cp")
            .args([
                "-a",
                self.dir.join("base").to_str().unwrap(),
                data.to_str().unwrap(),
            ])
            .status()
            .expect("run cp");
        assert!(cp.success(), "copy the base backup of {}", self.name);
        let mut conf = fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
        conf.push_str("restore_command = 'cp ../archive/%f %p'\n");
        for line in target {
            conf.push_str(line);
            conf.push('\n');
        }
        fs::write(data.join("postgresql.auto.conf"), conf).expect("write postgresql.auto.conf");
        fs::write(data.join("recovery.signal"), "").expect("write recovery.signal");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres", data.to_str().unwrap()])
            .status()
            .expect("run chown");
        assert!(chown.success(), "chown the restored data directory");
        self.start_again();
        let promoted = wait_until(Duration::from_secs(60), || {
            self.client("postgres")
                .query_one("SELECT NOT pg_is_in_recovery()", &[])
                .is_ok_and(|r| r.get::<_, bool>(0))
        });
        assert!(promoted, "{} was not promoted:\n{}", self.name, self.log());
    }

    /// Switches the node to a new WAL file and waits until the archive
    /// has every file up to the one holding `lsn`.
    pub fn archive_through(&self, lsn: &str) {
        let mut c = self.client("postgres");
        let segment: String = c
            .query_one("SELECT pg_walfile_name($1::text::pg_lsn)", &[&lsn])
            .expect("pg_walfile_name")
            .get(0);
        c.batch_execute("SELECT pg_switch_wal()")
            .expect("pg_switch_wal");
        let archived = wait_until(Duration::from_secs(60), || {
            c.query_one(
                "SELECT coalesce(last_archived_wal >= $1, false) FROM pg_stat_archiver",
                &[&segment],
            )
            .is_ok_and(|r| r.get::<_, bool>(0))
        });
        assert!(
            archived,
            "{} did not archive {segment}:\n{}",
            self.name,
            self.log()
        );
    }

    /// Immediate shutdown and removal of the directory; idempotent.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        stop_and_remove(&self.dir, self.pg);
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(d, _)| d != &self.dir);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One coordinator and `n` peers.
pub struct Cluster {
    pub coordinator: Node,
    pub peers: Vec<Node>,
}

impl Cluster {
    pub fn start(npeers: usize) -> Cluster {
        Cluster::start_with(npeers, &[])
    }

    /// `coordinator_conf`: extra postgresql.conf lines for the coordinator.
    /// Peer `i` runs `Pg::peer(i)` (`DG_PEER_PG_CONFIGS`).
    pub fn start_with(npeers: usize, coordinator_conf: &[&str]) -> Cluster {
        let peers: Vec<&'static Pg> = (1..=npeers).map(Pg::peer).collect();
        Cluster::start_on(Pg::coordinator(), &peers, coordinator_conf)
    }

    /// A coordinator of `coordinator` and one peer per entry of `peers`,
    /// each of that installation.
    pub fn start_on(
        coordinator: &'static Pg,
        peers: &[&'static Pg],
        coordinator_conf: &[&str],
    ) -> Cluster {
        Cluster {
            coordinator: Node::coordinator_on(coordinator, "coord", coordinator_conf),
            peers: peers
                .iter()
                .enumerate()
                .map(|(i, pg)| Node::start_on(pg, &format!("peer{}", i + 1), &[]))
                .collect(),
        }
    }

    /// Creates database `name` on every node, dg in the coordinator's, and
    /// nodes `peer1..peerN` with a PUBLIC user mapping as `postgres`.
    /// Each test takes its own database so tests sharing a cluster stay
    /// independent (pg_stat_activity and dg.decisions are filtered or kept
    /// per database).
    pub fn db(&self, name: &str) -> Db<'_> {
        self.db_at(name, None)
    }

    /// `db`, with dg installed at `version` (None: the default).
    pub fn db_at(&self, name: &str, version: Option<&str>) -> Db<'_> {
        for node in &self.peers {
            create_database(node, name);
        }
        coordinate_at(&self.coordinator, name, &self.peers, version);
        Db {
            cluster: self,
            name: name.to_string(),
        }
    }
}

/// One test's database across a cluster.
pub struct Db<'a> {
    pub cluster: &'a Cluster,
    pub name: String,
}

impl Db<'_> {
    /// A new session on the coordinator.
    pub fn coord(&self) -> Client {
        self.cluster.coordinator.client(&self.name)
    }

    /// A new session on the coordinator whose notices (WARNINGs) are
    /// collected.
    pub fn coord_with_notices(&self) -> (Client, Arc<Mutex<Vec<String>>>) {
        let notices = Arc::new(Mutex::new(Vec::new()));
        let n = notices.clone();
        let client = format!(
            "host=127.0.0.1 port={} user=postgres dbname={} application_name=dg-tests connect_timeout=10",
            self.cluster.coordinator.port, self.name
        )
        .parse::<postgres::Config>()
        .expect("connection string")
        .notice_callback(move |d| n.lock().unwrap().push(d.message().to_string()))
        .connect(NoTls)
        .unwrap_or_else(|e| panic!("connect to the coordinator db {}: {e}", self.name));
        (client, notices)
    }

    /// A new session on peer `i` (1-based, as in the node names).
    pub fn peer(&self, i: usize) -> Client {
        self.cluster.peers[i - 1].client(&self.name)
    }

    /// Runs `sql` (several statements allowed) directly on every peer.
    pub fn on_peers(&self, sql: &str) {
        for i in 1..=self.cluster.peers.len() {
            self.peer(i)
                .batch_execute(sql)
                .unwrap_or_else(|e| panic!("on peer{i}: {e}"));
        }
    }

    /// Prepared transactions on peer `i` in this test's database (tests
    /// sharing a cluster must only count their own).
    pub fn prepared(&self, i: usize) -> i64 {
        scalar(
            &mut self.peer(i),
            "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()",
        )
    }

    /// Prepared transactions on every peer in this test's database.
    pub fn prepared_all(&self) -> i64 {
        (1..=self.cluster.peers.len())
            .map(|i| self.prepared(i))
            .sum()
    }

    /// GIDs of prepared transactions on peer `i` in this database.
    pub fn prepared_gids(&self, i: usize) -> Vec<String> {
        self.peer(i)
            .query(
                "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid",
                &[],
            )
            .expect("read pg_prepared_xacts")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// dg's sessions on peer `i` that are still doing something: running a
    /// statement or holding a transaction open. Idle cached connections
    /// are fine.
    pub fn busy_dg_sessions(&self, i: usize) -> i64 {
        scalar(
            &mut self.peer(i),
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name LIKE 'dg:%'
                AND state IS DISTINCT FROM 'idle'",
        )
    }

    /// Sessions on peer `i` (other than the asking one) running pg_sleep.
    pub fn sleeping_sessions(&self, i: usize) -> i64 {
        scalar(
            &mut self.peer(i),
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND state = 'active' AND query LIKE '%pg\\_sleep%'",
        )
    }

    /// `balance` of account `id` on peer `i`, read directly from the peer.
    pub fn balance(&self, i: usize, id: i32) -> i64 {
        self.peer(i)
            .query_one("SELECT balance FROM accounts WHERE id = $1", &[&id])
            .expect("read balance")
            .get(0)
    }
}

/// The first column of the first row, as bigint.
pub fn scalar(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", error_text(&e)))
        .get(0)
}

/// `dg.dist_exec(node, sql, VARIADIC params)` with the parameters bound
/// client-side; returns dg's result (rows affected) or the error.
pub fn dist_exec(
    c: &mut Client,
    node: &str,
    sql: &str,
    params: &[&str],
) -> Result<i64, postgres::Error> {
    let params: Vec<&str> = params.to_vec();
    c.query_one(
        "SELECT dg.dist_exec($1, $2, VARIADIC $3)",
        &[&node, &sql, &params],
    )
    .map(|r| r.get(0))
}

/// The same statement through `dg.dist_exec` on each of `nodes`; panics on
/// an error (for set-up steps of a DT, not for the statements under test).
pub fn dist_exec_each(c: &mut Client, nodes: &[&str], sql: &str) {
    for node in nodes {
        dist_exec(c, node, sql, &[]).unwrap_or_else(|e| panic!("dist_exec on {node}: {e}"));
    }
}

/// The money of a bank spread over `peer1..peerN` (the sum of every
/// peer's `accounts.balance`), read in one block: in a consistent snapshot
/// (`dg.dist_snapshot()`, all the nodes), or with each node's own
/// REPEATABLE READ snapshot, taken as the block first reads it. A failed
/// block is rolled back, so the session can read again.
pub fn read_total(c: &mut Client, peers: usize, consistent: bool) -> Result<i64, postgres::Error> {
    let read = |c: &mut Client| -> Result<i64, postgres::Error> {
        c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")?;
        if consistent {
            c.batch_execute("SELECT dg.dist_snapshot()")?;
        }
        let mut sum = 0;
        for i in 1..=peers {
            sum += c
                .query_one(
                    &format!(
                        "SELECT s FROM dg.dist_query('peer{i}', 'SELECT sum(balance)::bigint FROM accounts') AS t(s bigint)"
                    ),
                    &[],
                )?
                .get::<_, i64>(0);
        }
        c.batch_execute("COMMIT")?;
        Ok(sum)
    };
    read(c).inspect_err(|_| {
        let _ = c.batch_execute("ROLLBACK");
    })
}

/// What a reader of bank totals saw: reads that returned the expected
/// total, reads that returned another one, and failed reads by SQLSTATE
/// (`none` for a client-side or connection error), with the first
/// message of each.
#[derive(Debug, Default)]
pub struct Reads {
    pub ok: u64,
    pub wrong: u64,
    pub errors: std::collections::BTreeMap<String, (u64, String)>,
}

impl Reads {
    /// Counts one read of `read_total` that should have seen `expected`.
    pub fn record(&mut self, read: Result<i64, postgres::Error>, expected: i64) {
        match read {
            Ok(sum) if sum == expected => self.ok += 1,
            Ok(_) => self.wrong += 1,
            Err(e) => {
                let code = sqlstate(&e).unwrap_or("none").to_string();
                self.errors.entry(code).or_insert((0, error_text(&e))).0 += 1;
            }
        }
    }

    /// Adds another reader's counts.
    pub fn add(&mut self, other: Reads) {
        self.ok += other.ok;
        self.wrong += other.wrong;
        for (code, (n, text)) in other.errors {
            self.errors.entry(code).or_insert((0, text)).0 += n;
        }
    }

    /// Failed reads of every kind.
    pub fn failed(&self) -> u64 {
        self.errors.values().map(|e| e.0).sum()
    }

    /// `ok N / wrong N / errors {55P03: N, ...}`, and the first message of
    /// each kind of error.
    pub fn summary(&self) -> String {
        let counts: Vec<String> = self
            .errors
            .iter()
            .map(|(code, (n, _))| format!("{code}: {n}"))
            .collect();
        let mut s = format!(
            "ok {} / wrong {} / errors {{{}}}",
            self.ok,
            self.wrong,
            counts.join(", ")
        );
        for (code, (_, text)) in &self.errors {
            s += &format!("\n  first {code}: {}", text.replace('\n', " | "));
        }
        s
    }
}

/// The SQLSTATE of a server error, if it is one.
pub fn sqlstate(e: &postgres::Error) -> Option<&str> {
    e.code().map(|c| c.code())
}

/// Asserts `r` failed with SQLSTATE `code`; returns the error for more checks.
#[track_caller]
pub fn expect_sqlstate<T: std::fmt::Debug>(
    r: Result<T, postgres::Error>,
    code: &str,
) -> postgres::Error {
    match r {
        Ok(v) => panic!("expected SQLSTATE {code}, but it succeeded with {v:?}"),
        Err(e) => {
            assert_eq!(sqlstate(&e), Some(code), "wrong error: {e:?}");
            e
        }
    }
}

/// How long the resolver may take to clear what a fault left, counted
/// from the moment the faults stop (every node up again, every link
/// healed): the pass that is due within one interval, one more interval
/// for a pass that was listing just before the node came back, and 1 s to
/// start a pass worker and connect to the nodes on a busy machine. The
/// figure README's "No orphans" row states.
pub fn resolver_bound(interval: Duration) -> Duration {
    2 * interval + Duration::from_secs(1)
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns
/// whether it held. Tests synchronise with this, never with bare sleeps.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A server error's message, detail, hint and context in one string, to
/// check what it says (e.g. that it names the node).
pub fn error_text(e: &postgres::Error) -> String {
    e.as_db_error().map_or_else(
        || e.to_string(),
        |d| {
            [Some(d.message()), d.detail(), d.hint(), d.where_()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("\n")
        },
    )
}

/// The server's `server_version_num` (150010, 180006, ...).
pub fn version_num(c: &mut Client) -> i64 {
    scalar(c, "SELECT current_setting('server_version_num')::bigint")
}

/// What `pg_stat_activity.wait_event` shows for dg's wait event `name` on
/// a server of `version_num`: the name itself from 17 on (dg registers its
/// waits there), the generic `Extension` on 15 and 16.
pub fn shown_wait_event(version_num: i64, name: &str) -> String {
    if version_num >= 170000 {
        name.to_string()
    } else {
        "Extension".to_string()
    }
}

/// `(wait_event_type, wait_event)` of backend `pid`, as `pg_stat_activity`
/// shows it now (empty strings for NULL); None once the backend is gone.
pub fn wait_event_of(c: &mut Client, pid: i32) -> Option<(String, String)> {
    let row = c
        .query_opt(
            "SELECT coalesce(wait_event_type, ''), coalesce(wait_event, '')
               FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        )
        .unwrap_or_else(|e| panic!("pg_stat_activity of {pid}: {}", error_text(&e)));
    row.map(|r| (r.get(0), r.get(1)))
}

/// xorshift64*: enough randomness for tests that choose faults or write
/// scripts, from a seed they print so a run can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in 0..n.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// 0..=max milliseconds.
    pub fn ms(&mut self, max: u64) -> Duration {
        Duration::from_millis(self.below(max + 1))
    }
}

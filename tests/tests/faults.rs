//! Faults at every point of the commit protocol (src/README.md, "The commit protocol"). Each
//! transfer moves 100 between the peers and writes a ledger row on the
//! coordinator in the same block, so a coordinator that disagrees with its
//! peers shows.
//!
//! The local commit is the commit point: a coordinator that dies or fails
//! before it leaves the transfer rolled back everywhere, ledger row
//! included; one that dies or fails after it leaves the transfer committed
//! everywhere. Each (kind, point) is checked for that one outcome, for what
//! the client saw, for the fault having fired (a lost fault point would
//! turn a run into five normal commits), and for the resolver clearing
//! what was left within its bound, with no client connected.
//!
//! Needs a dg built with the `fault_injection` feature (`make test` does).

use dg_tests::postgres::{Client, Error};
use dg_tests::{
    dist_exec, error_text, expect_sqlstate, resolver_bound, scalar, sqlstate, wait_until, Cluster,
    Db, Node,
};
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(200);
const INTERVAL_CONF: &str = "dg.resolver_interval = '200ms'";

/// Each point as `dg.fault` names it and as its log line does.
const POINTS: [(&str, &str); 5] = [
    ("before_prepare", "BeforePrepare"),
    ("after_prepare:1", "AfterPrepare"),
    ("after_decision", "AfterDecision"),
    ("after_local_commit", "AfterLocalCommit"),
    ("between_finishes:1", "BetweenFinishes"),
];

/// `POINTS[LOCAL_COMMIT..]` come after the local commit.
const LOCAL_COMMIT: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// The coordinator backend dies; the server restarts its backends.
    Backend,
    /// The whole coordinator server dies and is started again.
    Server,
    /// Peer 2 dies while the coordinator waits at the point, and is
    /// started again.
    Peer,
    /// The coordinator raises an error at the point.
    Error,
}

impl Kind {
    fn action(self) -> &'static str {
        match self {
            Kind::Backend => "exit",
            Kind::Server => "crash",
            Kind::Peer => "sleep:1500",
            Kind::Error => "error",
        }
    }

    /// The action as the fault's log line prints it.
    fn logged(self) -> &'static str {
        match self {
            Kind::Backend => "Exit",
            Kind::Server => "Crash",
            Kind::Peer => "Sleep(1500)",
            Kind::Error => "Error",
        }
    }

    /// Does the transfer commit when this fault hits `POINTS[n]`?
    fn commits(self, n: usize) -> bool {
        match self {
            // A peer prepared before it died keeps its prepared
            // transaction, and the decision (made once every peer
            // prepared) commits it; one that died unprepared lost its
            // transaction, so the prepare phase fails.
            Kind::Peer => n >= 2,
            _ => n >= LOCAL_COMMIT,
        }
    }

    /// Does the client see COMMIT succeed?
    fn acked(self, n: usize) -> bool {
        match self {
            Kind::Backend | Kind::Server => false,
            Kind::Peer | Kind::Error => self.commits(n),
        }
    }
}

fn transfer(c: &mut Client) -> Result<(), Error> {
    c.batch_execute("BEGIN; INSERT INTO ledger VALUES (1)")?;
    dist_exec(
        c,
        "peer1",
        "UPDATE accounts SET balance = balance - 100 WHERE id = 1",
        &[],
    )?;
    dist_exec(
        c,
        "peer2",
        "UPDATE accounts SET balance = balance + 100 WHERE id = 1",
        &[],
    )?;
    c.batch_execute("COMMIT")
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The client lost its backend: an I/O error, not an answer.
#[track_caller]
fn assert_died(what: &str, result: &Result<(), Error>) {
    match result {
        Err(e) if e.as_db_error().is_none() => {}
        other => panic!("{what}: the coordinator answered instead of dying: {other:?}"),
    }
}

/// The transfer under `kind` at `POINTS[n]`, in a database of its own;
/// returns what COMMIT returned, once the nodes are up again.
fn fault_once(cluster: &Cluster, db: &Db, kind: Kind, n: usize) -> Result<(), Error> {
    let (point, name) = POINTS[n];
    let what = format!("{kind:?} at {point}");
    let coord = &cluster.coordinator;
    let line = format!("dg: fault {} at {name}", kind.logged());
    let fired = coord.log_count(&line);
    let backend_crashes = coord.log_count("was terminated by signal 6");
    let (mut c, notices) = db.coord_with_notices();
    c.batch_execute(&format!("SET dg.fault = '{point}={}'", kind.action()))
        .unwrap();
    let result = if kind == Kind::Peer {
        let peer2 = &cluster.peers[1];
        let result = std::thread::scope(|s| {
            let t = s.spawn(|| transfer(&mut c));
            // Kill peer2 while the coordinator sleeps at the point.
            assert!(
                wait_until(Duration::from_secs(10), || coord.log_count(&line) > fired),
                "{what}: the coordinator never reached the point"
            );
            peer2.kill9();
            t.join().unwrap()
        });
        peer2.start_again();
        result
    } else {
        transfer(&mut c)
    };
    assert!(
        wait_until(Duration::from_secs(5), || coord.log_count(&line) > fired),
        "{what}: the fault never fired (no \"{line}\" in the log)"
    );
    match kind {
        Kind::Backend => {
            assert_died(&what, &result);
            assert!(
                wait_until(Duration::from_secs(10), || coord
                    .log_count("was terminated by signal 6")
                    > backend_crashes),
                "{what}: the postmaster saw no backend die"
            );
            coord.wait_ready();
        }
        Kind::Server => {
            assert_died(&what, &result);
            assert!(
                wait_until(Duration::from_secs(10), || !coord.postmaster_alive()),
                "{what}: the server is still running"
            );
            coord.start_again();
        }
        Kind::Peer => {}
        Kind::Error if kind.commits(n) => {
            // After the commit point the error is only a WARNING.
            let notices = notices.lock().unwrap().clone();
            assert!(
                notices.iter().any(|w| w.contains("dg fault injected")),
                "{what}: no WARNING for the error: {notices:?}"
            );
        }
        Kind::Error => {
            let e = result
                .as_ref()
                .expect_err("COMMIT succeeded despite the error");
            assert_eq!(sqlstate(e), Some("0A000"), "{what}: another error: {e:?}");
            assert!(
                error_text(e).contains("dg fault injected"),
                "{what}: another error: {e:?}"
            );
        }
    }
    result
}

fn run(kind: Kind, extra_conf: &[&str]) {
    let mut conf = vec![INTERVAL_CONF];
    conf.extend_from_slice(extra_conf);
    let cluster = Cluster::start_with(2, &conf);
    for (n, (point, _)) in POINTS.iter().enumerate() {
        let what = format!("{kind:?} at {point}");
        let db = cluster.db(&format!("fault_{n}"));
        db.on_peers("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL); INSERT INTO accounts VALUES (1, 1000);");
        // The checkpoint makes the set-up survive a crash also when
        // commits are asynchronous.
        let mut c = db.coord();
        c.batch_execute("CREATE TABLE ledger (id int PRIMARY KEY)")
            .unwrap();
        c.batch_execute("CHECKPOINT").unwrap();
        let result = fault_once(&cluster, &db, kind, n);
        // Every node is up again and no client of the coordinator is
        // open: the resolver alone finishes what the fault left.
        let back = Instant::now();
        let bound = resolver_bound(INTERVAL);
        assert!(
            wait_until(bound, || db.prepared_all() == 0),
            "{what}: prepared transactions left after {bound:?}: {:?} {:?}\ncoordinator log:\n{}",
            db.prepared_gids(1),
            db.prepared_gids(2),
            tail(&cluster.coordinator.log())
        );
        let cleared = back.elapsed();
        let outcome = (
            db.balance(1, 1),
            db.balance(2, 1),
            scalar(&mut db.coord(), "SELECT count(*) FROM ledger"),
        );
        let expected = if kind.commits(n) {
            (900, 1100, 1)
        } else {
            (1000, 1000, 0)
        };
        assert_eq!(
            outcome, expected,
            "{what}: (peer1, peer2, coordinator ledger rows)"
        );
        assert_eq!(
            result.is_ok(),
            kind.acked(n),
            "{what}: COMMIT returned {result:?}"
        );
        eprintln!("{what}: outcome {outcome:?}, cleared in {cleared:?}");
    }
}

#[test]
fn coordinator_backend_killed_at_every_point() {
    run(Kind::Backend, &[]);
}

#[test]
fn coordinator_server_killed_at_every_point() {
    run(Kind::Server, &[]);
}

/// With asynchronous commits, and a WAL writer that does not flush on its
/// own within the test, only the forced synchronous commit of the
/// decision makes the local commit survive the crash.
#[test]
fn coordinator_server_killed_at_every_point_without_synchronous_commit() {
    run(
        Kind::Server,
        &["synchronous_commit = off", "wal_writer_delay = '10s'"],
    );
}

#[test]
fn peer_killed_at_every_point() {
    run(Kind::Peer, &[]);
}

#[test]
fn coordinator_error_at_every_point() {
    run(Kind::Error, &[]);
}

/// A typo in `dg.fault` must not arm nothing in silence.
#[test]
fn fault_setting_refuses_what_it_cannot_parse() {
    let node = Node::coordinator("coord", &[]);
    let mut c = node.client("postgres");
    for bad in [
        "nowhere=crash",
        "after_prepare:x=crash",
        "before_prepare=explode",
        "before_prepare",
        "after_decision=sleep:soon",
    ] {
        let e = expect_sqlstate(c.batch_execute(&format!("SET dg.fault = '{bad}'")), "22023");
        assert!(
            error_text(&e).contains("point[:k]=action"),
            "{bad}: {}",
            error_text(&e)
        );
    }
    c.batch_execute(
        "SET dg.fault = 'before_decision_read=sleep:10'; SET dg.fault = ''; RESET dg.fault",
    )
    .unwrap();
}

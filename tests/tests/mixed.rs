//! Peers of other majors than the coordinator (README, "PostgreSQL
//! versions"): a coordinator on 18 with peers on 14 and 15, and one on 15
//! with peers on 18 and 17. On each: the transfer workload, savepoints, a
//! crash of the coordinator after the decision and after the local commit
//! with the resolver finishing on the peers, and a deadlock between the two
//! peers. Every outcome is all-or-nothing and nothing is left prepared on
//! any peer.
//!
//! Needs the pg_config of every major it runs in `DG_PG_CONFIG_<NN>` and a
//! dg built with `fault_injection` installed in each coordinator's tree,
//! so only `make test-versions` (scripts/versions.sh) runs it: the file
//! needs the crate's `mixed` feature, which the default multi-node stage
//! does not turn on, and it panics when a variable is missing rather than
//! run on one major. The coordinator-on-18 tests are the module
//! `coordinator_18`, the others `coordinator_15`, so each can run under its
//! major's lock.

use dg_tests::postgres::Client;
use dg_tests::{
    dist_exec, error_text, expect_sqlstate, resolver_bound, scalar, wait_until, Cluster, Db, Pg,
};
use std::collections::HashSet;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(200);
const DEADLOCK_INTERVAL: Duration = Duration::from_millis(500);
const CONF: [&str; 2] = [
    "dg.resolver_interval = '200ms'",
    "dg.deadlock_check_interval = '500ms'",
];

/// A coordinator of major `coordinator`, peer1 and peer2 of the majors in
/// `peers`; checked against what each server reports, so a mix-up of the
/// variables cannot make the test run on one major.
fn cluster(coordinator: u32, peers: [u32; 2], extra_conf: &[&str]) -> Cluster {
    let mut conf = CONF.to_vec();
    conf.extend_from_slice(extra_conf);
    let cluster = Cluster::start_on(
        Pg::major(coordinator),
        &[Pg::major(peers[0]), Pg::major(peers[1])],
        &conf,
    );
    let majors: Vec<i64> = std::iter::once(&cluster.coordinator)
        .chain(&cluster.peers)
        .map(|n| n.server_version_num() / 10000)
        .collect();
    assert_eq!(
        majors,
        [coordinator, peers[0], peers[1]].map(i64::from),
        "(coordinator, peer1, peer2) majors"
    );
    // Each server loads its own tree's libpq (the harness puts the tree's
    // lib/ on its library path): dblink on every node reaches the next.
    let nodes: Vec<_> = std::iter::once(&cluster.coordinator)
        .chain(&cluster.peers)
        .collect();
    for (i, node) in nodes.iter().enumerate() {
        let next = nodes[(i + 1) % nodes.len()];
        let mut c = node.client("postgres");
        c.batch_execute("CREATE EXTENSION dblink").unwrap();
        let sql = format!(
            "SELECT n FROM dblink('host=127.0.0.1 port={} user=postgres dbname=postgres',
                                  'SELECT current_setting(''server_version_num'')::int / 10000')
                      AS t(n int)",
            next.port
        );
        let major: i32 = c
            .query_one(&sql, &[])
            .unwrap_or_else(|e| panic!("dblink from {}: {}", node.name, error_text(&e)))
            .get(0);
        assert_eq!(
            major as u32, next.pg.major,
            "dblink from {} to {}",
            node.name, next.name
        );
    }
    cluster
}

/// Nothing prepared on either peer within the resolver's bound.
#[track_caller]
fn assert_nothing_prepared(db: &Db, what: &str) {
    let bound = resolver_bound(INTERVAL);
    assert!(
        wait_until(bound, || db.prepared_all() == 0),
        "{what}: prepared transactions left after {bound:?}: {:?} {:?}",
        db.prepared_gids(1),
        db.prepared_gids(2)
    );
}

const ACCOUNTS: i32 = 4;
const START: i64 = 1000;

/// `accounts` (balances may not go negative) and a `transfers` ledger on
/// both peers, a `ledger` on the coordinator.
fn bank<'a>(cluster: &'a Cluster, name: &str) -> Db<'a> {
    let db = cluster.db(name);
    db.on_peers(&format!(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
         INSERT INTO accounts SELECT g, {START} FROM generate_series(1, {ACCOUNTS}) g;
         CREATE TABLE transfers (id bigint PRIMARY KEY, amount bigint NOT NULL);"
    ));
    db.coord()
        .batch_execute("CREATE TABLE ledger (id bigint PRIMARY KEY)")
        .unwrap();
    db
}

const MOVE: &str = "WITH m AS (UPDATE accounts SET balance = balance + $2 WHERE id = $3)
                    INSERT INTO transfers VALUES ($1, $2)";

/// Moves `amount` from `from` on peer1 to `to` on peer2 in one block with
/// a ledger row on the coordinator; whether COMMIT succeeded.
fn transfer(c: &mut Client, id: i64, amount: i64, from: i32, to: i32) -> bool {
    let ids = id.to_string();
    let ok = c.batch_execute("BEGIN").is_ok()
        && c.execute("INSERT INTO ledger VALUES ($1)", &[&id]).is_ok()
        && dist_exec(
            c,
            "peer1",
            MOVE,
            &[&ids, &(-amount).to_string(), &from.to_string()],
        )
        .is_ok()
        && dist_exec(
            c,
            "peer2",
            MOVE,
            &[&ids, &amount.to_string(), &to.to_string()],
        )
        .is_ok()
        && c.batch_execute("COMMIT").is_ok();
    if !ok {
        c.batch_execute("ROLLBACK").unwrap();
    }
    ok
}

fn ids(c: &mut Client, sql: &str) -> HashSet<i64> {
    c.query(sql, &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Four clients move money from peer1 to peer2 (one lock order, so no
/// cycle); some transfers overdraw peer1's account and fail there. Each
/// transfer is on both peers and the coordinator or on none, exactly the
/// acknowledged ones, and the money adds up.
fn transfers(cluster: &Cluster) {
    let db = bank(cluster, "transfers");
    let attempts: Vec<(i64, bool)> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4i64)
            .map(|n| {
                let mut c = db.coord();
                s.spawn(move || {
                    (0..25i64)
                        .map(|k| {
                            let id = n * 1000 + k;
                            // Every fifth asks for more than an account holds.
                            let amount = if k % 5 == 4 { 5000 } else { 1 + (id % 37) };
                            let from = (id % ACCOUNTS as i64) as i32 + 1;
                            let to = ((id / 3) % ACCOUNTS as i64) as i32 + 1;
                            (id, transfer(&mut c, id, amount, from, to))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect()
    });
    let on1 = ids(&mut db.peer(1), "SELECT id FROM transfers");
    let on2 = ids(&mut db.peer(2), "SELECT id FROM transfers");
    let local = ids(&mut db.coord(), "SELECT id FROM ledger");
    let acked: HashSet<i64> = attempts.iter().filter(|a| a.1).map(|a| a.0).collect();
    assert_eq!(
        on1, acked,
        "peer1's transfers are not the acknowledged ones"
    );
    assert_eq!(
        on2, acked,
        "peer2's transfers are not the acknowledged ones"
    );
    assert_eq!(
        local, acked,
        "the coordinator's ledger is not the acknowledged ones"
    );
    assert!(
        acked.len() >= 60 && acked.len() < attempts.len(),
        "{} of {} acknowledged: the workload must commit most and fail some",
        acked.len(),
        attempts.len()
    );
    let sum = |i: usize, sql: &str| scalar(&mut db.peer(i), sql);
    let moved = sum(1, "SELECT coalesce(sum(amount), 0)::bigint FROM transfers");
    assert_eq!(
        sum(1, "SELECT sum(balance)::bigint FROM accounts"),
        ACCOUNTS as i64 * START + moved,
        "peer1's balances do not match its ledger"
    );
    assert_eq!(
        sum(1, "SELECT sum(balance)::bigint FROM accounts")
            + sum(2, "SELECT sum(balance)::bigint FROM accounts"),
        2 * ACCOUNTS as i64 * START,
        "money created or lost"
    );
    assert_nothing_prepared(&db, "transfers");
}

/// A subtransaction rolled back on the coordinator is rolled back on both
/// peers, one whose remote statement failed included; the rest commits.
fn savepoints(cluster: &Cluster) {
    let db = cluster.db("savepoints");
    db.on_peers("CREATE TABLE t (v text PRIMARY KEY)");
    let mut c = db.coord();
    c.batch_execute("BEGIN").unwrap();
    dist_exec(&mut c, "peer1", "INSERT INTO t VALUES ($1)", &["A"]).unwrap();
    c.batch_execute("SAVEPOINT s").unwrap();
    dist_exec(&mut c, "peer1", "INSERT INTO t VALUES ($1)", &["B"]).unwrap();
    dist_exec(&mut c, "peer2", "INSERT INTO t VALUES ($1)", &["B"]).unwrap();
    c.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    c.batch_execute("SAVEPOINT s2").unwrap();
    dist_exec(&mut c, "peer2", "INSERT INTO t VALUES ($1)", &["C"]).unwrap();
    expect_sqlstate(
        dist_exec(&mut c, "peer2", "INSERT INTO t VALUES ($1)", &["C"]),
        "23505",
    );
    c.batch_execute("ROLLBACK TO SAVEPOINT s2").unwrap();
    dist_exec(&mut c, "peer2", "INSERT INTO t VALUES ($1)", &["D"]).unwrap();
    c.batch_execute("COMMIT").unwrap();
    let rows = |i: usize| -> Vec<String> {
        db.peer(i)
            .query("SELECT v FROM t ORDER BY v", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    assert_eq!(rows(1), ["A"], "peer1");
    assert_eq!(rows(2), ["D"], "peer2");
    assert_nothing_prepared(&db, "savepoints");
}

/// The coordinator server crashes at `point` of a transfer's commit,
/// with both peers prepared; started again, its resolver alone finishes
/// the peers' prepared transactions: rolled back before the local commit,
/// committed after it. The cluster starts with the resolver off, and it is
/// turned on for the restart only: a pass of the dying server (its
/// children outlive the postmaster a little) would otherwise finish a peer
/// before the restart.
fn crash_at(coordinator: u32, peers: [u32; 2], point: &str, commits: bool) {
    let cluster = cluster(coordinator, peers, &["dg.resolver_enabled = off"]);
    let cluster = &cluster;
    let db = bank(cluster, &format!("crash_{point}"));
    let coord = &cluster.coordinator;
    let mut c = db.coord();
    // Read at the restart, not before (no reload).
    c.batch_execute("ALTER SYSTEM SET dg.resolver_enabled = on")
        .unwrap();
    // The set-up survives the crash.
    c.batch_execute("CHECKPOINT").unwrap();
    c.batch_execute(&format!("SET dg.fault = '{point}=crash'"))
        .unwrap();
    c.batch_execute("BEGIN; INSERT INTO ledger VALUES (1)")
        .unwrap();
    let bump = "UPDATE accounts SET balance = balance + $1 WHERE id = 1";
    dist_exec(&mut c, "peer1", bump, &["-100"]).unwrap();
    dist_exec(&mut c, "peer2", bump, &["100"]).unwrap();
    let r = c.batch_execute("COMMIT");
    assert!(
        r.as_ref().is_err_and(|e| e.as_db_error().is_none()),
        "{point}: the coordinator answered instead of dying: {r:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || !coord.postmaster_alive()),
        "{point}: the coordinator still runs"
    );
    // What the crash left: a prepared transaction on each peer, which
    // nobody but the resolver finishes.
    assert_eq!(
        (db.prepared(1), db.prepared(2)),
        (1, 1),
        "{point}: prepared transactions on (peer1, peer2) after the crash"
    );
    let back = Instant::now();
    coord.start_again();
    assert_nothing_prepared(&db, point);
    eprintln!("{point}: resolved {:?} after the restart", back.elapsed());
    let outcome = (
        db.balance(1, 1),
        db.balance(2, 1),
        scalar(&mut db.coord(), "SELECT count(*) FROM ledger"),
    );
    let expected = if commits {
        (900, 1100, 1)
    } else {
        (1000, 1000, 0)
    };
    assert_eq!(outcome, expected, "{point}: (peer1, peer2, ledger rows)");
}

const BUMP: &str = "UPDATE t SET v = v + 1 WHERE id = 1";

fn lock_waiters(db: &Db, i: usize) -> i64 {
    scalar(
        &mut db.peer(i),
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
}

fn holding(db: &Db, node: &str) -> Client {
    let mut c = db.coord();
    c.batch_execute("SET dg.remote_statement_timeout = '20s'; SET lock_timeout = '20s'; BEGIN")
        .unwrap();
    dist_exec(&mut c, node, BUMP, &[]).unwrap();
    c
}

type Pending = JoinHandle<(Client, Result<i64, dg_tests::postgres::Error>)>;

fn bump_later(mut c: Client, node: &'static str) -> Pending {
    std::thread::spawn(move || {
        let r = dist_exec(&mut c, node, BUMP, &[]);
        (c, r)
    })
}

/// A waits on peer2 for B, B on peer1 for A: the detector, reading both
/// peers' locks, fails B (the younger) with 40P01 within three intervals;
/// A commits on both peers, nothing of B is left.
fn deadlock(cluster: &Cluster) {
    let db = cluster.db("deadlock");
    db.on_peers("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 0)");
    let a = holding(&db, "peer1");
    let b = holding(&db, "peer2");
    let a = bump_later(a, "peer2");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 2) == 1));
    let since = Instant::now();
    let (mut b, r) = bump_later(b, "peer1").join().unwrap();
    let took = since.elapsed();
    let e = expect_sqlstate(r, "40P01");
    for node in ["\"peer1\"", "\"peer2\""] {
        assert!(error_text(&e).contains(node), "{node} not named in: {e:?}");
    }
    assert!(
        took < 3 * DEADLOCK_INTERVAL,
        "the cycle was broken after {took:?}"
    );
    b.batch_execute("ROLLBACK").unwrap();
    let (mut a, r) = a.join().unwrap();
    assert_eq!(r.unwrap(), 1);
    a.batch_execute("COMMIT").unwrap();
    let value = |i: usize| -> i32 {
        db.peer(i)
            .query_one("SELECT v FROM t WHERE id = 1", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(
        (value(1), value(2)),
        (1, 1),
        "(peer1, peer2) after the cycle"
    );
    assert_nothing_prepared(&db, "deadlock");
}

/// The tests of one combination of majors: the crash tests on clusters
/// of their own (they kill the coordinator), the others sharing one.
macro_rules! combination {
    ($module:ident, $coordinator:literal, $peers:expr) => {
        mod $module {
            use super::*;
            use std::sync::LazyLock;

            static CLUSTER: LazyLock<Cluster> =
                LazyLock::new(|| cluster($coordinator, $peers, &[]));

            #[test]
            fn transfers() {
                super::transfers(&CLUSTER);
            }

            #[test]
            fn savepoints() {
                super::savepoints(&CLUSTER);
            }

            #[test]
            fn deadlock_between_the_peers() {
                super::deadlock(&CLUSTER);
            }

            #[test]
            fn coordinator_crash_after_the_decision() {
                crash_at($coordinator, $peers, "after_decision", false);
                crash_at($coordinator, $peers, "after_local_commit", true);
            }
        }
    };
}

combination!(coordinator_18, 18, [14, 15]);
combination!(coordinator_15, 15, [18, 17]);

//! Distributed deadlock detection: cycles of waits across nodes (and
//! through a local lock on the coordinator) are broken within three check
//! intervals by failing the youngest DT with 40P01, and the survivors
//! commit; a workload without cycles is never interrupted.
//!
//! `dg.stats.deadlocks` counts for the whole server, so the tests of this
//! file run one at a time.

use dg_tests::postgres::Client;
use dg_tests::{
    coordinate, dist_exec, error_text, expect_sqlstate, scalar, wait_until, Cluster, Db, Node,
};
use std::sync::{LazyLock, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(500);
const INTERVAL_CONF: &str = "dg.deadlock_check_interval = '500ms'";

static CLUSTER: LazyLock<Cluster> = LazyLock::new(|| Cluster::start_with(3, &[INTERVAL_CONF]));
static SERIAL: Mutex<()> = Mutex::new(());

const BUMP: &str = "UPDATE t SET v = v + 1 WHERE id = 1";

/// A database with `t(id, v)` holding row (1, 0) on every peer.
fn rows(name: &str) -> Db<'static> {
    let db = CLUSTER.db(name);
    db.on_peers("CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL); INSERT INTO t VALUES (1, 0)");
    db
}

fn deadlocks(c: &mut Client) -> i64 {
    scalar(c, "SELECT deadlocks FROM dg.stats")
}

fn lock_waiters(db: &Db, i: usize) -> i64 {
    scalar(
        &mut db.peer(i),
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
}

fn value(db: &Db, i: usize) -> i32 {
    db.peer(i)
        .query_one("SELECT v FROM t WHERE id = 1", &[])
        .unwrap()
        .get(0)
}

/// Bounds on every wait, so a cycle left undetected fails the test
/// instead of hanging it.
const BOUNDED: &str = "SET dg.remote_statement_timeout = '20s'; SET lock_timeout = '20s'";

/// A session in a transaction block whose DT has bumped the row on `node`.
fn holding(db: &Db, node: &str) -> Client {
    let mut c = db.coord();
    c.batch_execute(BOUNDED).unwrap();
    c.batch_execute("BEGIN").unwrap();
    dist_exec(&mut c, node, BUMP, &[]).unwrap();
    c
}

type Pending = JoinHandle<(Client, Result<i64, dg_tests::postgres::Error>)>;

/// Bumps the row on `node` in the background (it may block).
fn bump_later(mut c: Client, node: &'static str) -> Pending {
    std::thread::spawn(move || {
        let r = dist_exec(&mut c, node, BUMP, &[]);
        (c, r)
    })
}

/// The victim's error: 40P01, naming every node of the cycle, in time.
#[track_caller]
fn assert_victim(r: Result<i64, dg_tests::postgres::Error>, since: Instant, places: &[&str]) {
    let took = since.elapsed();
    let e = expect_sqlstate(r, "40P01");
    let text = error_text(&e);
    for p in places {
        assert!(text.contains(p), "{p} not named in: {text}");
    }
    assert!(
        took < 3 * INTERVAL,
        "the cycle was broken after {took:?}, more than three intervals"
    );
}

#[test]
fn two_node_cycle() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = rows("dl_two");
    let before = deadlocks(&mut db.coord());
    let a = holding(&db, "peer1");
    let b = holding(&db, "peer2");
    let a = bump_later(a, "peer2");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 2) == 1));
    let since = Instant::now();
    let (mut b, r) = bump_later(b, "peer1").join().unwrap();
    assert_victim(r, since, &["\"peer1\"", "\"peer2\""]);
    b.batch_execute("ROLLBACK").unwrap();
    let (mut a, r) = a.join().unwrap();
    assert_eq!(r.unwrap(), 1);
    a.batch_execute("COMMIT").unwrap();
    assert_eq!((value(&db, 1), value(&db, 2)), (1, 1));
    assert_eq!(deadlocks(&mut db.coord()), before + 1);
}

#[test]
fn three_node_cycle() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = rows("dl_three");
    let a = holding(&db, "peer1");
    let b = holding(&db, "peer2");
    let c = holding(&db, "peer3");
    let a = bump_later(a, "peer2");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 2) == 1));
    let b = bump_later(b, "peer3");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 3) == 1));
    let since = Instant::now();
    let (mut c, r) = bump_later(c, "peer1").join().unwrap();
    assert_victim(r, since, &["\"peer1\"", "\"peer2\"", "\"peer3\""]);
    c.batch_execute("ROLLBACK").unwrap();
    for pending in [b, a] {
        let (mut s, r) = pending.join().unwrap();
        assert_eq!(r.unwrap(), 1);
        s.batch_execute("COMMIT").unwrap();
    }
    assert_eq!((value(&db, 1), value(&db, 2), value(&db, 3)), (1, 2, 1));
}

/// B, the younger DT, waits first and A, the older, closes the cycle: the
/// victim is still the youngest, not the DT whose wait closed the cycle.
#[test]
fn youngest_dt_is_the_victim_though_not_the_last_to_wait() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = rows("dl_order");
    let before = deadlocks(&mut db.coord());
    let a = holding(&db, "peer1");
    let b = holding(&db, "peer2");
    let b = bump_later(b, "peer1");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 1) == 1));
    let since = Instant::now();
    let a = bump_later(a, "peer2");
    let (mut b, r) = b.join().unwrap();
    assert_victim(r, since, &["\"peer1\"", "\"peer2\""]);
    b.batch_execute("ROLLBACK").unwrap();
    let (mut a, r) = a.join().unwrap();
    assert_eq!(r.unwrap(), 1);
    a.batch_execute("COMMIT").unwrap();
    assert_eq!((value(&db, 1), value(&db, 2)), (1, 1));
    assert_eq!(deadlocks(&mut db.coord()), before + 1);
}

/// A holds a local row and waits on peer1 for B; B, the younger, waits on
/// the coordinator for A's local row: its local lock wait is cancelled
/// and reported as the deadlock.
#[test]
fn cycle_through_a_local_lock() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = rows("dl_local");
    db.coord()
        .batch_execute("CREATE TABLE lt (id int PRIMARY KEY, v int); INSERT INTO lt VALUES (1, 0)")
        .unwrap();
    let mut a = db.coord();
    a.batch_execute(BOUNDED).unwrap();
    a.batch_execute("BEGIN; SELECT dg.dist_begin(); UPDATE lt SET v = v + 1 WHERE id = 1")
        .unwrap();
    let mut b = holding(&db, "peer1");
    let a = bump_later(a, "peer1");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 1) == 1));
    let since = Instant::now();
    let (mut b, r) = std::thread::spawn(move || {
        let r = b
            .execute("UPDATE lt SET v = v + 1 WHERE id = 1", &[])
            .map(|n| n as i64);
        (b, r)
    })
    .join()
    .unwrap();
    assert_victim(r, since, &["the coordinator", "\"peer1\""]);
    b.batch_execute("ROLLBACK").unwrap();
    let (mut a, r) = a.join().unwrap();
    assert_eq!(r.unwrap(), 1);
    a.batch_execute("COMMIT").unwrap();
    assert_eq!(scalar(&mut db.coord(), "SELECT v::bigint FROM lt"), 1);
    assert_eq!(value(&db, 1), 1);
}

/// Eight clients move between the same rows of two peers in one order,
/// one of them holding its rows long enough for checks to see the
/// queue behind it: waits, but no cycle, so no cancellation.
#[test]
fn no_cycle_no_cancellation() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = rows("dl_none");
    db.on_peers("INSERT INTO t SELECT g, 0 FROM generate_series(2, 3) g");
    let before = deadlocks(&mut db.coord());
    let until = Instant::now() + Duration::from_secs(4);
    let clients: Vec<JoinHandle<i64>> = (0..8)
        .map(|n| {
            let mut c = db.coord();
            std::thread::spawn(move || {
                let mut done = 0;
                let mut i = n;
                while Instant::now() < until {
                    let id = (i % 3 + 1).to_string();
                    let sql = "UPDATE t SET v = v + 1 WHERE id = $1";
                    c.batch_execute("BEGIN").unwrap();
                    dist_exec(&mut c, "peer1", sql, &[&id]).unwrap();
                    if n == 0 {
                        dist_exec(&mut c, "peer1", "SELECT pg_sleep(1.5)", &[]).unwrap();
                    }
                    dist_exec(&mut c, "peer2", sql, &[&id]).unwrap();
                    c.batch_execute("COMMIT").unwrap();
                    done += 1;
                    i += 1;
                }
                done
            })
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || lock_waiters(&db, 1) > 0),
        "no client ever waited: the test would prove nothing"
    );
    let done: i64 = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(done > 8);
    assert_eq!(deadlocks(&mut db.coord()), before);
    let total = |i: usize| scalar(&mut db.peer(i), "SELECT sum(v)::bigint FROM t");
    assert_eq!((total(1), total(2)), (done, done));
}

/// Two coordinators share the peers: each sees the other's DT by its
/// sessions' application name, both pick the same victim, and only its
/// coordinator cancels it.
#[test]
fn two_coordinators_sharing_peers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = rows("dl_coords");
    let other = Node::coordinator("coord2", &[INTERVAL_CONF]);
    coordinate(&other, "dl_coords", &CLUSTER.peers[..2]);
    let before = deadlocks(&mut db.coord());
    let x = holding(&db, "peer1");
    let mut y = other.client("dl_coords");
    y.batch_execute(BOUNDED).unwrap();
    y.batch_execute("BEGIN").unwrap();
    dist_exec(&mut y, "peer2", BUMP, &[]).unwrap();
    let x = bump_later(x, "peer2");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 2) == 1));
    let y = bump_later(y, "peer1");
    let (mut x, rx) = x.join().unwrap();
    let (mut y, ry) = y.join().unwrap();
    assert!(
        rx.is_ok() != ry.is_ok(),
        "exactly one DT must fail: {rx:?} {ry:?}"
    );
    for (c, r) in [(&mut x, rx), (&mut y, ry)] {
        match r {
            Ok(_) => c.batch_execute("COMMIT").unwrap(),
            Err(e) => {
                assert_eq!(dg_tests::sqlstate(&e), Some("40P01"), "{e:?}");
                c.batch_execute("ROLLBACK").unwrap();
            }
        }
    }
    assert_eq!((value(&db, 1), value(&db, 2)), (1, 1));
    let cancelled = deadlocks(&mut db.coord()) - before + deadlocks(&mut other.client("dl_coords"));
    assert_eq!(cancelled, 1);
}

/// A role on peer1 with a login and rights on table `m` there, nothing
/// else: no dg, no other node, no rights on the coordinator.
fn mallory(db: &Db) -> String {
    db.peer(1)
        .batch_execute(
            "DO $$BEGIN
                 IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mallory') THEN
                     CREATE ROLE mallory LOGIN;
                 END IF;
             END$$;
             CREATE TABLE m (id int PRIMARY KEY, v int NOT NULL);
             INSERT INTO m VALUES (1, 0), (2, 0);
             GRANT SELECT, UPDATE ON m TO mallory",
        )
        .unwrap();
    format!(
        "host=127.0.0.1 port={} user=mallory dbname={} connect_timeout=10",
        CLUSTER.peers[0].port, db.name
    )
}

/// A session of mallory's on peer1 that calls itself `name` (anyone may
/// set any application name) and bounds its own lock waits.
fn forged(conninfo: &str, name: &str) -> Client {
    let mut c = Client::connect(conninfo, dg_tests::postgres::NoTls).unwrap();
    c.execute("SELECT set_config('application_name', $1, false)", &[&name])
        .unwrap();
    c.batch_execute("SET lock_timeout = '20s'").unwrap();
    c
}

/// Runs `sql` on `c` in the background (it may block on a lock).
fn later(
    mut c: Client,
    sql: &'static str,
) -> JoinHandle<(Client, Result<u64, dg_tests::postgres::Error>)> {
    std::thread::spawn(move || {
        let r = c.execute(sql, &[]);
        (c, r)
    })
}

/// Whether the detector ran two whole checks since `since` (a timestamp
/// of peer1's clock) within ten seconds: its query on peer1 started after
/// `since`, and then once more, so the second check read every node after
/// `since`. (A detector with no DT left to watch stops checking.)
fn two_checks_after(db: &Db, since: &str) -> bool {
    let mut since = since.to_string();
    for _ in 0..2 {
        let mut last = None;
        let checked = wait_until(Duration::from_secs(10), || {
            last = db
                .peer(1)
                .query_opt(
                    "SELECT max(query_start)::text FROM pg_stat_activity
                      WHERE datname = current_database() AND pid <> pg_backend_pid()
                        AND query LIKE '%pg_blocking_pids%'
                        AND query_start > $1::text::timestamptz",
                    &[&since],
                )
                .unwrap()
                .and_then(|r| r.get::<_, Option<String>>(0));
            last.is_some()
        });
        match last {
            Some(t) if checked => since = t,
            _ => return false,
        }
    }
    true
}

fn peer1_now(db: &Db) -> String {
    db.peer(1)
        .query_one("SELECT now()::text", &[])
        .unwrap()
        .get(0)
}

const FALSE_DEADLOCK: &str = "distributed deadlock detected";

/// An unprivileged role on peer1 reads a running DT's session name from
/// pg_stat_activity and builds, from two sessions under that name and one
/// plain session, the wait cycle "the DT waits for a plain session that
/// waits for the DT". Those sessions are not the DT's (their pids are not
/// its connections'), so the DT, waiting on peer2 meanwhile, is neither
/// cancelled nor counted or logged as a deadlock, and commits.
#[test]
fn a_forged_session_name_is_not_the_dt() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = rows("dl_forged_own");
    let conninfo = mallory(&db);
    let before = deadlocks(&mut db.coord());
    let logged = CLUSTER.coordinator.log_count(FALSE_DEADLOCK);
    // The DT has a session on peer1 and waits on peer2 for a row a plain
    // session there holds.
    let mut dt = holding(&db, "peer1");
    let pid: i32 = dt.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
    let mut holder = db.peer(2);
    holder.batch_execute(&format!("BEGIN; {BUMP}")).unwrap();
    let dt = bump_later(dt, "peer2");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 2) == 1));
    // What mallory sees.
    let mut look = Client::connect(&conninfo, dg_tests::postgres::NoTls).unwrap();
    let name: String = look
        .query_one(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE $1",
            &[&format!("dg:%:{pid}")],
        )
        .unwrap()
        .get(0);
    let mut f1 = forged(&conninfo, &name);
    let mut f2 = forged(&conninfo, &name);
    let mut plain = forged(&conninfo, "psql");
    f2.batch_execute("BEGIN; UPDATE m SET v = 1 WHERE id = 1")
        .unwrap();
    plain
        .batch_execute("BEGIN; UPDATE m SET v = 1 WHERE id = 2")
        .unwrap();
    let plain = later(plain, "UPDATE m SET v = 2 WHERE id = 1");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 1) == 1));
    f1.batch_execute("BEGIN").unwrap();
    let f1 = later(f1, "UPDATE m SET v = 2 WHERE id = 2");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 1) == 2));
    let checked = two_checks_after(&db, &peer1_now(&db));
    // Undo the fake cycle, then let the DT go on.
    f2.batch_execute("ROLLBACK").unwrap();
    let (mut plain, r) = plain.join().unwrap();
    r.unwrap();
    plain.batch_execute("ROLLBACK").unwrap();
    let (mut f1, r) = f1.join().unwrap();
    r.unwrap();
    f1.batch_execute("ROLLBACK").unwrap();
    holder.batch_execute("ROLLBACK").unwrap();
    let (mut dt, r) = dt.join().unwrap();
    assert_eq!(r.expect("the DT must not be cancelled"), 1);
    dt.batch_execute("COMMIT").unwrap();
    assert_eq!((value(&db, 1), value(&db, 2)), (1, 1));
    assert_eq!(deadlocks(&mut db.coord()), before);
    assert_eq!(CLUSTER.coordinator.log_count(FALSE_DEADLOCK), logged);
    assert!(
        checked,
        "the detector did not check peer1: the test proved nothing"
    );
}

/// The same role names two of its sessions after another coordinator's
/// DT: one holds a row the DT waits for, the other waits for a row the DT
/// holds. Read by name, that is a cycle between the DT and "the other
/// DT", and with a coordinator UUID below this one's, the DT would be its
/// victim. Sessions of a role that none of the DT's sessions run as are
/// not trusted to be anyone's DT: the DT just waits, and commits once the
/// row is free.
#[test]
fn a_forged_foreign_name_closes_no_cycle() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let db = rows("dl_forged_foreign");
    let conninfo = mallory(&db);
    let before = deadlocks(&mut db.coord());
    let logged = CLUSTER.coordinator.log_count(FALSE_DEADLOCK);
    let name = "dg:00000000-0000-0000-0000-000000000000:1";
    let mut f1 = forged(&conninfo, name);
    let mut f2 = forged(&conninfo, name);
    f1.batch_execute("BEGIN; UPDATE m SET v = 1 WHERE id = 2")
        .unwrap();
    let mut dt = db.coord();
    dt.batch_execute(BOUNDED).unwrap();
    dt.batch_execute("BEGIN").unwrap();
    dist_exec(&mut dt, "peer1", "UPDATE m SET v = v + 1 WHERE id = 1", &[]).unwrap();
    let dt = std::thread::spawn(move || {
        let r = dist_exec(&mut dt, "peer1", "UPDATE m SET v = v + 1 WHERE id = 2", &[]);
        (dt, r)
    });
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 1) == 1));
    f2.batch_execute("BEGIN").unwrap();
    let f2 = later(f2, "UPDATE m SET v = 2 WHERE id = 1");
    assert!(wait_until(Duration::from_secs(10), || lock_waiters(&db, 1) == 2));
    let checked = two_checks_after(&db, &peer1_now(&db));
    f1.batch_execute("ROLLBACK").unwrap();
    let (mut dt, r) = dt.join().unwrap();
    assert_eq!(r.expect("the DT must not be cancelled"), 1);
    dt.batch_execute("COMMIT").unwrap();
    let (mut f2, r) = f2.join().unwrap();
    r.unwrap();
    f2.batch_execute("ROLLBACK").unwrap();
    let m: Vec<i32> = db
        .peer(1)
        .query("SELECT v FROM m ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(m, [1, 1]);
    assert_eq!(deadlocks(&mut db.coord()), before);
    assert_eq!(CLUSTER.coordinator.log_count(FALSE_DEADLOCK), logged);
    assert!(
        checked,
        "the detector did not check peer1: the test proved nothing"
    );
}

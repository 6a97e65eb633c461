//! `dg.stats` as a DBA's dashboard reads it: a finish that cannot reach its
//! node counts as a retryable finish failure; what the resolver cannot
//! finish shows as in doubt, with its age, until it can. And
//! `pg_stat_activity` says what a backend waits for on a peer.
//!
//! Needs a dg built with the `fault_injection` feature (`make test` does).
//! `dg.stats` is server-wide, so the cluster is this file's alone.

use dg_tests::postgres::Client;
use dg_tests::proxy::{Mode, Proxy};
use dg_tests::{
    dist_exec, dist_exec_each, expect_sqlstate, scalar, shown_wait_event, version_num,
    wait_event_of, wait_until, Cluster, Db,
};
use std::time::Duration;

fn stat(db: &Db, expr: &str) -> i64 {
    scalar(
        &mut db.coord(),
        &format!("SELECT ({expr})::bigint FROM dg.stats"),
    )
}

fn rows(db: &Db, i: usize) -> i64 {
    scalar(&mut db.peer(i), "SELECT count(*) FROM t")
}

#[test]
fn unreachable_finishes_and_in_doubt_transactions_show() {
    let cluster = Cluster::start_with(2, &["dg.resolver_interval = '200ms'"]);
    let db = cluster.db("dashboard");
    db.on_peers("CREATE TABLE t (id int)");

    // peer2 dies between the two COMMIT PREPAREDs: the client's COMMIT
    // succeeds with a WARNING, and the failure counts as unreachable.
    let (failures, unreachable) = (
        stat(&db, "finish_failures"),
        stat(&db, "finish_failures_unreachable"),
    );
    let mut c = db.coord();
    c.batch_execute("SET dg.fault = 'between_finishes:1=sleep:2000'; BEGIN")
        .unwrap();
    dist_exec_each(&mut c, &["peer1", "peer2"], "INSERT INTO t VALUES (1)");
    let coordinator = &cluster.coordinator;
    let peer2 = &cluster.peers[1];
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(
                coordinator.wait_log("dg: fault Sleep", Duration::from_secs(10)),
                "the fault point was not reached"
            );
            peer2.kill9();
        });
        c.batch_execute("COMMIT")
            .expect("COMMIT after the decision succeeds");
    });
    assert_eq!(stat(&db, "finish_failures") - failures, 1);
    assert_eq!(stat(&db, "finish_failures_unreachable") - unreachable, 1);
    peer2.start_again();
    assert!(
        wait_until(Duration::from_secs(10), || rows(&db, 2) == 1),
        "the resolver finishes what the backend could not"
    );

    // A DT left in doubt whose credentials no longer work: the resolver
    // lists it (with PUBLIC's mapping) but cannot finish it (with the
    // mapping its GID names), so it shows, ageing, until they work again.
    let mut c = db.coord();
    c.batch_execute(
        "CREATE ROLE regress_dash SUPERUSER;
         CREATE USER MAPPING FOR regress_dash SERVER peer1 OPTIONS (user 'postgres');
         CREATE USER MAPPING FOR regress_dash SERVER peer2 OPTIONS (user 'postgres');",
    )
    .unwrap();
    c.batch_execute(
        "SET ROLE regress_dash;
         SET dg.fault = 'after_local_commit=exit';
         BEGIN",
    )
    .unwrap();
    dist_exec_each(&mut c, &["peer1", "peer2"], "INSERT INTO t VALUES (2)");
    db.coord()
        .batch_execute(
            "ALTER USER MAPPING FOR regress_dash SERVER peer1 OPTIONS (SET user 'regress_nobody')",
        )
        .unwrap();
    assert!(c.batch_execute("COMMIT").is_err(), "the backend dies");
    coordinator.wait_ready();
    assert!(
        wait_until(Duration::from_secs(10), || rows(&db, 2) == 2),
        "peer2's half is finished"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            stat(&db, "in_doubt") == 1
                && stat(
                    &db,
                    "coalesce(extract(epoch FROM oldest_in_doubt_age) * 1000, 0)",
                ) >= 500
        }),
        "peer1's half shows as in doubt, and ages"
    );
    db.coord()
        .batch_execute(
            "ALTER USER MAPPING FOR regress_dash SERVER peer1 OPTIONS (SET user 'postgres')",
        )
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            stat(&db, "in_doubt") == 0
                && stat(
                    &db,
                    "CASE WHEN oldest_in_doubt_age IS NULL THEN 1 ELSE 0 END",
                ) == 1
        }),
        "nothing in doubt once the credentials work"
    );
    assert_eq!((rows(&db, 1), rows(&db, 2)), (2, 2));
    assert_eq!(db.prepared_all(), 0);
}

/// Polls `pid`'s wait in `pg_stat_activity` until it is dg's `name` (on
/// 17+; the generic `Extension` on 15 and 16), or fails the test with
/// what it saw instead.
fn assert_waits_as(watcher: &mut Client, pid: i32, name: &str) {
    let version = version_num(watcher);
    let want = Some(("Extension".to_string(), shown_wait_event(version, name)));
    let mut seen = Vec::new();
    let found = wait_until(Duration::from_secs(20), || {
        let now = wait_event_of(watcher, pid);
        if !seen.contains(&now) {
            seen.push(now.clone());
        }
        now == want
    });
    assert!(
        found,
        "backend {pid} never waited as {want:?} (server {version}); seen: {seen:?}"
    );
}

/// Polls until some process of `backend_type` in the coordinator waits as
/// dg's `name` (the workers' sleeps between rounds).
fn assert_worker_waits_as(watcher: &mut Client, backend_type: &str, name: &str) {
    let want = shown_wait_event(version_num(watcher), name);
    let found = wait_until(Duration::from_secs(20), || {
        scalar(
            watcher,
            &format!(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE backend_type = '{backend_type}'
                    AND wait_event_type = 'Extension' AND wait_event = '{want}'"
            ),
        ) > 0
    });
    assert!(found, "no {backend_type} waits as {want}");
}

#[test]
fn waits_on_peers_show_what_they_wait_for() {
    let cluster = Cluster::start(2);
    let db = cluster.db("waits");
    db.on_peers("CREATE TABLE t (id int)");
    let proxy = Proxy::for_peer(&db, 2);
    let mut watcher = db.coord();
    std::thread::scope(|s| {
        // A statement the peer takes its time over.
        let mut c = db.coord();
        let pid = scalar(&mut c, "SELECT pg_backend_pid()::bigint") as i32;
        let sleeping = s.spawn(move || dist_exec(&mut c, "peer1", "SELECT pg_sleep(60)", &[]));
        assert_waits_as(&mut watcher, pid, "DgResult");
        // The DT is there: so is its database's deadlock detector, between
        // checks; the resolver sleeps between passes all the time.
        assert_worker_waits_as(&mut watcher, "dg deadlock detector", "DgDetector");
        assert_worker_waits_as(&mut watcher, "dg resolver", "DgResolver");
        watcher
            .batch_execute(&format!("SELECT pg_cancel_backend({pid})"))
            .unwrap();
        expect_sqlstate(sleeping.join().unwrap(), "57014");

        // A peer that accepts the connection and does not answer yet.
        proxy.set(Mode::BlackHole);
        let mut c = db.coord();
        c.batch_execute("SET dg.connect_timeout = 60").unwrap();
        let pid = scalar(&mut c, "SELECT pg_backend_pid()::bigint") as i32;
        let connecting = s.spawn(move || dist_exec(&mut c, "peer2", "SELECT 1", &[]));
        assert_waits_as(&mut watcher, pid, "DgConnect");
        proxy.heal();
        connecting
            .join()
            .unwrap()
            .expect("connects once the link heals");

        // PREPARE and COMMIT PREPARED on a slow link: each round trip
        // takes two delays.
        let mut c = db.coord();
        let pid = scalar(&mut c, "SELECT pg_backend_pid()::bigint") as i32;
        c.batch_execute("BEGIN").unwrap();
        dist_exec_each(&mut c, &["peer1", "peer2"], "INSERT INTO t VALUES (1)");
        proxy.set(Mode::Delay(Duration::from_millis(1500)));
        let committing = s.spawn(move || c.batch_execute("COMMIT"));
        assert_waits_as(&mut watcher, pid, "DgPrepare");
        assert_waits_as(&mut watcher, pid, "DgCommitPrepared");
        committing.join().unwrap().expect("COMMIT on a slow link");
        proxy.heal();
    });
    assert_eq!(scalar(&mut db.peer(2), "SELECT count(*) FROM t"), 1);
    assert_eq!(db.prepared_all(), 0);
}

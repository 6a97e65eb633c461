//! `dg.stats` as a DBA's dashboard reads it: a finish that cannot reach its
//! node counts as a retryable finish failure; what the resolver cannot
//! finish shows as in doubt, with its age, until it can.
//!
//! Needs a dg built with the `fault_injection` feature (`make test` does).
//! `dg.stats` is server-wide, so the cluster is this file's alone.

use dg_tests::{dist_exec_each, scalar, wait_until, Cluster, Db};
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

//! The resolver worker (DESIGN §4): in-doubt transactions end on their own,
//! with no client connected, also after a coordinator crash, and the
//! decision table empties once transactions are finished.
//!
//! In-doubt transactions are made directly on the peers, as a coordinator
//! crash between PREPARE and COMMIT PREPARED leaves them: prepared under
//! this coordinator database's GID, with or without a decision row.

use dg_tests::{dist_exec_each, scalar, wait_until, Cluster, Db};
use std::time::Duration;

const RESOLVED_WITHIN: Duration = Duration::from_secs(15);

/// Prepares `INSERT INTO t VALUES (id)` on peer `i` under the GID that
/// local transaction `xid` of this coordinator database would use.
fn orphan(db: &Db, i: usize, xid: i64, id: i32) {
    let gid: String = db
        .coord()
        .query_one(
            "SELECT format('dg_%s_%s_%s_%s', (SELECT id FROM dg.coordinator),
                    (SELECT oid FROM pg_database WHERE datname = current_database()),
                    $1::bigint, (SELECT umid FROM pg_user_mappings WHERE srvname = $2))",
            &[&xid, &format!("peer{i}")],
        )
        .unwrap()
        .get(0);
    db.peer(i)
        .batch_execute(&format!(
            "BEGIN; INSERT INTO t VALUES ({id}); PREPARE TRANSACTION '{gid}'"
        ))
        .unwrap();
}

fn rows(db: &Db, i: usize, id: i32) -> i64 {
    scalar(
        &mut db.peer(i),
        &format!("SELECT count(*) FROM t WHERE id = {id}"),
    )
}

fn decisions(db: &Db) -> i64 {
    scalar(&mut db.coord(), "SELECT count(*) FROM dg.decisions")
}

#[test]
fn resolves_orphans_with_no_client() {
    let cluster = Cluster::start_with(2, &["dg.resolver_interval = '200ms'"]);
    let db = cluster.db("orphans");
    db.on_peers("CREATE TABLE t (id int)");
    // Local transaction 4 decided to commit; 3 left no decision.
    db.coord()
        .batch_execute("INSERT INTO dg.decisions (xid, dt_id) VALUES (4, 'decided')")
        .unwrap();
    orphan(&db, 1, 3, 3);
    orphan(&db, 2, 4, 4);
    assert!(
        wait_until(RESOLVED_WITHIN, || db.prepared(1) + db.prepared(2) == 0),
        "in-doubt transactions left: {:?} {:?}",
        db.prepared_gids(1),
        db.prepared_gids(2)
    );
    assert_eq!(
        (rows(&db, 1, 3), rows(&db, 2, 4)),
        (0, 1),
        "3 rolled back, 4 committed"
    );
    assert!(
        wait_until(RESOLVED_WITHIN, || decisions(&db) == 0),
        "decision row kept"
    );
    assert!(
        cluster.coordinator.log().contains("dg resolver: commit"),
        "the resolver logs what it did"
    );
}

#[test]
fn resolves_after_coordinator_crash() {
    let cluster = Cluster::start_with(
        1,
        &[
            "dg.resolver_interval = '200ms'",
            "dg.resolver_enabled = off",
        ],
    );
    let db = cluster.db("crash");
    db.on_peers("CREATE TABLE t (id int)");
    db.coord()
        .batch_execute("INSERT INTO dg.decisions (xid, dt_id) VALUES (5, 'decided')")
        .unwrap();
    orphan(&db, 1, 5, 5);
    orphan(&db, 1, 6, 6);
    // Enabled from the next start on: the crash comes first.
    db.coord()
        .batch_execute("ALTER SYSTEM SET dg.resolver_enabled = on")
        .unwrap();
    assert_eq!(db.prepared(1), 2);
    cluster.coordinator.crash_and_restart();
    assert!(
        wait_until(RESOLVED_WITHIN, || db.prepared(1) == 0),
        "in-doubt transactions left after restart: {:?}",
        db.prepared_gids(1)
    );
    assert_eq!((rows(&db, 1, 5), rows(&db, 1, 6)), (1, 0));
}

#[test]
fn decision_table_empties_under_load() {
    let cluster = Cluster::start_with(2, &["dg.resolver_interval = '200ms'"]);
    let db = cluster.db("load");
    db.on_peers("CREATE TABLE t (id int)");
    let mut c = db.coord();
    for i in 0..300 {
        c.batch_execute("BEGIN").unwrap();
        dist_exec_each(
            &mut c,
            &["peer1", "peer2"],
            &format!("INSERT INTO t VALUES ({i})"),
        );
        c.batch_execute("COMMIT").unwrap();
    }
    assert_eq!(rows(&db, 1, 299) + rows(&db, 2, 299), 2);
    assert!(
        wait_until(RESOLVED_WITHIN, || decisions(&db) == 0),
        "{} decision rows left",
        decisions(&db)
    );
}

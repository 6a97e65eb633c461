//! The resolver worker (DESIGN §4): in-doubt transactions end on their own,
//! with no client connected, also after a coordinator crash, and the
//! decision table empties once transactions are finished.
//!
//! In-doubt transactions are made directly on the peers, as a coordinator
//! crash between PREPARE and COMMIT PREPARED leaves them: prepared under
//! this coordinator database's GID, with or without a decision row.

use dg_tests::postgres::Client;
use dg_tests::{coordinate, dist_exec, dist_exec_each, scalar, wait_until, Cluster, Db, Node};
use std::time::Duration;

const RESOLVED_WITHIN: Duration = Duration::from_secs(15);

/// Prepares `INSERT INTO t VALUES (id)` on peer `i` under the GID that
/// local transaction `xid` of this coordinator database would use.
fn orphan(db: &Db, i: usize, xid: i64, id: i32) {
    let gid = gid_of(&mut db.coord(), &format!("peer{i}"), xid);
    prepare_on(&mut db.peer(i), &gid, id);
}

/// The GID local transaction `xid` of `coordinator`'s database would use
/// on `node`.
fn gid_of(coordinator: &mut Client, node: &str, xid: i64) -> String {
    coordinator
        .query_one(
            "SELECT format('dg_%s_%s_%s_%s', (SELECT id FROM dg.coordinator),
                    (SELECT oid FROM pg_database WHERE datname = current_database()),
                    $1::bigint, (SELECT umid FROM pg_user_mappings WHERE srvname = $2))",
            &[&xid, &node],
        )
        .unwrap()
        .get(0)
}

fn prepare_on(peer: &mut Client, gid: &str, id: i32) {
    peer.batch_execute(&format!(
        "BEGIN; INSERT INTO t VALUES ({id}); PREPARE TRANSACTION '{gid}'"
    ))
    .unwrap();
}

/// Turns the resolver on (tests set up their in-doubt transactions with it
/// off: a real DT prepares before it decides, and a pass in between a test's
/// decision row and its PREPARE would rightly forget the decision).
fn enable_resolver(node: &Node) {
    let mut c = node.client("postgres");
    c.batch_execute("ALTER SYSTEM SET dg.resolver_enabled = on")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
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
    let cluster = Cluster::start_with(
        2,
        &[
            "dg.resolver_interval = '200ms'",
            "dg.resolver_enabled = off",
        ],
    );
    let db = cluster.db("orphans");
    db.on_peers("CREATE TABLE t (id int)");
    // Local transaction 4 decided to commit; 3 left no decision.
    db.coord()
        .batch_execute("INSERT INTO dg.decisions (xid, dt_id) VALUES (4, 'decided')")
        .unwrap();
    orphan(&db, 1, 3, 3);
    orphan(&db, 2, 4, 4);
    enable_resolver(&cluster.coordinator);
    assert!(
        wait_until(RESOLVED_WITHIN, || db.prepared_all() == 0),
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
        cluster
            .coordinator
            .wait_log("dg resolver: commit", RESOLVED_WITHIN),
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
    for i in 0..10_000 {
        c.batch_execute("BEGIN").unwrap();
        dist_exec_each(
            &mut c,
            &["peer1", "peer2"],
            &format!("INSERT INTO t VALUES ({i})"),
        );
        c.batch_execute("COMMIT").unwrap();
    }
    assert_eq!(rows(&db, 1, 9_999) + rows(&db, 2, 9_999), 2);
    assert!(
        wait_until(RESOLVED_WITHIN, || decisions(&db) == 0),
        "{} decision rows left",
        decisions(&db)
    );
    // The resolver vacuums what it forgot, so the space is reused within
    // an interval: the heap stays far below the ~100 pages that 10,000
    // rows take.
    let mut c = db.coord();
    assert!(
        wait_until(RESOLVED_WITHIN, || scalar(
            &mut c,
            "SELECT vacuum_count FROM pg_stat_all_tables WHERE relid = 'dg.decisions'::regclass"
        ) > 0),
        "the resolver never vacuumed dg.decisions"
    );
    let pages = scalar(
        &mut c,
        "SELECT pg_relation_size('dg.decisions') / current_setting('block_size')::int",
    );
    assert!(pages < 40, "dg.decisions grew to {pages} pages");
}

#[test]
fn coordinators_and_databases_keep_to_their_own() {
    let off = [
        "dg.resolver_interval = '200ms'",
        "dg.resolver_enabled = off",
    ];
    let cluster = Cluster::start_with(1, &off);
    let x = cluster.db("x");
    let y = cluster.db("y");
    x.on_peers("CREATE TABLE t (id int)");
    // Coordinator A's databases x and y both use peer1's database x.
    let mut ay = y.coord();
    ay.batch_execute("ALTER SERVER peer1 OPTIONS (SET dbname 'x')")
        .unwrap();
    // Coordinator B, database x, on the same peer database.
    let b = Node::coordinator("coord_b", &off);
    coordinate(&b, "x", &cluster.peers[..1]);
    let mut bx = b.client("x");
    let mut ax = x.coord();
    let owners: [(&mut Client, i32); 3] = [(&mut ax, 1), (&mut ay, 2), (&mut bx, 3)];
    // Each owner decided to commit its local transaction 3; any other
    // resolver, finding no decision of its own, would roll it back.
    let mut gids = Vec::new();
    for (owner, id) in owners {
        owner
            .batch_execute("INSERT INTO dg.decisions (xid, dt_id) VALUES (3, 'decided')")
            .unwrap();
        gids.push((gid_of(owner, "peer1", 3), id));
    }
    let mut peer = x.peer(1);
    for (gid, id) in &gids {
        prepare_on(&mut peer, gid, *id);
    }
    enable_resolver(&cluster.coordinator);
    enable_resolver(&b);
    assert!(
        wait_until(RESOLVED_WITHIN, || x.prepared(1) == 0),
        "left: {:?}",
        x.prepared_gids(1)
    );
    let ids: Vec<i32> = peer
        .query("SELECT id FROM t ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        ids,
        [1, 2, 3],
        "each transaction committed by its own coordinator database"
    );
}

#[test]
fn down_peer_does_not_stop_the_others() {
    let cluster = Cluster::start_with(
        2,
        &[
            "dg.resolver_interval = '200ms'",
            "dg.resolver_enabled = off",
        ],
    );
    let db = cluster.db("down");
    db.on_peers("CREATE TABLE t (id int)");
    orphan(&db, 1, 3, 1);
    orphan(&db, 2, 3, 2);
    cluster.peers[1].kill9();
    enable_resolver(&cluster.coordinator);
    assert!(
        wait_until(RESOLVED_WITHIN, || db.prepared(1) == 0),
        "peer1 waits for peer2"
    );
    assert!(cluster
        .coordinator
        .wait_log("skipping node \"peer2\"", RESOLVED_WITHIN));
    cluster.peers[1].start_again();
    assert!(
        wait_until(RESOLVED_WITHIN, || db.prepared(2) == 0),
        "peer2 not resolved after it came back"
    );
    assert_eq!((rows(&db, 1, 1), rows(&db, 2, 2)), (0, 0));
}

#[test]
fn pass_racing_a_prepare_leaves_it_alone() {
    let cluster = Cluster::start_with(2, &["dg.resolver_interval = '100ms'"]);
    let db = cluster.db("race");
    db.on_peers("CREATE TABLE t (id int)");
    for (n, fault) in ["after_prepare:1=sleep:1000", "after_decision=sleep:1000"]
        .iter()
        .enumerate()
    {
        let id = n as i32;
        let mut c = db.coord();
        c.batch_execute(&format!("SET dg.fault = '{fault}'; BEGIN"))
            .unwrap();
        for node in ["peer1", "peer2"] {
            dist_exec(
                &mut c,
                node,
                "INSERT INTO t VALUES ($1::int)",
                &[&id.to_string()],
            )
            .unwrap();
        }
        // Passes run every 100 ms while the commit sleeps half-prepared.
        c.batch_execute("COMMIT")
            .unwrap_or_else(|e| panic!("{fault}: {e}"));
        assert_eq!((rows(&db, 1, id), rows(&db, 2, id)), (1, 1), "{fault}");
    }
}

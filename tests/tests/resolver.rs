//! The resolver worker (src/README.md, "Recovery"): in-doubt transactions end on their own,
//! with no client connected, also after a coordinator crash, and the
//! decision table empties once transactions are finished.
//!
//! In-doubt transactions are made directly on the peers, as a coordinator
//! crash between PREPARE and COMMIT PREPARED leaves them: prepared under
//! this coordinator database's GID, with or without a decision row.

use dg_tests::postgres::Client;
use dg_tests::{coordinate, dist_exec_each, resolver_bound, scalar, wait_until, Cluster, Db, Node};
use std::time::Duration;

const INTERVAL_CONF: &str = "dg.resolver_interval = '200ms'";

/// Counted from the moment the resolver is enabled or its node is back.
fn resolved_within() -> Duration {
    resolver_bound(Duration::from_millis(200))
}

/// Prepares `INSERT INTO t VALUES (id)` on peer `i` under the GID that
/// local transaction `xid` of this coordinator database would use.
fn orphan(db: &Db, i: usize, xid: i64, id: i32) {
    let gid = gid_of(&mut db.coord(), &format!("peer{i}"), xid);
    prepare_on(&mut db.peer(i), &gid, id);
}

/// The GID local transaction `xid` of `coordinator`'s database would use
/// on `node` with the PUBLIC user mapping.
fn gid_of(coordinator: &mut Client, node: &str, xid: i64) -> String {
    gid_for(coordinator, node, "public", xid)
}

/// The same with the mapping of role `user`.
fn gid_for(coordinator: &mut Client, node: &str, user: &str, xid: i64) -> String {
    coordinator
        .query_one(
            "SELECT format('dg_%s_%s_%s_%s', (SELECT id FROM dg.coordinator),
                    (SELECT oid FROM pg_database WHERE datname = current_database()),
                    $1::bigint,
                    (SELECT umid FROM pg_user_mappings WHERE srvname = $2 AND usename = $3))",
            &[&xid, &node, &user],
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

/// Turns the resolver on and waits until it has finished every prepared
/// transaction of `db` on both peers.
fn resolve(cluster: &Cluster, db: &Db) {
    enable_resolver(&cluster.coordinator);
    assert!(
        wait_until(resolved_within(), || db.prepared_all() == 0),
        "in-doubt transactions left: {:?} {:?}",
        db.prepared_gids(1),
        db.prepared_gids(2)
    );
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

/// A crash can hand a DT's xid out again: an xid that reached no WAL
/// record (the DT had written nothing locally when it prepared) is
/// assigned anew after recovery. If the new transaction is a DT that
/// decides to commit, its decision must not commit the old DT's prepared
/// transactions: the decision names the mappings it prepared on, and the
/// old DT's GID on any of them would have failed the new PREPARE.
#[test]
fn a_decision_commits_only_its_own_participants() {
    let cluster = Cluster::start_with(2, &[INTERVAL_CONF, "dg.resolver_enabled = off"]);
    let db = cluster.db("reused_xid");
    db.on_peers("CREATE TABLE t (id int)");
    let mut c = db.coord();
    // Local transaction 8 (the new DT) prepared on peer2 and decided; the
    // old DT with the same xid left a prepared transaction on peer1.
    c.batch_execute(
        "INSERT INTO dg.decisions (xid, dt_id, mappings, remote_xids)
         SELECT 8, 'new', ARRAY[umid], NULL FROM pg_user_mappings
          WHERE srvname = 'peer2' AND usename = 'public'",
    )
    .unwrap();
    orphan(&db, 1, 8, 1);
    orphan(&db, 2, 8, 2);
    resolve(&cluster, &db);
    assert_eq!(
        (rows(&db, 1, 1), rows(&db, 2, 2)),
        (0, 1),
        "the old DT rolled back on peer1, the new one committed on peer2"
    );
}

/// The coordinator's next xid, not handing one out.
fn next_xid(db: &Db) -> i64 {
    scalar(
        &mut db.coord(),
        "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
    )
}

/// A DT that prepared before it wrote anything locally has an xid that no
/// WAL record carries, so after a crash the counter can restart behind
/// it, where the xid looks running. On an idle coordinator nothing else
/// uses up the xids in between: the resolver must move the counter past
/// it, and roll the DT back. A GID made up on a node later, ahead of the
/// counter, must not make passes consume xids: it is only left.
#[test]
fn a_dt_ahead_of_the_restarted_counter_is_rolled_back() {
    let cluster = Cluster::start_with(2, &[INTERVAL_CONF, "dg.resolver_enabled = off"]);
    let db = cluster.db("unlogged_xid");
    db.on_peers("CREATE TABLE t (id int)");
    let ahead = next_xid(&db) + 10;
    orphan(&db, 1, ahead, 1);
    orphan(&db, 2, ahead, 2);
    db.coord()
        .batch_execute("ALTER SYSTEM SET dg.resolver_enabled = on")
        .unwrap();
    // The counter restarts behind `ahead` (the line below says it was
    // moved); the first pass may move it before the test can look.
    cluster.coordinator.crash_and_restart();
    assert!(
        wait_until(resolved_within(), || db.prepared_all() == 0),
        "in-doubt transactions left after restart: {:?} {:?}",
        db.prepared_gids(1),
        db.prepared_gids(2)
    );
    assert_eq!((rows(&db, 1, 1), rows(&db, 2, 2)), (0, 0), "rolled back");
    assert!(next_xid(&db) > ahead, "the counter moved past the DT's xid");
    assert!(
        cluster.coordinator.wait_log(
            &format!("dg resolver: moved the transaction counter past {ahead}"),
            resolved_within()
        ),
        "the resolver says it moved the counter"
    );

    let next = next_xid(&db);
    orphan(&db, 1, next + 10, 3);
    let gid = gid_of(&mut db.coord(), "peer1", next + 10);
    let mut c = db.coord();
    for _ in 0..3 {
        let result: String = c
            .query_one("SELECT result FROM dg.recover() WHERE gid = $1", &[&gid])
            .unwrap()
            .get(0);
        assert_eq!(result, "in progress", "a GID made up later is left");
    }
    assert!(
        next_xid(&db) < next + 10,
        "passes consumed xids for a GID made up on a node"
    );
    db.peer(1)
        .batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
        .unwrap();
}

#[test]
fn resolves_orphans_with_no_client() {
    let cluster = Cluster::start_with(2, &[INTERVAL_CONF, "dg.resolver_enabled = off"]);
    let db = cluster.db("orphans");
    db.on_peers("CREATE TABLE t (id int)");
    // Local transaction 4 decided to commit; 3 left no decision.
    db.coord()
        .batch_execute("INSERT INTO dg.decisions (xid, dt_id) VALUES (4, 'decided')")
        .unwrap();
    orphan(&db, 1, 3, 3);
    orphan(&db, 2, 4, 4);
    resolve(&cluster, &db);
    assert_eq!(
        (rows(&db, 1, 3), rows(&db, 2, 4)),
        (0, 1),
        "3 rolled back, 4 committed"
    );
    assert!(
        wait_until(resolved_within(), || decisions(&db) == 0),
        "decision row kept"
    );
    assert!(
        cluster
            .coordinator
            .wait_log("dg resolver: commit", resolved_within()),
        "the resolver logs what it did"
    );
}

#[test]
fn resolves_after_coordinator_crash() {
    let cluster = Cluster::start_with(1, &[INTERVAL_CONF, "dg.resolver_enabled = off"]);
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
        wait_until(resolved_within(), || db.prepared(1) == 0),
        "in-doubt transactions left after restart: {:?}",
        db.prepared_gids(1)
    );
    assert_eq!((rows(&db, 1, 5), rows(&db, 1, 6)), (1, 0));
}

#[test]
fn decision_table_empties_under_load() {
    let cluster = Cluster::start_with(2, &[INTERVAL_CONF]);
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
        wait_until(resolved_within(), || decisions(&db) == 0),
        "{} decision rows left",
        decisions(&db)
    );
    // The resolver vacuums what it forgot, so the space is reused within
    // an interval: the heap stays far below the ~100 pages that 10,000
    // rows take.
    let mut c = db.coord();
    assert!(
        wait_until(resolved_within(), || scalar(
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

/// Three owners share one peer database: coordinator A's databases x and
/// y, and coordinator B's database x. Each owner's transaction has a
/// different xid, and the decisions are laid out so that any resolver
/// finishing another owner's transaction gets it wrong: A/x decided 3
/// (its own) and 4; A/y decided nothing, so its 4 rolls back; B/x decided
/// 4 and 5 (its own). The resolvers are let loose one owner at a time, so
/// a trespass cannot hide behind the owner winning the race.
#[test]
fn coordinators_and_databases_keep_to_their_own() {
    let off = [INTERVAL_CONF, "dg.resolver_enabled = off"];
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
    let owners: [(&mut Client, i64, &[i64]); 3] = [
        (&mut ax, 3, &[3, 4]),
        (&mut ay, 4, &[]),
        (&mut bx, 5, &[4, 5]),
    ];
    let mut gids = Vec::new();
    for (owner, xid, decided) in owners {
        for d in decided {
            owner
                .batch_execute(&format!(
                    "INSERT INTO dg.decisions (xid, dt_id) VALUES ({d}, 'decided')"
                ))
                .unwrap();
        }
        gids.push(gid_of(owner, "peer1", xid));
    }
    let mut peer = x.peer(1);
    for (id, gid) in gids.iter().enumerate() {
        prepare_on(&mut peer, gid, id as i32 + 1);
    }
    let [ax_gid, ay_gid, bx_gid] = [&gids[0], &gids[1], &gids[2]];
    let prepared = |gid: &str| x.prepared_gids(1).iter().any(|g| g == gid);

    // B alone: the pass that finished B's transaction listed A's too.
    enable_resolver(&b);
    assert!(
        wait_until(resolved_within(), || !prepared(bx_gid)),
        "B left its own transaction"
    );
    assert!(
        prepared(ax_gid) && prepared(ay_gid),
        "B finished A's transactions"
    );
    // A, database x alone (the resolver passes only where connections
    // are allowed).
    let mut postgres = cluster.coordinator.client("postgres");
    postgres
        .batch_execute("ALTER DATABASE y ALLOW_CONNECTIONS false")
        .unwrap();
    enable_resolver(&cluster.coordinator);
    assert!(
        wait_until(resolved_within(), || !prepared(ax_gid)),
        "A/x left its own transaction"
    );
    assert!(prepared(ay_gid), "A/x finished A/y's transaction");
    postgres
        .batch_execute("ALTER DATABASE y ALLOW_CONNECTIONS true")
        .unwrap();
    assert!(
        wait_until(resolved_within(), || x.prepared(1) == 0),
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
        [1, 3],
        "A/x and B/x committed, A/y rolled back, each by its owner"
    );
}

#[test]
fn down_peer_does_not_stop_the_others() {
    let cluster = Cluster::start_with(2, &[INTERVAL_CONF, "dg.resolver_enabled = off"]);
    let db = cluster.db("down");
    db.on_peers("CREATE TABLE t (id int)");
    orphan(&db, 1, 3, 1);
    orphan(&db, 2, 3, 2);
    cluster.peers[1].kill9();
    enable_resolver(&cluster.coordinator);
    assert!(
        wait_until(resolved_within(), || db.prepared(1) == 0),
        "peer1 waits for peer2"
    );
    assert!(cluster
        .coordinator
        .wait_log("skipping node \"peer2\"", resolved_within()));
    cluster.peers[1].start_again();
    assert!(
        wait_until(resolved_within(), || db.prepared(2) == 0),
        "peer2 not resolved after it came back"
    );
    assert_eq!((rows(&db, 1, 1), rows(&db, 2, 2)), (0, 0));
}

/// A pass that lists a DT's prepared transactions while the DT is between
/// its decision and its local commit must leave them: it checks that the
/// DT is still running before it reads the decision. The resolver is held
/// between the two reads (fault `before_decision_read`) while the DT
/// commits, so a resolver that read in the other order would find no
/// decision and then no running transaction, and decide to roll back.
#[test]
fn pass_racing_a_prepare_leaves_it_alone() {
    let cluster = Cluster::start_with(2, &["dg.resolver_interval = '100ms'"]);
    let coord = &cluster.coordinator;
    let db = cluster.db("race");
    db.on_peers("CREATE TABLE t (id int)");
    let mut admin = coord.client("postgres");
    admin
        .batch_execute("ALTER SYSTEM SET dg.fault = 'before_decision_read=sleep:1500'")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    // The test's own reads of dg.in_doubt are not held.
    let mut reader = db.coord();
    reader.batch_execute("SET dg.fault = ''").unwrap();
    let held = "dg: fault Sleep(1500) at BeforeDecisionRead";
    let in_window = "dg: fault Sleep(1000) at AfterDecision";
    let (held_before, window_before) = (coord.log_count(held), coord.log_count(in_window));

    let mut c = db.coord();
    c.batch_execute("SET dg.fault = 'after_decision=sleep:1000'; BEGIN")
        .unwrap();
    dist_exec_each(&mut c, &["peer1", "peer2"], "INSERT INTO t VALUES (1)");
    let commit = std::thread::spawn(move || c.batch_execute("COMMIT"));
    assert!(
        wait_until(Duration::from_secs(5), || coord.log_count(in_window)
            > window_before),
        "the DT never reached its window"
    );
    let listed: Vec<(String, String)> = reader
        .query("SELECT gid, action FROM dg.in_doubt ORDER BY node", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(listed.len(), 2, "in doubt during the window: {listed:?}");
    assert!(
        listed.iter().all(|(_, action)| action == "leave"),
        "{listed:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || coord.log_count(held)
            > held_before),
        "no pass reached the window"
    );
    assert!(
        !commit.is_finished(),
        "the DT committed before a pass was held in the window"
    );
    commit.join().unwrap().expect("COMMIT");
    // Passes come and go every interval; a moment with none running in
    // this database comes after the held one ended.
    assert!(
        wait_until(Duration::from_secs(10), || scalar(
            &mut reader,
            "SELECT count(*) FROM pg_stat_activity
              WHERE backend_type = 'dg resolver' AND datname = current_database()"
        ) == 0),
        "the held pass never finished"
    );
    for (gid, _) in &listed {
        assert!(
            !coord
                .log()
                .contains(&format!("dg resolver: rollback {gid}")),
            "a pass decided to roll back the committing DT's {gid}"
        );
    }
    assert_eq!((rows(&db, 1, 1), rows(&db, 2, 1)), (1, 1));
}

/// A COMMIT PREPARED the resolver could not do (here: the GID's mapping
/// names a peer role that may not finish another role's transaction)
/// keeps its decision row, so a later pass commits rather than presumes
/// abort; only "does not exist" counts as finished.
#[test]
fn a_failed_finish_keeps_its_decision() {
    let cluster = Cluster::start_with(1, &[INTERVAL_CONF, "dg.resolver_enabled = off"]);
    let db = cluster.db("failed_finish");
    db.on_peers("CREATE TABLE t (id int); CREATE ROLE bob LOGIN");
    let mut c = db.coord();
    c.batch_execute(
        "CREATE ROLE bob;
         CREATE USER MAPPING FOR bob SERVER peer1 OPTIONS (user 'bob');
         INSERT INTO dg.decisions (xid, dt_id) VALUES (7, 'decided')",
    )
    .unwrap();
    let gid = gid_for(&mut c, "peer1", "bob", 7);
    // Prepared by postgres, so bob may not finish it.
    prepare_on(&mut db.peer(1), &gid, 7);
    enable_resolver(&cluster.coordinator);
    let tried = format!("{gid} on node \"peer1\"");
    assert!(
        wait_until(resolved_within() * 2, || cluster
            .coordinator
            .log_count(&tried)
            >= 3),
        "the resolver did not try three passes:\n{}",
        cluster.coordinator.log()
    );
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM dg.decisions WHERE xid = 7"),
        1,
        "the decision went while its transaction is still prepared"
    );
    let log = cluster.coordinator.log();
    assert_eq!(
        log.matches(&format!("commit {tried}: permission denied"))
            .count(),
        log.matches(&tried).count(),
        "every pass tried to commit, and failed"
    );
    assert_eq!(db.prepared_gids(1), std::slice::from_ref(&gid));
    let action: String = c
        .query_one("SELECT action FROM dg.in_doubt WHERE gid = $1", &[&gid])
        .unwrap()
        .get(0);
    assert_eq!(action, "commit");
}

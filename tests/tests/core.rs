//! Core semantics across a coordinator and two peers (README, "Concepts";
//! src/README.md, "Scopes" and "The commit protocol").
//!
//! Every effect is checked on the peers themselves, through their own
//! connections, never only through dg. The tests share one cluster, each
//! in its own database, so they are independent and may run in parallel.

use dg_tests::{
    dist_exec, dist_exec_each, error_text, expect_sqlstate, scalar, wait_until, Cluster, Db,
};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The resolver is off: these tests look at decision rows it would delete.
static CLUSTER: LazyLock<Cluster> =
    LazyLock::new(|| Cluster::start_with(2, &["dg.resolver_enabled = off"]));

/// A database with `accounts(id, balance)` on both peers, account 1
/// holding 1000 on each.
fn bank(name: &str) -> Db<'static> {
    let db = CLUSTER.db(name);
    db.on_peers(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts VALUES (1, 1000);",
    );
    db
}

/// Nothing of the DT is left open or prepared on any peer. Polled, not
/// read once: a failed statement's error reaches the client before the
/// server aborts (and dg rolls back what it prepared), and the client
/// returns on the error; pg_stat_activity is read from another session
/// too. The resolver is off here, so only the DT's own abort can clear
/// the peers within the wait.
#[track_caller]
fn assert_peers_clean(db: &Db) {
    for i in 1..=2 {
        assert!(
            wait_until(Duration::from_secs(5), || db.prepared(i) == 0),
            "prepared transactions left on peer{i}: {:?}",
            db.prepared_gids(i)
        );
        assert!(
            wait_until(Duration::from_secs(5), || db.busy_dg_sessions(i) == 0),
            "dg session still busy on peer{i}"
        );
    }
}

fn dist_state(c: &mut postgres::Client) -> String {
    c.query_one("SELECT state FROM dg.dist_status()", &[])
        .expect("dist_status")
        .get(0)
}

#[test]
fn transfer_commits_on_both_peers() {
    let db = bank("transfer");
    let mut c = db.coord();
    let id: String = c.query_one("SELECT dg.dist_begin()", &[]).unwrap().get(0);
    assert!(!id.is_empty(), "dist_begin returned an empty id");
    // The VARIADIC form a user writes, parameters as text.
    let n: i64 = c
        .query_one(
            "SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance - $1 WHERE id = $2', '100', '1')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "rows affected on peer1");
    let n: i64 = c
        .query_one(
            "SELECT dg.dist_exec('peer2', 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', '100', '1')",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "rows affected on peer2");
    // The session DT spans statements: nothing is visible on the peers yet.
    assert_eq!(
        (db.balance(1, 1), db.balance(2, 1)),
        (1000, 1000),
        "visible before dist_commit"
    );

    c.batch_execute("SELECT dg.dist_commit()")
        .expect("dist_commit");

    assert_eq!(db.balance(1, 1), 900);
    assert_eq!(db.balance(2, 1), 1100);
    assert_eq!(
        db.balance(1, 1) + db.balance(2, 1),
        2000,
        "money created or lost"
    );
    assert_peers_clean(&db);
    assert_eq!(dist_state(&mut c), "none");
}

#[test]
fn error_on_peer2_rolls_back_peer1() {
    let db = bank("peer_error");
    let mut c = db.coord();

    // In a transaction block.
    c.batch_execute("BEGIN").unwrap();
    assert_eq!(
        dist_exec(
            &mut c,
            "peer1",
            "UPDATE accounts SET balance = balance - 100 WHERE id = 1",
            &[]
        )
        .unwrap(),
        1
    );
    let e = expect_sqlstate(
        dist_exec(
            &mut c,
            "peer2",
            "INSERT INTO accounts VALUES ($1, 0)",
            &["1"],
        ),
        "23505",
    );
    assert!(
        error_text(&e).contains("\"peer2\""),
        "remote error does not name the node: {e:?}"
    );
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        db.balance(1, 1),
        1000,
        "peer1 kept the update of a failed DT"
    );
    assert_eq!(db.balance(2, 1), 1000);
    assert_peers_clean(&db);
    assert_eq!(dist_state(&mut c), "none");

    // Session DT in autocommit: the failure aborts it; commit is refused
    // like in an aborted block, and only dist_rollback() ends it.
    c.batch_execute("SELECT dg.dist_begin()").unwrap();
    assert_eq!(
        dist_exec(
            &mut c,
            "peer1",
            "UPDATE accounts SET balance = balance - 100 WHERE id = 1",
            &[]
        )
        .unwrap(),
        1
    );
    expect_sqlstate(
        dist_exec(&mut c, "peer2", "INSERT INTO accounts VALUES (1, 0)", &[]),
        "23505",
    );
    assert_eq!(dist_state(&mut c), "aborted");
    expect_sqlstate(c.batch_execute("SELECT dg.dist_commit()"), "25P02");
    c.batch_execute("SELECT dg.dist_rollback()")
        .expect("dist_rollback after failure");
    assert_eq!(dist_state(&mut c), "none");
    assert_eq!(
        db.balance(1, 1),
        1000,
        "peer1 kept the update of a failed session DT"
    );
    assert_eq!(db.balance(2, 1), 1000);
    assert_peers_clean(&db);
}

#[test]
fn local_and_remote_commit_or_abort_together() {
    let db = CLUSTER.db("local_remote");
    db.on_peers("CREATE TABLE t (id int)");
    let mut c = db.coord();
    c.batch_execute("CREATE TABLE local_t (id int)").unwrap();
    let count = |db: &Db, c: &mut postgres::Client, id: i32| -> (i64, i64, i64) {
        let q = format!("SELECT count(*) FROM t WHERE id = {id}");
        (
            scalar(c, &format!("SELECT count(*) FROM local_t WHERE id = {id}")),
            scalar(&mut db.peer(1), &q),
            scalar(&mut db.peer(2), &q),
        )
    };

    // COMMIT: all three.
    c.batch_execute("BEGIN; INSERT INTO local_t VALUES (1)")
        .unwrap();
    dist_exec_each(&mut c, &["peer1", "peer2"], "INSERT INTO t VALUES (1)");
    c.batch_execute("COMMIT").unwrap();
    assert_eq!(
        count(&db, &mut c, 1),
        (1, 1, 1),
        "(local, peer1, peer2) after COMMIT"
    );
    assert_peers_clean(&db);

    // ROLLBACK: none.
    c.batch_execute("BEGIN; INSERT INTO local_t VALUES (2)")
        .unwrap();
    dist_exec_each(&mut c, &["peer1", "peer2"], "INSERT INTO t VALUES (2)");
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!(
        count(&db, &mut c, 2),
        (0, 0, 0),
        "(local, peer1, peer2) after ROLLBACK"
    );
    assert_peers_clean(&db);

    // A deferred FK on peer2 accepts the row at statement time and fails
    // only at PREPARE TRANSACTION, after peer1 may already have prepared.
    db.peer(2)
        .batch_execute(
            "CREATE TABLE parent (id int PRIMARY KEY);
             CREATE TABLE child (id int, parent int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
    c.batch_execute("BEGIN; INSERT INTO local_t VALUES (3)")
        .unwrap();
    dist_exec(&mut c, "peer1", "INSERT INTO t VALUES (3)", &[]).unwrap();
    dist_exec(&mut c, "peer2", "INSERT INTO child VALUES (3, 999)", &[])
        .expect("a deferred constraint must not fail at statement time");
    let e = expect_sqlstate(c.batch_execute("COMMIT"), "23503");
    assert!(
        error_text(&e).contains("\"peer2\""),
        "error does not name the node: {e:?}"
    );
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM local_t WHERE id = 3"),
        0,
        "local row committed"
    );
    assert_eq!(
        scalar(&mut db.peer(1), "SELECT count(*) FROM t WHERE id = 3"),
        0,
        "peer1 row committed"
    );
    assert_eq!(
        scalar(&mut db.peer(2), "SELECT count(*) FROM child"),
        0,
        "peer2 row committed"
    );
    assert_peers_clean(&db);
    assert_eq!(dist_state(&mut c), "none");
}

/// A local failure after the peers prepared rolls them back at once: the
/// resolver is off here, so only the DT's own abort can have done it.
#[test]
fn local_error_after_the_prepare_phase_leaves_nothing_on_the_peers() {
    let db = CLUSTER.db("late_local_error");
    db.on_peers("CREATE TABLE t (id int)");
    let mut c = db.coord();
    c.batch_execute("CREATE TABLE lt (k int, v int); INSERT INTO lt VALUES (1, 0), (2, 0)")
        .unwrap();
    let on_peers = |id: i32| -> (i64, i64) {
        let q = format!("SELECT count(*) FROM t WHERE id = {id}");
        (scalar(&mut db.peer(1), &q), scalar(&mut db.peer(2), &q))
    };

    // A statement failing after dist_commit() in a block. One writer
    // suffices: the block may still write locally, so it is prepared.
    c.batch_execute("BEGIN").unwrap();
    dist_exec(&mut c, "peer1", "INSERT INTO t VALUES (1)", &[]).unwrap();
    c.batch_execute("SELECT dg.dist_commit()").unwrap();
    assert_eq!(db.prepared(1), 1, "dist_commit() did not prepare peer1");
    expect_sqlstate(c.batch_execute("SELECT 1 / 0"), "22012");
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!(on_peers(1), (0, 0), "(peer1, peer2) after the failed block");
    assert_peers_clean(&db);

    // A serialization failure at COMMIT, after the prepare phase: a and b
    // each read what the other writes; a commits first, so b's commit
    // fails.
    let mut a = db.coord();
    let mut b = db.coord();
    for (s, k) in [(&mut a, 1), (&mut b, 2)] {
        s.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL SERIALIZABLE; SELECT sum(v) FROM lt WHERE k = {k}"
        ))
        .unwrap();
    }
    a.batch_execute("INSERT INTO lt VALUES (2, 1)").unwrap();
    b.batch_execute("INSERT INTO lt VALUES (1, 1)").unwrap();
    dist_exec_each(&mut b, &["peer1", "peer2"], "INSERT INTO t VALUES (2)");
    a.batch_execute("COMMIT").unwrap();
    let e = expect_sqlstate(b.batch_execute("COMMIT"), "40001");
    eprintln!("b's COMMIT: {}", error_text(&e));
    assert_eq!(
        on_peers(2),
        (0, 0),
        "(peer1, peer2) after the failed COMMIT"
    );
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM lt WHERE (k, v) = (1, 1)"),
        0,
        "b's local row committed"
    );
    assert_peers_clean(&db);
}

#[test]
fn statement_timeout_cancels_remote() {
    let db = CLUSTER.db("stmt_timeout");
    let mut c = db.coord();
    let peer_cleaned_up = |what: &str| {
        assert!(
            wait_until(Duration::from_secs(10), || db.sleeping_sessions(1) == 0),
            "{what}: pg_sleep still running on peer1"
        );
        assert!(
            wait_until(Duration::from_secs(10), || db.busy_dg_sessions(1) == 0),
            "{what}: dg session still busy (idle in transaction?) on peer1"
        );
    };

    // The local statement_timeout interrupts the wait on the peer.
    c.batch_execute("SET statement_timeout = '300ms'").unwrap();
    let t = Instant::now();
    expect_sqlstate(
        dist_exec(&mut c, "peer1", "SELECT pg_sleep(30)", &[]),
        "57014",
    );
    let elapsed = t.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "statement_timeout took {elapsed:?}"
    );
    peer_cleaned_up("statement_timeout");
    c.batch_execute("RESET statement_timeout").unwrap();

    // dg's own limit, with no local statement_timeout.
    c.batch_execute("SET dg.remote_statement_timeout = '300ms'")
        .unwrap();
    let t = Instant::now();
    let e = expect_sqlstate(
        dist_exec(&mut c, "peer1", "SELECT pg_sleep(30)", &[]),
        "57014",
    );
    let elapsed = t.elapsed();
    assert!(
        elapsed < Duration::from_secs(10),
        "dg.remote_statement_timeout took {elapsed:?}"
    );
    assert!(
        error_text(&e).contains("\"peer1\""),
        "error does not name the node: {e:?}"
    );
    peer_cleaned_up("dg.remote_statement_timeout");

    // The session is usable afterwards.
    c.batch_execute("RESET dg.remote_statement_timeout")
        .unwrap();
    dist_exec(&mut c, "peer1", "SELECT 1", &[]).expect("session unusable after the timeout");
}

#[test]
fn committed_2pc_leaves_decision_and_no_prepared() {
    let db = bank("decisions");
    let mut c = db.coord();
    let decisions = |c: &mut postgres::Client| scalar(c, "SELECT count(*) FROM dg.decisions");
    let before = decisions(&mut c);

    c.batch_execute("BEGIN").unwrap();
    dist_exec(
        &mut c,
        "peer1",
        "UPDATE accounts SET balance = balance - 10 WHERE id = 1",
        &[],
    )
    .unwrap();
    dist_exec(
        &mut c,
        "peer2",
        "UPDATE accounts SET balance = balance + 10 WHERE id = 1",
        &[],
    )
    .unwrap();
    c.batch_execute("COMMIT").unwrap();
    // Read from another session: the decision must be committed.
    assert_eq!(
        decisions(&mut db.coord()),
        before + 1,
        "two-phase commit wrote no decision row"
    );
    assert_eq!((db.balance(1, 1), db.balance(2, 1)), (990, 1010));
    assert_peers_clean(&db);

    // One writer and no local writes: one-phase, no decision row.
    c.batch_execute("BEGIN").unwrap();
    dist_exec(
        &mut c,
        "peer1",
        "UPDATE accounts SET balance = balance - 10 WHERE id = 1",
        &[],
    )
    .unwrap();
    c.batch_execute("COMMIT").unwrap();
    assert_eq!(
        decisions(&mut db.coord()),
        before + 1,
        "one-phase commit wrote a decision row"
    );
    assert_eq!(db.balance(1, 1), 980);
    assert_peers_clean(&db);
}

/// The first two parts of this coordinator database's GIDs.
fn gid_owner(c: &mut postgres::Client) -> (String, u32) {
    let row = c
        .query_one(
            "SELECT (SELECT id::text FROM dg.coordinator), oid FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn gid_format() {
    let db = CLUSTER.db("gid_format");
    let mut c = db.coord();
    let (coordinator, database) = gid_owner(&mut c);
    let mapping: u32 = c
        .query_one(
            "SELECT umid FROM pg_user_mappings WHERE srvname = 'peer1'",
            &[],
        )
        .unwrap()
        .get(0);
    // Past 2^32: the xid part is a 64-bit full transaction id.
    let xid: i64 = 0x1_2345_6789;
    let gid = format!("dg_{coordinator}_{database}_{xid}_{mapping}");
    assert!(gid.len() < 200, "GID over PostgreSQL's limit: {gid}");

    let rows = c
        .query(
            "SELECT coordinator, database, xid, user_mapping FROM dg.gid_info($1)",
            &[&gid],
        )
        .unwrap();
    assert_eq!(
        rows.len(),
        1,
        "gid_info({gid}) returned {} rows",
        rows.len()
    );
    let r = &rows[0];
    assert_eq!(r.get::<_, String>(0), coordinator);
    assert_eq!(r.get::<_, u32>(1), database);
    assert_eq!(r.get::<_, i64>(2), xid);
    assert_eq!(r.get::<_, u32>(3), mapping);

    for bad in [
        "citus_1_2".to_string(),
        format!("citus_{coordinator}_{database}_{xid}_{mapping}"),
        format!("{gid}_7"),
        format!("dg_{coordinator}_{database}_{xid}"),
        format!("dg_not-a-uuid_{database}_{xid}_{mapping}"),
        String::new(),
    ] {
        let n = c
            .query("SELECT * FROM dg.gid_info($1)", &[&bad])
            .unwrap()
            .len();
        assert_eq!(n, 0, "gid_info({bad:?}) accepted a GID dg did not make");
    }
}

/// The GIDs dg really prepares, observed without racing: inside a block,
/// `dg.dist_commit()` runs the prepare phase at once and the block's COMMIT
/// seals it (README, "Where a DT ends"), so in between the peers hold the prepared
/// transactions for us to read.
#[test]
fn real_gids_follow_the_format() {
    let db = CLUSTER.db("real_gids");
    db.on_peers("CREATE TABLE t (id int)");
    let mut c = db.coord();
    let (coordinator, database) = gid_owner(&mut c);

    c.batch_execute("BEGIN").unwrap();
    dist_exec_each(&mut c, &["peer1", "peer2"], "INSERT INTO t VALUES (1)");
    c.batch_execute("SELECT dg.dist_commit()")
        .expect("dist_commit in a block");
    // The prepare phase assigned the local xid; this only reads it.
    let xid: i64 = c.query_one("SELECT txid_current()", &[]).unwrap().get(0);

    for i in 1..=2 {
        let gids = db.prepared_gids(i);
        assert_eq!(
            gids.len(),
            1,
            "peer{i} should hold one prepared transaction: {gids:?}"
        );
        let mapping: u32 = c
            .query_one(
                "SELECT umid FROM pg_user_mappings WHERE srvname = $1",
                &[&format!("peer{i}")],
            )
            .unwrap()
            .get(0);
        assert_eq!(
            gids[0],
            format!("dg_{coordinator}_{database}_{xid}_{mapping}"),
            "GID on peer{i}"
        );
        let info = c
            .query_one("SELECT xid, user_mapping FROM dg.gid_info($1)", &[&gids[0]])
            .unwrap();
        assert_eq!(
            (info.get::<_, i64>(0), info.get::<_, u32>(1)),
            (xid, mapping)
        );
    }
    c.batch_execute("COMMIT").unwrap();
    for i in 1..=2 {
        assert_eq!(
            scalar(&mut db.peer(i), "SELECT count(*) FROM t"),
            1,
            "row on peer{i}"
        );
    }
    assert_peers_clean(&db);
}

#[test]
fn savepoints_mirrored() {
    let db = CLUSTER.db("savepoints");
    db.on_peers("CREATE TABLE t (v text)");
    let mut c = db.coord();
    c.batch_execute("BEGIN").unwrap();
    dist_exec(&mut c, "peer1", "INSERT INTO t VALUES ($1)", &["A"]).unwrap();
    c.batch_execute("SAVEPOINT s").unwrap();
    dist_exec(&mut c, "peer1", "INSERT INTO t VALUES ($1)", &["B"]).unwrap();
    dist_exec(&mut c, "peer2", "INSERT INTO t VALUES ($1)", &["B"]).unwrap();
    c.batch_execute("ROLLBACK TO SAVEPOINT s").unwrap();
    dist_exec(&mut c, "peer2", "INSERT INTO t VALUES ($1)", &["C"]).unwrap();
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
    assert_eq!(rows(2), ["C"], "peer2");
    assert_peers_clean(&db);
}

#[test]
fn session_end_rolls_back_open_dt() {
    let db = bank("session_end");
    {
        let mut c = db.coord();
        c.batch_execute("SELECT dg.dist_begin()").unwrap();
        for node in ["peer1", "peer2"] {
            dist_exec(
                &mut c,
                node,
                "UPDATE accounts SET balance = 0 WHERE id = 1",
                &[],
            )
            .unwrap();
        }
        assert_eq!(
            db.busy_dg_sessions(1),
            1,
            "the DT holds a transaction open on peer1"
        );
        // The client goes away without committing.
    }
    for i in 1..=2 {
        assert!(
            wait_until(Duration::from_secs(10), || db.busy_dg_sessions(i) == 0),
            "the remote transaction on peer{i} outlived the session"
        );
        assert_eq!(
            db.balance(i, 1),
            1000,
            "peer{i} kept a write of an abandoned DT"
        );
    }
    assert_peers_clean(&db);
}

#[test]
fn read_only_participant_is_not_prepared() {
    let db = bank("reader");
    let mut c = db.coord();
    c.batch_execute("BEGIN").unwrap();
    dist_exec(
        &mut c,
        "peer1",
        "UPDATE accounts SET balance = balance - 1 WHERE id = 1",
        &[],
    )
    .unwrap();
    let seen = scalar(
        &mut c,
        "SELECT balance FROM dg.dist_query('peer2', 'SELECT balance FROM accounts WHERE id = 1') AS t(balance bigint)",
    );
    assert_eq!(seen, 1000);
    c.batch_execute("CREATE TEMP TABLE local_write AS SELECT 1")
        .unwrap();
    // A local write and one remote writer: two phases, but the reader is
    // only committed. dist_commit in a block shows the prepared state.
    c.batch_execute("SELECT dg.dist_commit()").unwrap();
    assert_eq!(db.prepared(1), 1, "the writer is prepared");
    assert_eq!(db.prepared(2), 0, "the reader is not prepared");
    c.batch_execute("COMMIT").unwrap();
    assert_eq!(db.balance(1, 1), 999);
    assert_peers_clean(&db);

    // A query that writes (here through a volatile function) is found out
    // and prepared like any writer.
    db.on_peers(
        "CREATE FUNCTION bump() RETURNS bigint LANGUAGE sql AS
           'UPDATE accounts SET balance = balance + 1 WHERE id = 1 RETURNING balance'",
    );
    c.batch_execute("BEGIN").unwrap();
    dist_exec(
        &mut c,
        "peer1",
        "UPDATE accounts SET balance = balance - 1 WHERE id = 1",
        &[],
    )
    .unwrap();
    scalar(
        &mut c,
        "SELECT b FROM dg.dist_query('peer2', 'SELECT bump()') AS t(b bigint)",
    );
    c.batch_execute("SELECT dg.dist_commit()").unwrap();
    assert_eq!(
        (db.prepared(1), db.prepared(2)),
        (1, 1),
        "both wrote, both are prepared"
    );
    c.batch_execute("ROLLBACK").unwrap();
    assert_eq!((db.balance(1, 1), db.balance(2, 1)), (999, 1000));
    assert_peers_clean(&db);
}

#[test]
fn refuses_to_load_without_preload() {
    let node = dg_tests::Node::start("no_preload", &[]);
    let mut c = node.client("postgres");
    let err = expect_sqlstate(c.batch_execute("CREATE EXTENSION dg"), "55000");
    assert!(
        error_text(&err).contains("shared_preload_libraries"),
        "{}",
        error_text(&err)
    );
}

/// A server changed by another session while a DT uses the node reaches
/// that DT's connection even when the coordinator reads the change during
/// COMMIT (the decision INSERT takes a lock, which processes invalidation
/// messages while the DT is being committed): the connection is closed
/// when the DT ends, and the next DT connects with the new options.
#[test]
fn server_changed_during_a_dt_reaches_its_connection() {
    let db = bank("invalidation");
    let mut a = db.coord();
    let shown = |c: &mut postgres::Client| -> String {
        c.query_one(
            "SELECT s FROM dg.dist_query('peer1', 'SHOW statement_timeout') AS t(s text)",
            &[],
        )
        .expect("SHOW through dg")
        .get(0)
    };
    assert_eq!(shown(&mut a), "0");
    a.batch_execute("BEGIN").unwrap();
    dist_exec_each(
        &mut a,
        &["peer1", "peer2"],
        "UPDATE accounts SET balance = balance + 1 WHERE id = 1",
    );
    db.coord()
        .batch_execute("ALTER SERVER peer1 OPTIONS (ADD options '-c statement_timeout=4242')")
        .unwrap();
    a.batch_execute("COMMIT").unwrap();
    let cached: Vec<bool> = a
        .query(
            "SELECT valid FROM dg.connections() WHERE node = 'peer1'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        cached.is_empty(),
        "the changed server's connection went back to the cache: valid = {cached:?}"
    );
    assert_eq!(
        shown(&mut a),
        "4242ms",
        "the next DT kept the old connection"
    );
    assert_eq!(db.balance(1, 1), 1001);
    assert_eq!(db.balance(2, 1), 1001);
}

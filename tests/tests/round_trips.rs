//! Issue 4's "one round trip per phase": counted through dg.stats'
//! `remote_requests`, on a cluster of its own so nothing else adds to it.

use dg_tests::{scalar, Cluster, Db};

fn requests(c: &mut postgres::Client) -> i64 {
    scalar(c, "SELECT remote_requests FROM dg.stats")
}

/// The requests of a transfer of 5 from account 1 of peer1 to peer2, one
/// `dg.<function>` call per peer, measured on the second one (the first
/// opens the connections, one setup request each); no money made or lost.
fn transfer_requests(db: &Db, c: &mut postgres::Client, function: &str) -> i64 {
    let transfer = format!(
        "BEGIN;
        SELECT dg.{function}('peer1', 'UPDATE accounts SET balance = balance - $1 WHERE id = $2', '5', '1');
        SELECT dg.{function}('peer2', 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', '5', '1');
        COMMIT;"
    );
    c.batch_execute(&transfer).expect("first transfer");
    let before = requests(c);
    c.batch_execute(&transfer).expect("second transfer");
    let spent = requests(c) - before;
    assert_eq!(
        db.balance(1, 1) + db.balance(2, 1),
        2000,
        "money created or lost"
    );
    spent
}

/// A block that writes on two peers costs each peer one request per
/// statement (BEGIN rides with the first), one PREPARE and one COMMIT
/// PREPARED: 6 in all, not 8.
#[test]
fn transfer_costs_one_request_per_statement_and_phase() {
    let cluster = Cluster::start_with(2, &["dg.resolver_enabled = off"]);
    let db = cluster.db("trips");
    db.on_peers("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL); INSERT INTO accounts VALUES (1, 1000)");
    let mut c = db.coord();
    assert_eq!(
        transfer_requests(&db, &mut c, "dist_exec"),
        6,
        "requests for a two-peer transfer"
    );

    // Savepoints the peer lacks ride along too: BEGIN, SAVEPOINT and the
    // statement in one request, then the release with the commit's phases.
    let before = requests(&mut c);
    c.batch_execute(
        "BEGIN; SAVEPOINT a;
         SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance WHERE id = $1', '1');
         RELEASE a; COMMIT;",
    )
    .expect("savepoint block");
    // 1 (BEGIN + SAVEPOINT + UPDATE) + 1 (RELEASE) + 1 (one-phase COMMIT)
    assert_eq!(
        requests(&mut c) - before,
        3,
        "requests for a one-peer block with a savepoint"
    );
}

/// A fresh session's first DT with one writer and nothing local commits in
/// one phase: dg's own catalog reads (the coordinator id, read when the
/// first connection opens) must not give the local transaction an xid.
#[test]
fn first_dt_of_a_session_with_one_writer_is_one_phase() {
    let cluster = Cluster::start_with(1, &["dg.resolver_enabled = off"]);
    let db = cluster.db("first");
    db.on_peers("CREATE TABLE t (id int)");
    let counts = |c: &mut postgres::Client| {
        (
            scalar(c, "SELECT committed_1pc FROM dg.stats"),
            scalar(c, "SELECT committed_2pc FROM dg.stats"),
        )
    };
    let (one_before, two_before) = counts(&mut db.coord());
    db.coord()
        .batch_execute("BEGIN; SELECT dg.dist_exec('peer1', 'INSERT INTO t VALUES (1)'); COMMIT;")
        .expect("one-writer block");
    let (one, two) = counts(&mut db.coord());
    assert_eq!(
        (one - one_before, two - two_before),
        (1, 0),
        "(one-phase, two-phase) commits"
    );
}

/// Issue 13: statements sent with dg.dist_send ride one pipeline per node
/// (BEGIN with them), and PREPARE TRANSACTION rides behind them: two sends
/// on two peers cost each peer one pipeline to reach the decision and one
/// COMMIT PREPARED. A dist_exec behind sends on the same node joins their
/// pipeline; a one-writer DT of sends costs one request in all.
#[test]
fn sends_cost_one_pipeline_per_node() {
    let cluster = Cluster::start_with(2, &["dg.resolver_enabled = off"]);
    let db = cluster.db("sends");
    db.on_peers("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL); INSERT INTO accounts VALUES (1, 1000), (2, 1000)");
    let mut c = db.coord();
    assert_eq!(
        transfer_requests(&db, &mut c, "dist_send"),
        4,
        "requests for a two-peer transfer by dist_send"
    );

    // (block, requests it costs, what it is)
    let blocks = [
        // Two sends and a dist_exec on one node, then a send on the other:
        // one pipeline each, then COMMIT PREPARED on each.
        (
            "BEGIN;
             SELECT dg.dist_send('peer1', 'UPDATE accounts SET balance = balance - 1 WHERE id = 1');
             SELECT dg.dist_send('peer1', 'UPDATE accounts SET balance = balance - 1 WHERE id = 2');
             SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance + 2 WHERE id = 1');
             SELECT dg.dist_send('peer2', 'UPDATE accounts SET balance = balance WHERE id = 1');
             COMMIT;",
            1 + 1 + 1 + 2,
            "sends and a dist_exec on one node, a send on another",
        ),
        // One writer, nothing local: BEGIN, the sends and COMMIT in one.
        (
            "BEGIN;
             SELECT dg.dist_send('peer1', 'UPDATE accounts SET balance = balance + 1 WHERE id = 1');
             SELECT dg.dist_send('peer1', 'UPDATE accounts SET balance = balance - 1 WHERE id = 2');
             COMMIT;",
            1,
            "a one-phase DT of sends",
        ),
    ];
    for (block, cost, what) in blocks {
        let before = requests(&mut c);
        c.batch_execute(block).expect(what);
        assert_eq!(requests(&mut c) - before, cost, "requests for {what}");
    }
    // A failed send skips the PREPARE behind it; nothing commits anywhere.
    let total = db.balance(1, 1) + db.balance(2, 1);
    let err = c
        .batch_execute(
            "BEGIN;
             SELECT dg.dist_send('peer1', 'UPDATE accounts SET balance = balance - 100 WHERE id = 1');
             SELECT dg.dist_send('peer2', 'INSERT INTO accounts VALUES (1, 0)');
             COMMIT;",
        )
        .expect_err("a failed send fails the commit");
    assert_eq!(dg_tests::sqlstate(&err), Some("23505"), "{err:?}");
    assert_eq!(
        db.balance(1, 1) + db.balance(2, 1),
        total,
        "a failed DT changed balances"
    );
    assert_eq!(db.prepared_all(), 0, "prepared transactions left behind");
}

//! The lost-commit alarm (src/README.md, "Lost commits"; README, "Lost
//! commits"): a node whose prepared transaction of a committed DT is gone
//! without committing (a failover to a standby that never received the
//! PREPARE) is named in the server log, counted in `dg.stats.lost_commits`
//! and listed in the table `dg.lost_commits` until a superuser acknowledges it; a
//! prepared transaction that another finisher committed raises nothing.
//!
//! The loss is faked: the DT prepares, and a superuser on peer 2 runs
//! ROLLBACK PREPARED behind dg's back, at a fault point (test builds only)
//! where dg waits. Each test has a cluster of its own, so the counters are
//! its own.

use dg_tests::postgres::Client;
use dg_tests::{dist_exec, expect_sqlstate, resolver_bound, scalar, wait_until, Cluster, Db};
use std::time::Duration;

const INTERVAL: Duration = Duration::from_millis(200);
const INTERVAL_CONF: &str = "dg.resolver_interval = '200ms'";

fn setup<'a>(cluster: &'a Cluster, name: &str) -> Db<'a> {
    let db = cluster.db(name);
    db.on_peers(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts VALUES (1, 1000), (2, 1000)",
    );
    db
}

/// Moves 100 of account `id` from peer 1 to peer 2 in one block: two
/// writers, so 2PC.
fn transfer_of(c: &mut Client, id: &str) -> Result<(), dg_tests::postgres::Error> {
    c.batch_execute("BEGIN")?;
    dist_exec(
        c,
        "peer1",
        "UPDATE accounts SET balance = balance - 100 WHERE id = $1",
        &[id],
    )?;
    dist_exec(
        c,
        "peer2",
        "UPDATE accounts SET balance = balance + 100 WHERE id = $1",
        &[id],
    )?;
    c.batch_execute("COMMIT")
}

fn transfer(c: &mut Client) -> Result<(), dg_tests::postgres::Error> {
    transfer_of(c, "1")
}

/// (gid, 32-bit xid) of the one prepared transaction on peer `i`.
fn prepared_on(db: &Db, i: usize) -> (String, String) {
    let row = db
        .peer(i)
        .query_one(
            "SELECT gid, transaction::text FROM pg_prepared_xacts WHERE database = current_database()",
            &[],
        )
        .expect("one prepared transaction");
    (row.get(0), row.get(1))
}

/// A session of `db` on the coordinator with fault `setting` armed, and
/// how often its log `line` was in the log before.
fn armed(db: &Db, setting: &str, line: &str) -> (Client, usize) {
    let fired = db.cluster.coordinator.log_count(line);
    let mut c = db.coord();
    c.batch_execute(&format!("SET dg.fault = '{setting}'"))
        .unwrap();
    (c, fired)
}

/// Waits until the coordinator's log has more than `fired` lines `line`
/// (a fault point was reached).
fn wait_for_fault(cluster: &Cluster, line: &str, fired: usize, what: &str) {
    assert!(
        wait_until(Duration::from_secs(20), || {
            cluster.coordinator.log_count(line) > fired
        }),
        "{what}"
    );
}

/// ROLLBACK PREPARED on peer `i`, as a superuser would behind dg's back.
fn remove_behind_dgs_back(db: &Db, i: usize, gid: &str) {
    db.peer(i)
        .batch_execute(&format!("ROLLBACK PREPARED '{gid}'"))
        .expect("rollback prepared on the peer");
}

fn lost_commits(c: &mut Client) -> i64 {
    scalar(c, "SELECT lost_commits FROM dg.stats")
}

/// The rows of `dg.lost_commits`: (node, gid, remote_xid, remote_status).
fn alarms(c: &mut Client) -> Vec<(String, String, String, String)> {
    c.query(
        "SELECT node, gid, remote_xid::text, remote_status FROM dg.lost_commits ORDER BY gid",
        &[],
    )
    .expect("read dg.lost_commits")
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

/// The DT's backend finishes: its COMMIT PREPARED on peer 2 answers "does
/// not exist". It asks for a resolver pass, which asks peer 2 about the
/// remote xid, hears "aborted", and raises the alarm; only a superuser
/// clears it.
#[test]
fn backend_finish_that_finds_the_prepare_gone_raises_the_alarm() {
    let cluster = Cluster::start_with(2, &[INTERVAL_CONF]);
    let db = setup(&cluster, "lost_backend");
    let coord = &cluster.coordinator;
    let line = "dg: fault Sleep(3000) at AfterDecision";
    let (mut c, fired) = armed(&db, "after_decision=sleep:3000", line);
    let (gid, remote_xid) = std::thread::scope(|s| {
        let t = s.spawn(|| transfer(&mut c));
        wait_for_fault(&cluster, line, fired, "the DT never reached after_decision");
        // Both peers prepared before the decision was written.
        let (gid, remote_xid) = prepared_on(&db, 2);
        remove_behind_dgs_back(&db, 2, &gid);
        t.join()
            .unwrap()
            .expect("COMMIT succeeds: the decision was made");
        (gid, remote_xid)
    });
    assert_eq!(db.prepared_all(), 0, "peer 1 committed, peer 2 has nothing");
    assert_eq!(db.balance(1, 1), 900, "peer 1's part committed");
    assert_eq!(db.balance(2, 1), 1000, "peer 2's part is the lost one");

    let expected = format!(
        "dg: lost commit on node \"peer2\": prepared transaction \"{gid}\" (remote xid {remote_xid}) is gone and did not commit"
    );
    assert!(
        coord.wait_log(&expected, resolver_bound(INTERVAL)),
        "no alarm in the log:\n{}",
        coord.log()
    );
    let mut admin = db.coord();
    assert_eq!(lost_commits(&mut admin), 1, "dg.stats.lost_commits");
    assert_eq!(
        alarms(&mut admin),
        vec![(
            "peer2".to_string(),
            gid.clone(),
            remote_xid.clone(),
            "aborted".to_string()
        )]
    );
    // The alarm replaces the decision, which is forgotten with it.
    assert_eq!(scalar(&mut admin, "SELECT count(*) FROM dg.decisions"), 0);
    // Further passes do not raise it again.
    std::thread::sleep(3 * INTERVAL);
    assert_eq!(coord.log_count(&expected), 1, "the alarm was logged again");
    assert_eq!(lost_commits(&mut admin), 1);

    // pg_monitor reads the view; nobody but a superuser acknowledges, not
    // even with EXECUTE granted.
    admin
        .batch_execute(
            "CREATE ROLE lost_watcher; CREATE ROLE lost_monitor IN ROLE pg_monitor;
             GRANT EXECUTE ON FUNCTION dg.acknowledge_lost_commits(text) TO lost_monitor",
        )
        .unwrap();
    admin.batch_execute("SET ROLE lost_watcher").unwrap();
    expect_sqlstate(admin.query("SELECT * FROM dg.lost_commits", &[]), "42501");
    expect_sqlstate(
        admin.query("SELECT dg.acknowledge_lost_commits()", &[]),
        "42501",
    );
    admin
        .batch_execute("RESET ROLE; SET ROLE lost_monitor")
        .unwrap();
    assert_eq!(alarms(&mut admin).len(), 1, "pg_monitor sees the alarm");
    expect_sqlstate(
        admin.query("SELECT dg.acknowledge_lost_commits($1)", &[&gid]),
        "42501",
    );
    admin.batch_execute("RESET ROLE").unwrap();
    assert_eq!(
        scalar(
            &mut admin,
            "SELECT dg.acknowledge_lost_commits('no such gid')"
        ),
        0
    );
    assert_eq!(
        alarms(&mut admin).len(),
        1,
        "another GID's ack clears nothing"
    );
    let acked: i64 = admin
        .query_one("SELECT dg.acknowledge_lost_commits($1)", &[&gid])
        .unwrap()
        .get(0);
    assert_eq!(acked, 1);
    assert!(alarms(&mut admin).is_empty(), "acknowledged, still listed");
    assert_eq!(lost_commits(&mut admin), 1, "the counter counts events");
}

/// The resolver finishes: the DT's backend could not (a fault raised in
/// its finish), and peer 2 lost one prepared transaction before the pass
/// listed it and another while the pass was deciding it (its COMMIT
/// PREPARED then answers "does not exist"). Both are lost, and the
/// alarms survive a restart of the coordinator.
#[test]
fn resolver_that_finds_the_prepare_gone_raises_the_alarm() {
    let cluster = Cluster::start_with(2, &[INTERVAL_CONF, "dg.resolver_enabled = off"]);
    let db = setup(&cluster, "lost_resolver");
    let coord = &cluster.coordinator;
    let (mut c, notices) = db.coord_with_notices();
    c.batch_execute("SET dg.fault = 'after_local_commit=error'")
        .unwrap();
    // Transfer A: peer 2 loses it before the pass.
    transfer(&mut c).expect("COMMIT succeeds with a WARNING");
    let (gid_a, xid_a) = prepared_on(&db, 2);
    remove_behind_dgs_back(&db, 2, &gid_a);
    // Transfer B (another account: A's prepared transaction on peer 1
    // holds its row): peer 2 loses it while the pass decides it.
    transfer_of(&mut c, "2").expect("COMMIT succeeds with a WARNING");
    assert!(
        notices.lock().unwrap().len() >= 2,
        "the finish faults warned"
    );
    let (gid_b, xid_b) = prepared_on(&db, 2);
    assert_eq!(db.prepared(1), 2, "peer 1 holds both transfers' parts");

    let line = "dg: fault Sleep(1000) at BeforeDecisionRead";
    let (mut r, fired) = armed(&db, "before_decision_read=sleep:1000", line);
    let results: Vec<(String, String)> = std::thread::scope(|s| {
        let t = s.spawn(|| {
            r.query("SELECT gid, result FROM dg.recover() ORDER BY gid", &[])
                .expect("dg.recover()")
                .iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect()
        });
        // Three prepared transactions are decided in turn (peer 1's two,
        // then peer 2's B): remove B while the pass decides it.
        assert!(
            wait_until(Duration::from_secs(20), || coord.log_count(line)
                >= fired + 3),
            "the pass never reached peer 2's transaction"
        );
        remove_behind_dgs_back(&db, 2, &gid_b);
        t.join().unwrap()
    });
    assert!(
        results.contains(&(gid_b.clone(), "already finished".to_string())),
        "the pass's COMMIT PREPARED met \"does not exist\": {results:?}"
    );
    assert_eq!(db.prepared_all(), 0);
    assert_eq!(
        (db.balance(1, 1), db.balance(1, 2)),
        (900, 900),
        "peer 1 committed both"
    );
    assert_eq!(
        (db.balance(2, 1), db.balance(2, 2)),
        (1000, 1000),
        "peer 2 lost both"
    );

    for (gid, xid) in [(&gid_a, &xid_a), (&gid_b, &xid_b)] {
        let expected = format!(
            "dg: lost commit on node \"peer2\": prepared transaction \"{gid}\" (remote xid {xid}) is gone and did not commit"
        );
        assert_eq!(coord.log_count(&expected), 1, "{expected}\n{}", coord.log());
    }
    let mut admin = db.coord();
    assert_eq!(lost_commits(&mut admin), 2);
    let mut want = vec![
        ("peer2".to_string(), gid_a, xid_a, "aborted".to_string()),
        ("peer2".to_string(), gid_b, xid_b, "aborted".to_string()),
    ];
    want.sort();
    assert_eq!(alarms(&mut admin), want);

    // A restart keeps the alarms (a table), not the counter (memory).
    drop(admin);
    coord.crash_and_restart();
    coord.wait_ready();
    let mut admin = db.coord();
    assert_eq!(alarms(&mut admin), want, "the alarms survive a restart");
    assert_eq!(lost_commits(&mut admin), 0);
    assert_eq!(
        scalar(&mut admin, "SELECT dg.acknowledge_lost_commits()"),
        2,
        "NULL acknowledges every alarm"
    );
    assert!(alarms(&mut admin).is_empty());
}

/// Another finisher wins: while the DT's backend waits after its local
/// commit, a pass commits both prepared transactions; the backend's own
/// COMMIT PREPARED then meets "does not exist" everywhere. Nothing was
/// lost, and no alarm is raised, though the decision is checked and
/// forgotten.
#[test]
fn another_finisher_winning_raises_no_alarm() {
    let cluster = Cluster::start_with(2, &[INTERVAL_CONF, "dg.resolver_enabled = off"]);
    let db = setup(&cluster, "lost_none");
    let coord = &cluster.coordinator;
    let line = "dg: fault Sleep(3000) at AfterLocalCommit";
    let (mut c, fired) = armed(&db, "after_local_commit=sleep:3000", line);
    let resolved: Vec<String> = std::thread::scope(|s| {
        let t = s.spawn(|| transfer(&mut c));
        wait_for_fault(
            &cluster,
            line,
            fired,
            "the DT never reached after_local_commit",
        );
        let resolved = db
            .coord()
            .query("SELECT result FROM dg.recover()", &[])
            .expect("dg.recover()")
            .iter()
            .map(|r| r.get(0))
            .collect();
        t.join().unwrap().expect("COMMIT succeeds");
        resolved
    });
    assert_eq!(resolved, vec!["committed", "committed"], "the pass won");
    let mut admin = db.coord();
    // The pass that finds the decision finished checks it and forgets it.
    scalar(&mut admin, "SELECT count(*) FROM dg.recover()");
    assert_eq!(scalar(&mut admin, "SELECT count(*) FROM dg.decisions"), 0);
    assert_eq!(db.balance(1, 1) + db.balance(2, 1), 2000);
    assert_eq!(db.balance(2, 1), 1100);
    assert_eq!(lost_commits(&mut admin), 0);
    assert!(alarms(&mut admin).is_empty());
    assert_eq!(coord.log_count("dg: lost commit"), 0, "{}", coord.log());
}

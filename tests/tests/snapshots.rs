//! Consistent reads across nodes (README, "Consistent reads"): in a
//! snapshot from `dg.dist_snapshot()` every DT of this coordinator is on
//! all of the snapshot's nodes or on none; a DT in doubt on one of them
//! (a failed finish, a restart the resolver has not yet looked behind)
//! makes the snapshot wait and then fail, never read half of it.

use dg_tests::postgres::Client;
use dg_tests::proxy::{Mode, Proxy};
use dg_tests::{
    dist_exec, error_text, expect_sqlstate, read_total, scalar, wait_until, Cluster, Db, Reads,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const PEERS: usize = 3;
const ACCOUNTS: i32 = 10;
const TOTAL: i64 = PEERS as i64 * ACCOUNTS as i64 * 1000;

fn cluster() -> Cluster {
    Cluster::start_with(PEERS, &["dg.resolver_interval = '200ms'"])
}

fn bank(db: &Db) {
    db.on_peers(&format!(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g;"
    ));
}

/// The money on every peer, in a consistent snapshot or not
/// (`read_total`).
fn total(c: &mut Client, consistent: bool) -> Result<i64, dg_tests::postgres::Error> {
    read_total(c, PEERS, consistent)
}

/// Moves `amount` from account `id` of peer `from` to the same account
/// of peer `to`.
fn transfer(
    c: &mut Client,
    from: usize,
    to: usize,
    id: i32,
    amount: i64,
) -> Result<(), dg_tests::postgres::Error> {
    let (a, m, id) = (amount.to_string(), (-amount).to_string(), id.to_string());
    c.batch_execute("BEGIN")?;
    let sql = "UPDATE accounts SET balance = balance + $1 WHERE id = $2";
    dist_exec(c, &format!("peer{from}"), sql, &[&m, &id])?;
    dist_exec(c, &format!("peer{to}"), sql, &[&a, &id])?;
    c.batch_execute("COMMIT")
}

/// Waits until a consistent snapshot can be taken (the resolver has
/// listed the nodes once since the server started).
fn wait_for_snapshots(db: &Db) {
    let mut c = db.coord();
    c.batch_execute("SET dg.snapshot_timeout = '100ms'")
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || total(&mut c, true).is_ok()),
        "no consistent snapshot could be taken: {:?}",
        total(&mut c, true).err().map(|e| error_text(&e))
    );
}

#[test]
fn consistent_readers_never_see_a_transfer_half_done() {
    let cluster = cluster();
    let db = cluster.db("skew");
    bank(&db);
    // Peer 3's link is slow, so its COMMIT PREPARED lands well after the
    // others': plain readers have a window to see half a transfer.
    let slow = Proxy::for_peer(&db, 3);
    slow.set(Mode::Delay(Duration::from_millis(3)));
    wait_for_snapshots(&db);

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, committed) = (stop.clone(), committed.clone());
            let mut c = db.coord();
            thread::spawn(move || {
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let from = 1 + n % PEERS;
                    let to = 1 + (n + 1) % PEERS;
                    match transfer(
                        &mut c,
                        from,
                        to,
                        1 + (n as i32 * 7) % ACCOUNTS,
                        1 + (n as i64 % 7),
                    ) {
                        Ok(()) => {
                            committed.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            // Two writers on one account: a deadlock the
                            // detector or a serialization failure breaks.
                            let _ = c.batch_execute("ROLLBACK");
                            assert!(
                                matches!(dg_tests::sqlstate(&e), Some("40P01" | "40001")),
                                "transfer failed: {}",
                                error_text(&e)
                            );
                        }
                    }
                }
            })
        })
        .collect();

    let run = |consistent: bool| {
        let stop = stop.clone();
        let mut c = db.coord();
        thread::spawn(move || {
            let mut reads = Reads::default();
            while !stop.load(Ordering::Relaxed) && reads.failed() == 0 {
                reads.record(total(&mut c, consistent), TOTAL);
            }
            reads
        })
    };
    let consistent = run(true);
    let plain = run(false);
    let started = Instant::now();
    // Until enough of both kinds of reads ran, and the plain readers saw
    // the skew (bounded: the test fails below if they never do).
    while started.elapsed() < Duration::from_secs(60)
        && (committed.load(Ordering::Relaxed) < 300 || started.elapsed() < Duration::from_secs(10))
    {
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let consistent = consistent.join().unwrap();
    let plain = plain.join().unwrap();
    println!(
        "transfers committed: {}; consistent reads: {}; plain reads: {}",
        committed.load(Ordering::Relaxed),
        consistent.summary(),
        plain.summary()
    );
    assert!(
        consistent.errors.is_empty() && plain.errors.is_empty(),
        "a read failed"
    );
    let reads = consistent.ok + consistent.wrong;
    assert!(reads >= 100, "only {reads} consistent reads ran");
    assert_eq!(
        consistent.wrong, 0,
        "{} of {reads} consistent reads saw a transfer half done",
        consistent.wrong
    );
    assert!(
        plain.wrong > 0,
        "the {} plain reads never saw a transfer half done: the test cannot tell",
        plain.ok
    );
    let mut c = db.coord();
    assert_eq!(total(&mut c, true).unwrap(), TOTAL);
    assert!(wait_until(Duration::from_secs(10), || db.prepared_all() == 0));
    // Most were taken while the transfers went on; those that crossed one
    // were taken again.
    let row = c
        .query_one(
            "SELECT snapshots, snapshots_held, snapshot_retakes FROM dg.stats",
            &[],
        )
        .unwrap();
    let (taken, held, retaken): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    println!("snapshots: {taken} taken, {held} of them holding the fence, {retaken} taken again");
    assert!(
        taken >= reads as i64,
        "{taken} snapshots counted for {reads} reads"
    );
    assert!(
        2 * held < taken,
        "{held} of {taken} snapshots held the fence: commits waited for most"
    );
}

#[test]
fn a_transaction_in_doubt_on_a_node_holds_snapshots_of_that_node() {
    let cluster = cluster();
    let db = cluster.db("indoubt");
    bank(&db);
    let link = Proxy::for_peer(&db, 2);
    wait_for_snapshots(&db);
    // Peer 2 never hears COMMIT PREPARED, and no resolver retries it: the
    // transfer is committed on peer 1 only.
    let mut c = db.coord();
    c.batch_execute("ALTER SYSTEM SET dg.resolver_enabled = off")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    link.at_message("COMMIT PREPARED", false, Mode::Down);
    c.batch_execute("SET dg.remote_statement_timeout = '1s'; SET dg.connect_timeout = 1")
        .unwrap();
    transfer(&mut c, 1, 2, 1, 100).expect("COMMIT returns once the decision is made");
    // Soon after, when COMMIT does not wait for the finish.
    assert!(wait_until(Duration::from_secs(5), || link.fired() == 1));
    link.heal();
    assert_eq!(db.prepared(2), 1, "the transfer waits on peer 2");

    c.batch_execute("SET dg.snapshot_timeout = '300ms'")
        .unwrap();
    let started = Instant::now();
    let e = expect_sqlstate(total(&mut c, true), "55P03");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it did not wait"
    );
    let text = error_text(&e);
    assert!(text.contains("in doubt on node \"peer2\""), "{text}");
    let gid = db.prepared_gids(2).remove(0);
    assert!(text.contains(&gid), "the error names the GID {gid}: {text}");

    // A snapshot of the other nodes sees the transfer wholly (peer 1 has
    // it, peer 3 had no part in it).
    c.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT dg.dist_snapshot('peer1', 'peer3'); COMMIT",
    )
    .expect("peer 2 is not in this snapshot");

    c.batch_execute("ALTER SYSTEM RESET dg.resolver_enabled")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || total(&mut c, true).is_ok()),
        "the resolver finished the transfer, and snapshots of peer 2 work again"
    );
    assert_eq!(total(&mut c, true).unwrap(), TOTAL);
    assert_eq!(db.prepared_all(), 0);
}

#[test]
fn after_a_restart_snapshots_wait_for_the_resolver_to_look() {
    let cluster = Cluster::start_with(2, &["dg.resolver_interval = '200ms'"]);
    let db = cluster.db("restart");
    db.on_peers(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 10) g;",
    );
    // No resolver across the restart, so nothing looks at the nodes
    // before the snapshot below does.
    let mut c = db.coord();
    c.batch_execute("ALTER SYSTEM SET dg.resolver_enabled = off")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    // The coordinator dies after its local commit, before any COMMIT
    // PREPARED: the transfer is decided, and prepared on both peers.
    c.batch_execute("SET dg.fault = 'after_local_commit=crash'")
        .unwrap();
    let _ = transfer(&mut c, 1, 2, 1, 100);
    drop(c);
    cluster.coordinator.start_again();
    assert_eq!(db.prepared_all(), 2);
    let mut c = db.coord();
    c.batch_execute("SET dg.snapshot_timeout = '200ms'")
        .unwrap();
    let e = expect_sqlstate(
        c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT dg.dist_snapshot(); COMMIT"),
        "55P03",
    );
    c.batch_execute("ROLLBACK").unwrap();
    assert!(
        error_text(&e).contains("has not yet checked node"),
        "{}",
        error_text(&e)
    );
    c.batch_execute("ALTER SYSTEM RESET dg.resolver_enabled")
        .unwrap();
    c.batch_execute("SELECT pg_reload_conf()").unwrap();
    c.batch_execute("SET dg.snapshot_timeout = '10s'").unwrap();
    assert_eq!(
        read_total(&mut c, 2, true).unwrap(),
        20_000,
        "the transfer is wholly there"
    );
    assert_eq!(db.prepared_all(), 0);
    assert_eq!(db.balance(2, 1) + db.balance(1, 1), 2000);
}

#[test]
fn a_backend_terminated_at_the_fence_does_not_hold_it() {
    let cluster = cluster();
    let db = cluster.db("holder");
    bank(&db);
    wait_for_snapshots(&db);
    // A commit parks at the fence (decision written, local commit not yet).
    let mut holder = db.coord();
    let pid: i32 = holder
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    holder
        .batch_execute("SET dg.fault = 'after_decision=sleep:60000'")
        .unwrap();
    let t = thread::spawn(move || transfer(&mut holder, 1, 2, 1, 5));
    assert!(
        wait_until(Duration::from_secs(10), || db.prepared_all() == 2),
        "the transfer prepared on both peers"
    );
    let mut c = db.coord();
    c.batch_execute("SET dg.snapshot_timeout = '300ms'")
        .unwrap();
    // What keeps commits out waits for it (it enters the fence right
    // after its PREPAREs answered: retry until one has waited for it).
    let mut waited = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            match c.query("SELECT * FROM dg.create_restore_point('holder')", &[]) {
                Err(e) => {
                    waited = Some(e);
                    true
                }
                Ok(_) => false,
            }
        }),
        "no restore point waited for the commit at the fence"
    );
    let e = waited.unwrap();
    assert_eq!(dg_tests::sqlstate(&e), Some("55P03"), "{}", error_text(&e));
    assert!(
        error_text(&e).contains("did not finish"),
        "{}",
        error_text(&e)
    );
    // A consistent snapshot does not wait: the nodes' snapshots see the
    // parked transfer on neither node.
    assert_eq!(total(&mut c, true).unwrap(), TOTAL);
    // Terminated there, it ends (its commit, already decided, may still go
    // through on the way out): then nothing waits for it.
    c.batch_execute(&format!("SELECT pg_terminate_backend({pid})"))
        .unwrap();
    let _ = t.join().unwrap();
    assert!(wait_until(Duration::from_secs(10), || scalar(
        &mut c,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}")
    ) == 0));
    c.batch_execute("SET dg.snapshot_timeout = '10s'").unwrap();
    let started = Instant::now();
    c.query("SELECT * FROM dg.create_restore_point('holder gone')", &[])
        .unwrap_or_else(|e| panic!("create_restore_point: {}", error_text(&e)));
    assert_eq!(total(&mut c, true).unwrap(), TOTAL);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the fence waited {:?} after the holder was gone",
        started.elapsed()
    );
    assert!(wait_until(Duration::from_secs(10), || db.prepared_all() == 0));
}

#[test]
fn commits_go_on_while_a_snapshot_is_taken() {
    let cluster = cluster();
    let db = cluster.db("watched");
    bank(&db);
    wait_for_snapshots(&db);
    // Peer 3's link holds every message a second each way: a snapshot of
    // every node takes that long.
    let slow = Proxy::for_peer(&db, 3);
    let mut reader = db.coord();
    let pid: i32 = reader
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    // Connected before the delay: only the snapshot's round trip pays it.
    assert_eq!(total(&mut reader, false).unwrap(), TOTAL);
    slow.set(Mode::Delay(Duration::from_secs(1)));
    let snapshot = thread::spawn(move || total(&mut reader, true));
    let mut c = db.coord();
    let taking = |c: &mut Client| {
        scalar(
            c,
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} \
                 AND state = 'active' AND query LIKE '%dist_snapshot%'"
            ),
        ) == 1
    };
    assert!(
        wait_until(Duration::from_secs(10), || taking(&mut c)),
        "the snapshot did not start"
    );
    // Two-phase commits on the other nodes meanwhile: none waits for it.
    let mut w = db.coord();
    for id in 1..=3 {
        transfer(&mut w, 1, 2, id, 7).unwrap();
    }
    assert!(
        taking(&mut c),
        "the commits waited for the snapshot to be taken"
    );
    assert_eq!(snapshot.join().unwrap().unwrap(), TOTAL);
}

#[test]
fn a_local_commit_between_the_two_snapshots_fails_the_block_with_40001() {
    let cluster = cluster();
    let db = cluster.db("local");
    bank(&db);
    let mut c = db.coord();
    c.batch_execute("CREATE TABLE ledger (id int)").unwrap();
    wait_for_snapshots(&db);
    // A transfer that also writes locally parks at the fence, decided but
    // not yet committed locally.
    let mut writer = db.coord();
    writer
        .batch_execute("SET dg.fault = 'after_decision=sleep:3000'")
        .unwrap();
    let t = thread::spawn(move || {
        writer.batch_execute("BEGIN; INSERT INTO ledger VALUES (1)")?;
        let sql = "UPDATE accounts SET balance = balance + $1 WHERE id = 1";
        dist_exec(&mut writer, "peer1", sql, &["-5"])?;
        dist_exec(&mut writer, "peer2", sql, &["5"])?;
        writer.batch_execute("COMMIT")
    });
    // Prepared on both peers: it enters the fence right after, and sleeps
    // there before its local commit.
    assert!(wait_until(Duration::from_secs(10), || db.prepared_all() == 2));
    let remote = |c: &mut Client, i: usize| {
        scalar(
            c,
            &format!("SELECT b FROM dg.dist_query('peer{i}', 'SELECT balance FROM accounts WHERE id = 1') AS t(b bigint)"),
        )
    };
    let read = |c: &mut Client| {
        let r = (
            scalar(c, "SELECT count(*) FROM ledger"),
            remote(c, 1),
            remote(c, 2),
        );
        c.batch_execute("COMMIT").unwrap();
        r
    };
    // A block with its local snapshot from now, without the transfer.
    let mut early = db.coord();
    early
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .unwrap();
    assert_eq!(scalar(&mut early, "SELECT count(*) FROM ledger"), 0);
    // A block that takes all its snapshots while the transfer is at the
    // fence sees it everywhere or nowhere, locally too.
    c.batch_execute("SET dg.snapshot_timeout = '20s'").unwrap();
    c.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT dg.dist_snapshot('peer1', 'peer2')",
    )
    .unwrap();
    let seen = read(&mut c);
    assert!(
        seen == (0, 1000, 1000) || seen == (1, 995, 1005),
        "half the transfer: {seen:?}"
    );
    t.join().unwrap().expect("the transfer commits");
    // The early block's snapshot on the nodes, taken now, would have it.
    let e = expect_sqlstate(
        early.batch_execute("SELECT dg.dist_snapshot('peer1', 'peer2')"),
        "40001",
    );
    early.batch_execute("ROLLBACK").unwrap();
    assert!(
        error_text(&e).contains("committed locally"),
        "{}",
        error_text(&e)
    );
    // The retry sees it on every node and locally.
    c.batch_execute(
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT dg.dist_snapshot('peer1', 'peer2')",
    )
    .unwrap();
    assert_eq!(read(&mut c), (1, 995, 1005));
}

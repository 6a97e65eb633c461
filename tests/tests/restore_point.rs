//! A consistent point-in-time restore (README, "Consistent restore
//! (PITR)"): money moves between an account table on the coordinator and
//! on two peers through dg; `dg.create_restore_point()` is called under
//! that load; every node, the coordinator included, is restored from its
//! base backup to that name. Once the resolver has finished what was in
//! doubt at the point, the money is all there and nothing of dg stays
//! prepared.
//!
//! The fault point `between_restore_points:1` holds the call for a second
//! after peer1's point, before peer2's and the coordinator's. With the
//! fence, commits wait that second out; without it, transfers that
//! commit in that second are on the restored coordinator and peer2 and
//! not on peer1 (src/README.md, "The commit fence"), and the total is
//! wrong.

use dg_tests::postgres::Client;
use dg_tests::{dist_exec, error_text, scalar, wait_until, Cluster, Node, Rng};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const PEERS: usize = 2;
const ACCOUNTS: i32 = 10;
/// Places holding accounts: 0 is the coordinator, 1..=PEERS the peers.
const PLACES: usize = PEERS + 1;
const TOTAL: i64 = PLACES as i64 * ACCOUNTS as i64 * 1000;
const POINT: &str = "dg_test_point";

fn accounts_ddl() -> String {
    format!(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {ACCOUNTS}) g;"
    )
}
const UPDATE: &str = "UPDATE accounts SET balance = balance + $1 WHERE id = $2";

/// Adds `amount` to account `id` at `place`, in the client's block.
fn add(
    c: &mut Client,
    place: usize,
    id: i32,
    amount: i64,
) -> Result<(), dg_tests::postgres::Error> {
    if place == 0 {
        return c.execute(UPDATE, &[&amount, &id]).map(|_| ());
    }
    let (a, id) = (amount.to_string(), id.to_string());
    dist_exec(c, &format!("peer{place}"), UPDATE, &[&a, &id]).map(|_| ())
}

/// Moves `amount` between account `id` of two places, the lower place
/// first in every transfer, so two transfers never wait for each other in
/// opposite orders.
fn transfer(c: &mut Client, places: (usize, usize), id: i32, amount: i64) {
    let run = |c: &mut Client| -> Result<(), dg_tests::postgres::Error> {
        c.batch_execute("BEGIN")?;
        add(c, places.0, id, -amount)?;
        add(c, places.1, id, amount)?;
        c.batch_execute("COMMIT")
    };
    if let Err(e) = run(c) {
        panic!("transfer failed: {}", error_text(&e));
    }
}

/// The money on the coordinator and on every peer, read on each node
/// directly.
fn total(cluster: &Cluster, db: &str) -> i64 {
    let sum = "SELECT coalesce(sum(balance), 0)::bigint FROM accounts";
    let mut total = scalar(&mut cluster.coordinator.client(db), sum);
    for p in &cluster.peers {
        total += scalar(&mut p.client(db), sum);
    }
    total
}

/// dg's prepared transactions on the peers.
fn prepared(cluster: &Cluster, db: &str) -> i64 {
    cluster
        .peers
        .iter()
        .map(|p| {
            scalar(
                &mut p.client(db),
                "SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE 'dg\\_%'",
            )
        })
        .sum()
}

/// A coordinator (with `conf`) and the peers, all archiving their WAL.
fn archiving_cluster(conf: &str) -> Cluster {
    let mut coord_conf = vec![conf];
    coord_conf.extend(Node::ARCHIVING);
    Cluster {
        coordinator: Node::coordinator("coord", &coord_conf),
        peers: (1..=PEERS)
            .map(|i| Node::start(&format!("peer{i}"), &Node::ARCHIVING))
            .collect(),
    }
}

fn base_backups(cluster: &Cluster) {
    cluster.coordinator.base_backup();
    for p in &cluster.peers {
        p.base_backup();
    }
}

/// `dg.create_restore_point(POINT)`, as (node, lsn) rows.
fn create_restore_point(c: &mut Client) -> Vec<(Option<String>, String)> {
    c.query(
        "SELECT node, lsn::text FROM dg.create_restore_point($1)",
        &[&POINT],
    )
    .unwrap_or_else(|e| panic!("create_restore_point: {}", error_text(&e)))
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

/// Restores every node from its base backup to POINT (made at `points`):
/// the peers first, then `between` (the peers as restored, before the
/// coordinator's resolver can see them), then the coordinator.
fn restore_to_point(
    cluster: &Cluster,
    points: &[(Option<String>, String)],
    between: impl FnOnce(),
) {
    // Every point must be in the archive before the nodes go.
    cluster.coordinator.archive_through(&points[0].1);
    for (p, (_, lsn)) in cluster.peers.iter().zip(&points[1..]) {
        p.archive_through(lsn);
    }
    let name = format!("recovery_target_name = '{POINT}'");
    let target = [name.as_str(), "recovery_target_action = 'promote'"];
    for p in &cluster.peers {
        p.restore(&target);
    }
    between();
    cluster.coordinator.restore(&target);
}

#[test]
fn a_restore_of_every_node_to_the_point_is_consistent() {
    let cluster = archiving_cluster("dg.resolver_interval = '200ms'");
    let db = cluster.db("pitr");
    db.on_peers(&accounts_ddl());
    db.coord()
        .batch_execute(&format!(
            "{} CREATE TABLE after_point (at timestamptz);",
            accounts_ddl()
        ))
        .unwrap();
    base_backups(&cluster);

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (stop, committed) = (stop.clone(), committed.clone());
            let mut c = db.coord();
            thread::spawn(move || {
                let mut rng = Rng(0x5eed + w);
                while !stop.load(Ordering::Relaxed) {
                    let a = rng.below(PLACES as u64) as usize;
                    let b = (a + 1 + rng.below(PLACES as u64 - 1) as usize) % PLACES;
                    let id = 1 + rng.below(ACCOUNTS as u64) as i32;
                    let amount = 1 + rng.below(50) as i64;
                    transfer(&mut c, (a.min(b), a.max(b)), id, amount);
                    committed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let wait_for = |n: u64| {
        let since = committed.load(Ordering::Relaxed);
        assert!(
            wait_until(Duration::from_secs(30), || committed
                .load(Ordering::Relaxed)
                >= since + n),
            "the transfers stalled"
        );
    };

    wait_for(50);
    let mut c = db.coord();
    c.batch_execute("SET dg.fault = 'between_restore_points:1=sleep:1000'")
        .unwrap();
    let before = committed.load(Ordering::Relaxed);
    let points = create_restore_point(&mut c);
    let during = committed.load(Ordering::Relaxed) - before;
    c.batch_execute("INSERT INTO after_point VALUES (now())")
        .unwrap();
    wait_for(50);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("a writer failed");
    }
    let names: Vec<Option<&str>> = points.iter().map(|(n, _)| n.as_deref()).collect();
    assert_eq!(names, [None, Some("peer1"), Some("peer2")], "{points:?}");
    assert_eq!(
        total(&cluster, "pitr"),
        TOTAL,
        "the money before the restore"
    );
    println!(
        "{} transfers committed, {during} while the restore point was made; points {points:?}",
        committed.load(Ordering::Relaxed)
    );

    drop(c);
    let mut in_doubt = 0;
    let resolved_before = cluster.coordinator.log_count("dg resolver: ");
    // What was in doubt at the point, before the resolver can see it.
    restore_to_point(&cluster, &points, || in_doubt = prepared(&cluster, "pitr"));

    let mut c = db.coord();
    assert_eq!(
        scalar(&mut c, "SELECT count(*) FROM after_point"),
        0,
        "the coordinator was not restored to the point"
    );
    assert!(
        wait_until(Duration::from_secs(30), || prepared(&cluster, "pitr") == 0),
        "dg transactions stay prepared after the restore: {}",
        prepared(&cluster, "pitr")
    );
    let resolved = cluster.coordinator.log_count("dg resolver: ") - resolved_before;
    let restored = total(&cluster, "pitr");
    println!(
        "{in_doubt} prepared on the restored peers before the coordinator came back, \
         {resolved} finished by its resolver; total {restored} of {TOTAL}"
    );
    assert_eq!(restored, TOTAL, "the money after the restore");
}

/// A DT in doubt at the point (committed on peer1, still prepared on
/// peer2) that a resolver pass finishes while the point is being made,
/// after peer2's point and before the coordinator's. The pass forgets the
/// decision in the same transaction; that commit waits for the fence, so
/// the restored coordinator still has the decision, and its resolver
/// commits what the restored peer2 has prepared. Without the wait the
/// decision is gone at the coordinator's point and peer2's half is rolled
/// back (src/README.md, "Restore points").
#[test]
fn a_decision_forgotten_while_the_point_is_made_is_restored() {
    let cluster = archiving_cluster("dg.resolver_enabled = off");
    let db = cluster.db("pitr_forget");
    db.on_peers(&accounts_ddl());
    db.coord().batch_execute(&accounts_ddl()).unwrap();
    base_backups(&cluster);

    // The backend dies after peer1's COMMIT PREPARED: in doubt on peer2.
    let mut c = db.coord();
    c.batch_execute("SET dg.fault = 'between_finishes:1=exit'")
        .unwrap();
    let died = (|| {
        c.batch_execute("BEGIN")?;
        add(&mut c, 1, 1, -100)?;
        add(&mut c, 2, 1, 100)?;
        c.batch_execute("COMMIT")
    })();
    assert!(died.is_err(), "the COMMIT survived its fault");
    cluster.coordinator.wait_ready();
    assert_eq!(
        (db.prepared(1), db.prepared(2)),
        (0, 1),
        "in doubt on peer2"
    );

    let maker = {
        let mut c = db.coord();
        thread::spawn(move || {
            c.batch_execute("SET dg.fault = 'between_restore_points:2=sleep:3000'")
                .unwrap();
            create_restore_point(&mut c)
        })
    };
    // peer2's point is made once the maker's statement there is done.
    let made_on_peer2 = || {
        scalar(
            &mut db.peer(2),
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle' \
             AND query LIKE '%pg_create_restore_point%'",
        ) == 1
    };
    assert!(
        wait_until(Duration::from_secs(30), made_on_peer2),
        "no restore point on peer2"
    );
    let finished = scalar(
        &mut db.coord(),
        "SELECT count(*) FROM dg.recover() WHERE result = 'committed'",
    );
    let points = maker.join().expect("create_restore_point failed");
    assert_eq!(finished, 1, "the pass did not commit peer2's half");
    assert_eq!(db.prepared_all(), 0);

    restore_to_point(&cluster, &points, || {
        assert_eq!(
            db.prepared(2),
            1,
            "peer2 was restored without its prepared half"
        )
    });
    scalar(&mut db.coord(), "SELECT count(*) FROM dg.recover()");
    assert_eq!(db.prepared_all(), 0, "prepared after the restore");
    assert_eq!(
        total(&cluster, "pitr_forget"),
        TOTAL,
        "the money after the restore"
    );
}

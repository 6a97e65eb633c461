//! `dg.synchronous_finish = off` (README, "Settings"): COMMIT returns once
//! the decision is durable and every `COMMIT PREPARED` is sent, without
//! waiting for the answers. The session's next use of a node reads them
//! first, and a consistent snapshot taken meanwhile (by anyone) still sees
//! the DT on all of its nodes or on none, even while the session that
//! committed sits idle with its answers unread.
//!
//! A peer's COMMIT PREPARED is held back by stopping (SIGSTOP) the peer
//! backend that serves the committing session: the message waits in its
//! socket, the other peer has committed, and nothing else on that peer
//! is slowed.

use dg_tests::postgres::Client;
use dg_tests::{dist_exec, error_text, scalar, wait_until, Cluster, Db};
use std::process::Command;
use std::thread;
use std::time::Duration;

fn cluster() -> Cluster {
    // No periodic pass: only the snapshot's own question (or the session)
    // can find the finish done. `dg.recover()` (a pass) lists the nodes.
    Cluster::start_with(2, &["dg.resolver_interval = '1h'"])
}

fn bank(db: &Db) {
    db.on_peers(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts VALUES (1, 1000);",
    );
}

fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// The balances of both peers in one consistent snapshot.
fn snapshot_balances(c: &mut Client) -> Result<(i64, i64), dg_tests::postgres::Error> {
    let read = |c: &mut Client| -> Result<(i64, i64), dg_tests::postgres::Error> {
        c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT dg.dist_snapshot()")?;
        let mut b = [0i64; 2];
        for (i, v) in b.iter_mut().enumerate() {
            *v = c
                .query_one(
                    &format!(
                        "SELECT b FROM dg.dist_query('peer{}', 'SELECT balance FROM accounts WHERE id = 1') AS t(b bigint)",
                        i + 1
                    ),
                    &[],
                )?
                .get(0);
        }
        c.batch_execute("COMMIT")?;
        Ok((b[0], b[1]))
    };
    read(c).inspect_err(|_| {
        let _ = c.batch_execute("ROLLBACK");
    })
}

/// A COMMIT's thread: it gives back the session and the COMMIT's result.
type Committing = thread::JoinHandle<(Client, Result<(), String>)>;

/// Starts a transfer of 10 from peer1 to peer2 whose COMMIT (with
/// `dg.synchronous_finish = off`) sleeps after its local commit, stops the
/// peer2 backend serving it once the DT is prepared there, and returns
/// the COMMIT's thread (with the session and the COMMIT's result) and the
/// guard that resumes that backend.
fn stalled_commit(db: &Db) -> (Committing, Resume) {
    let mut c = db.coord();
    c.batch_execute(
        "SET dg.synchronous_finish = off; SET dg.fault = 'after_local_commit=sleep:1500'; BEGIN",
    )
    .unwrap();
    let sql = "UPDATE accounts SET balance = balance + $1 WHERE id = 1";
    dist_exec(&mut c, "peer1", sql, &["-10"]).unwrap();
    dist_exec(&mut c, "peer2", sql, &["10"]).unwrap();
    let pid = scalar(
        &mut c,
        "SELECT backend_pid::bigint FROM dg.connections() WHERE node = 'peer2'",
    ) as i32;
    // COMMIT sleeps after its local commit, before any COMMIT PREPARED.
    let commit = thread::spawn(move || {
        let r = c.batch_execute("COMMIT").map_err(|e| error_text(&e));
        let _ = c.batch_execute("RESET dg.fault");
        (c, r)
    });
    assert!(
        wait_until(Duration::from_secs(10), || db.prepared(2) == 1),
        "the DT never prepared on peer2"
    );
    signal(pid, "-STOP");
    (commit, Resume(pid))
}

#[test]
fn commit_does_not_wait_and_snapshots_still_see_all_or_nothing() {
    let cluster = cluster();
    let db = cluster.db("async_finish");
    bank(&db);
    // The reader's connections are open (and the nodes listed) before the
    // peer is stopped.
    let mut reader = db.coord();
    reader
        .batch_execute("SET dg.snapshot_timeout = '100ms'; SELECT count(*) FROM dg.recover()")
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || snapshot_balances(&mut reader)
            .is_ok()),
        "no snapshot: {:?}",
        snapshot_balances(&mut reader).err().map(|e| error_text(&e))
    );
    reader
        .batch_execute("SET dg.snapshot_timeout = '20s'")
        .unwrap();

    let (commit, resumed) = stalled_commit(&db);

    // COMMIT returns although peer2 cannot have answered.
    assert!(
        wait_until(Duration::from_secs(15), || commit.is_finished()),
        "COMMIT waited for the stopped peer"
    );
    let (mut writer, r) = commit.join().unwrap();
    assert_eq!(r, Ok(()), "COMMIT with dg.synchronous_finish = off");
    assert!(
        wait_until(Duration::from_secs(10), || db.prepared(1) == 0),
        "peer1 never committed"
    );
    assert_eq!(db.prepared(2), 1, "peer2 committed while stopped?");

    // A snapshot now must not read peer1's half alone: it waits for the
    // finish in flight (which nobody will read: the writer stays idle),
    // and sees the DT on both nodes once peer2 has it.
    let snap = thread::spawn(move || {
        let r = snapshot_balances(&mut reader).map_err(|e| error_text(&e));
        (reader, r)
    });
    let mut admin = db.coord();
    wait_until(Duration::from_secs(2), || {
        scalar(
            &mut admin,
            "SELECT count(*) FROM pg_stat_activity
              WHERE state = 'active' AND query LIKE '%dg.dist_snapshot()%' AND pid <> pg_backend_pid()",
        ) == 1
    });
    thread::sleep(Duration::from_millis(100));
    drop(resumed);
    let (mut reader, seen) = snap.join().unwrap();
    assert_eq!(
        seen,
        Ok((990, 1010)),
        "the snapshot read a half-finished DT"
    );
    assert_eq!(db.prepared_all(), 0, "nothing stays prepared");

    // The session's next DT on the node reads its answer first and sees
    // its own commit; its finish counted no failure.
    let b = scalar(
        &mut writer,
        "SELECT b FROM dg.dist_query('peer2', 'SELECT balance FROM accounts WHERE id = 1') AS t(b bigint)",
    );
    assert_eq!(b, 1010);
    let failures = scalar(&mut writer, "SELECT finish_failures FROM dg.stats");
    assert_eq!(failures, 0, "a late answer counted as a failure");
    assert_eq!(snapshot_balances(&mut reader).unwrap(), (990, 1010));
}

#[test]
fn the_sessions_next_dt_on_the_node_waits_for_the_answer() {
    let cluster = cluster();
    let db = cluster.db("async_next");
    bank(&db);
    let (commit, resumed) = stalled_commit(&db);
    let (mut c, r) = commit.join().unwrap();
    assert_eq!(r, Ok(()));
    // Peer2 still has it prepared; the read below must wait for the
    // answer, so it sees 1010, not 1000.
    assert_eq!(db.prepared(2), 1);
    let read = thread::spawn(move || {
        let b = scalar(
            &mut c,
            "SELECT b FROM dg.dist_query('peer2', 'SELECT balance FROM accounts WHERE id = 1') AS t(b bigint)",
        );
        (c, b)
    });
    thread::sleep(Duration::from_millis(300));
    drop(resumed);
    let (_c, b) = read.join().unwrap();
    assert_eq!(b, 1010, "the next DT did not see the session's own commit");
    assert_eq!(db.prepared_all(), 0);
}

/// Resumes the stopped backend when dropped, also when an assertion fails
/// (a stopped backend would keep the cluster from stopping).
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(self.0, "-CONT");
    }
}

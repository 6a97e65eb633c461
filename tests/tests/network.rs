//! Network faults between the coordinator and its peers (README, "Guarantees"), made
//! by a proxy on each link: a cut at every protocol message or byte count
//! leaves each transfer all-or-nothing once the network heals, and a black
//! hole (a link that accepts and never answers) makes a DT fail, or its
//! COMMIT return, within dg's timeouts instead of hanging.

use dg_tests::postgres::Client;
use dg_tests::proxy::{Mode, Proxy};
use dg_tests::{
    dist_exec, error_text, resolver_bound, scalar, shown_wait_event, version_num, wait_event_of,
    wait_until, Cluster, Db,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const INTERVAL: Duration = Duration::from_millis(200);
/// What each test session sets `dg.remote_statement_timeout` and
/// `dg.connect_timeout` to.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Slack for a busy machine on top of each bound dg sets itself.
const SLACK: Duration = Duration::from_secs(1);
/// Longest a wait on one silent peer may take: the error path (the client
/// has the error or the result) and the cleanup path (the session is
/// ready again) each.
const ONE_WAIT: Duration = TIMEOUT.saturating_add(SLACK);
/// Both paths together: README's "about 2 × the timeout plus 1 s".
const BOTH_WAITS: Duration = TIMEOUT.saturating_mul(2).saturating_add(SLACK);

fn cluster() -> Cluster {
    Cluster::start_with(2, &["dg.resolver_interval = '200ms'"])
}

/// Counted from the moment the link healed.
fn healed_within() -> Duration {
    // A pass that began while the link was down may first wait out a
    // connect or statement timeout of its own (the resolver's waits are
    // bounded by the cleanup deadline).
    resolver_bound(INTERVAL) + TIMEOUT
}

/// Both peers hold account 1 with 1000 and a ledger of transfer ids; both
/// nodes are reached through a proxy.
fn setup<'a>(cluster: &'a Cluster, name: &str) -> (Db<'a>, [Proxy; 2]) {
    let db = cluster.db(name);
    db.on_peers(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts VALUES (1, 1000);
         CREATE TABLE transfers (id bigint PRIMARY KEY);",
    );
    let proxies = [Proxy::for_peer(&db, 1), Proxy::for_peer(&db, 2)];
    (db, proxies)
}

/// A coordinator session whose WARNINGs are collected, with short remote
/// timeouts.
fn session(db: &Db) -> (Client, Arc<Mutex<Vec<String>>>) {
    let (mut client, warnings) = db.coord_with_notices();
    client
        .batch_execute(&format!(
            "SET dg.remote_statement_timeout = {}; SET dg.connect_timeout = {}",
            TIMEOUT.as_millis(),
            TIMEOUT.as_secs()
        ))
        .unwrap();
    (client, warnings)
}

const MOVE: &str = "WITH m AS (UPDATE accounts SET balance = balance + $2 WHERE id = 1)
                    INSERT INTO transfers VALUES ($1)";

/// Moves 10 from peer1 to peer2 as transfer `id`; Ok if COMMIT succeeded.
fn transfer(c: &mut Client, id: i64) -> Result<(), dg_tests::postgres::Error> {
    let id = id.to_string();
    c.batch_execute("BEGIN")?;
    dist_exec(c, "peer1", MOVE, &[&id, "-10"])?;
    dist_exec(c, "peer2", MOVE, &[&id, "10"])?;
    c.batch_execute("COMMIT")
}

fn has_transfer(db: &Db, i: usize, id: i64) -> bool {
    scalar(
        &mut db.peer(i),
        &format!("SELECT count(*) FROM transfers WHERE id = {id}"),
    ) == 1
}

/// After the network healed: no prepared transaction stays, transfer `id`
/// is on both peers or neither (both when `acked`), and no money was made
/// or lost. Returns whether it committed.
fn check_healed(db: &Db, id: i64, acked: bool, what: &str) -> bool {
    assert!(
        wait_until(healed_within(), || db.prepared_all() == 0),
        "{what}: prepared transactions left: {:?} {:?}",
        db.prepared_gids(1),
        db.prepared_gids(2)
    );
    let (on1, on2) = (has_transfer(db, 1, id), has_transfer(db, 2, id));
    assert_eq!(on1, on2, "{what}: transfer {id} is half committed");
    assert!(on1 || !acked, "{what}: acknowledged transfer {id} was lost");
    assert_eq!(db.balance(1, 1) + db.balance(2, 1), 2000, "{what}: money");
    on1
}

/// The messages dg sends a peer during a transfer, in order.
const MESSAGES: [&str; 5] = [
    "SET",
    "BEGIN",
    "WITH m",
    dg_tests::PREPARE,
    "COMMIT PREPARED",
];

#[test]
fn cut_at_each_message_is_all_or_nothing() {
    let cluster = cluster();
    let (db, proxies) = setup(&cluster, "cut_message");
    let mut id = 0;
    for link in [0, 1] {
        for prefix in MESSAGES {
            for deliver in [false, true] {
                id += 1;
                let what = format!("peer{} cut at {prefix:?}, delivered: {deliver}", link + 1);
                let fired = proxies[link].fired();
                proxies[link].at_message(prefix, deliver, Mode::Down);
                let acked = transfer(&mut session(&db).0, id).is_ok();
                // Soon after COMMIT returned, when its finish did not wait.
                assert!(
                    wait_until(ONE_WAIT, || proxies[link].fired() == fired + 1),
                    "{what}: no cut"
                );
                proxies[link].heal();
                let committed = check_healed(&db, id, acked, &what);
                // Once the decision is durable the DT commits; before, it
                // cannot.
                let decided = prefix == "COMMIT PREPARED";
                assert_eq!(acked, decided, "{what}: COMMIT result");
                assert_eq!(committed, decided, "{what}: outcome");
            }
        }
    }
}

/// Waits until nothing of earlier transfers can still cross the links: no
/// other session in this database on the coordinator, no dg session on
/// the peers.
fn wait_quiet(db: &Db) {
    let mut coord = db.coord();
    let quiet = wait_until(Duration::from_secs(10), || {
        scalar(
            &mut coord,
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND backend_type = 'client backend'",
        ) == 0
            && (1..=2).all(|i| {
                scalar(
                    &mut db.peer(i),
                    "SELECT count(*) FROM pg_stat_activity
                      WHERE datname = current_database() AND application_name LIKE 'dg:%'",
                ) == 0
            })
    });
    assert!(quiet, "sessions of earlier transfers linger");
}

/// One pass of recovery by hand (the resolver is off), from a session that
/// is gone before the next cut.
fn recover(db: &Db) {
    db.coord()
        .batch_execute("SELECT count(*) FROM dg.recover()")
        .unwrap();
    wait_quiet(db);
}

/// Cuts each link after n bytes of a transfer, for n across the bytes a
/// transfer sends over that link (measured first). Each cut fires inside
/// the transfer, and COMMIT succeeds exactly when the cut came after the
/// coordinator had the link's answer to PREPARE TRANSACTION (it could
/// decide); otherwise the transfer fails and is rolled back everywhere.
/// The resolver and the deadlock detector are off, so only the
/// transfer's own traffic crosses the links.
#[test]
fn cut_after_any_byte_count_is_all_or_nothing() {
    let cluster = Cluster::start_with(
        2,
        &[
            "dg.resolver_enabled = off",
            "dg.deadlock_check_interval = 0",
        ],
    );
    let (db, proxies) = setup(&cluster, "cut_bytes");
    let mut id = 1000;
    wait_quiet(&db);
    let before = [proxies[0].bytes(), proxies[1].bytes()];
    let (mut c, _) = session(&db);
    transfer(&mut c, id).expect("a transfer without faults");
    // The transfer's bytes, without those of the session's end. A finish
    // that does not wait (dg.synchronous_finish = off) has its answers
    // still on the way when COMMIT returns: count once the links are still.
    assert!(
        wait_until(Duration::from_secs(10), || {
            let b = [proxies[0].bytes(), proxies[1].bytes()];
            std::thread::sleep(Duration::from_millis(50));
            db.prepared_all() == 0 && b == [proxies[0].bytes(), proxies[1].bytes()]
        }),
        "the links never went still"
    );
    let totals = [
        proxies[0].bytes() - before[0],
        proxies[1].bytes() - before[1],
    ];
    drop(c);
    wait_quiet(&db);
    assert!(check_healed(&db, id, true, "no cut"));
    for (link, proxy) in proxies.iter().enumerate() {
        let peer = link + 1;
        let total = totals[link];
        let sent = |prefix, since| {
            proxy
                .sent(prefix, since)
                .unwrap_or_else(|| panic!("no {prefix} over the link to peer{peer}"))
        };
        let (prepare_at, prepare_len) = sent(dg_tests::PREPARE, before[link]);
        let (decided_at, _) = sent("COMMIT PREPARED", before[link]);
        eprintln!(
            "peer{peer}: {total} bytes, PREPARE at {prepare_at}, COMMIT PREPARED at {decided_at}"
        );
        // A later transfer can be a few bytes shorter than the one measured
        // (its session's pid in the startup packet, a balance losing a
        // digit), so the last cut leaves 8 bytes of the final answer.
        let mut cuts: Vec<u64> = (0..24).map(|k| k * total / 24).collect();
        cuts.extend([decided_at - 1, decided_at, decided_at + 1, total - 8]);
        let mut outcomes = [0, 0];
        for n in cuts {
            id += 1;
            let what = format!("peer{peer} cut after {n} of {total} bytes");
            wait_quiet(&db);
            let base = proxy.bytes();
            let fired = proxy.fired();
            proxy.after_bytes(n, Mode::Down);
            let (mut c, _) = session(&db);
            let acked = transfer(&mut c, id).is_ok();
            // After COMMIT returned, when its finish did not wait.
            assert!(
                wait_until(ONE_WAIT, || proxy.fired() == fired + 1),
                "{what}: the cut did not fire"
            );
            proxy.heal();
            drop(c);
            // Where this transfer's PREPARE answer ended: what precedes the
            // PREPARE varies (the session's pid is in its startup packet),
            // the PREPARE's own length with the GID's xid; its answer not.
            let decided = proxy
                .sent(dg_tests::PREPARE, base)
                .is_some_and(|(at, len)| {
                    n + prepare_at + prepare_len as u64 >= at + decided_at + len as u64
                });
            assert_eq!(acked, decided, "{what}: COMMIT result");
            wait_quiet(&db);
            recover(&db);
            assert_eq!(
                check_healed(&db, id, acked, &what),
                acked,
                "{what}: outcome"
            );
            outcomes[usize::from(acked)] += 1;
        }
        assert!(
            outcomes[0] > 0 && outcomes[1] > 0,
            "peer{peer}: cuts on one side of the decision only: {outcomes:?}"
        );
    }
}

/// Runs `f` on a thread and returns its result, or None if it has not
/// finished within `limit` (the thread is left behind: the test fails).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).ok()
}

/// Runs `stmt` on `c` behind a silent peer, then `SELECT 1`; returns the
/// result of `stmt` (its error as "SQLSTATE: text"), how long the client waited for
/// it (the error path) and how long the session then took to answer again
/// (the cleanup the backend did after answering). None if either hangs.
fn timed(mut c: Client, stmt: &'static str) -> Option<(Result<(), String>, Duration, Duration)> {
    within(BOTH_WAITS * 3, move || {
        let started = Instant::now();
        let r = c.batch_execute(stmt).map_err(|e| {
            let code = e.code().map_or("no SQLSTATE", |c| c.code());
            format!("{code}: {}", error_text(&e))
        });
        let answered = started.elapsed();
        c.batch_execute("SELECT 1").expect("the session is usable");
        (r, answered, started.elapsed() - answered)
    })
}

#[test]
fn black_hole_during_prepare_fails_within_the_timeouts() {
    let cluster = cluster();
    let (db, proxies) = setup(&cluster, "hole_prepare");
    let (mut c, _) = session(&db);
    c.batch_execute("BEGIN").unwrap();
    dist_exec(&mut c, "peer1", MOVE, &["1", "-10"]).unwrap();
    dist_exec(&mut c, "peer2", MOVE, &["1", "10"]).unwrap();
    // PREPARE goes into the hole, so does the cancel request that follows.
    proxies[1].set(Mode::BlackHole);
    let timed = timed(c, "COMMIT");
    proxies[1].heal();
    let (commit, error_path, cleanup) = timed.expect("COMMIT hangs behind a black hole");
    let err = commit.expect_err("COMMIT succeeded with a peer unreachable");
    assert!(err.contains("peer2"), "the error names the node: {err}");
    eprintln!("black hole at prepare: error after {error_path:?}, cleanup {cleanup:?}");
    assert!(
        error_path >= TIMEOUT,
        "failed before the timeout: {error_path:?}"
    );
    assert!(error_path < ONE_WAIT, "the error took {error_path:?}");
    assert!(cleanup < ONE_WAIT, "the cleanup took {cleanup:?}");
    assert!(error_path + cleanup < BOTH_WAITS);
    assert!(!check_healed(&db, 1, false, "black hole at prepare"));
}

/// The names of the threads of process `pid` (`comm` of each task).
fn threads_of(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks
                .flatten()
                .map(|t| {
                    std::fs::read_to_string(t.path().join("comm"))
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A cancel whose request goes into a black hole ends at the cleanup
/// deadline on both of dg's cancel paths. With libpq 17+ (a coordinator
/// on 17 or 18) it is a non-blocking cancel connection in the backend's
/// own latch wait, shown as `DgCleanup`: the backend never has a second
/// thread. With older libpq, `PQcancel` blocks, so it runs on a thread,
/// which stays behind, stuck, while the hole lasts.
#[test]
fn cancel_behind_a_black_hole_ends_at_the_deadline() {
    let cluster = cluster();
    let (db, proxies) = setup(&cluster, "hole_cancel");
    let (mut c, _) = session(&db);
    let pid = scalar(&mut c, "SELECT pg_backend_pid()::bigint") as i32;
    let version = version_num(&mut c);
    // Connected (and cached) while the link works.
    dist_exec(&mut c, "peer2", "SELECT 1", &[]).unwrap();
    // The statement reaches the peer; neither its answer nor the cancel
    // request after dg.remote_statement_timeout ever comes through.
    proxies[1].at_message("SELECT pg_sleep", true, Mode::BlackHole);
    let done = Arc::new(AtomicBool::new(false));
    let watching = {
        let done = done.clone();
        let mut watcher = db.coord();
        std::thread::spawn(move || {
            let (mut events, mut threads) = (Vec::new(), Vec::new());
            while !done.load(Ordering::SeqCst) {
                match wait_event_of(&mut watcher, pid) {
                    Some(event) if !events.contains(&event) => events.push(event),
                    _ => {}
                }
                threads.extend(threads_of(pid).into_iter().filter(|t| t == "dg cancel"));
                std::thread::sleep(Duration::from_millis(20));
            }
            (events, threads)
        })
    };
    // `timed`, but the session stays open until its threads are counted.
    let timed = within(BOTH_WAITS * 3, move || {
        let started = Instant::now();
        let r = c.batch_execute("SELECT dg.dist_exec('peer2', 'SELECT pg_sleep(30)')");
        let answered = started.elapsed();
        c.batch_execute("SELECT 1").expect("the session is usable");
        let cleanup = started.elapsed() - answered;
        (r, answered, cleanup, threads_of(pid), c)
    });
    done.store(true, Ordering::SeqCst);
    let (events, cancel_threads) = watching.join().unwrap();
    proxies[1].heal();
    let (r, error_path, cleanup, after, _c) = timed.expect("a cancel into a black hole hangs");
    let err = r.map_err(|e| {
        let code = e.code().map_or("no SQLSTATE", |c| c.code());
        format!("{code}: {}", error_text(&e))
    });
    let err = err.unwrap_err();
    assert!(err.starts_with("57014") && err.contains("peer2"), "{err}");
    eprintln!(
        "cancel into a black hole (server {version}): error after {error_path:?}, \
         cleanup {cleanup:?}, waits {events:?}, threads after {after:?}"
    );
    assert!(
        error_path >= TIMEOUT,
        "failed before the timeout: {error_path:?}"
    );
    assert!(error_path < ONE_WAIT, "the error took {error_path:?}");
    // The cleanup is the cancel, which waits out its deadline (the
    // timeout) and gives the connection up.
    assert!(cleanup < ONE_WAIT, "the cancel took {cleanup:?}");
    let cleanup_wait = (
        "Extension".to_string(),
        shown_wait_event(version, "DgCleanup"),
    );
    assert!(
        events.contains(&cleanup_wait),
        "no {cleanup_wait:?} in {events:?}"
    );
    if version >= 170000 {
        assert!(
            cancel_threads.is_empty(),
            "libpq 17+ cancels without a thread: {cancel_threads:?}"
        );
        assert_eq!(after.len(), 1, "threads of the backend: {after:?}");
    } else {
        assert!(
            after.iter().any(|t| t == "dg cancel"),
            "the blocking cancel's thread waits behind the hole: {after:?}"
        );
    }
    assert!(!check_healed(&db, 1, false, "cancel into a black hole"));
}

#[test]
fn black_hole_on_connect_fails_within_connect_timeout() {
    let cluster = cluster();
    let (db, proxies) = setup(&cluster, "hole_connect");
    proxies[1].set(Mode::BlackHole);
    let (c, _) = session(&db);
    let timed = timed(c, "SELECT dg.dist_exec('peer2', 'SELECT 1')");
    proxies[1].heal();
    let (r, error_path, cleanup) = timed.expect("connecting hangs behind a black hole");
    // Unreachable, like any peer that does not answer (class 08).
    let err = r.unwrap_err();
    assert!(
        err.starts_with("08001") && err.contains("dg.connect_timeout"),
        "{err}"
    );
    eprintln!("black hole at connect: error after {error_path:?}, cleanup {cleanup:?}");
    assert!(error_path < ONE_WAIT, "connecting took {error_path:?}");
    assert!(cleanup < ONE_WAIT, "the cleanup took {cleanup:?}");
    assert!(!check_healed(&db, 1, false, "black hole at connect"));
}

#[test]
fn black_hole_during_finish_warns_and_the_resolver_finishes() {
    let cluster = cluster();
    let (db, proxies) = setup(&cluster, "hole_finish");
    let (mut c, warnings) = session(&db);
    // With dg.synchronous_finish = off (make test's multinode-async stage)
    // COMMIT does not wait for the peer, and the resolver alone hears it.
    let waits = c
        .query_one("SHOW dg.synchronous_finish", &[])
        .unwrap()
        .get::<_, String>(0)
        == "on";
    proxies[1].at_message("COMMIT PREPARED", false, Mode::BlackHole);
    let commit = within(BOTH_WAITS * 3, move || {
        c.batch_execute("BEGIN")?;
        dist_exec(&mut c, "peer1", MOVE, &["1", "-10"])?;
        dist_exec(&mut c, "peer2", MOVE, &["1", "10"])?;
        // The finish is the cleanup path: COMMIT answers after it.
        let started = Instant::now();
        c.batch_execute("COMMIT").map(|()| started.elapsed())
    });
    let took = commit
        .expect("COMMIT hangs behind a black hole")
        .expect("COMMIT after the decision succeeds");
    eprintln!("black hole at finish: COMMIT took {took:?} (waits: {waits})");
    if waits {
        assert!(
            took >= TIMEOUT,
            "COMMIT did not wait for the peer: {took:?}"
        );
        assert!(took < ONE_WAIT, "COMMIT took {took:?}");
        let warned = warnings.lock().unwrap().clone();
        assert!(
            warned
                .iter()
                .any(|w| w.contains("commit") && w.contains("peer2")),
            "no WARNING naming the node: {warned:?}"
        );
    } else {
        assert!(took < TIMEOUT, "COMMIT waited for the peer: {took:?}");
    }
    // The held COMMIT PREPARED is lost with the link, so only the
    // resolver can finish peer2.
    proxies[1].set(Mode::Down);
    assert!(
        wait_until(ONE_WAIT, || has_transfer(&db, 1, 1)),
        "peer1 committed at once"
    );
    assert_eq!(
        db.prepared(2),
        1,
        "peer2 is in doubt while the link is down"
    );
    proxies[1].heal();
    assert!(check_healed(&db, 1, true, "black hole at finish"));
    assert!(
        cluster
            .coordinator
            .wait_log("dg resolver: commit", healed_within()),
        "the resolver finished it"
    );
}

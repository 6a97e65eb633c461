//! Network faults between the coordinator and its peers (DESIGN §7), made
//! by a proxy on each link: a cut at every protocol message or byte count
//! leaves each transfer all-or-nothing once the network heals, and a black
//! hole (a link that accepts and never answers) makes a DT fail, or its
//! COMMIT return, within dg's timeouts instead of hanging.

use dg_tests::postgres::{Client, Config, NoTls};
use dg_tests::proxy::{Mode, Proxy};
use dg_tests::{dist_exec, error_text, scalar, wait_until, Cluster, Db};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HEALED_WITHIN: Duration = Duration::from_secs(20);
/// What each test session sets `dg.remote_statement_timeout` to.
const REMOTE_TIMEOUT_MS: u64 = 1000;
/// Longest a failing or finishing COMMIT may take behind a black hole:
/// one remote wait to fail, one for the cleanup, and slack for a busy box.
const PROMPT: Duration = Duration::from_secs(8);

fn cluster() -> Cluster {
    Cluster::start_with(2, &["dg.resolver_interval = '200ms'"])
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
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let w = warnings.clone();
    let mut client = format!(
        "host=127.0.0.1 port={} user=postgres dbname={} application_name=dg-tests",
        db.cluster.coordinator.port, db.name
    )
    .parse::<Config>()
    .unwrap()
    .notice_callback(move |n| w.lock().unwrap().push(n.message().to_string()))
    .connect(NoTls)
    .expect("connect to the coordinator");
    client
        .batch_execute(&format!(
            "SET dg.remote_statement_timeout = {REMOTE_TIMEOUT_MS}; SET dg.connect_timeout = 1"
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
        wait_until(HEALED_WITHIN, || db.prepared_all() == 0),
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
    "PREPARE TRANSACTION",
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
                assert_eq!(proxies[link].fired(), fired + 1, "{what}: no cut");
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

#[test]
fn cut_after_any_byte_count_is_all_or_nothing() {
    let cluster = cluster();
    let (db, proxies) = setup(&cluster, "cut_bytes");
    let mut id = 0;
    for n in (0..4000).step_by(97) {
        for (link, proxy) in proxies.iter().enumerate() {
            id += 1;
            let what = format!("peer{} cut after {n} bytes", link + 1);
            proxy.after_bytes(n, Mode::Down);
            let acked = transfer(&mut session(&db).0, id).is_ok();
            proxy.heal();
            check_healed(&db, id, acked, &what);
        }
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
    let started = Instant::now();
    let commit = within(PROMPT * 3, move || {
        c.batch_execute("COMMIT").map_err(|e| error_text(&e))
    });
    let took = started.elapsed();
    proxies[1].heal();
    let commit = commit.expect("COMMIT hangs behind a black hole");
    let err = commit.expect_err("COMMIT succeeded with a peer unreachable");
    assert!(err.contains("peer2"), "the error names the node: {err}");
    assert!(took < PROMPT, "COMMIT took {took:?}");
    assert!(!check_healed(&db, 1, false, "black hole at prepare"));
}

#[test]
fn black_hole_on_connect_fails_within_connect_timeout() {
    let cluster = cluster();
    let (db, proxies) = setup(&cluster, "hole_connect");
    proxies[1].set(Mode::BlackHole);
    let (mut c, _) = session(&db);
    let started = Instant::now();
    let r = within(PROMPT * 3, move || {
        dist_exec(&mut c, "peer2", MOVE, &["1", "10"]).map_err(|e| e.code().cloned())
    });
    let took = started.elapsed();
    proxies[1].heal();
    let code = r
        .expect("connecting hangs behind a black hole")
        .unwrap_err();
    // Unreachable, like any peer that does not answer (class 08).
    assert_eq!(code.map(|c| c.code().to_string()).as_deref(), Some("08001"));
    assert!(took < PROMPT, "connecting took {took:?}");
    assert!(!check_healed(&db, 1, false, "black hole at connect"));
}

#[test]
fn black_hole_during_finish_warns_and_the_resolver_finishes() {
    let cluster = cluster();
    let (db, proxies) = setup(&cluster, "hole_finish");
    let (mut c, warnings) = session(&db);
    proxies[1].at_message("COMMIT PREPARED", false, Mode::BlackHole);
    let started = Instant::now();
    let commit = within(PROMPT * 3, move || {
        transfer(&mut c, 1).map_err(|e| e.to_string())
    });
    let took = started.elapsed();
    let commit = commit.expect("COMMIT hangs behind a black hole");
    assert_eq!(commit, Ok(()), "COMMIT after the decision succeeds");
    assert!(took < PROMPT, "COMMIT took {took:?}");
    let warned = warnings.lock().unwrap().clone();
    assert!(
        warned
            .iter()
            .any(|w| w.contains("commit") && w.contains("peer2")),
        "no WARNING naming the node: {warned:?}"
    );
    // The held COMMIT PREPARED is lost with the link, so only the
    // resolver can finish peer2.
    proxies[1].set(Mode::Down);
    assert!(has_transfer(&db, 1, 1), "peer1 committed at once");
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
            .wait_log("dg resolver: commit", HEALED_WITHIN),
        "the resolver finished it"
    );
}

//! Bad input that one pg_regress node cannot show (README, "Bad input"): a peer
//! with password authentication, peers that are down or are not
//! PostgreSQL, and a coordinator that is a hot standby. Each case must end
//! in a clear error with its SQLSTATE, leave nothing open or prepared on
//! the peers, and never print a password.

use dg_tests::{
    dist_exec, error_text, expect_sqlstate, free_port, scalar, sqlstate, wait_until, Cluster, Db,
};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The right and a wrong password of the peers' role `app`: distinctive,
/// so a grep of the logs cannot match anything else.
const PASSWORD: &str = "Dg-Correct-Horse-8d1f";
const WRONG_PASSWORD: &str = "Dg-Wrong-Battery-3c7e";

/// Peers ask every role but the harness's `postgres` for a password.
static CLUSTER: LazyLock<Cluster> = LazyLock::new(|| {
    let cluster = Cluster::start_with(2, &["log_min_messages = debug1"]);
    for peer in &cluster.peers {
        let mut c = peer.client("postgres");
        c.batch_execute(&format!("CREATE ROLE app LOGIN PASSWORD '{PASSWORD}'"))
            .expect("create role app");
        c.batch_execute("ALTER SYSTEM SET log_connections = on")
            .expect("log connections");
        peer.set_hba(
            "local all all trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        );
    }
    cluster
});

/// A database with `accounts(id, balance)` on both peers, account 1
/// holding 1000, writable by `app`.
fn bank(name: &str) -> Db<'static> {
    let db = CLUSTER.db(name);
    db.on_peers(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts VALUES (1, 1000);
         GRANT ALL ON accounts TO app;",
    );
    db
}

/// Nothing is prepared on the peers, no dg session holds a transaction
/// open, and account 1 still holds 1000 everywhere.
#[track_caller]
fn assert_untouched(db: &Db) {
    for i in 1..=2 {
        assert_eq!(db.prepared(i), 0, "prepared on peer{i}");
        assert!(
            wait_until(Duration::from_secs(5), || db.busy_dg_sessions(i) == 0),
            "dg session still busy on peer{i}"
        );
        assert_eq!(db.balance(i, 1), 1000, "peer{i} kept a write");
    }
}

#[track_caller]
fn assert_no_password(what: &str, text: &str) {
    for pw in [PASSWORD, WRONG_PASSWORD] {
        assert!(!text.contains(pw), "{what} shows a password:\n{text}");
    }
}

#[test]
fn wrong_password_and_no_password_anywhere() {
    let db = bank("passwords");
    let mut c = db.coord();
    c.batch_execute(&format!(
        "CREATE ROLE alice;
         GRANT USAGE ON FOREIGN SERVER peer1, peer2 TO alice;
         CREATE USER MAPPING FOR alice SERVER peer1 OPTIONS (user 'app', password '{WRONG_PASSWORD}');
         CREATE USER MAPPING FOR alice SERVER peer2 OPTIONS (user 'app', password '{PASSWORD}');
         SET ROLE alice;"
    ))
    .unwrap();

    // The peer asked for the password and refused it: 08001, naming the
    // node, and the DT rolls back on the other peer.
    c.batch_execute("BEGIN").unwrap();
    dist_exec(
        &mut c,
        "peer2",
        "UPDATE accounts SET balance = 0 WHERE id = 1",
        &[],
    )
    .unwrap();
    let e = expect_sqlstate(dist_exec(&mut c, "peer1", "SELECT 1", &[]), "08001");
    let text = error_text(&e);
    assert!(
        text.contains("peer1") && text.contains("password authentication failed"),
        "{text}"
    );
    assert_no_password("the wrong-password error", &text);
    c.batch_execute("ROLLBACK").unwrap();
    assert_untouched(&db);

    // With the right one the peer lets alice in; her remote errors and a
    // lost connection say nothing of it either.
    c.batch_execute(&format!(
        "RESET ROLE;
         ALTER USER MAPPING FOR alice SERVER peer1 OPTIONS (SET password '{PASSWORD}');
         SET ROLE alice;"
    ))
    .unwrap();
    let who: String = c
        .query_one(
            "SELECT u FROM dg.dist_query('peer1', 'SELECT current_user') AS t(u name)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(who, "app");
    let e = expect_sqlstate(dist_exec(&mut c, "peer1", "SELEC 1", &[]), "42601");
    assert_no_password("a remote error", &error_text(&e));
    let e = expect_sqlstate(
        dist_exec(
            &mut c,
            "peer1",
            "SELECT pg_terminate_backend(pg_backend_pid())",
            &[],
        ),
        "08006",
    );
    assert_no_password("a lost connection", &error_text(&e));

    for role in ["alice", "postgres"] {
        c.batch_execute(&format!("SET ROLE {role}")).unwrap();
        dist_exec(&mut c, "peer2", "SELECT 1", &[]).unwrap();
        let nodes: String = c
            .query_one("SELECT string_agg(n::text, ' ') FROM dg.nodes n", &[])
            .unwrap()
            .get(0);
        assert_no_password("dg.nodes", &nodes);
        let conns: String = c
            .query_one(
                "SELECT coalesce(string_agg(c::text, ' '), '') FROM dg.connections() c",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(conns.contains("peer2"), "{conns}");
        assert_no_password("dg.connections()", &conns);
    }
    drop(c);
    assert_untouched(&db);

    let cluster = &*CLUSTER;
    for node in [&cluster.coordinator, &cluster.peers[0]] {
        assert!(
            node.log().contains("password authentication failed"),
            "{} logged no failed authentication: is the test reading the right log?",
            node.name
        );
    }
    for node in std::iter::once(&cluster.coordinator).chain(&cluster.peers) {
        assert_no_password(&format!("the log of {}", node.name), &node.log());
    }
}

/// What a fake server on a loopback port does with each connection.
#[derive(Clone, Copy)]
enum Fake {
    /// Closes it at once.
    Close,
    /// Answers with something that is not the PostgreSQL protocol.
    Garbage,
    /// Accepts it and never says a word.
    Silent,
}

/// A listener that is not PostgreSQL, serving `fake` on its own thread
/// until the test process ends; returns its port.
fn fake_server(fake: Fake) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut silent: Vec<TcpStream> = Vec::new();
        for mut stream in listener.incoming().flatten() {
            match fake {
                Fake::Close => drop(stream),
                Fake::Garbage => {
                    let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                }
                Fake::Silent => silent.push(stream),
            }
        }
    });
    port
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A node's own `connect_timeout` option bounds the connect when it is
/// shorter than `dg.connect_timeout` (libpq enforces it only when it
/// blocks, and dg never does): `dg.check_node()` on a silent port answers
/// in about 2 s, not 30.
#[test]
fn check_node_honours_the_nodes_connect_timeout() {
    let db = bank("option_timeout");
    let mut c = db.coord();
    let port = fake_server(Fake::Silent);
    c.batch_execute(&format!(
        "CREATE SERVER silent_2s FOREIGN DATA WRAPPER dg
             OPTIONS (host '127.0.0.1', port '{port}', dbname 'x', connect_timeout '2');
         CREATE USER MAPPING FOR PUBLIC SERVER silent_2s OPTIONS (user 'postgres');
         SET dg.connect_timeout = '30s'"
    ))
    .unwrap();
    let started = Instant::now();
    let row = c
        .query_one(
            "SELECT ok, detail FROM dg.check_node('silent_2s') WHERE \"check\" = 'connect'",
            &[],
        )
        .unwrap();
    let took = started.elapsed();
    let (ok, detail): (Option<bool>, String) = (row.get(0), row.get(1));
    assert_eq!(ok, Some(false), "{detail}");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "took {took:?}"
    );
    assert!(detail.contains("the node's connect_timeout"), "{detail}");
}

#[test]
fn unreachable_peers_fail_within_connect_timeout() {
    let db = bank("unreachable");
    let mut c = db.coord();
    let cases = [
        ("down", free_port()),
        ("closes", fake_server(Fake::Close)),
        ("garbage", fake_server(Fake::Garbage)),
        ("silent", fake_server(Fake::Silent)),
    ];
    for (name, port) in cases {
        c.batch_execute(&format!(
            "CREATE SERVER {name} FOREIGN DATA WRAPPER dg
                 OPTIONS (host '127.0.0.1', port '{port}', dbname 'x');
             CREATE USER MAPPING FOR PUBLIC SERVER {name} OPTIONS (user 'postgres');"
        ))
        .unwrap();
    }
    c.batch_execute(&format!(
        "SET dg.connect_timeout = '{}s'",
        CONNECT_TIMEOUT.as_secs()
    ))
    .unwrap();
    for (name, _) in cases {
        c.batch_execute("BEGIN").unwrap();
        dist_exec(
            &mut c,
            "peer1",
            "UPDATE accounts SET balance = 0 WHERE id = 1",
            &[],
        )
        .unwrap();
        // The error path (the client has the error) and the cleanup path
        // (the session is ready again) are each bounded by the timeout
        // plus 1 s of slack for a busy machine.
        let bound = CONNECT_TIMEOUT + Duration::from_secs(1);
        let started = Instant::now();
        let e = expect_sqlstate(dist_exec(&mut c, name, "SELECT 1", &[]), "08001");
        let took = started.elapsed();
        assert!(took < bound, "{name}: the error took {took:?}");
        let text = error_text(&e);
        assert!(
            text.contains(&format!("could not connect to node \"{name}\"")),
            "{name}: {text}"
        );
        if name == "silent" {
            assert!(
                took >= Duration::from_millis(900),
                "ended before dg.connect_timeout: {took:?}"
            );
            assert!(text.contains("dg.connect_timeout"), "{text}");
        }
        let started = Instant::now();
        c.batch_execute("ROLLBACK").unwrap();
        let cleanup = started.elapsed();
        assert!(cleanup < bound, "{name}: the rollback took {cleanup:?}");
        assert_untouched(&db);
    }
    // The session is fine afterwards.
    assert_eq!(
        scalar(&mut c, "SELECT dg.dist_exec('peer1', 'SELECT 1')"),
        1
    );
}

#[test]
fn hot_standby_runs_dts_read_only() {
    let db = bank("standby");
    let standby = CLUSTER.coordinator.standby(
        "standby",
        &["shared_preload_libraries = 'dg'", "hot_standby = on"],
    );
    let mut s = standby.client(&db.name);
    assert_eq!(
        scalar(&mut s, "SELECT pg_is_in_recovery()::int::bigint"),
        1,
        "not a standby"
    );
    // Reads work, on one node or several, in a block or a session DT.
    let balance: i64 = s
        .query_one(
            "SELECT b FROM dg.dist_query('peer1', 'SELECT balance FROM accounts WHERE id = 1') AS t(b bigint)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(balance, 1000);
    s.batch_execute(
        "BEGIN;
         SELECT dg.dist_exec('peer1', 'SELECT 1');
         SELECT dg.dist_exec('peer2', 'SELECT 1');
         COMMIT;
         SELECT dg.dist_begin();
         SELECT dg.dist_exec('peer1', 'SELECT 1');
         SELECT dg.dist_exec('peer2', 'SELECT 1');
         SELECT dg.dist_commit();",
    )
    .unwrap();

    // A write is refused by the peer, which dg began READ ONLY, and the
    // error says why.
    s.batch_execute("BEGIN").unwrap();
    let e = expect_sqlstate(
        dist_exec(
            &mut s,
            "peer1",
            "UPDATE accounts SET balance = 0 WHERE id = 1",
            &[],
        ),
        "25006",
    );
    let text = error_text(&e);
    assert!(
        text.contains("hot standby") && text.contains("peer1"),
        "{text}"
    );
    s.batch_execute("ROLLBACK").unwrap();

    // Recovery is the primary's: the standby sees its transactions late.
    let e = expect_sqlstate(s.query("SELECT * FROM dg.recover()", &[]), "55000");
    assert!(error_text(&e).contains("hot standby"), "{e:?}");
    expect_sqlstate(s.query("SELECT * FROM dg.in_doubt", &[]), "55000");
    drop(s);
    assert_untouched(&db);
    standby.stop();
}

/// A backend out of descriptors refuses the next connection with 08001
/// and says why, never with a bare "epoll_create1 failed" (XX000); the
/// session goes on, and nothing stays open or prepared. Each peer
/// connection holds two of the backend's descriptors (its socket and its
/// wait set), so the budget runs out at one or the other by its parity: a
/// dblink connection held in the second session takes one more, so one
/// of the two sessions runs out at each.
#[test]
fn a_backend_out_of_descriptors_refuses_the_next_connection() {
    // About 19 descriptors of that kind per backend: a third of what fd.c
    // keeps after its reserve.
    let cluster = Cluster::start_with(
        1,
        &["max_files_per_process = 75", "dg.resolver_enabled = off"],
    );
    let db = cluster.db("out_of_fds");
    let port = cluster.peers[0].port;
    let nodes: Vec<String> = (1..=40).map(|n| format!("n{n}")).collect();
    let mut setup = db.coord();
    setup.batch_execute("CREATE EXTENSION dblink").unwrap();
    for node in &nodes {
        setup
            .batch_execute(&format!(
                "CREATE SERVER {node} FOREIGN DATA WRAPPER dg
                     OPTIONS (host '127.0.0.1', port '{port}', dbname 'out_of_fds');
                 CREATE USER MAPPING FOR PUBLIC SERVER {node} OPTIONS (user 'postgres');"
            ))
            .unwrap();
    }
    for hold_dblink in [false, true] {
        let mut c = db.coord();
        if hold_dblink {
            c.batch_execute(&format!(
                "SELECT dblink_connect('held', 'host=127.0.0.1 port={port} dbname=out_of_fds user=postgres')"
            ))
            .unwrap();
        }
        c.batch_execute("BEGIN").unwrap();
        let mut opened = 0;
        let e = loop {
            let node = nodes
                .get(opened)
                .expect("40 connections fit in one backend's descriptors");
            match c.execute("SELECT dg.dist_exec($1, 'SELECT 1')", &[node]) {
                Ok(_) => opened += 1,
                Err(e) => break e,
            }
        };
        let text = error_text(&e);
        assert_eq!(
            sqlstate(&e),
            Some("08001"),
            "after {opened} connections: {text}"
        );
        assert!(
            text.contains("too many open files in this backend"),
            "{text}"
        );
        c.batch_execute("ROLLBACK").unwrap();
        assert_eq!(scalar(&mut c, "SELECT 1::bigint"), 1);
    }
    assert!(
        wait_until(Duration::from_secs(5), || db.busy_dg_sessions(1) == 0),
        "a dg session still busy on the peer"
    );
    assert_eq!(db.prepared(1), 0);
}

//! Crashes at every fault point of the commit protocol (DESIGN §7): each
//! transfer ends committed on both peers or on neither, a COMMIT the
//! client saw succeed is committed everywhere, and no prepared transaction
//! remains once the resolver has run, with no client connected.
//!
//! Needs a dg built with the `fault_injection` feature (`make test` does).

use dg_tests::{dist_exec, wait_until, Cluster, Db};
use std::time::Duration;

const POINTS: [&str; 5] = [
    "before_prepare",
    "after_prepare:1",
    "after_decision",
    "after_local_commit",
    "between_finishes:1",
];

#[derive(Clone, Copy, Debug)]
enum Kill {
    /// The coordinator backend dies; the server restarts its backends.
    Backend,
    /// The whole coordinator server dies and is started again.
    Server,
    /// Peer 2 dies at the fault point and is started again.
    Peer,
}

fn cluster() -> Cluster {
    Cluster::start_with(2, &["dg.resolver_interval = '200ms'"])
}

/// One transfer of 100 from peer1 to peer2 with `fault` armed; returns
/// whether COMMIT succeeded.
fn transfer(db: &Db, fault: &str) -> bool {
    let mut c = db.coord();
    c.batch_execute(&format!("SET dg.fault = '{fault}'"))
        .unwrap();
    c.batch_execute("BEGIN").is_ok()
        && dist_exec(
            &mut c,
            "peer1",
            "UPDATE accounts SET balance = balance - 100 WHERE id = 1",
            &[],
        )
        .is_ok()
        && dist_exec(
            &mut c,
            "peer2",
            "UPDATE accounts SET balance = balance + 100 WHERE id = 1",
            &[],
        )
        .is_ok()
        && c.batch_execute("COMMIT").is_ok()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn run(kill: Kill) {
    let cluster = cluster();
    for (n, point) in POINTS.iter().enumerate() {
        let db = cluster.db(&format!("fault_{n}"));
        db.on_peers("CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL); INSERT INTO accounts VALUES (1, 1000);");
        let committed = match kill {
            Kill::Backend => {
                let ok = transfer(&db, &format!("{point}=exit"));
                cluster.coordinator.wait_ready();
                ok
            }
            Kill::Server => {
                let ok = transfer(&db, &format!("{point}=crash"));
                cluster.coordinator.start_again();
                ok
            }
            Kill::Peer => {
                let peer2 = &cluster.peers[1];
                let sleeps = cluster.coordinator.log_count("dg: fault Sleep");
                let ok = std::thread::scope(|s| {
                    let t = s.spawn(|| transfer(&db, &format!("{point}=sleep:1500")));
                    // Kill peer2 while the coordinator sleeps at the point.
                    assert!(
                        wait_until(Duration::from_secs(10), || cluster
                            .coordinator
                            .log_count("dg: fault Sleep")
                            > sleeps),
                        "{point}: the coordinator never reached the point"
                    );
                    peer2.kill9();
                    t.join().unwrap()
                });
                peer2.start_again();
                ok
            }
        };
        // No client of the coordinator is open here: the resolver alone
        // finishes what the crash left.
        assert!(
            wait_until(Duration::from_secs(30), || db.prepared_all() == 0),
            "{kill:?} at {point}: prepared transactions left: {:?} {:?}\ncoordinator log:\n{}",
            db.prepared_gids(1),
            db.prepared_gids(2),
            tail(&cluster.coordinator.log())
        );
        let balances = (db.balance(1, 1), db.balance(2, 1));
        assert!(
            balances == (900, 1100) || balances == (1000, 1000),
            "{kill:?} at {point}: half-committed transfer {balances:?}"
        );
        if committed {
            assert_eq!(
                balances,
                (900, 1100),
                "{kill:?} at {point}: acknowledged commit lost"
            );
        }
        eprintln!("{kill:?} at {point}: committed={committed} balances={balances:?}");
    }
}

#[test]
fn coordinator_backend_killed_at_every_point() {
    run(Kill::Backend);
}

#[test]
fn coordinator_server_killed_at_every_point() {
    run(Kill::Server);
}

#[test]
fn peer_killed_at_every_point() {
    run(Kill::Peer);
}

//! Issue 13: nothing a script can observe differs between running its
//! statements with `dg.dist_exec` and with `dg.dist_send`, except when an
//! error is raised. Random scripts on three nodes (inserts that may
//! violate a key, divisions by zero, savepoints, rollbacks to them,
//! PL/pgSQL exception blocks, reads, COMMIT or ROLLBACK) run once each
//! way; every node's final state, what each read saw and how the
//! transaction ended (committed, or rolled back with which SQLSTATE) must
//! be the same.
//!
//! Seeded: the seed is printed, and `DG_SEED=<n>` replays a run;
//! `DG_SCRIPTS` sets how many scripts (default 300).

use dg_tests::postgres::Client;
use dg_tests::{sqlstate, Cluster, Rng};

const NODES: [&str; 3] = ["peer1", "peer2", "peer3"];

/// A node to run a statement on.
trait PickNode {
    fn node(&mut self) -> &'static str;
}

impl PickNode for Rng {
    fn node(&mut self) -> &'static str {
        NODES[self.below(3) as usize]
    }
}

#[derive(Debug, Clone)]
enum Stmt {
    /// Keys 1 and 2 exist before each script: may violate the key.
    Insert(&'static str, u32),
    Delete(&'static str, u32),
    DivZero(&'static str),
}

#[derive(Debug, Clone)]
enum Step {
    Stmt(Stmt),
    Savepoint(u32),
    Release(u32),
    RollbackTo(u32),
    /// A DO block with an exception handler for `catches`.
    Block(Vec<Stmt>, &'static str),
    Read(&'static str),
}

#[derive(Debug)]
struct Script {
    steps: Vec<Step>,
    commit: bool,
}

impl Script {
    /// One step a line, for the failure message.
    fn show(&self) -> String {
        let mut out: String = self.steps.iter().map(|s| format!("  {s:?}\n")).collect();
        out += if self.commit {
            "  COMMIT"
        } else {
            "  ROLLBACK"
        };
        out
    }
}

fn stmt(rng: &mut Rng) -> Stmt {
    match rng.below(10) {
        0..=5 => Stmt::Insert(rng.node(), 1 + rng.below(8) as u32),
        6..=7 => Stmt::Delete(rng.node(), 1 + rng.below(8) as u32),
        _ => Stmt::DivZero(rng.node()),
    }
}

fn script(rng: &mut Rng) -> Script {
    let mut steps = Vec::new();
    let mut savepoints: Vec<u32> = Vec::new();
    let mut next_sp = 0;
    for _ in 0..2 + rng.below(12) {
        let step = match rng.below(20) {
            0..=8 => Step::Stmt(stmt(rng)),
            9..=10 => {
                next_sp += 1;
                savepoints.push(next_sp);
                Step::Savepoint(next_sp)
            }
            11..=12 if !savepoints.is_empty() => {
                let i = rng.below(savepoints.len() as u64) as usize;
                let sp = savepoints[i];
                savepoints.truncate(i);
                Step::Release(sp)
            }
            13..=14 if !savepoints.is_empty() => {
                let i = rng.below(savepoints.len() as u64) as usize;
                let sp = savepoints[i];
                savepoints.truncate(i + 1);
                Step::RollbackTo(sp)
            }
            15..=17 => {
                let body = (0..1 + rng.below(3)).map(|_| stmt(rng)).collect();
                let catches =
                    ["others", "unique_violation", "division_by_zero"][rng.below(3) as usize];
                Step::Block(body, catches)
            }
            _ => Step::Read(rng.node()),
        };
        steps.push(step);
    }
    Script {
        steps,
        commit: rng.below(5) != 0,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Exec,
    Send,
}

fn call(mode: Mode, s: &Stmt) -> String {
    let f = match mode {
        Mode::Exec => "dg.dist_exec",
        Mode::Send => "dg.dist_send",
    };
    match s {
        Stmt::Insert(n, k) => format!("{f}('{n}', 'INSERT INTO t VALUES ($1)', '{k}')"),
        Stmt::Delete(n, k) => format!("{f}('{n}', 'DELETE FROM t WHERE k = $1', '{k}')"),
        Stmt::DivZero(n) => format!("{f}('{n}', 'SELECT 1/0')"),
    }
}

/// What a client sees of one run.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// Each read's (count, sum) of keys, or the SQLSTATE of the error that
    /// doomed the transaction by then.
    reads: Vec<Result<(i64, i64), String>>,
    /// None: committed. Some(code): rolled back because of `code` (empty
    /// for a script that ends in ROLLBACK).
    rolled_back: Option<String>,
    /// Every node's keys afterwards.
    state: Vec<String>,
}

fn code(e: &dg_tests::postgres::Error) -> String {
    sqlstate(e).unwrap_or("(no sqlstate)").to_string()
}

fn run(c: &mut Client, peers: &mut [Client], s: &Script, mode: Mode) -> Seen {
    for p in peers.iter_mut() {
        p.batch_execute("TRUNCATE t; INSERT INTO t VALUES (1), (2)")
            .expect("reset");
    }
    // The error that dooms the transaction, as the client tracks it: the
    // first error, forgotten when a ROLLBACK TO succeeds.
    let mut doom: Option<String> = None;
    let mut reads = Vec::new();
    let exec = |c: &mut Client, sql: &str, doom: &mut Option<String>| -> bool {
        match c.batch_execute(sql) {
            Ok(()) => true,
            Err(e) => {
                doom.get_or_insert_with(|| code(&e));
                false
            }
        }
    };
    exec(c, "BEGIN", &mut doom);
    for step in &s.steps {
        match step {
            Step::Stmt(st) => {
                exec(c, &format!("SELECT {}", call(mode, st)), &mut doom);
            }
            Step::Savepoint(n) => {
                exec(c, &format!("SAVEPOINT s{n}"), &mut doom);
            }
            Step::Release(n) => {
                exec(c, &format!("RELEASE s{n}"), &mut doom);
            }
            Step::RollbackTo(n) => {
                if exec(c, &format!("ROLLBACK TO s{n}"), &mut doom) {
                    doom = None;
                }
            }
            Step::Block(body, catches) => {
                let body: String = body
                    .iter()
                    .map(|st| format!("PERFORM {};\n", call(mode, st)))
                    .collect();
                let sql = format!("DO $$ BEGIN\n{body}EXCEPTION WHEN {catches} THEN NULL; END $$");
                exec(c, &sql, &mut doom);
            }
            Step::Read(n) => {
                // A script that reads after sending syncs first.
                let sync = match mode {
                    Mode::Send => "SELECT count(*) FROM dg.dist_sync();",
                    Mode::Exec => "",
                };
                let q = format!(
                    "{sync}SELECT count(*), coalesce(sum(k), 0)::bigint FROM \
                     dg.dist_query('{n}', 'SELECT k FROM t') AS x(k int)"
                );
                let r = match c.simple_query(&q) {
                    Ok(msgs) => {
                        let row = msgs
                            .iter()
                            .filter_map(|m| match m {
                                dg_tests::postgres::SimpleQueryMessage::Row(r) => Some(r),
                                _ => None,
                            })
                            .last()
                            .expect("a row");
                        let v = |i| row.get(i).unwrap().parse::<i64>().unwrap();
                        Ok((v(0), v(1)))
                    }
                    // The transaction is doomed: by what, not when, is
                    // what both ways agree on.
                    Err(e) => Err(doom.get_or_insert_with(|| code(&e)).clone()),
                };
                reads.push(r);
            }
        }
    }
    let rolled_back = if s.commit {
        match c.batch_execute("COMMIT") {
            Ok(()) => doom,
            Err(e) => Some(doom.unwrap_or_else(|| code(&e))),
        }
    } else {
        c.batch_execute("ROLLBACK").expect("ROLLBACK");
        Some(String::new())
    };
    // The server sends a failed COMMIT's error before it aborts (and dg
    // rolls back what it prepared), and the client returns on the error:
    // the next statement waits until the session is ready, the abort done.
    c.batch_execute("SELECT 1").expect("after the transaction");
    let state = peers
        .iter_mut()
        .map(|p| {
            p.query_one(
                "SELECT coalesce(string_agg(k::text, ',' ORDER BY k), '') || \
                 CASE WHEN (SELECT count(*) FROM pg_prepared_xacts) > 0 THEN ' +prepared' ELSE '' END \
                 FROM t",
                &[],
            )
            .expect("state")
            .get(0)
        })
        .collect();
    Seen {
        reads,
        rolled_back,
        state,
    }
}

#[test]
fn dist_send_is_observably_dist_exec() {
    let seed = std::env::var("DG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    let scripts: usize = std::env::var("DG_SCRIPTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    eprintln!("send_differential: DG_SEED={seed} DG_SCRIPTS={scripts}");
    let cluster = Cluster::start_with(3, &["dg.resolver_enabled = off"]);
    let db = cluster.db("differential");
    db.on_peers("CREATE TABLE t (k int PRIMARY KEY)");
    let mut c = db.coord();
    let mut peers: Vec<Client> = (1..=3).map(|i| db.peer(i)).collect();
    let mut rng = Rng(seed);
    let (mut committed, mut failed) = (0, 0);
    for i in 0..scripts {
        let s = script(&mut rng);
        let by_exec = run(&mut c, &mut peers, &s, Mode::Exec);
        let by_send = run(&mut c, &mut peers, &s, Mode::Send);
        assert_eq!(
            by_exec,
            by_send,
            "script {i} of DG_SEED={seed} differs (left: dist_exec, right: dist_send):\n{}",
            s.show()
        );
        match by_exec.rolled_back {
            None => committed += 1,
            Some(ref code) if !code.is_empty() => failed += 1,
            Some(_) => {}
        }
    }
    eprintln!("send_differential: {scripts} scripts agree ({committed} committed, {failed} rolled back by an error)");
    // The generator must exercise both ends, or the comparison proves little.
    assert!(
        committed > 0 && failed > 0,
        "scripts too uniform: {committed} committed, {failed} failed"
    );
}

//! The chaos bank (README, "Guarantees"): clients move random amounts between
//! accounts on three peers through dg while a driver kills the coordinator
//! server, kills and restarts peers, and cuts, black-holes, delays and heals
//! the links through proxies, and readers sum every peer's balances in
//! consistent snapshots (`dg.dist_snapshot()`): each read must see the
//! exact total (every transfer is one DT, so the total never moves) or
//! fail, never a wrong sum. Afterwards: the total money is unchanged,
//! every transfer is on both its peers or neither, every acknowledged one
//! is on both, each peer's balances match its ledger, no prepared
//! transaction is left shortly after the faults stop, and a consistent
//! snapshot can be taken again.
//!
//! `DG_CHAOS_SECONDS` (default 30) is the least running time and
//! `DG_CHAOS_FAULTS` (default 0) the least number of faults; the run goes
//! on until both are reached. `DG_CHAOS_SEED` replays a run's choices (the
//! timing still differs). `make chaos` runs the long version.

use dg_tests::postgres::{Client, NoTls};
use dg_tests::proxy::{Mode, Proxy};
use dg_tests::{
    dist_exec, read_total, resolver_bound, scalar, wait_until, Cluster, Db, Reads, Rng,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

const PEERS: usize = 3;
const ACCOUNTS: i32 = 8;
const START_BALANCE: i64 = 1000;
/// The bank's money, in every consistent snapshot.
const TOTAL: i64 = PEERS as i64 * ACCOUNTS as i64 * START_BALANCE;
const CLIENTS: u64 = 4;
/// Sessions taking consistent snapshots all the time.
const READERS: u64 = 2;
const RESOLVER_INTERVAL_MS: u64 = 500;
/// dg's connect and remote statement timeouts here.
const TIMEOUT: Duration = Duration::from_secs(2);
/// `dg.snapshot_timeout` here: about two resolver passes, so a snapshot
/// behind a DT in doubt sometimes sees the resolver finish it and
/// sometimes gives up (55P03); both paths run.
const SNAPSHOT_TIMEOUT: &str = "dg.snapshot_timeout = '1s'";

/// How long after the faults stop the last prepared transaction may stay:
/// the resolver's bound, plus a pass that was waiting on a link when it
/// healed (each of its waits is bounded by the timeout).
fn orphans_gone_within() -> Duration {
    resolver_bound(Duration::from_millis(RESOLVER_INTERVAL_MS)) + TIMEOUT
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One attempted transfer between two peers, and whether the client saw
/// its COMMIT succeed.
struct Attempt {
    id: i64,
    peers: (usize, usize),
    acked: bool,
}

const MOVE: &str = "WITH m AS (UPDATE accounts SET balance = balance + $2 WHERE id = $3)
                    INSERT INTO transfers VALUES ($1, $2)";

/// A transfer between two peers, with its id in the coordinator's ledger
/// in the same block. Peers are always written in index order,
/// so concurrent transfers take their locks in one global order and
/// cannot deadlock across nodes.
fn transfer(c: &mut Client, rng: &mut Rng, id: i64) -> Attempt {
    let a = rng.below(PEERS as u64) as usize + 1;
    let b = (a + rng.below(PEERS as u64 - 1) as usize) % PEERS + 1;
    let (a, b) = (a.min(b), a.max(b));
    let amount = rng.below(100) as i64 + 1;
    let amount = if rng.below(2) == 0 { amount } else { -amount };
    let (x, y) = (
        (rng.below(ACCOUNTS as u64) + 1).to_string(),
        (rng.below(ACCOUNTS as u64) + 1).to_string(),
    );
    let ids = id.to_string();
    let ok = c.batch_execute("BEGIN").is_ok()
        && c.execute("INSERT INTO ledger VALUES ($1)", &[&id]).is_ok()
        && dist_exec(
            c,
            &format!("peer{a}"),
            MOVE,
            &[&ids, &(-amount).to_string(), &x],
        )
        .is_ok()
        && dist_exec(
            c,
            &format!("peer{b}"),
            MOVE,
            &[&ids, &amount.to_string(), &y],
        )
        .is_ok()
        && c.batch_execute("COMMIT").is_ok();
    if !ok {
        let _ = c.batch_execute("ROLLBACK");
    }
    Attempt {
        id,
        peers: (a, b),
        acked: ok,
    }
}

/// Runs `work` on a session of the coordinator again and again until
/// `stop`, reconnecting whenever the coordinator is gone.
fn on_sessions(db: &Db, stop: &AtomicBool, mut work: impl FnMut(&mut Client)) {
    let conn = format!(
        "host=127.0.0.1 port={} user=postgres dbname={} application_name=dg-chaos connect_timeout=5",
        db.cluster.coordinator.port, db.name
    );
    let mut c: Option<Client> = None;
    while !stop.load(Ordering::SeqCst) {
        let Some(cl) = c.as_mut().filter(|c| !c.is_closed()) else {
            c = Client::connect(&conn, NoTls).ok();
            if c.is_none() {
                // The coordinator is restarting.
                std::thread::sleep(Duration::from_millis(50));
            }
            continue;
        };
        work(cl);
    }
}

/// Transfers until `stop`.
fn client(db: &Db, n: u64, seed: u64, stop: &AtomicBool, log: &Mutex<Vec<Attempt>>) {
    let mut rng = Rng(seed ^ (n + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut seq = 0;
    on_sessions(db, stop, |c| {
        seq += 1;
        let attempt = transfer(c, &mut rng, (n as i64) << 40 | seq);
        log.lock().unwrap().push(attempt);
    });
}

/// Consistent reads of the bank's total until `stop`.
fn reader(db: &Db, stop: &AtomicBool) -> Reads {
    let mut reads = Reads::default();
    on_sessions(db, stop, |c| {
        reads.record(read_total(c, PEERS, true), TOTAL)
    });
    reads
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    KillCoordinator,
    KillPeer,
    ResetLink,
    BlackHole,
    CutAtMessage,
    CutAfterBytes,
    Delay,
}

/// Relative frequencies: link faults are cheap, kills take a restart.
const FAULTS: [(Fault, u64); 7] = [
    (Fault::KillCoordinator, 1),
    (Fault::KillPeer, 2),
    (Fault::ResetLink, 3),
    (Fault::BlackHole, 2),
    (Fault::CutAtMessage, 4),
    (Fault::CutAfterBytes, 2),
    (Fault::Delay, 1),
];

const CUT_AT: [&str; 6] = [
    "BEGIN",
    "WITH m",
    dg_tests::PREPARE,
    "COMMIT PREPARED",
    "ROLLBACK",
    "SELECT",
];

fn pick(rng: &mut Rng) -> Fault {
    let total: u64 = FAULTS.iter().map(|f| f.1).sum();
    let mut r = rng.below(total);
    for (f, w) in FAULTS {
        if r < w {
            return f;
        }
        r -= w;
    }
    unreachable!()
}

/// Injects one fault and undoes it (restart, heal).
fn inject(fault: Fault, rng: &mut Rng, cluster: &Cluster, proxies: &[Proxy]) {
    let proxy = &proxies[rng.below(PEERS as u64) as usize];
    let until_fired = |limit: Duration| {
        let before = proxy.fired();
        wait_until(limit, || proxy.fired() > before);
    };
    match fault {
        Fault::KillCoordinator => {
            cluster.coordinator.kill9();
            cluster.coordinator.start_again();
        }
        Fault::KillPeer => {
            let peer = &cluster.peers[rng.below(PEERS as u64) as usize];
            peer.kill9();
            std::thread::sleep(rng.ms(300));
            peer.start_again();
        }
        Fault::ResetLink => {
            proxy.set(Mode::Down);
            std::thread::sleep(rng.ms(300));
        }
        Fault::BlackHole => {
            proxy.set(Mode::BlackHole);
            std::thread::sleep(rng.ms(1500));
        }
        Fault::CutAtMessage => {
            let prefix = CUT_AT[rng.below(CUT_AT.len() as u64) as usize];
            let then = if rng.below(4) == 0 {
                Mode::BlackHole
            } else {
                Mode::Down
            };
            proxy.at_message(prefix, rng.below(2) == 0, then);
            until_fired(Duration::from_secs(1));
            std::thread::sleep(rng.ms(300));
        }
        Fault::CutAfterBytes => {
            proxy.after_bytes(rng.below(5000), Mode::Down);
            until_fired(Duration::from_secs(1));
            std::thread::sleep(rng.ms(200));
        }
        Fault::Delay => {
            proxy.set(Mode::Delay(rng.ms(50)));
            std::thread::sleep(rng.ms(500));
        }
    }
    proxy.heal();
}

fn ledger(db: &Db, i: usize) -> (HashSet<i64>, i64, i64) {
    let mut c = db.peer(i);
    let ids = c
        .query("SELECT id FROM transfers", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let moved = scalar(
        &mut c,
        "SELECT coalesce(sum(amount), 0)::bigint FROM transfers",
    );
    let balance = scalar(&mut c, "SELECT sum(balance)::bigint FROM accounts");
    (ids, moved, balance)
}

#[test]
fn chaos_bank() {
    let seconds = env_u64("DG_CHAOS_SECONDS", 30);
    let min_faults = env_u64("DG_CHAOS_FAULTS", 0);
    let seed = env_u64(
        "DG_CHAOS_SEED",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
    );
    let interval = format!("dg.resolver_interval = '{RESOLVER_INTERVAL_MS}ms'");
    let cluster = Cluster::start_with(
        PEERS,
        &[
            &interval,
            "dg.connect_timeout = 2",
            "dg.remote_statement_timeout = '2s'",
            SNAPSHOT_TIMEOUT,
        ],
    );
    let db = cluster.db("chaos");
    db.on_peers(&format!(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         INSERT INTO accounts SELECT g, {START_BALANCE} FROM generate_series(1, {ACCOUNTS}) g;
         CREATE TABLE transfers (id bigint PRIMARY KEY, amount bigint NOT NULL);"
    ));
    db.coord()
        .batch_execute("CREATE TABLE ledger (id bigint PRIMARY KEY)")
        .unwrap();
    let proxies: Vec<Proxy> = (1..=PEERS).map(|i| Proxy::for_peer(&db, i)).collect();

    let stop = AtomicBool::new(false);
    let log = Mutex::new(Vec::new());
    let mut injected = 0u64;
    let mut by_kind: BTreeMap<Fault, u64> = BTreeMap::new();
    let mut reads = Reads::default();
    let started = Instant::now();
    std::thread::scope(|s| {
        for n in 0..CLIENTS {
            let (db, stop, log) = (&db, &stop, &log);
            s.spawn(move || client(db, n, seed, stop, log));
        }
        let readers: Vec<_> = (0..READERS)
            .map(|_| s.spawn(|| reader(&db, &stop)))
            .collect();
        let mut rng = Rng(seed);
        while started.elapsed() < Duration::from_secs(seconds) || injected < min_faults {
            std::thread::sleep(rng.ms(150));
            let fault = pick(&mut rng);
            inject(fault, &mut rng, &cluster, &proxies);
            *by_kind.entry(fault).or_default() += 1;
            injected += 1;
            if injected.is_multiple_of(100) {
                println!(
                    "chaos: {injected} faults in {:.0}s",
                    started.elapsed().as_secs_f64()
                );
            }
        }
        stop.store(true, Ordering::SeqCst);
        for r in readers {
            reads.add(r.join().unwrap());
        }
    });
    let ran = started.elapsed();

    // The faults have stopped: every link is healed and every node is up.
    let quiet = Instant::now();
    let cleared = wait_until(orphans_gone_within(), || db.prepared_all() == 0);
    let cleared_in = quiet.elapsed();
    // And consistent snapshots work again, as soon as the resolver has
    // finished what was in doubt.
    let mut c = db.coord();
    let mut after = Reads::default();
    let readable = wait_until(orphans_gone_within(), || {
        after.record(read_total(&mut c, PEERS, true), TOTAL);
        after.ok + after.wrong > 0
    });
    let readable_in = quiet.elapsed();

    let mut violations = Vec::new();
    if !cleared {
        violations.push(format!(
            "{} prepared transactions left {:?} after the faults stopped",
            db.prepared_all(),
            orphans_gone_within()
        ));
    }
    let ledgers: Vec<_> = (1..=PEERS).map(|i| ledger(&db, i)).collect();
    let total: i64 = ledgers.iter().map(|l| l.2).sum();
    if total != TOTAL {
        violations.push(format!("total money {total}, expected {TOTAL}"));
    }
    if reads.wrong > 0 {
        violations.push(format!(
            "{} consistent reads saw a wrong total (a transfer half done)",
            reads.wrong
        ));
    }
    if reads.ok == 0 {
        violations.push("no consistent read succeeded during the faults".into());
    }
    if !readable || after.wrong > 0 {
        violations.push(format!(
            "after the faults, no consistent read of the exact total within {:?}: {}",
            orphans_gone_within(),
            after.summary()
        ));
    }
    for (i, (_, moved, balance)) in ledgers.iter().enumerate() {
        if balance - ACCOUNTS as i64 * START_BALANCE != *moved {
            violations.push(format!(
                "peer{}: balances moved {} but its ledger says {moved}",
                i + 1,
                balance - ACCOUNTS as i64 * START_BALANCE
            ));
        }
    }
    let attempts = log.into_inner().unwrap();
    let acked = attempts.iter().filter(|a| a.acked).count();
    let local: HashSet<i64> = db
        .coord()
        .query("SELECT id FROM ledger", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut committed = 0;
    for a in &attempts {
        let on_a = ledgers[a.peers.0 - 1].0.contains(&a.id);
        let on_b = ledgers[a.peers.1 - 1].0.contains(&a.id);
        let on_coordinator = local.contains(&a.id);
        committed += usize::from(on_a && on_b);
        if on_a != on_b {
            violations.push(format!(
                "transfer {} is on peer{} only",
                a.id,
                if on_a { a.peers.0 } else { a.peers.1 }
            ));
        } else if on_coordinator != on_a {
            violations.push(format!(
                "transfer {}: the coordinator's ledger says {on_coordinator}, the peers {on_a}",
                a.id
            ));
        } else if a.acked && !on_a {
            violations.push(format!("acknowledged transfer {} was lost", a.id));
        }
    }
    // The link faults reached DTs: every proxy's triggers fired, and
    // transfers failed.
    let fired: Vec<u64> = proxies.iter().map(|p| p.fired()).collect();
    if fired.contains(&0) {
        violations.push(format!("a link's cuts never fired: {fired:?}"));
    }
    if acked == attempts.len() {
        violations.push("no transfer failed: the faults touched no DT".into());
    }

    println!(
        "chaos: seed {seed}, ran {:.0}s, faults injected {injected} {by_kind:?}",
        ran.as_secs_f64()
    );
    println!(
        "chaos: transfers attempted {} / acknowledged {acked} / failed {} (committed {committed})",
        attempts.len(),
        attempts.len() - acked
    );
    println!(
        "chaos: prepared transactions gone {:.1}s after the faults stopped (resolver interval {RESOLVER_INTERVAL_MS} ms)",
        cleared_in.as_secs_f64()
    );
    println!(
        "chaos: consistent reads during the faults ({READERS} readers): {}",
        reads.summary()
    );
    println!(
        "chaos: first exact consistent read {:.1}s after the faults stopped",
        readable_in.as_secs_f64()
    );
    println!(
        "chaos: link cuts fired per peer {fired:?}, ledger rows on the coordinator {}",
        local.len()
    );
    println!("chaos: invariant violations {}", violations.len());
    for v in violations.iter().take(20) {
        println!("chaos: violation: {v}");
    }
    assert!(acked > 0, "no transfer was acknowledged");
    assert!(
        violations.is_empty(),
        "{} invariant violations",
        violations.len()
    );
}

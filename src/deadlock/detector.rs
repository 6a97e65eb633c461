//! The detector: one background worker per database in which DTs run,
//! started by the first DT there and gone once no DT has run for a
//! moment (a worker that stayed connected would make `DROP DATABASE`
//! fail).
//!
//! Every `dg.deadlock_check_interval` it checks when a DT of its database
//! has waited on a peer that long; otherwise it checks on a back-off that
//! doubles while checks find no lock waits at all, and resets when they
//! find some. A check costs one query per node (and one locally); with no
//! active DT, it costs nothing.

use super::graph::{self, Cycle, Edge, Vertex, COORDINATOR};
use crate::catalog;
use crate::error::DgResult;
use crate::fdw::worker_target;
use crate::gucs;
use crate::registry;
use crate::remote::cache;
use crate::session_name::SessionName;
use crate::stats;
use crate::wakeup;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// Lock waits of one server, with the application names that tell dg's
/// sessions apart. A prepared transaction holds its locks with no
/// session: it shows as blocker 0 and waits for nothing, so it closes no
/// cycle and is left out.
const WAITS_SQL: &str = "SELECT a.pid, a.application_name, x.pid, b.application_name \
     FROM pg_catalog.pg_stat_activity a \
     CROSS JOIN LATERAL pg_catalog.unnest(pg_catalog.pg_blocking_pids(a.pid)) AS x(pid) \
     LEFT JOIN pg_catalog.pg_stat_activity b ON b.pid = x.pid \
     WHERE a.wait_event_type = 'Lock' AND x.pid <> 0";

/// The back-off stops doubling at this many intervals.
const MAX_BACKOFF: u32 = 16;

/// With no active DT for this long, the detector exits (well within the
/// five seconds `DROP DATABASE` waits for other sessions to leave).
const LINGER: Duration = Duration::from_secs(2);

/// Consecutive checks that must see a cycle whose victim is another
/// coordinator's DT before this coordinator gives up its own DT in it
/// (that coordinator may not see the whole cycle).
const FOREIGN_PATIENCE: u32 = 3;

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_exit(_code: i32, _arg: pg_sys::Datum) {
    // SAFETY: reads the worker's own pid.
    registry::detector_stopped(unsafe { pg_sys::MyProcPid });
}

/// # Safety
/// Called by the postmaster as a background worker's entry point.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn dg_deadlock_detector(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = pg_sys::Oid::from(arg.value() as u32);
    // SAFETY: reads the worker's own pid; registers a static callback.
    let pid = unsafe { pg_sys::MyProcPid };
    if !registry::detector_started(db.to_u32(), pid) {
        return;
    }
    // SAFETY: as above.
    unsafe { pg_sys::before_shmem_exit(Some(on_exit), pg_sys::Datum::from(0)) };
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    let mut detector = Detector::default();
    let mut backoff = 1;
    let mut next_check = Instant::now();
    let mut idle_since: Option<Instant> = None;
    loop {
        let interval = gucs::deadlock_check_interval();
        let tick = interval.map_or(Duration::from_secs(1), |i| {
            (i / 2).clamp(Duration::from_millis(10), Duration::from_secs(1))
        });
        if !BackgroundWorker::wait_latch(Some(tick)) {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloads the configuration file, as any worker does.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let dts = registry::active(db.to_u32());
        if dts.is_empty() {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= LINGER && registry::detector_retire(db.to_u32(), pid) {
                break;
            }
            continue;
        }
        idle_since = None;
        let Some(interval) = interval else { continue };
        if Instant::now() < next_check && !dts.iter().any(|s| s.waiting) {
            continue;
        }
        let waits = BackgroundWorker::transaction(AssertUnwindSafe(|| detector.check(&dts)));
        backoff = if waits {
            1
        } else {
            (backoff * 2).min(MAX_BACKOFF)
        };
        next_check = Instant::now() + interval * backoff;
    }
}

#[derive(Default)]
struct Detector {
    /// How many checks in a row saw each cycle (by its DTs and victim).
    seen: HashMap<String, u32>,
    /// Nodes whose last check failed, so each failure is logged once.
    failing: HashSet<String>,
}

/// One row of `WAITS_SQL`.
struct Wait {
    waiter: i32,
    waiter_app: Option<String>,
    blocker: i32,
    blocker_app: Option<String>,
}

impl Detector {
    /// One check of the database's DTs `before` (read before the waits):
    /// collect, find cycles, cancel victims. Returns whether any lock wait
    /// was seen.
    fn check(&mut self, before: &[registry::Slot]) -> bool {
        let own = catalog::coordinator_id();
        let mut waits: Vec<(String, Vec<Wait>)> = vec![(COORDINATOR.to_string(), local_waits())];
        for node in catalog::node_names() {
            match remote_waits(&node) {
                Ok(w) => {
                    if self.failing.remove(&node) {
                        pgrx::log!("dg deadlock detector: node \"{node}\" can be read again");
                    }
                    waits.push((node, w));
                }
                Err(e) => {
                    if self.failing.insert(node.clone()) {
                        pgrx::log!(
                            "dg deadlock detector: cannot read the lock waits of node \"{node}\": {}",
                            e.message()
                        );
                    }
                }
            }
        }
        let any = waits.iter().any(|(_, w)| !w.is_empty());
        if !any {
            self.seen.clear();
            return false;
        }
        // DTs that ran from before the first query to after the last: the
        // waits seen of their sessions are theirs, not a predecessor's.
        // SAFETY: reads the worker's database.
        let after = registry::active(unsafe { pg_sys::MyDatabaseId }.to_u32());
        let stable: HashMap<i32, registry::Slot> = before
            .iter()
            .filter(|b| after.iter().any(|a| a.pid == b.pid && a.seq == b.seq))
            .map(|s| (s.pid, *s))
            .collect();
        let vertex = |node: &str, pid: i32, app: &Option<String>| -> Vertex {
            match app.as_deref().and_then(SessionName::parse) {
                Some(SessionName { coordinator, pid })
                    if coordinator != own || stable.contains_key(&pid) =>
                {
                    Vertex::Dt { coordinator, pid }
                }
                None if node == COORDINATOR && stable.contains_key(&pid) => Vertex::Dt {
                    coordinator: own.clone(),
                    pid,
                },
                _ => Vertex::Session {
                    node: node.to_string(),
                    pid,
                },
            }
        };
        let edges: Vec<Edge> = waits
            .iter()
            .flat_map(|(node, ws)| ws.iter().map(move |w| (node, w)))
            .map(|(node, w)| Edge {
                node: node.clone(),
                waiter: vertex(node, w.waiter, &w.waiter_app),
                blocker: vertex(node, w.blocker, &w.blocker_app),
            })
            .collect();
        let started = |v: &Vertex| match v {
            Vertex::Dt { coordinator, pid } if *coordinator == own => {
                stable.get(pid).map(|s| s.started)
            }
            _ => None,
        };
        let cycles = graph::cycles(&edges, &own, &started);
        let mut seen = HashMap::new();
        for cycle in &cycles {
            let key = format!("{:?} {:?}", cycle.victim, cycle.dts());
            let count = self.seen.get(&key).copied().unwrap_or(0) + 1;
            seen.insert(key, count);
            let victim = match &cycle.victim {
                Vertex::Dt { coordinator, pid } if *coordinator == own => Some(*pid),
                _ if count >= FOREIGN_PATIENCE => match &cycle.youngest_own {
                    Some(Vertex::Dt { pid, .. }) => Some(*pid),
                    _ => None,
                },
                _ => None,
            };
            if let Some(slot) = victim.and_then(|pid| stable.get(&pid)) {
                let local_wait = cycle.edges.iter().any(|e| {
                    e.node == COORDINATOR
                        && matches!(&e.waiter, Vertex::Dt { pid, .. } if *pid == slot.pid)
                });
                cancel(slot, cycle, &own, local_wait);
            }
        }
        self.seen = seen;
        true
    }
}

/// Asks the victim to give up its DT: its latch wakes it if it waits on a
/// peer; a wait on a local lock needs a query cancel.
fn cancel(victim: &registry::Slot, cycle: &Cycle, own: &str, local_wait: bool) {
    let (message, detail) = describe(cycle, own);
    if !registry::request_cancel(victim.pid, victim.seq, &message, &detail) {
        return;
    }
    stats::count(stats::Event::Deadlock);
    pgrx::log!(
        "dg deadlock detector: {message}; cancelling the distributed transaction of process {}. {detail}",
        victim.pid
    );
    wakeup::wake(victim.pid);
    if local_wait {
        let _ = catalog::read_one::<bool>(
            "SELECT pg_catalog.pg_cancel_backend($1)",
            &[victim.pid.into()],
        );
    }
}

/// The victim's error message (naming the nodes of the cycle) and detail
/// (its waits, in order).
fn describe(cycle: &Cycle, own: &str) -> (String, String) {
    let place = |node: &str| {
        if node == COORDINATOR {
            "the coordinator".to_string()
        } else {
            format!("node \"{node}\"")
        }
    };
    let places: Vec<String> = cycle.nodes().into_iter().map(place).collect();
    let places = match places.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => places.join(""),
    };
    let who = |v: &Vertex| match v {
        Vertex::Dt { coordinator, pid } if coordinator == own => {
            format!("the distributed transaction of process {pid}")
        }
        Vertex::Dt { coordinator, pid } => {
            format!("the distributed transaction of process {pid} of coordinator {coordinator}")
        }
        Vertex::Session { pid, .. } => format!("process {pid}"),
    };
    let detail: Vec<String> = cycle
        .edges
        .iter()
        .map(|e| {
            format!(
                "On {}, {} waits for {}.",
                place(&e.node),
                who(&e.waiter),
                who(&e.blocker)
            )
        })
        .collect();
    (
        format!("distributed deadlock detected across {places}"),
        detail.join(" "),
    )
}

fn local_waits() -> Vec<Wait> {
    Spi::connect(|client| {
        client
            .select(WAITS_SQL, None, &[])
            .map(|rows| {
                rows.map(|r| Wait {
                    waiter: r.get::<i32>(1).ok().flatten().unwrap_or(0),
                    waiter_app: r.get::<String>(2).ok().flatten(),
                    blocker: r.get::<i32>(3).ok().flatten().unwrap_or(0),
                    blocker_app: r.get::<String>(4).ok().flatten(),
                })
                .collect()
            })
            .unwrap_or_default()
    })
}

fn remote_waits(node: &str) -> DgResult<Vec<Wait>> {
    let Some(t) = cache::exec_once(&worker_target(node)?, WAITS_SQL, None)?.tuples else {
        return Ok(Vec::new());
    };
    let pid = |r, c| t.text(r, c).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok((0..t.ntuples())
        .map(|r| Wait {
            waiter: pid(r, 0),
            waiter_app: t.text(r, 1),
            blocker: pid(r, 2),
            blocker_app: t.text(r, 3),
        })
        .collect())
}

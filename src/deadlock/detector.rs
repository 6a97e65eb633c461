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
use crate::remote::wait::{self, WaitEvent};
use crate::session_name::SessionName;
use crate::stats;
use crate::wakeup;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

/// Lock waits of one server, with the application names and roles of
/// the sessions (see `Detector::check` for what each proves). A prepared
/// transaction holds its locks with no session: it shows as blocker 0 and
/// waits for nothing, so it closes no cycle and is left out.
const WAITS_SQL: &str = "SELECT a.pid, a.application_name, a.usename::text, \
            x.pid, b.application_name, b.usename::text \
     FROM pg_catalog.pg_stat_activity a \
     CROSS JOIN LATERAL unnest(pg_catalog.pg_blocking_pids(a.pid)) AS x(pid) \
     LEFT JOIN pg_catalog.pg_stat_activity b ON b.pid = x.pid \
     WHERE a.wait_event_type = 'Lock' AND x.pid <> 0";

/// The back-off stops doubling at this many intervals.
const MAX_BACKOFF: u32 = 16;

/// With no active DT for this long, the detector exits (well within the
/// five seconds `DROP DATABASE` waits for other sessions to leave).
const LINGER: Duration = Duration::from_secs(2);

/// Consecutive checks that must see a cycle whose victim is another
/// coordinator's DT before this coordinator gives up its own DT in it
/// (that coordinator may not see the whole cycle). Safe against forged
/// names only because another coordinator's DT is a vertex only through
/// sessions of roles dg's own sessions use (`ServerView`): with names
/// believed from anyone, a forged "DT of coordinator ffff…" would always
/// be the rule's victim, nobody would cancel it, and this fallback would
/// give up our DT for a cycle that does not exist.
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
        if !wait::sleep(tick, WaitEvent::Detector) || BackgroundWorker::sigterm_received() {
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

/// One session of a row of `WAITS_SQL`.
struct Seen {
    pid: i32,
    app: Option<String>,
    role: Option<String>,
}

/// One row of `WAITS_SQL`.
struct Wait {
    waiter: Seen,
    blocker: Seen,
}

/// The lock waits read on one server: the coordinator (`server` None) or
/// a node, by the name and server the detector queried.
struct ServerWaits {
    node: String,
    server: Option<u32>,
    waits: Vec<Wait>,
}

impl Detector {
    /// One check of the database's DTs `before` (read before the waits):
    /// collect, find cycles, cancel victims. Returns whether any lock wait
    /// was seen.
    fn check(&mut self, before: &[registry::Slot]) -> bool {
        let own = catalog::coordinator_id();
        let mut waits = vec![ServerWaits {
            node: COORDINATOR.to_string(),
            server: None,
            waits: local_waits(),
        }];
        for node in catalog::node_names() {
            match remote_waits(&node) {
                Ok(w) => {
                    if self.failing.remove(&node) {
                        pgrx::log!("dg deadlock detector: node \"{node}\" can be read again");
                    }
                    waits.push(ServerWaits {
                        server: server_oid(&node),
                        node,
                        waits: w,
                    });
                }
                Err(e) => {
                    if self.failing.insert(node.clone()) {
                        e.report_below_error(
                            pgrx::PgLogLevel::LOG,
                            Some(&format!(
                                "dg deadlock detector: cannot read the lock waits of node \"{node}\""
                            )),
                        );
                    }
                }
            }
        }
        let any = waits.iter().any(|w| !w.waits.is_empty());
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
        // Their sessions on the nodes, as published before the first
        // query (so a remote pid seen then was already theirs).
        let sessions: HashMap<registry::Participant, i32> = stable
            .values()
            .flat_map(|s| s.participants().iter().map(move |p| (*p, s.pid)))
            .collect();
        let edges: Vec<Edge> = waits
            .iter()
            .flat_map(|w| ServerView::new(w, &own, &stable, &sessions).edges())
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

/// How the sessions seen on one server map to vertices.
///
/// - A session is one of this coordinator's DTs only when the registry
///   says so: a local backend running a DT, or a node session whose
///   (server, backend pid) a DT published. Its application name proves
///   nothing: any user who can log in to a node reads dg's names in
///   `pg_stat_activity` and can give them to sessions of its own; read
///   by name, two such sessions and a plain one make "the DT waits for
///   itself through a plain session" and the DT would be failed.
/// - A session named by another coordinator stands for that
///   coordinator's DT, which links its sessions on all nodes into one
///   vertex; this coordinator never cancels it (its coordinator does).
///   That claim cannot be checked here, and a forged one could join
///   unrelated sessions into a cycle through one of our DTs, which the
///   victim rule or the patience fallback would then give up. So the
///   claim is believed only from a session whose role on that node is one
///   that a session of ours seen in the same read runs as: a role that
///   dg's own sessions use there (coordinators sharing peers connect with
///   the same roles), and whose holder can already cancel those sessions
///   with `pg_cancel_backend`, so believing it gives nobody a new way to
///   fail our DTs. Any other role's sessions are plain sessions, and a
///   cycle through plain sessions is a real one.
struct ServerView<'a> {
    w: &'a ServerWaits,
    own: &'a str,
    stable: &'a HashMap<i32, registry::Slot>,
    sessions: &'a HashMap<registry::Participant, i32>,
    /// Roles of the sessions of ours among the waits read here.
    trusted: HashSet<&'a str>,
}

impl<'a> ServerView<'a> {
    fn new(
        w: &'a ServerWaits,
        own: &'a str,
        stable: &'a HashMap<i32, registry::Slot>,
        sessions: &'a HashMap<registry::Participant, i32>,
    ) -> ServerView<'a> {
        let mut view = ServerView {
            w,
            own,
            stable,
            sessions,
            trusted: HashSet::new(),
        };
        let trusted: HashSet<&str> = w
            .waits
            .iter()
            .flat_map(|wait| [&wait.waiter, &wait.blocker])
            .filter(|s| view.own_dt(s.pid).is_some())
            .filter_map(|s| s.role.as_deref())
            .collect();
        view.trusted = trusted;
        view
    }

    /// The coordinator backend whose DT session `pid` is.
    fn own_dt(&self, pid: i32) -> Option<i32> {
        match self.w.server {
            None => self.stable.contains_key(&pid).then_some(pid),
            Some(server) => self
                .sessions
                .get(&registry::Participant {
                    server,
                    remote_pid: pid,
                })
                .copied(),
        }
    }

    fn vertex(&self, s: &Seen) -> Vertex {
        if let Some(pid) = self.own_dt(s.pid) {
            return Vertex::Dt {
                coordinator: self.own.to_string(),
                pid,
            };
        }
        let trusted = s.role.as_deref().is_some_and(|r| self.trusted.contains(r));
        match s.app.as_deref().and_then(SessionName::parse) {
            Some(SessionName { coordinator, pid }) if coordinator != self.own && trusted => {
                Vertex::Dt { coordinator, pid }
            }
            _ => Vertex::Session {
                node: self.w.node.clone(),
                pid: s.pid,
            },
        }
    }

    fn edges(&self) -> Vec<Edge> {
        self.w
            .waits
            .iter()
            .map(|wait| Edge {
                node: self.w.node.clone(),
                waiter: self.vertex(&wait.waiter),
                blocker: self.vertex(&wait.blocker),
            })
            .collect()
    }
}

/// The OID of the foreign server named `node`, as the DTs published it.
fn server_oid(node: &str) -> Option<u32> {
    let name = std::ffi::CString::new(node).ok()?;
    // SAFETY: a catalog lookup by name inside the check's transaction;
    // missing_ok, so a server dropped meanwhile gives InvalidOid.
    let oid = unsafe { pg_sys::get_foreign_server_oid(name.as_ptr(), true) };
    (oid != pg_sys::InvalidOid).then(|| oid.to_u32())
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
                rows.map(|r| {
                    let seen = |at: usize| Seen {
                        pid: r.get::<i32>(at).ok().flatten().unwrap_or(0),
                        app: r.get::<String>(at + 1).ok().flatten(),
                        role: r.get::<String>(at + 2).ok().flatten(),
                    };
                    Wait {
                        waiter: seen(1),
                        blocker: seen(4),
                    }
                })
                .collect()
            })
            .unwrap_or_default()
    })
}

fn remote_waits(node: &str) -> DgResult<Vec<Wait>> {
    let Some(t) =
        cache::exec_once(&worker_target(node)?, WAITS_SQL, None, WaitEvent::Detector)?.tuples
    else {
        return Ok(Vec::new());
    };
    let seen = |r, at| Seen {
        pid: t.text(r, at).and_then(|v| v.parse().ok()).unwrap_or(0),
        app: t.text(r, at + 1),
        role: t.text(r, at + 2),
    };
    Ok((0..t.ntuples())
        .map(|r| Wait {
            waiter: seen(r, 0),
            blocker: seen(r, 3),
        })
        .collect())
}

//! The resolver: a launcher, started with the server, that runs a pass in
//! every database where dg is installed each `dg.resolver_interval`, and at
//! once when a backend reports a failed finish.
//!
//! A pass runs in a one-shot worker connected to that database, which
//! exits when done: a worker that stayed connected would make a plain
//! `DROP DATABASE` fail, and one per database would exhaust
//! `max_worker_processes`. The launcher itself connects to no database and
//! reads `pg_database` directly.

use super::decide::Action;
use super::pass;
use crate::catalog;
use crate::gucs;
use crate::remote::wait::{self, WaitEvent};
use crate::wakeup;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Passes that may run at once; more databases wait for the next tick.
const MAX_PASSES: usize = 2;

/// How soon to retry when databases wait for a pass.
const RETRY: Duration = Duration::from_millis(50);

/// Registers the launcher; from _PG_init, once.
pub fn init() {
    BackgroundWorkerBuilder::new("dg resolver")
        .set_type("dg resolver")
        .set_library("dg")
        .set_function("dg_resolver_launcher")
        // A connection (to no database) lets it read pg_database.
        .enable_spi_access()
        .set_start_time(pgrx::bgworkers::BgWorkerStartTime::RecoveryFinished)
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

/// Databases a pass may run in: not templates, accepting connections.
fn databases() -> Vec<pg_sys::Oid> {
    BackgroundWorker::transaction(|| {
        let mut oids = Vec::new();
        // SAFETY: a catalog heap scan of pg_database inside a transaction,
        // ended and closed before returning.
        unsafe {
            let rel = pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as _);
            let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
            loop {
                let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
                if tuple.is_null() {
                    break;
                }
                let db = pg_sys::GETSTRUCT(tuple) as *const pg_sys::FormData_pg_database;
                if (*db).datallowconn && !(*db).datistemplate {
                    oids.push((*db).oid);
                }
            }
            pg_sys::table_endscan(scan);
            pg_sys::table_close(rel, pg_sys::AccessShareLock as _);
        }
        oids
    })
}

fn start_pass(db: pg_sys::Oid) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new("dg resolver pass")
        .set_type("dg resolver")
        .set_library("dg")
        .set_function("dg_resolver_pass")
        .set_argument(Some(pg_sys::Datum::from(db)))
        .enable_spi_access()
        .set_restart_time(None)
        // SAFETY: reads the launcher's own pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}

/// # Safety
/// Called by the postmaster as a background worker's entry point.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn dg_resolver_launcher(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    // SAFETY: reads the worker's own pid.
    wakeup::resolver_started(unsafe { pg_sys::MyProcPid });
    let mut running: Vec<(pg_sys::Oid, DynamicBackgroundWorker)> = Vec::new();
    // Databases due for a pass, served in turn as pass workers finish (their
    // exit wakes the launcher), so none waits behind the others for ever.
    let mut pending: VecDeque<pg_sys::Oid> = VecDeque::new();
    let mut next_round = Instant::now();
    loop {
        let nap = if pending.is_empty() {
            next_round.saturating_duration_since(Instant::now())
        } else {
            RETRY
        };
        let nap = nap.max(Duration::from_millis(10));
        if !wait::sleep(nap, WaitEvent::Resolver) || BackgroundWorker::sigterm_received() {
            break;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloads the configuration file, as any worker does.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        running.retain(|(_, w)| w.pid().is_ok());
        let urgent = wakeup::take_resolver_request();
        if !gucs::resolver_enabled() {
            pending.clear();
            continue;
        }
        if urgent || Instant::now() >= next_round {
            next_round = Instant::now() + gucs::resolver_interval();
            for db in databases() {
                if !pending.contains(&db) {
                    pending.push_back(db);
                }
            }
        }
        while running.len() < MAX_PASSES {
            let Some(db) = pending.pop_front() else { break };
            if running.iter().any(|(d, _)| *d == db) {
                continue;
            }
            match start_pass(db) {
                Some(w) => running.push((db, w)),
                None => {
                    // No free worker slot now: try again shortly.
                    pending.push_front(db);
                    break;
                }
            }
        }
    }
}

/// One pass in one database, then exit. Databases without dg are left at
/// once.
///
/// # Safety
/// Called by the postmaster as a background worker's entry point.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn dg_resolver_pass(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGTERM);
    let db = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(db), None);
    let forgotten = BackgroundWorker::transaction(|| {
        // SAFETY: catalog lookup by name; missing_ok.
        let installed =
            unsafe { pg_sys::get_extension_oid(c"dg".as_ptr(), true) } != pg_sys::InvalidOid;
        if !installed {
            return 0;
        }
        let (report, forgotten) = pass::pass();
        for r in report.iter().filter(|r| r.action != Action::Leave) {
            pgrx::log!(
                "dg resolver: {} {} on node \"{}\": {}",
                r.action.name(),
                r.gid,
                r.node,
                r.outcome.describe()
            );
        }
        forgotten
    });
    if forgotten > 0 {
        catalog::vacuum_decisions();
    }
}

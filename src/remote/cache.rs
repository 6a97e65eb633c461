//! The per-backend cache of idle connections, keyed by user mapping, as in
//! postgres_fdw. A distributed transaction takes connections out while it
//! uses them and gives them back at its end; catalog invalidations mark
//! cached ones so a changed server or mapping is never reused.

use super::connection::{Connection, Outcome};
use super::wait::cleanup_deadline;
use crate::error::DgResult;
use crate::fdw::Target;
use crate::gucs;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::VecDeque;

thread_local! {
    /// Least recently used first.
    static IDLE: RefCell<VecDeque<Connection>> = const { RefCell::new(VecDeque::new()) };
}

/// A connection for `target`: a cached one if still valid, else a new one.
/// A PUBLIC mapping's connection may have been opened by a superuser, so
/// the password rule is checked again for the role taking it.
pub fn take(target: &Target) -> DgResult<Connection> {
    let cached = IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let pos = idle.iter().position(|c| c.mapping == target.mapping)?;
        idle.remove(pos)
    });
    match cached {
        Some(c) if c.reusable() && (c.used_password || !target.password_required) => Ok(c),
        _ => Connection::open(target),
    }
}

/// Runs one statement outside any DT on a connection for `target` (the
/// resolver's and the deadlock detector's work), bounded by the cleanup
/// deadline, and gives the connection back.
pub fn exec_once(
    target: &Target,
    sql: &str,
    params: Option<&[Option<String>]>,
) -> DgResult<Outcome> {
    let mut conn = take(target)?;
    let result = conn.exec(sql, params, cleanup_deadline());
    give_back(conn);
    result
}

/// Returns a connection after its transaction; broken or invalidated ones
/// are closed, and the oldest are closed past `dg.max_cached_connections`.
pub fn give_back(c: Connection) {
    if !c.reusable() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        idle.push_back(c);
        while idle.len() > gucs::max_cached_connections() {
            idle.pop_front();
        }
    });
}

/// Closes cached connections of `node`; returns how many.
pub fn close_node(node: &str) -> usize {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let before = idle.len();
        idle.retain(|c| c.node != node);
        before - idle.len()
    })
}

pub fn close_all() -> usize {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let n = idle.len();
        idle.clear();
        n
    })
}

/// Visits every cached connection (for `dg.connections()`).
pub fn for_each(mut f: impl FnMut(&Connection)) {
    IDLE.with(|idle| idle.borrow().iter().for_each(&mut f));
}

/// Syscache callback for foreign servers and user mappings. A hash of 0
/// means "everything may have changed".
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn invalidate(_arg: pg_sys::Datum, cache_id: i32, hash: u32) {
    let server = cache_id == pg_sys::SysCacheIdentifier::FOREIGNSERVEROID as i32;
    let hit = |c: &Connection| {
        hash == 0
            || if server {
                c.server_hash == hash
            } else {
                c.mapping_hash == hash
            }
    };
    IDLE.with(|idle| {
        if let Ok(mut idle) = idle.try_borrow_mut() {
            idle.iter_mut()
                .filter(|c| hit(c))
                .for_each(|c| c.invalidated = true);
        }
    });
    crate::xact::invalidate_in_use(&hit);
}

pub fn init() {
    // SAFETY: registering static callbacks once from _PG_init.
    unsafe {
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::FOREIGNSERVEROID as i32,
            Some(invalidate),
            pg_sys::Datum::from(0),
        );
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::USERMAPPINGOID as i32,
            Some(invalidate),
            pg_sys::Datum::from(0),
        );
    }
}

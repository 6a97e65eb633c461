//! The per-backend connection cache, keyed by user mapping, as in
//! postgres_fdw. It owns an entry for every connection it has opened, idle
//! or lent out (to a DT, or for one statement of a worker), and the entry
//! holds that connection's invalidation state. The syscache callback marks
//! entries whoever is using the connection, so a server or mapping changed
//! by another session while a DT runs is never lost: the connection is
//! closed when it comes back, and the next DT opens a fresh one with the
//! new options.
//!
//! The entry table is borrowed only inside this module and never across a
//! call into PostgreSQL (opening and closing connections happens outside
//! the borrow), so the callback always finds it free. Should that rule
//! ever be broken, the callback still loses nothing: it records that a
//! message was missed, and every entry counts as invalidated.

use super::connection::{Connection, Outcome};
use super::target::Target;
use super::wait::{cleanup_deadline, WaitEvent};
use crate::error::DgResult;
use crate::gucs;
use pgrx::pg_sys;
use std::cell::{Cell, RefCell};

struct Entry {
    id: u64,
    node: String,
    mapping: pg_sys::Oid,
    server_hash: u32,
    mapping_hash: u32,
    /// A catalog change touched the server or the mapping: never reuse.
    invalidated: bool,
    /// The connection while it is idle; `None` while it is lent out.
    idle: Option<Connection>,
}

thread_local! {
    /// Every connection this backend holds; idle ones least recently used
    /// first.
    static ENTRIES: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    static NEXT_ID: Cell<u64> = const { Cell::new(0) };
    /// An invalidation arrived while the table was borrowed.
    static MISSED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` on the entry table; callers must not call into PostgreSQL
/// inside `f`, and drop connections only after it returns.
fn with_entries<R>(f: impl FnOnce(&mut Vec<Entry>) -> R) -> R {
    ENTRIES.with(|entries| {
        let mut entries = entries.borrow_mut();
        if MISSED.take() {
            entries.iter_mut().for_each(|e| e.invalidated = true);
        }
        f(&mut entries)
    })
}

/// A connection for `target`: a cached one if still valid, else a new one.
/// A PUBLIC mapping's connection may have been opened by a superuser, so
/// the password rule is checked again for the role taking it.
pub fn take(target: &Target) -> DgResult<Connection> {
    read_late_answers(&target.node, target.mapping);
    let cached = with_entries(|entries| {
        let e = entries
            .iter_mut()
            .find(|e| e.mapping == target.mapping && e.idle.is_some())?;
        let c = e.idle.take().expect("an idle entry holds its connection");
        Some((c, e.invalidated))
    });
    if let Some((mut c, invalidated)) = cached {
        // Outside the borrow: a late answer may be reported.
        c.check_late_answers();
        if !invalidated && c.reusable() && (c.used_password || !target.password_required) {
            return Ok(c);
        }
        with_entries(|entries| entries.retain(|e| e.id != c.entry));
        // Its peer may not have run them yet; a new connection must not
        // overtake them.
        c.read_late_answers(cleanup_deadline());
    }
    let mut c = Connection::open(target)?;
    c.entry = with_entries(|entries| {
        let id = NEXT_ID.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        entries.push(Entry {
            id,
            node: target.node.clone(),
            mapping: target.mapping,
            server_hash: target.server_hash,
            mapping_hash: target.mapping_hash,
            invalidated: false,
            idle: None,
        });
        id
    });
    Ok(c)
}

/// Reads the answers still to come (`Connection::send_detached`) on the
/// idle connections to `node` of other mappings than `lending`, so what
/// this backend sent there is done before it uses the node again. The
/// connection being lent needs no wait: whatever it runs next is queued
/// behind those answers, and the peer runs it after them.
fn read_late_answers(node: &str, lending: pg_sys::Oid) {
    let pending: Vec<Connection> = with_entries(|entries| {
        entries
            .iter_mut()
            .filter(|e| e.node == node && e.mapping != lending)
            .filter(|e| e.idle.as_ref().is_some_and(Connection::awaits_late_answers))
            .filter_map(|e| e.idle.take())
            .collect()
    });
    for mut c in pending {
        c.read_late_answers(cleanup_deadline());
        give_back(c);
    }
}

/// Returns a connection after its transaction. Broken or invalidated ones
/// are closed, and the least recently used idle ones past
/// `dg.max_cached_connections`.
pub fn give_back(c: Connection) {
    let closed = with_entries(|entries| {
        let Some(pos) = entries.iter().position(|e| e.id == c.entry) else {
            return vec![c];
        };
        let mut entry = entries.remove(pos);
        if entry.invalidated || !c.reusable() {
            return vec![c];
        }
        entry.idle = Some(c);
        entries.push(entry);
        let mut closed = Vec::new();
        while entries.iter().filter(|e| e.idle.is_some()).count() > gucs::max_cached_connections() {
            let oldest = entries
                .iter()
                .position(|e| e.idle.is_some())
                .expect("counted above");
            closed.extend(entries.remove(oldest).idle);
        }
        closed
    });
    drop(closed);
}

/// Runs one statement outside any DT on a connection for `target` (the
/// resolver's and the deadlock detector's work, which `event` names),
/// bounded by the cleanup deadline, and gives the connection back.
pub fn exec_once(
    target: &Target,
    sql: &str,
    params: Option<&[Option<String>]>,
    event: WaitEvent,
) -> DgResult<Outcome> {
    let mut conn = take(target)?;
    let result = conn.exec(sql, params, cleanup_deadline(), event);
    give_back(conn);
    result
}

/// False once a catalog change touched the connection's server or
/// mapping (it will be closed when given back).
pub fn valid(c: &Connection) -> bool {
    with_entries(|entries| entries.iter().any(|e| e.id == c.entry && !e.invalidated))
}

/// Closes the idle connections `keep` rejects; returns how many.
fn close_idle(keep: impl Fn(&Entry) -> bool) -> usize {
    let closed: Vec<Entry> = with_entries(|entries| {
        let (gone, kept) = std::mem::take(entries)
            .into_iter()
            .partition(|e| e.idle.is_some() && !keep(e));
        *entries = kept;
        gone
    });
    closed.len()
}

/// Closes cached connections of `node`; returns how many.
pub fn close_node(node: &str) -> usize {
    close_idle(|e| e.node != node)
}

/// Closes every cached connection; returns how many.
pub fn close_all() -> usize {
    close_idle(|_| false)
}

/// Visits every idle connection with its validity (for `dg.connections()`).
pub fn for_each_idle(mut f: impl FnMut(&Connection, bool)) {
    with_entries(|entries| {
        for e in entries.iter() {
            if let Some(c) = &e.idle {
                f(c, !e.invalidated);
            }
        }
    });
}

/// Syscache callback for foreign servers and user mappings. A hash of 0
/// means "everything may have changed".
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn invalidate(_arg: pg_sys::Datum, cache_id: i32, hash: u32) {
    let server = cache_id == pg_sys::SysCacheIdentifier::FOREIGNSERVEROID as i32;
    let hit = |e: &Entry| {
        hash == 0
            || if server {
                e.server_hash == hash
            } else {
                e.mapping_hash == hash
            }
    };
    ENTRIES.with(|entries| match entries.try_borrow_mut() {
        Ok(mut entries) => entries
            .iter_mut()
            .filter(|e| hit(e))
            .for_each(|e| e.invalidated = true),
        Err(_) => MISSED.set(true),
    });
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

//! Distributed deadlock detection. Two DTs that lock rows on two nodes in
//! opposite orders wait for each other, but each node sees one plain wait
//! and no cycle. A detector worker per database (started by the first DT
//! there, gone when DTs are) collects the lock waits of the coordinator
//! and of every node, builds the global wait-for graph (`graph`), and asks
//! the youngest DT of each cycle to give up with SQLSTATE 40P01.
//!
//! `registry` says which DT each backend runs now and which sessions on
//! the nodes (server, remote backend pid) are that DT's: only that maps a
//! remote session to one of this coordinator's DTs. dg's sessions also
//! carry `application_name` `dg:<coordinator uuid>:<backend pid>`, a label
//! for humans and for other coordinators, never proof for this one (see
//! `detector` for how far another coordinator's labels are believed). The
//! victim raises the error itself: from its wait on a peer when its latch
//! is set, or, waiting on a local lock, from the query cancel the detector
//! sends, which `emit_log` turns into 40P01.

mod detector;
pub mod graph;
mod registry;

use crate::gucs;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::ffi::CString;
use std::time::Instant;

const HINT: &str = "The transaction was the youngest in the cycle; retry it.";

pub fn init() {
    registry::init();
    // SAFETY: installs a hook once from _PG_init, keeping the previous one.
    unsafe {
        PREV_EMIT_LOG = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
    }
}

/// Held by a DT for its life: publishes it to the detector, starting the
/// database's detector if it has none.
pub struct Registration(());

impl Registration {
    pub fn enter() -> Registration {
        if registry::enter() {
            detector::start();
        }
        Registration(())
    }

    /// A participant joined the DT through `server`; the peer gave its
    /// session backend pid `remote_pid`.
    pub fn join(&self, server: pg_sys::Oid, remote_pid: i32) {
        registry::join(registry::Participant {
            server: server.to_u32(),
            remote_pid,
        });
    }

    /// The DT's connections went back to the cache before its end.
    pub fn forget_participants(&self) {
        registry::forget_participants();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        registry::leave();
    }
}

/// The `application_name` of dg's sessions on the nodes.
pub fn application_name() -> String {
    // SAFETY: reads the backend's pid.
    let pid = unsafe { pg_sys::MyProcPid };
    format!("dg:{}:{pid}", crate::catalog::coordinator_id())
}

/// (coordinator, backend pid) of a session named by `application_name`.
fn parse_application_name(name: &str) -> Option<(&str, i32)> {
    let rest = name.strip_prefix("dg:")?;
    let (coordinator, pid) = rest.rsplit_once(':')?;
    Some((coordinator, pid.parse().ok()?))
}

/// A wait on a peer, as the detector sees it: once it has lasted a check
/// interval it is published, so the detector checks at once instead of
/// waiting out its back-off.
pub struct PeerWait {
    publish_at: Option<Instant>,
    published: bool,
}

impl PeerWait {
    pub fn start() -> PeerWait {
        PeerWait {
            publish_at: gucs::deadlock_check_interval()
                .filter(|_| registry::registered())
                .map(|i| Instant::now() + i),
            published: false,
        }
    }

    /// The earlier of `deadline` and the time to publish.
    pub fn wake_by(&self, deadline: Option<Instant>) -> Option<Instant> {
        match (deadline, self.publish_at.filter(|_| !self.published)) {
            (Some(d), Some(p)) => Some(d.min(p)),
            (d, p) => d.or(p),
        }
    }

    /// Called at each wake-up: publishes a long wait, and raises 40P01 if
    /// the detector chose this DT as a victim.
    pub fn woke(&mut self) {
        if !self.published && self.publish_at.is_some_and(|p| Instant::now() >= p) {
            registry::set_waiting(true);
            self.published = true;
        }
        if interruptible() {
            if let Some((message, detail)) = registry::take_cancel() {
                ErrorReport::new(PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED, message, "dg")
                    .set_detail(detail)
                    .set_hint(HINT)
                    .report(PgLogLevel::ERROR);
            }
        }
    }
}

impl Drop for PeerWait {
    fn drop(&mut self) {
        if self.published {
            registry::set_waiting(false);
        }
    }
}

/// Could an ERROR be raised here as a cancel would be? Not in cleanup,
/// which holds interrupts.
fn interruptible() -> bool {
    // SAFETY: reads backend-local counters.
    unsafe {
        pg_sys::InterruptHoldoffCount == 0
            && pg_sys::QueryCancelHoldoffCount == 0
            && pg_sys::CritSectionCount == 0
    }
}

static mut PREV_EMIT_LOG: pg_sys::emit_log_hook_type = None;

/// A victim waiting on a local lock is cancelled like `pg_cancel_backend`
/// does; its "canceling statement due to user request" becomes the
/// deadlock error here, before the client or the log sees it. Never
/// raises: it runs while an error is being reported.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn emit_log(edata: *mut pg_sys::ErrorData) {
    // SAFETY: edata is the error being reported; strings are copied into
    // ErrorContext, where the rest of it lives.
    unsafe {
        let e = &mut *edata;
        if e.elevel >= PgLogLevel::ERROR as i32
            && e.sqlerrcode == PgSqlErrorCode::ERRCODE_QUERY_CANCELED as i32
        {
            if let Some((message, detail)) = registry::take_cancel() {
                let copy = |s: &str| {
                    let c = CString::new(s.replace('\0', "")).unwrap_or_default();
                    pg_sys::MemoryContextStrdup(pg_sys::ErrorContext, c.as_ptr())
                };
                e.sqlerrcode = PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED as i32;
                e.message = copy(&message);
                e.detail = if detail.is_empty() {
                    std::ptr::null_mut()
                } else {
                    copy(&detail)
                };
                e.hint = copy(HINT);
            }
        }
        if let Some(prev) = PREV_EMIT_LOG {
            prev(edata);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_application_name;

    #[test]
    fn application_names() {
        assert_eq!(
            parse_application_name("dg:6f1c2a8e-0000-4000-8000-000000000001:4242"),
            Some(("6f1c2a8e-0000-4000-8000-000000000001", 4242))
        );
        assert_eq!(parse_application_name("dg"), None);
        assert_eq!(parse_application_name("psql"), None);
        assert_eq!(parse_application_name("dg:x:notapid"), None);
    }
}

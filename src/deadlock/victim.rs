//! How a victim of a distributed deadlock learns it was chosen, and fails
//! with SQLSTATE 40P01 itself: waiting on a peer, through the wait watch
//! (the detector sets its latch, the wait wakes up and raises); waiting on
//! a local lock, through the query cancel the detector sends, which
//! `emit_log` turns into the deadlock error before the client or the log
//! sees it.

use crate::gucs;
use crate::registry;
use crate::remote::wait;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::ffi::CString;
use std::time::Duration;

const HINT: &str = "The transaction was the youngest in the cycle; retry it.";

/// Installs both ways of telling a victim; from _PG_init, once.
pub fn init() {
    wait::install_watch(wait::Watch {
        report_after,
        long_wait: registry::set_waiting,
        woke,
    });
    // SAFETY: installs a hook once from _PG_init, keeping the previous one.
    unsafe {
        PREV_EMIT_LOG = pg_sys::emit_log_hook;
        pg_sys::emit_log_hook = Some(emit_log);
    }
}

/// A wait on a peer by a DT is published once it lasts a check interval,
/// so the detector checks at once instead of waiting out its back-off.
fn report_after() -> Option<Duration> {
    gucs::deadlock_check_interval().filter(|_| registry::registered())
}

/// At each wake-up of a wait on a peer: raise 40P01 if the detector chose
/// this DT as a victim. Not in cleanup, which holds interrupts: a DT in
/// COMMIT or ROLLBACK is finishing anyway.
fn woke() {
    if interruptible() {
        if let Some((message, detail)) = registry::take_cancel() {
            ErrorReport::new(PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED, message, "dg")
                .set_detail(detail)
                .set_hint(HINT)
                .report(PgLogLevel::ERROR);
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

//! Transaction and subtransaction callbacks, registered once in _PG_init.
//!
//! PRE_COMMIT and PRE_PREPARE may raise (the local transaction then
//! aborts). COMMIT and ABORT run after the point of no return with
//! interrupts held: they must never raise, so each runs inside a catch
//! that turns any error or panic into a WARNING, and the DT is taken out
//! of the session first so a failure cannot leave it half-handled.

use super::dt::Dt;
use super::session::{self, take_if, with_slot};
use super::state::{DtState, Scope};
use crate::error::DgError;
use crate::fence;
use crate::remote::cache;
use crate::wakeup;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::{CaughtError, ErrorReport};
use pgrx::{PgLogLevel, PgTryBuilder};
use std::ffi::c_void;
use std::panic::AssertUnwindSafe;

/// Registers the callbacks; from _PG_init, once.
pub fn init() {
    // SAFETY: static callbacks registered once from _PG_init.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
        pg_sys::before_shmem_exit(Some(at_exit), pg_sys::Datum::from(0));
    }
    crate::remote::connection::set_late_answer_hook(super::dt::late_finish);
}

/// Does the local transaction's end decide this DT?
fn ends_with_local(dt: &Dt) -> bool {
    dt.scope == Scope::Transaction || dt.state == DtState::Committing
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn xact_callback(event: pg_sys::XactEvent::Type, _arg: *mut c_void) {
    match event {
        pg_sys::XactEvent::XACT_EVENT_PRE_COMMIT => {
            if let Err(e) = pre_commit() {
                e.raise()
            }
        }
        pg_sys::XactEvent::XACT_EVENT_PRE_PREPARE => {
            if let Err(e) = pre_prepare() {
                e.raise()
            }
        }
        pg_sys::XactEvent::XACT_EVENT_COMMIT => never_raise(at_commit),
        pg_sys::XactEvent::XACT_EVENT_ABORT => never_raise(at_abort),
        _ => {}
    }
}

fn pre_commit() -> Result<(), DgError> {
    prepare_dt()?;
    fence::enter_at_commit();
    Ok(())
}

fn prepare_dt() -> Result<(), DgError> {
    with_slot(|slot| {
        let Some(dt) = slot.as_mut() else {
            return Ok(());
        };
        if dt.scope != Scope::Transaction {
            return Ok(());
        }
        match dt.state {
            // A failed send that aborted it is what the client hears.
            DtState::Aborted => Err(dt.failed_send().unwrap_or(DgError::RolledBack)),
            DtState::Committing => Ok(()),
            DtState::Active => {
                // SAFETY: reads whether the local transaction wrote.
                let local_writes =
                    unsafe { pg_sys::GetTopTransactionIdIfAny() } != pg_sys::InvalidTransactionId;
                dt.prepare(local_writes)
            }
        }
    })
}

fn pre_prepare() -> Result<(), DgError> {
    with_slot(|slot| match slot {
        Some(dt) if dt.scope == Scope::Transaction || dt.touched => Err(DgError::PrepareRefused),
        _ => Ok(()),
    })
}

fn at_commit() {
    if let Some(mut dt) = take_if(ends_with_local) {
        dt.finish();
        dt.release();
    } else {
        let _ = with_slot(|slot| {
            slot.iter_mut().for_each(|dt| dt.touched = false);
            Ok(())
        });
    }
    fence::leave_at_commit();
}

fn at_abort() {
    if let Some(mut dt) = take_if(ends_with_local) {
        dt.abort();
        dt.release();
        // Whatever held the fence is gone with the transaction.
        fence::at_exit();
        return;
    }
    fence::at_exit();
    // A session DT used by the failed transaction is aborted but stays
    // open, like a failed transaction block, until dist_rollback().
    let _ = with_slot(|slot| {
        if let Some(dt) = slot.as_mut().filter(|dt| dt.touched) {
            dt.abort_and_fail();
            dt.touched = false;
        }
        Ok(())
    });
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    _my: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut c_void,
) {
    // SAFETY: reads the nesting level of the subtransaction that is ending.
    let level = unsafe { pg_sys::GetCurrentTransactionNestLevel() };
    match event {
        pg_sys::SubXactEvent::SUBXACT_EVENT_PRE_COMMIT_SUB => {
            if let Err(e) = with_slot(|slot| match slot {
                Some(dt) => dt.release_savepoints(level),
                None => Ok(()),
            }) {
                e.raise()
            }
        }
        pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB => never_raise(|| {
            let _ = with_slot(|slot| {
                slot.iter_mut().for_each(|dt| dt.rollback_savepoints(level));
                Ok(())
            });
        }),
        _ => {}
    }
}

/// A session that ends with an open DT closes its connections, which
/// rolls back every open remote transaction.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn at_exit(_code: i32, _arg: pg_sys::Datum) {
    // Before the DT goes: a commit still at the fence leaves its nodes in
    // doubt rather than just leaving.
    fence::at_exit();
    session::discard();
    cache::close_all();
}

/// Runs cleanup that must not raise: any error or panic becomes a WARNING
/// that keeps the error's SQLSTATE, detail and hint (and, for dg's own
/// errors, its context lines). PostgreSQL holds interrupts around these
/// callbacks, and an ERROR zeroes the holdoff counters on its way out;
/// they are put back, or the caller's RESUME_INTERRUPTS would wrap them
/// and the backend would ignore cancel and terminate for good. So is the
/// error context stack, as PG_CATCH does, once the WARNING has used it.
/// What the cleanup left undone (a prepared peer, say) is the resolver's.
fn never_raise(f: impl FnOnce()) {
    // SAFETY: plain reads of backend-local state.
    let (held, context) = unsafe {
        (
            (
                pg_sys::InterruptHoldoffCount,
                pg_sys::QueryCancelHoldoffCount,
                pg_sys::CritSectionCount,
            ),
            pg_sys::error_context_stack,
        )
    };
    PgTryBuilder::new(AssertUnwindSafe(f))
        .catch_others(|e| {
            // SAFETY: restores the counters as they were before `f`.
            unsafe {
                pg_sys::InterruptHoldoffCount = held.0;
                pg_sys::QueryCancelHoldoffCount = held.1;
                pg_sys::CritSectionCount = held.2;
            }
            wakeup::request_resolver_pass();
            let caught = match &e {
                CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => r,
                CaughtError::RustPanic { ereport, .. } => ereport,
            };
            let mut warning = ErrorReport::new(
                caught.sql_error_code(),
                format!(
                    "dg: cleanup after the transaction failed: {}",
                    caught.message()
                ),
                "dg",
            );
            if let Some(d) = caught.detail() {
                warning = warning.set_detail(d);
            }
            if let Some(h) = caught.hint() {
                warning = warning.set_hint(h);
            }
            warning.report(PgLogLevel::WARNING);
            // SAFETY: unlinks what the failed cleanup left linked.
            unsafe { pg_sys::error_context_stack = context };
        })
        .execute()
}

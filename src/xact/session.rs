//! The session's distributed transaction and its scoping rules
//! (src/README.md, "Scopes"): a DT bound to the local transaction (a
//! block, or one autocommit statement), or opened by `dist_begin()`
//! outside a block and spanning statements. The SQL functions call in
//! here; the transaction callbacks end what is left.

use super::dt::Dt;
use super::state::{DtState, Scope};
use super::statement::Statement;
use crate::catalog;
use crate::error::{DgError, DgResult};
use crate::fdw;
use crate::remote::cache;
use crate::remote::connection::Connection;
use pgrx::pg_sys;
use std::cell::{Cell, RefCell};

thread_local! {
    static DT: RefCell<Option<Dt>> = const { RefCell::new(None) };
    static SEQUENCE: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` on the session's DT slot. The slot is never borrowed across
/// calls; a nested borrow can only be a bug, reported as an error.
pub(super) fn with_slot<R>(f: impl FnOnce(&mut Option<Dt>) -> DgResult<R>) -> DgResult<R> {
    DT.with(|slot| match slot.try_borrow_mut() {
        Ok(mut slot) => f(&mut slot),
        Err(_) => Err(DgError::Internal("dg was called re-entrantly".into())),
    })
}

/// Drops whatever DT the session still has (its connections close, which
/// rolls back every open remote transaction); at backend exit.
pub(super) fn discard() {
    DT.with(|slot| {
        if let Ok(mut slot) = slot.try_borrow_mut() {
            slot.take();
        }
    });
}

/// Takes the DT out of the slot if `pred` holds; for the callbacks.
pub(super) fn take_if(pred: impl FnOnce(&Dt) -> bool) -> Option<Dt> {
    DT.with(|slot| {
        let mut slot = slot.try_borrow_mut().ok()?;
        if slot.as_ref().is_some_and(pred) {
            slot.take()
        } else {
            None
        }
    })
}

fn in_transaction_block() -> bool {
    // SAFETY: reads the transaction block state.
    unsafe { pg_sys::IsTransactionBlock() }
}

/// Ending a DT is final; a savepoint rolled back later could not undo it.
fn refuse_in_subtransaction(function: &'static str) -> DgResult<()> {
    // SAFETY: reads the current nesting level.
    if unsafe { pg_sys::GetCurrentTransactionNestLevel() } > 1 {
        return Err(DgError::InSubtransaction(function));
    }
    Ok(())
}

fn new_id() -> String {
    let n = SEQUENCE.with(|s| {
        s.set(s.get() + 1);
        s.get()
    });
    // SAFETY: reads backend-constant globals.
    let (pid, started) = unsafe { (pg_sys::MyProcPid, pg_sys::MyStartTimestamp) };
    format!("{pid}-{started:x}-{n}")
}

fn open(slot: &mut Option<Dt>, scope: Scope) -> &mut Dt {
    slot.insert(Dt::new(new_id(), scope))
}

/// `dg.dist_begin()`: bound to the block inside one, session-wide outside.
pub fn begin() -> DgResult<String> {
    with_slot(|slot| {
        if slot.is_some() {
            return Err(DgError::AlreadyInProgress);
        }
        let scope = if in_transaction_block() {
            Scope::Transaction
        } else {
            Scope::Session
        };
        let dt = open(slot, scope);
        dt.touched = true;
        Ok(dt.id.clone())
    })
}

/// Runs `stmt` in the DT (starting one bound to the local transaction if
/// none is open).
pub fn run(stmt: Statement) -> DgResult<i64> {
    with_statement_dt(|dt| {
        let read_only = dt.read_only();
        dt.run(stmt).map_err(|e| explain_read_only(e, read_only))
    })
}

/// `dg.dist_send()`: queues `stmt` in the DT (starting one bound to the
/// local transaction if none is open) without waiting for it.
pub fn send(stmt: Statement) -> DgResult<()> {
    with_statement_dt(|dt| dt.send(stmt))
}

/// `f` on the DT a statement runs in: the open one, or a new one bound to
/// the local transaction; refused when the DT takes no more statements.
fn with_statement_dt<R>(f: impl FnOnce(&mut Dt) -> DgResult<R>) -> DgResult<R> {
    with_slot(|slot| {
        let dt = match slot {
            Some(dt) => dt,
            None => open(slot, Scope::Transaction),
        };
        dt.check_statement()?;
        dt.touched = true;
        f(dt)
    })
}

/// `dg.dist_sync()`: what each send affected, as (node, seq, rows) in
/// send order; nothing when no DT is open.
pub fn sync() -> DgResult<Vec<(String, u32, i64)>> {
    with_slot(|slot| {
        let Some(dt) = slot.as_mut() else {
            return Ok(Vec::new());
        };
        dt.check_statement()?;
        dt.touched = true;
        let read_only = dt.read_only();
        dt.sync_all().map_err(|e| explain_read_only(e, read_only))
    })
}

/// `dg.dist_snapshot()`: opens the block's DT with a consistent snapshot
/// on `nodes` (every node the role may use when empty) and returns them.
pub fn snapshot(nodes: Vec<String>) -> DgResult<Vec<String>> {
    if !in_transaction_block() {
        return Err(DgError::SnapshotOutsideBlock);
    }
    // SAFETY: reads the local transaction's isolation level.
    if unsafe { pg_sys::XactIsoLevel } < pg_sys::XACT_REPEATABLE_READ as i32 {
        return Err(DgError::SnapshotIsolation);
    }
    let nodes = if nodes.is_empty() {
        catalog::node_names()
            .into_iter()
            .filter(|n| fdw::lookup(n).is_ok())
            .collect()
    } else {
        nodes
    };
    with_slot(|slot| {
        if slot
            .as_ref()
            .is_some_and(|dt| !dt.participants.is_empty() || dt.scope == Scope::Session)
        {
            return Err(DgError::SnapshotNotFirst);
        }
        let dt = match slot {
            Some(dt) => dt,
            None => open(slot, Scope::Transaction),
        };
        dt.check_statement()?;
        dt.touched = true;
        dt.take_snapshot(&nodes)
    })
}

/// A write refused by a peer because dg began its transaction READ ONLY
/// gets a hint saying why: the peer's message alone blames the peer.
fn explain_read_only(e: DgError, read_only: bool) -> DgError {
    match e {
        DgError::Remote(mut r) if read_only && r.sqlstate == "25006" && r.hint.is_none() => {
            r.hint = Some(
                "dg runs the distributed transaction READ ONLY on every node because the local \
                 transaction is read-only (as every transaction on a hot standby is)."
                    .into(),
            );
            DgError::Remote(r)
        }
        e => e,
    }
}

/// `dg.dist_commit()`: runs the prepare phase now. In a block the block's
/// COMMIT seals it; outside, the current statement's commit does.
pub fn commit() -> DgResult<()> {
    refuse_in_subtransaction("dg.dist_commit()")?;
    with_slot(|slot| {
        let dt = slot.as_mut().ok_or(DgError::NoneInProgress)?;
        if let (DtState::Aborted, Some(e)) = (dt.state, dt.failed_send()) {
            return Err(e);
        }
        dt.state.check_commit()?;
        dt.touched = true;
        // Session scope: local statements are not part of the DT. A block
        // may still write locally after this call, so its commit must agree.
        let local_must_agree = dt.scope == Scope::Transaction;
        dt.prepare(local_must_agree)
    })
}

/// `dg.dist_rollback()`: false when there was nothing to roll back. In a
/// block the DT stays, aborted, so the block can only roll back.
pub fn rollback() -> DgResult<bool> {
    refuse_in_subtransaction("dg.dist_rollback()")?;
    with_slot(|slot| {
        let Some(dt) = slot.as_mut() else {
            return Ok(false);
        };
        if dt.state == DtState::Committing {
            return Err(DgError::AlreadyCommitting);
        }
        match dt.scope {
            Scope::Transaction => dt.abort_and_fail(),
            Scope::Session => {
                dt.abort();
                if let Some(dt) = slot.take() {
                    dt.release();
                }
            }
        }
        Ok(true)
    })
}

pub struct Status {
    pub id: String,
    pub state: &'static str,
    pub scope: &'static str,
    pub nodes: Vec<String>,
}

pub fn status() -> Option<Status> {
    with_slot(|slot| {
        Ok(slot.as_ref().map(|dt| Status {
            id: dt.id.clone(),
            state: dt.state.name(),
            scope: match dt.scope {
                Scope::Transaction => "transaction",
                Scope::Session => "session",
            },
            nodes: dt.nodes(),
        }))
    })
    .ok()
    .flatten()
}

/// Visits the connections the DT holds, with their remote state and
/// whether they are still valid.
pub fn for_each_connection(mut f: impl FnMut(&Connection, &'static str, bool)) {
    let _ = with_slot(|slot| {
        for p in slot.iter().flat_map(|dt| dt.participants.iter()) {
            f(&p.conn, p.label(), cache::valid(&p.conn));
        }
        Ok(())
    });
}

/// True if the open DT uses `node`.
pub fn uses_node(node: &str) -> bool {
    with_slot(|slot| {
        Ok(slot
            .iter()
            .any(|dt| dt.participants.iter().any(|p| p.conn.node == node)))
    })
    .unwrap_or(true)
}

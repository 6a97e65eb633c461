//! Set-returning functions behind dg's monitoring functions and views.

use crate::error::DgError;
use crate::remote::cache;
use crate::xact;
use pgrx::pg_sys;
use pgrx::prelude::*;

/// `dg.connections()`: this session's connections, cached or in use. Never
/// shows connection options, so never a password.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn connections() -> TableIterator<
    'static,
    (
        name!(node, String),
        name!(remote_user, String),
        name!(state, String),
        name!(backend_pid, i32),
        name!(valid, bool),
    ),
> {
    let mut rows = Vec::new();
    xact::for_each_connection(|c, state| {
        rows.push((
            c.node.clone(),
            c.remote_user(),
            state.to_string(),
            c.backend_pid(),
            !c.invalidated,
        ))
    });
    cache::for_each(|c| {
        rows.push((
            c.node.clone(),
            c.remote_user(),
            "idle".to_string(),
            c.backend_pid(),
            !c.invalidated,
        ))
    });
    TableIterator::new(rows)
}

/// `dg.gid_info(gid)`: what a dg GID says (for reading `pg_prepared_xacts`
/// on a peer); no row for a GID dg did not make.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn gid_info(
    gid: &str,
) -> TableIterator<
    'static,
    (
        name!(coordinator, String),
        name!(database, pg_sys::Oid),
        name!(xid, i64),
        name!(user_mapping, pg_sys::Oid),
    ),
> {
    TableIterator::new(crate::gid::Gid::parse(gid).map(|g| {
        (
            g.coordinator,
            pg_sys::Oid::from(g.database),
            g.xid as i64,
            pg_sys::Oid::from(g.mapping),
        )
    }))
}

/// Who may decide in-doubt transactions, and where. EXECUTE is revoked
/// from PUBLIC, but a grant must not let a non-superuser finish other
/// roles' prepared transactions (recovery uses the mapping each GID
/// names) or list them. A standby shares the primary's coordinator id but
/// sees its transactions late: it would roll back DTs that are committing.
fn check_recovery_caller(function: &'static str) {
    // SAFETY: plain catalog lookup of the current user.
    if !unsafe { pg_sys::superuser() } {
        DgError::SuperuserOnly(function).raise()
    }
    // SAFETY: reads shared memory state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        DgError::OnStandby(function).raise()
    }
}

/// `dg.recover()`: one resolver pass, now.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn recover() -> TableIterator<
    'static,
    (
        name!(node, String),
        name!(gid, String),
        name!(action, String),
        name!(result, String),
    ),
> {
    check_recovery_caller("dg.recover()");
    crate::api::refuse_in_parallel_mode("dg.recover()");
    TableIterator::new(
        crate::recovery::pass()
            .0
            .into_iter()
            .map(|(node, gid, action, result)| (node, gid, action.to_string(), result)),
    )
}

/// Behind the `dg.in_doubt` view.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn in_doubt_transactions() -> TableIterator<
    'static,
    (
        name!(node, String),
        name!(gid, String),
        name!(prepared, String),
        name!(action, String),
    ),
> {
    check_recovery_caller("dg.in_doubt_transactions()");
    TableIterator::new(
        crate::recovery::scan()
            .0
            .into_iter()
            .map(|t| (t.node, t.gid, t.prepared, t.action.name().to_string())),
    )
}

/// Behind the `dg.stats` view.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn stats_counters() -> TableIterator<
    'static,
    (
        name!(committed_2pc, i64),
        name!(committed_1pc, i64),
        name!(aborted, i64),
        name!(finish_failures, i64),
        name!(resolver_commits, i64),
        name!(resolver_aborts, i64),
        name!(prepare_count, i64),
        name!(prepare_us, i64),
        name!(finish_count, i64),
        name!(finish_us, i64),
        name!(remote_requests, i64),
        name!(deadlocks, i64),
    ),
> {
    let c = crate::stats::snapshot();
    let n = |v: u64| v as i64;
    TableIterator::once((
        n(c.committed_2pc),
        n(c.committed_1pc),
        n(c.aborted),
        n(c.finish_failures),
        n(c.resolver_commits),
        n(c.resolver_aborts),
        n(c.prepare_count),
        n(c.prepare_us),
        n(c.finish_count),
        n(c.finish_us),
        n(c.remote_requests),
        n(c.deadlocks),
    ))
}

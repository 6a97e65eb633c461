//! Set-returning functions behind dg's monitoring functions and views,
//! and `dg.recover()`.

use super::guards::{check_recovery_caller, refuse_in_parallel_mode};
use crate::catalog;
use crate::error::DgError;
use crate::gid::Gid;
use crate::recovery::pass;
use crate::remote::cache;
use crate::stats;
use crate::xact::session;
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
    session::for_each_connection(|c, state, valid| {
        rows.push((
            c.node.clone(),
            c.remote_user(),
            state.to_string(),
            c.backend_pid(),
            valid,
        ))
    });
    cache::for_each_idle(|c, valid| {
        rows.push((
            c.node.clone(),
            c.remote_user(),
            "idle".to_string(),
            c.backend_pid(),
            valid,
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
    TableIterator::new(Gid::parse(gid).map(|g| {
        (
            g.coordinator,
            pg_sys::Oid::from(g.database),
            g.xid as i64,
            pg_sys::Oid::from(g.mapping),
        )
    }))
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
    refuse_in_parallel_mode("dg.recover()");
    TableIterator::new(pass::pass().0.into_iter().map(|r| {
        let result = r.outcome.describe();
        (r.node, r.gid, r.action.name().to_string(), result)
    }))
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
        pass::scan()
            .found
            .into_iter()
            .map(|t| (t.node, t.gid, t.prepared, t.action.name().to_string())),
    )
}

/// Behind the `dg.stats` view: the counters, and what the last resolver
/// passes left in doubt (the oldest PREPARE in µs since the Unix epoch).
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn stats_counters() -> TableIterator<
    'static,
    (
        name!(committed_2pc, i64),
        name!(committed_1pc, i64),
        name!(aborted, i64),
        name!(finish_failures, i64),
        name!(finish_failures_unreachable, i64),
        name!(resolver_commits, i64),
        name!(resolver_aborts, i64),
        name!(remote_requests, i64),
        name!(deadlocks, i64),
        name!(lost_commits, i64),
        name!(in_doubt, i64),
        name!(oldest_in_doubt_us, Option<i64>),
        name!(snapshots, i64),
        name!(snapshots_held, i64),
        name!(snapshot_retakes, i64),
    ),
> {
    let c = stats::snapshot();
    let n = |v: u64| v as i64;
    TableIterator::once((
        n(c.committed_2pc),
        n(c.committed_1pc),
        n(c.aborted),
        n(c.finish_failures),
        n(c.finish_failures_unreachable),
        n(c.resolver_commits),
        n(c.resolver_aborts),
        n(c.remote_requests),
        n(c.deadlocks),
        n(c.lost_commits),
        n(c.in_doubt),
        c.oldest_in_doubt,
        n(c.snapshots),
        n(c.snapshots_held),
        n(c.snapshot_retakes),
    ))
}

/// Behind the `dg.stats` view: one row per timed step, in microseconds.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn stats_steps() -> TableIterator<
    'static,
    (
        name!(step, &'static str),
        name!(calls, i64),
        name!(total_us, i64),
        name!(min_us, i64),
        name!(max_us, i64),
    ),
> {
    let steps = stats::snapshot().steps;
    TableIterator::new(stats::STEP_NAMES.into_iter().zip(steps).map(|(name, t)| {
        (
            name,
            t.calls as i64,
            t.total_us as i64,
            t.min_us as i64,
            t.max_us as i64,
        )
    }))
}

/// `dg.stats_reset()`: zeroes `dg.stats` (superuser unless granted).
#[pg_extern(sql = false)]
fn stats_reset() {
    stats::reset();
}

/// `dg.acknowledge_lost_commits(gid)`: a superuser has dealt with the lost
/// commit `gid` (every one when NULL); its row leaves `dg.lost_commits`.
/// Returns how many went. EXECUTE is revoked from PUBLIC, and a grant
/// does not let a non-superuser silence the alarm either.
#[pg_extern(sql = false)]
fn acknowledge_lost_commits(gid: Option<&str>) -> i64 {
    // SAFETY: plain catalog lookup of the current user.
    if !unsafe { pg_sys::superuser() } {
        DgError::SuperuserOnly("dg.acknowledge_lost_commits()").raise()
    }
    catalog::acknowledge_lost_commits(gid)
}

//! The SQL functions that run and end DTs (README, "Functions"): check
//! arguments, delegate to `xact::session`, raise errors with their
//! SQLSTATE. Their SQL declarations live in sql/dg.sql.

use super::guards::{node_name, ok, param_values, refuse_in_parallel_mode, required};
use crate::error::DgError;
use crate::recovery;
use crate::remote::cache;
use crate::xact::session;
use crate::xact::statement::Statement;
use pgrx::prelude::*;
use pgrx::Array;
use std::ffi::CStr;

#[pg_extern(sql = false)]
fn dist_begin() -> String {
    refuse_in_parallel_mode("dg.dist_begin()");
    ok(session::begin())
}

#[pg_extern(sql = false)]
fn dist_exec(node: Option<&CStr>, sql: Option<&str>, params: Option<Array<'_, String>>) -> i64 {
    refuse_in_parallel_mode("dg.dist_exec()");
    let node = node_name(node);
    let sql = required(sql, "sql");
    let params = param_values(params);
    ok(session::run(Statement {
        node: &node,
        sql,
        params: &params,
        rows: None,
    }))
}

#[pg_extern(sql = false)]
fn dist_send(node: Option<&CStr>, sql: Option<&str>, params: Option<Array<'_, String>>) {
    refuse_in_parallel_mode("dg.dist_send()");
    let node = node_name(node);
    let sql = required(sql, "sql");
    let params = param_values(params);
    ok(session::send(Statement {
        node: &node,
        sql,
        params: &params,
        rows: None,
    }))
}

#[pg_extern(sql = false)]
fn dist_sync() -> TableIterator<'static, (name!(node, String), name!(seq, i32), name!(rows, i64))> {
    refuse_in_parallel_mode("dg.dist_sync()");
    let rows = ok(session::sync());
    TableIterator::new(
        rows.into_iter()
            .map(|(node, seq, rows)| (node, seq as i32, rows)),
    )
}

#[pg_extern(sql = false)]
fn dist_snapshot(
    nodes: Option<Array<'_, &CStr>>,
) -> TableIterator<'static, (name!(node, String),)> {
    refuse_in_parallel_mode("dg.dist_snapshot()");
    let nodes: Vec<String> = nodes
        .map(|a| a.iter().map(|n| node_name(n)).collect())
        .unwrap_or_default();
    let taken = ok(session::snapshot(nodes));
    TableIterator::new(taken.into_iter().map(|n| (n,)))
}

#[pg_extern(sql = false)]
fn dist_commit() {
    refuse_in_parallel_mode("dg.dist_commit()");
    ok(session::commit())
}

#[pg_extern(sql = false)]
fn dist_rollback() {
    refuse_in_parallel_mode("dg.dist_rollback()");
    if !ok(session::rollback()) {
        pgrx::warning!("there is no distributed transaction in progress");
    }
}

// pgrx reads the row type from the signature, so it must be written inline.
#[allow(clippy::type_complexity)]
#[pg_extern(sql = false)]
fn dist_status() -> TableIterator<
    'static,
    (
        name!(id, Option<String>),
        name!(state, String),
        name!(scope, Option<String>),
        name!(participants, Vec<String>),
    ),
> {
    let row = match session::status() {
        Some(s) => (
            Some(s.id),
            s.state.to_string(),
            Some(s.scope.to_string()),
            s.nodes,
        ),
        None => (None, "none".to_string(), None, Vec::new()),
    };
    TableIterator::once(row)
}

#[pg_extern(sql = false)]
fn disconnect(node: Option<&CStr>) -> bool {
    let node = node_name(node);
    if session::uses_node(&node) {
        DgError::NodeInUse(node).raise()
    }
    cache::close_node(&node) > 0
}

#[pg_extern(sql = false)]
fn disconnect_all() -> i32 {
    cache::close_all() as i32
}

#[pg_extern(sql = false)]
fn resolve(node: Option<&CStr>, gid: Option<&str>, commit: Option<bool>) -> String {
    refuse_in_parallel_mode("dg.resolve()");
    let node = node_name(node);
    let gid = required(gid, "gid");
    let commit = required(commit, "commit");
    ok(recovery::pass::resolve(&node, gid, commit))
}

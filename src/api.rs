//! The SQL functions of DESIGN §2: check arguments, delegate, raise errors
//! with their SQLSTATE. Their SQL declarations live in sql/dg.sql.

use crate::error::{DgError, DgResult};
use crate::remote::libpq::PgResult;
use crate::xact;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{Array, PgLogLevel};
use std::ffi::{c_char, CStr};

fn ok<T>(r: DgResult<T>) -> T {
    r.unwrap_or_else(|e| e.raise())
}

fn required<T>(value: Option<T>, name: &'static str) -> T {
    value.unwrap_or_else(|| DgError::NullArgument(name).raise())
}

fn node_name(node: Option<&CStr>) -> String {
    required(node, "node").to_string_lossy().into_owned()
}

fn param_values(params: Option<Array<'_, String>>) -> Vec<Option<String>> {
    required(params, "params").iter().collect()
}

/// dg's functions are PARALLEL UNSAFE, but a function that wraps them
/// may be declared otherwise. A parallel worker's transaction ends with
/// the leader's, which knows nothing of the worker's participants: their
/// work would be dropped when the worker exits. So refuse up front.
pub(crate) fn refuse_in_parallel_mode(function: &'static str) {
    // SAFETY: reads the current transaction's parallel-mode flag.
    if unsafe { pg_sys::IsInParallelMode() } {
        DgError::InParallelMode(function).raise()
    }
}

#[pg_extern(sql = false)]
fn dist_begin() -> String {
    refuse_in_parallel_mode("dg.dist_begin()");
    ok(xact::begin())
}

#[pg_extern(sql = false)]
fn dist_exec(node: Option<&CStr>, sql: Option<&str>, params: Option<Array<'_, String>>) -> i64 {
    refuse_in_parallel_mode("dg.dist_exec()");
    let node = node_name(node);
    let sql = required(sql, "sql");
    let params = param_values(params);
    ok(xact::run(&node, sql, &params, None))
}

#[pg_extern(sql = false)]
fn dist_commit() {
    refuse_in_parallel_mode("dg.dist_commit()");
    ok(xact::commit())
}

#[pg_extern(sql = false)]
fn dist_rollback() {
    refuse_in_parallel_mode("dg.dist_rollback()");
    if !ok(xact::rollback()) {
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
    let row = match xact::status() {
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
    if xact::uses_node(&node) {
        DgError::NodeInUse(node).raise()
    }
    crate::remote::cache::close_node(&node) > 0
}

#[pg_extern(sql = false)]
fn disconnect_all() -> i32 {
    crate::remote::cache::close_all() as i32
}

/// Declares the V1 calling convention for a hand-written C function.
macro_rules! pg_function_info_v1 {
    ($finfo:ident) => {
        #[no_mangle]
        pub extern "C" fn $finfo() -> &'static pg_sys::Pg_finfo_record {
            const V1: pg_sys::Pg_finfo_record = pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }
    };
}

pg_function_info_v1!(pg_finfo_dist_query);

/// `dg.dist_query(node, sql, VARIADIC params) RETURNS SETOF record`,
/// dblink style: rows come back typed by the caller's column definition
/// list, converted with the local input functions, and stream into a
/// tuplestore that spills to disk past work_mem.
///
/// # Safety
/// Called by PostgreSQL's function manager with a valid `fcinfo`.
#[pgrx::pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn dist_query(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    // SAFETY: fcinfo is valid for the call and has three arguments.
    let (node, sql, params) = unsafe {
        (
            pgrx::fcinfo::pg_getarg::<&CStr>(fcinfo, 0),
            pgrx::fcinfo::pg_getarg::<&str>(fcinfo, 1),
            pgrx::fcinfo::pg_getarg::<Array<'_, String>>(fcinfo, 2),
        )
    };
    refuse_in_parallel_mode("dg.dist_query()");
    let node = node_name(node);
    let sql = required(sql, "sql");
    let params = param_values(params);
    // SAFETY: as above; the sink is built from the caller's resultinfo.
    let mut sink = unsafe { RowSink::new(fcinfo) };
    let mut on_tuples = |res: &PgResult| sink.put(&node, res);
    ok(xact::run(&node, sql, &params, Some(&mut on_tuples)));
    pg_sys::Datum::from(0)
}

/// Where `dist_query` rows go: the caller's tuplestore, typed by its
/// column definition list.
struct RowSink {
    store: *mut pg_sys::Tuplestorestate,
    meta: *mut pg_sys::AttInMetadata,
    natts: usize,
    /// Per-row allocations, reset after each row so memory stays flat.
    row_cx: pgrx::PgMemoryContexts,
}

impl RowSink {
    unsafe fn new(fcinfo: pg_sys::FunctionCallInfo) -> RowSink {
        // SAFETY: the executor passes a ReturnSetInfo for set-returning calls.
        unsafe {
            let rsinfo = (*fcinfo).resultinfo as *mut pg_sys::ReturnSetInfo;
            let usable = !rsinfo.is_null()
                && pgrx::is_a(rsinfo.cast(), pg_sys::NodeTag::T_ReturnSetInfo)
                && ((*rsinfo).allowedModes
                    & pg_sys::SetFunctionReturnMode::SFRM_Materialize as i32)
                    != 0
                && !(*rsinfo).expectedDesc.is_null();
            if !usable {
                ErrorReport::new(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "dg.dist_query must be called in FROM with a column definition list",
                    "dist_query",
                )
                .set_hint(
                    "For example: SELECT * FROM dg.dist_query('node', 'SELECT 1') AS t(x int).",
                )
                .report(PgLogLevel::ERROR);
            }
            let per_query = (*(*rsinfo).econtext).ecxt_per_query_memory;
            let old = pg_sys::MemoryContextSwitchTo(per_query);
            let desc = pg_sys::CreateTupleDescCopy((*rsinfo).expectedDesc);
            let store = pg_sys::tuplestore_begin_heap(true, false, pg_sys::work_mem);
            pg_sys::MemoryContextSwitchTo(old);
            (*rsinfo).returnMode = pg_sys::SetFunctionReturnMode::SFRM_Materialize;
            (*rsinfo).setResult = store;
            (*rsinfo).setDesc = desc;
            RowSink {
                store,
                meta: pg_sys::TupleDescGetAttInMetadata(desc),
                natts: (*desc).natts as usize,
                row_cx: pgrx::PgMemoryContexts::new("dg.dist_query row"),
            }
        }
    }

    fn put(&mut self, node: &str, res: &PgResult) {
        if res.nfields() != self.natts {
            DgError::RowtypeMismatch {
                node: node.into(),
                remote: res.nfields(),
                local: self.natts,
            }
            .raise()
        }
        let (store, meta, natts) = (self.store, self.meta, self.natts);
        for row in 0..res.ntuples() {
            // SAFETY: values point into `res`, alive for the call; the
            // tuple is built in the row context and copied by the store.
            unsafe {
                self.row_cx.switch_to(|_| {
                    let mut values: Vec<*mut c_char> = (0..natts)
                        .map(|col| {
                            res.value(row, col)
                                .map_or(std::ptr::null_mut(), |v| v.as_ptr().cast_mut())
                        })
                        .collect();
                    let tuple = pg_sys::BuildTupleFromCStrings(meta, values.as_mut_ptr());
                    pg_sys::tuplestore_puttuple(store, tuple);
                });
                self.row_cx.reset();
            }
        }
    }
}

#[pg_extern(sql = false)]
fn resolve(node: Option<&CStr>, gid: Option<&str>, commit: Option<bool>) -> String {
    refuse_in_parallel_mode("dg.resolve()");
    let node = node_name(node);
    let gid = required(gid, "gid");
    let commit = required(commit, "commit");
    ok(crate::recovery::resolve(&node, gid, commit))
}

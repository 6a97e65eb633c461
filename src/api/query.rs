//! `dg.dist_query()`: a hand-written set-returning function, dblink
//! style, because its row type comes from the caller's column definition
//! list, which `#[pg_extern]` cannot express.

use super::guards::{node_name, ok, param_values, refuse_in_parallel_mode, required};
use crate::error::DgError;
use crate::remote::libpq::PgResult;
use crate::xact::session;
use crate::xact::statement::Statement;
use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::prelude::*;
use pgrx::{Array, PgLogLevel};
use std::ffi::{c_char, CStr};

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
    let mut rows = |res: &PgResult| sink.put(&node, res);
    ok(session::run(Statement {
        node: &node,
        sql,
        params: &params,
        rows: Some(&mut rows),
    }));
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

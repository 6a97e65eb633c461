//! Argument and caller checks shared by the SQL functions: NULL
//! arguments, parallel mode, and who may run recovery. Each raises the
//! error the README's tables list.

use crate::error::{DgError, DgResult};
use pgrx::pg_sys;
use pgrx::Array;
use std::ffi::CStr;

/// The value of `r`, or its error raised.
pub fn ok<T>(r: DgResult<T>) -> T {
    r.unwrap_or_else(|e| e.raise())
}

/// A non-NULL argument `name`, or 22004.
pub fn required<T>(value: Option<T>, name: &'static str) -> T {
    value.unwrap_or_else(|| DgError::NullArgument(name).raise())
}

pub fn node_name(node: Option<&CStr>) -> String {
    required(node, "node").to_string_lossy().into_owned()
}

/// A NULL element is SQL NULL; a NULL array is 22004.
pub fn param_values(params: Option<Array<'_, String>>) -> Vec<Option<String>> {
    required(params, "params").iter().collect()
}

/// dg's functions are PARALLEL UNSAFE, but a function that wraps them
/// may be declared otherwise. A parallel worker's transaction ends with
/// the leader's, which knows nothing of the worker's participants: their
/// work would be dropped when the worker exits. So refuse up front.
pub fn refuse_in_parallel_mode(function: &'static str) {
    // SAFETY: reads the current transaction's parallel-mode flag.
    if unsafe { pg_sys::IsInParallelMode() } {
        DgError::InParallelMode(function).raise()
    }
}

/// Who may decide in-doubt transactions, and where. EXECUTE is revoked
/// from PUBLIC, but a grant must not let a non-superuser finish other
/// roles' prepared transactions (recovery uses the mapping each GID
/// names) or list them. A standby shares the primary's coordinator id but
/// sees its transactions late: it would roll back DTs that are committing.
pub fn check_recovery_caller(function: &'static str) {
    // SAFETY: plain catalog lookup of the current user.
    if !unsafe { pg_sys::superuser() } {
        DgError::SuperuserOnly(function).raise()
    }
    // SAFETY: reads shared memory state.
    if unsafe { pg_sys::RecoveryInProgress() } {
        DgError::OnStandby(function).raise()
    }
}

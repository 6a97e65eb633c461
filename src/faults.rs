//! Named fault points in the commit protocol, for the crash tests. Built
//! only with the `fault_injection` feature (which `make test` turns on and
//! releases never have); without it `hit` and `split` are empty and the
//! optimizer removes them.
//!
//! `SET dg.fault = 'point[:k]=action'` (superuser) arms one point:
//! `before_prepare`, `after_prepare:k` (k PREPAREs sent and answered, the
//! rest not sent), `after_decision` (decision row written, local commit
//! not yet), `after_local_commit`, `between_finishes:k`, `between_restore_points:k`
//! (`dg.create_restore_point()` after k nodes' points); the action is
//! `error`, `exit` (this backend dies; the server restarts its backends),
//! `crash` (the whole server dies) or `sleep:ms`.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    BeforePrepare,
    AfterPrepare,
    AfterDecision,
    AfterLocalCommit,
    BetweenFinishes,
    BeforeDecisionRead,
    /// `dg.create_restore_point()`: the points of the first k nodes made,
    /// the other nodes' and the coordinator's not yet.
    BetweenRestorePoints,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Error,
    Exit,
    Crash,
    Sleep(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub point: Point,
    /// For the points between the commands of a phase: after how many.
    pub k: usize,
    pub action: Action,
}

/// Parses `point[:k]=action[:ms]`; None for anything else.
#[cfg_attr(not(any(test, feature = "fault_injection")), allow(dead_code))]
pub fn parse(s: &str) -> Option<Fault> {
    let (point, action) = s.trim().split_once('=')?;
    let (point, k) = match point.split_once(':') {
        Some((p, k)) => (p, k.parse().ok()?),
        None => (point, 0),
    };
    let point = match point {
        "before_prepare" => Point::BeforePrepare,
        "after_prepare" => Point::AfterPrepare,
        "after_decision" => Point::AfterDecision,
        "after_local_commit" => Point::AfterLocalCommit,
        "between_finishes" => Point::BetweenFinishes,
        "before_decision_read" => Point::BeforeDecisionRead,
        "between_restore_points" => Point::BetweenRestorePoints,
        _ => return None,
    };
    let action = match action.split_once(':') {
        Some(("sleep", ms)) => Action::Sleep(ms.parse().ok()?),
        None if action == "error" => Action::Error,
        None if action == "exit" => Action::Exit,
        None if action == "crash" => Action::Crash,
        _ => return None,
    };
    Some(Fault { point, k, action })
}

#[cfg(feature = "fault_injection")]
mod armed {
    use super::{parse, Action, Fault, Point};
    use crate::error::DgError;
    use pgrx::{pg_guard, pg_sys, GucContext, GucFlags, GucRegistry, GucSetting};
    use std::ffi::{c_char, c_void, CStr, CString};

    static FAULT: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(None);

    pub fn init() {
        // SAFETY: the check hook is guarded and the setting is static.
        unsafe {
            GucRegistry::define_string_guc_with_hooks(
                c"dg.fault",
                c"Fault to inject in the commit protocol (test builds only).",
                c"point[:k]=action, e.g. after_prepare:1=crash or after_local_commit=sleep:500.",
                &FAULT,
                GucContext::Suset,
                GucFlags::empty(),
                Some(check_fault),
                None,
                None,
            )
        };
    }

    /// Refuses a value `parse` cannot read; empty disarms.
    #[pg_guard]
    unsafe extern "C-unwind" fn check_fault(
        newval: *mut *mut c_char,
        _extra: *mut *mut c_void,
        _source: pg_sys::GucSource::Type,
    ) -> bool {
        // SAFETY: PostgreSQL passes the proposed value: NULL or a C string.
        let value = unsafe { *newval };
        if value.is_null() {
            return true;
        }
        // SAFETY: as above, a NUL-terminated string.
        let value = unsafe { CStr::from_ptr(value) }.to_string_lossy();
        if value.trim().is_empty() || parse(&value).is_some() {
            return true;
        }
        // SAFETY: PostgreSQL reports the detail after the hook returns;
        // pstrdup copies it into the current memory context.
        unsafe {
            pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(
                c"Expected point[:k]=action: a point of the commit protocol or recovery, and error, exit, crash or sleep:ms.".as_ptr(),
            );
        }
        false
    }

    pub fn armed() -> Option<Fault> {
        FAULT.get().and_then(|s| parse(&s.to_string_lossy()))
    }

    pub fn hit(point: Point) {
        let Some(fault) = armed().filter(|f| f.point == point) else {
            return;
        };
        pgrx::log!("dg: fault {:?} at {:?}", fault.action, point);
        match fault.action {
            Action::Error => {
                DgError::Unsupported(format!("dg fault injected at {point:?}")).raise()
            }
            // An abort is a crash to the postmaster: it restarts every
            // backend and runs crash recovery, as for a killed backend.
            Action::Exit => std::process::abort(),
            Action::Crash => {
                // SAFETY: reads the postmaster's pid.
                let postmaster = unsafe { pg_sys::PostmasterPid };
                let _ = std::process::Command::new("kill")
                    .args(["-9", &postmaster.to_string()])
                    .status();
                std::process::abort()
            }
            // SAFETY: plain sleep.
            Action::Sleep(ms) => unsafe { pg_sys::pg_usleep((ms * 1000) as _) },
        }
    }
}

#[cfg(feature = "fault_injection")]
pub use armed::{hit, init};

/// The k of an armed between-commands point, if it is `point`.
#[cfg(feature = "fault_injection")]
pub fn split(point: Point) -> Option<usize> {
    armed::armed().filter(|f| f.point == point).map(|f| f.k)
}

#[cfg(not(feature = "fault_injection"))]
#[inline(always)]
pub fn hit(_point: Point) {}

#[cfg(not(feature = "fault_injection"))]
#[inline(always)]
pub fn split(_point: Point) -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_and_actions() {
        assert_eq!(
            parse("after_prepare:1=crash"),
            Some(Fault {
                point: Point::AfterPrepare,
                k: 1,
                action: Action::Crash
            })
        );
        assert_eq!(
            parse("after_local_commit=sleep:500"),
            Some(Fault {
                point: Point::AfterLocalCommit,
                k: 0,
                action: Action::Sleep(500)
            })
        );
        assert_eq!(
            parse("before_prepare=error").map(|f| f.action),
            Some(Action::Error)
        );
        assert_eq!(
            parse("between_finishes:2=exit").map(|f| (f.point, f.k)),
            Some((Point::BetweenFinishes, 2))
        );
        assert_eq!(
            parse("before_decision_read=sleep:1").map(|f| f.point),
            Some(Point::BeforeDecisionRead)
        );
        assert_eq!(
            parse("between_restore_points=sleep:1000").map(|f| f.point),
            Some(Point::BetweenRestorePoints)
        );
        for bad in [
            "",
            "nowhere=crash",
            "before_prepare=explode",
            "after_prepare:x=crash",
            "before_prepare",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}

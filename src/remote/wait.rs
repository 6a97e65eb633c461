//! Waiting on a peer's socket without blocking the backend: the latch is
//! watched too, so cancel requests, timeouts and postmaster death are
//! noticed while a peer is slow or gone.

use crate::deadlock::PeerWait;
use pgrx::pg_sys;
use std::ffi::c_int;
use std::time::Instant;

#[derive(Clone, Copy)]
pub enum Want {
    Read,
    Write,
}

/// Waits until `sock` is ready for `want` (true) or `deadline` passes
/// (false). Interrupts are checked each time the latch is set, so a pending
/// cancel raises an ERROR from here unless interrupts are held; so does
/// the deadlock detector's choice of this DT as a victim.
pub fn wait_socket(sock: c_int, want: Want, deadline: Option<Instant>) -> bool {
    let socket_event = match want {
        Want::Read => pg_sys::WL_SOCKET_READABLE,
        Want::Write => pg_sys::WL_SOCKET_WRITEABLE,
    };
    let mut peer_wait = PeerWait::start();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        let mut events = pg_sys::WL_LATCH_SET | pg_sys::WL_EXIT_ON_PM_DEATH | socket_event;
        let mut timeout_ms: std::ffi::c_long = -1;
        if let Some(wake) = peer_wait.wake_by(deadline) {
            let left = wake.saturating_duration_since(Instant::now());
            events |= pg_sys::WL_TIMEOUT;
            timeout_ms = left.as_millis().clamp(1, i32::MAX as u128) as std::ffi::c_long;
        }
        // SAFETY: MyLatch is the backend's own latch; sock is a live socket
        // owned by a PGconn for the duration of the call.
        let rc = unsafe {
            pg_sys::WaitLatchOrSocket(
                pg_sys::MyLatch,
                events as c_int,
                sock,
                timeout_ms as _,
                pg_sys::PG_WAIT_EXTENSION,
            )
        };
        if rc & pg_sys::WL_LATCH_SET as c_int != 0 {
            // SAFETY: resetting our own latch before checking interrupts.
            unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
            pgrx::check_for_interrupts!();
        }
        if rc & (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT) as c_int != 0 {
            peer_wait.woke();
        }
        if rc & socket_event as c_int != 0 {
            return true;
        }
    }
}

/// Sets the latch of process `pid` (a worker, or a backend chosen as a
/// deadlock victim), if it still runs. Never raises.
pub fn wake(pid: i32) {
    if pid == 0 {
        return;
    }
    // SAFETY: looks up the process's PGPROC; a vanished pid gives NULL.
    unsafe {
        let proc_ = pg_sys::BackendPidGetProc(pid);
        if !proc_.is_null() {
            pg_sys::SetLatch(&raw mut (*proc_).procLatch);
        }
    }
}

/// A deadline `d` from now, if there is a limit.
pub fn deadline_after(d: Option<std::time::Duration>) -> Option<Instant> {
    d.map(|d| Instant::now() + d)
}

/// The deadline for cleanup and background work, where interrupts may be
/// held: `dg.remote_statement_timeout`, at most 30 s.
pub fn cleanup_deadline() -> Option<Instant> {
    deadline_after(Some(crate::gucs::cleanup_timeout()))
}

//! Waking other processes of this server: a backend chosen as a deadlock
//! victim, or the resolver launcher when a backend could not finish a
//! prepared transaction. One small shared-memory module, so the commit
//! path can ask for a resolver pass without importing the resolver, and
//! the detector can wake a victim without importing the socket waits.

use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;

#[derive(Copy, Clone, Default)]
pub struct Resolver {
    launcher_pid: i32,
    /// A backend could not finish a prepared transaction: pass now.
    urgent: bool,
}

// SAFETY: plain old data, no pointers.
unsafe impl PGRXSharedMemory for Resolver {}

static RESOLVER: PgLwLock<Resolver> = unsafe { PgLwLock::new(c"dg_resolver") };

pub fn init() {
    pgrx::pg_shmem_init!(RESOLVER);
}

/// Sets the latch of process `pid`, if it still runs. Never raises.
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

/// Asks the resolver for a pass now; from a backend whose finish failed.
/// Never raises (it runs in the commit path): an LWLock and a latch.
pub fn request_resolver_pass() {
    let pid = {
        let mut r = RESOLVER.exclusive();
        r.urgent = true;
        r.launcher_pid
    };
    wake(pid);
}

/// The resolver launcher `pid` is up: wake it from now on.
pub fn resolver_started(pid: i32) {
    RESOLVER.exclusive().launcher_pid = pid;
}

/// Takes the request for an urgent pass, if there is one (the launcher).
pub fn take_resolver_request() -> bool {
    std::mem::take(&mut RESOLVER.exclusive().urgent)
}

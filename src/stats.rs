//! Cluster-wide counters behind `dg.stats`, in shared memory. Updated on
//! the commit and abort paths, where only an LWLock is taken: nothing here
//! can raise.

use pgrx::lwlock::PgLwLock;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use std::cell::Cell;
use std::time::Duration;

#[derive(Copy, Clone, Default)]
pub struct Counters {
    pub committed_2pc: u64,
    pub committed_1pc: u64,
    pub aborted: u64,
    pub finish_failures: u64,
    pub resolver_commits: u64,
    pub resolver_aborts: u64,
    pub prepare_count: u64,
    pub prepare_us: u64,
    pub finish_count: u64,
    pub finish_us: u64,
    pub remote_requests: u64,
    /// Distributed deadlocks broken by cancelling one of this server's DTs.
    pub deadlocks: u64,
}

// SAFETY: plain old data, no pointers.
unsafe impl PGRXSharedMemory for Counters {}

static COUNTERS: PgLwLock<Counters> = unsafe { PgLwLock::new(c"dg_stats") };

pub fn init() {
    pgrx::pg_shmem_init!(COUNTERS);
}

thread_local! {
    /// Requests this backend sent since it last added to the counters:
    /// counted locally, so a send takes no lock.
    static REQUESTS: Cell<u64> = const { Cell::new(0) };
}

/// One request (a statement, or a pipeline of them) went to a peer.
pub fn count_request() {
    REQUESTS.with(|r| r.set(r.get() + 1));
}

/// Updates the counters, with the requests counted since the last update.
pub fn add(f: impl FnOnce(&mut Counters)) {
    let mut c = COUNTERS.exclusive();
    c.remote_requests += REQUESTS.with(Cell::take);
    f(&mut c);
}

pub fn micros(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

pub fn snapshot() -> Counters {
    *COUNTERS.share()
}

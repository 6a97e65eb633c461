//! Cluster-wide counters behind `dg.stats`, in shared memory. Every
//! update is a relaxed atomic add (or min/max), so no DT waits for another
//! to count, and nothing here can raise: the commit and abort paths call
//! in with interrupts held.
//!
//! The steps of the commit path are timed in the style of
//! pg_stat_statements: calls, total, min, max (the mean is the view's).
//! `dg.stats_reset()` zeroes everything; an update racing it may survive
//! the reset, as in PostgreSQL's own statistics.

use pgrx::atomics::PgAtomic;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What is counted once per occurrence.
#[derive(Clone, Copy)]
pub enum Event {
    Committed2pc,
    Committed1pc,
    Aborted,
    /// COMMIT or ROLLBACK PREPARED failed after the decision; `reachable`
    /// is false when the node could not be reached (a retry will do).
    FinishFailure {
        reachable: bool,
    },
    ResolverCommit,
    ResolverAbort,
    /// A distributed deadlock broken by failing one of this server's DTs.
    Deadlock,
    /// A node lost its part of a committed DT (the resolver found it).
    LostCommit,
    /// A consistent snapshot was taken; `held`: holding the commit fence
    /// (commits waited), else while commits went on.
    SnapshotTaken {
        held: bool,
    },
    /// A consistent snapshot taken while commits went on was crossed by
    /// a DT's finish, and taken again.
    SnapshotRetaken,
}

/// The timed steps.
#[derive(Clone, Copy)]
pub enum Step {
    /// One user statement on a node (`dist_exec`, `dist_query`).
    Statement = 0,
    /// PREPARE TRANSACTION on every writer.
    Prepare,
    /// The decision row and the local commit that makes it durable.
    Decision,
    /// COMMIT PREPARED on every participant.
    Finish,
    /// One COMMIT or ROLLBACK PREPARED of the resolver.
    Resolve,
}

const STEPS: usize = 5;

/// The steps' names in `dg.stats` (`<name>_calls`, …), in `Step` order.
pub const STEP_NAMES: [&str; STEPS] = ["statement", "prepare", "decision", "finish", "resolve"];
/// Databases whose in-doubt transactions are remembered at once.
const DATABASES: usize = 32;

#[derive(Default)]
struct Timing {
    calls: AtomicU64,
    total_us: AtomicU64,
    /// `u64::MAX` until the first call.
    min_us: AtomicU64,
    max_us: AtomicU64,
}

/// What the last resolver pass in one database left prepared.
#[derive(Default)]
struct InDoubt {
    database: AtomicU64,
    count: AtomicU64,
    /// PREPARE time (TimestampTz) of the oldest; 0 with none.
    oldest: AtomicI64,
}

#[derive(Default)]
pub struct Counters {
    committed_2pc: AtomicU64,
    committed_1pc: AtomicU64,
    aborted: AtomicU64,
    finish_failures: AtomicU64,
    finish_failures_unreachable: AtomicU64,
    resolver_commits: AtomicU64,
    resolver_aborts: AtomicU64,
    remote_requests: AtomicU64,
    deadlocks: AtomicU64,
    lost_commits: AtomicU64,
    snapshots: AtomicU64,
    snapshots_held: AtomicU64,
    snapshot_retakes: AtomicU64,
    steps: [Timing; STEPS],
    in_doubt: [InDoubt; DATABASES],
}

// SAFETY: atomics only, no pointers; every access is atomic.
unsafe impl PGRXSharedMemory for Counters {}

static COUNTERS: PgAtomic<Counters> = unsafe { PgAtomic::new(c"dg_stats") };

pub fn init() {
    pgrx::pg_shmem_init!(COUNTERS = Counters::fresh());
}

thread_local! {
    /// Requests this backend sent since it last flushed them: counted
    /// locally, so a send touches no shared cache line.
    static REQUESTS: Cell<u64> = const { Cell::new(0) };
}

impl Counters {
    fn fresh() -> Counters {
        let c = Counters::default();
        c.steps
            .iter()
            .for_each(|t| t.min_us.store(u64::MAX, Relaxed));
        c
    }
}

fn counters() -> &'static Counters {
    COUNTERS.get()
}

/// One request (a statement, or a pipeline of them) went to a peer.
pub fn count_request() {
    REQUESTS.with(|r| r.set(r.get() + 1));
}

/// Adds the requests this backend counted since the last flush; at the
/// end of each DT and of each resolver or detector round.
pub fn flush_requests() {
    let n = REQUESTS.with(Cell::take);
    if n > 0 {
        counters().remote_requests.fetch_add(n, Relaxed);
    }
}

pub fn count(e: Event) {
    let c = counters();
    let field = match e {
        Event::Committed2pc => &c.committed_2pc,
        Event::Committed1pc => &c.committed_1pc,
        Event::Aborted => &c.aborted,
        Event::FinishFailure { reachable } => {
            if !reachable {
                c.finish_failures_unreachable.fetch_add(1, Relaxed);
            }
            &c.finish_failures
        }
        Event::ResolverCommit => &c.resolver_commits,
        Event::ResolverAbort => &c.resolver_aborts,
        Event::Deadlock => &c.deadlocks,
        Event::LostCommit => &c.lost_commits,
        Event::SnapshotTaken { held } => {
            if held {
                c.snapshots_held.fetch_add(1, Relaxed);
            }
            &c.snapshots
        }
        Event::SnapshotRetaken => &c.snapshot_retakes,
    };
    field.fetch_add(1, Relaxed);
}

pub fn time(step: Step, took: Duration) {
    let us = took.as_micros().min(u64::MAX as u128) as u64;
    let t = &counters().steps[step as usize];
    t.calls.fetch_add(1, Relaxed);
    t.total_us.fetch_add(us, Relaxed);
    t.min_us.fetch_min(us, Relaxed);
    t.max_us.fetch_max(us, Relaxed);
}

/// A resolver pass in `database` left `count` dg transactions prepared,
/// the oldest prepared at `oldest` (TimestampTz; ignored when count is 0).
/// A database that finds no free slot is not shown (README says so).
pub fn set_in_doubt(database: u32, count: u64, oldest: i64) {
    let slots = &counters().in_doubt;
    let database = u64::from(database);
    let slot = slots
        .iter()
        .find(|s| s.database.load(Relaxed) == database)
        .or_else(|| {
            slots.iter().find(|s| {
                s.database
                    .compare_exchange(0, database, Relaxed, Relaxed)
                    .is_ok()
            })
        });
    if let Some(s) = slot {
        s.count.store(count, Relaxed);
        s.oldest.store(if count > 0 { oldest } else { 0 }, Relaxed);
    }
}

/// `dg.stats_reset()`.
pub fn reset() {
    let c = counters();
    for a in [
        &c.committed_2pc,
        &c.committed_1pc,
        &c.aborted,
        &c.finish_failures,
        &c.finish_failures_unreachable,
        &c.resolver_commits,
        &c.resolver_aborts,
        &c.remote_requests,
        &c.deadlocks,
        &c.lost_commits,
        &c.snapshots,
        &c.snapshots_held,
        &c.snapshot_retakes,
    ] {
        a.store(0, Relaxed);
    }
    for t in &c.steps {
        t.calls.store(0, Relaxed);
        t.total_us.store(0, Relaxed);
        t.min_us.store(u64::MAX, Relaxed);
        t.max_us.store(0, Relaxed);
    }
}

/// One step's timing as the view shows it: calls, total, min, max (µs);
/// min and max are 0 before the first call.
#[derive(Clone, Copy)]
pub struct StepTimes {
    pub calls: u64,
    pub total_us: u64,
    pub min_us: u64,
    pub max_us: u64,
}

pub struct Snapshot {
    pub committed_2pc: u64,
    pub committed_1pc: u64,
    pub aborted: u64,
    pub finish_failures: u64,
    pub finish_failures_unreachable: u64,
    pub resolver_commits: u64,
    pub resolver_aborts: u64,
    pub remote_requests: u64,
    pub deadlocks: u64,
    pub lost_commits: u64,
    pub snapshots: u64,
    pub snapshots_held: u64,
    pub snapshot_retakes: u64,
    /// In `Step` order.
    pub steps: [StepTimes; STEPS],
    pub in_doubt: u64,
    /// TimestampTz of the oldest in-doubt PREPARE, if any.
    pub oldest_in_doubt: Option<i64>,
}

pub fn snapshot() -> Snapshot {
    let c = counters();
    let steps = std::array::from_fn(|i| {
        let t = &c.steps[i];
        let calls = t.calls.load(Relaxed);
        StepTimes {
            calls,
            total_us: t.total_us.load(Relaxed),
            min_us: if calls == 0 {
                0
            } else {
                t.min_us.load(Relaxed)
            },
            max_us: t.max_us.load(Relaxed),
        }
    });
    let in_doubt = c
        .in_doubt
        .iter()
        .filter(|s| s.database.load(Relaxed) != 0)
        .map(|s| (s.count.load(Relaxed), s.oldest.load(Relaxed)));
    let (count, oldest) = in_doubt.fold((0, None), |(n, o): (u64, Option<i64>), (k, t)| {
        let o = match (o, k > 0) {
            (Some(o), true) => Some(o.min(t)),
            (None, true) => Some(t),
            (o, false) => o,
        };
        (n + k, o)
    });
    Snapshot {
        committed_2pc: c.committed_2pc.load(Relaxed),
        committed_1pc: c.committed_1pc.load(Relaxed),
        aborted: c.aborted.load(Relaxed),
        finish_failures: c.finish_failures.load(Relaxed),
        finish_failures_unreachable: c.finish_failures_unreachable.load(Relaxed),
        resolver_commits: c.resolver_commits.load(Relaxed),
        resolver_aborts: c.resolver_aborts.load(Relaxed),
        remote_requests: c.remote_requests.load(Relaxed),
        deadlocks: c.deadlocks.load(Relaxed),
        lost_commits: c.lost_commits.load(Relaxed),
        snapshots: c.snapshots.load(Relaxed),
        snapshots_held: c.snapshots_held.load(Relaxed),
        snapshot_retakes: c.snapshot_retakes.load(Relaxed),
        steps,
        in_doubt: count,
        oldest_in_doubt: oldest,
    }
}

//! Every `dg.*` setting. The statics are private; the rest of the extension
//! reads them through typed accessors so units are converted in one place.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::time::Duration;

static CONNECT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(10);
static REMOTE_STATEMENT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(-1);
static MAX_CACHED_CONNECTIONS: GucSetting<i32> = GucSetting::<i32>::new(64);
static RESOLVER_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(5000);
static RESOLVER_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
static DEADLOCK_CHECK_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(2000);
static SNAPSHOT_TIMEOUT: GucSetting<i32> = GucSetting::<i32>::new(10_000);
static SYNCHRONOUS_FINISH: GucSetting<bool> = GucSetting::<bool>::new(true);

/// How long cleanup (abort, finish) may wait on a peer when no
/// `dg.remote_statement_timeout` is set. Interrupts are held on those paths,
/// so without a bound a dead peer would hang COMMIT or ROLLBACK forever.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

pub fn init() {
    GucRegistry::define_int_guc(
        c"dg.connect_timeout",
        c"Seconds to wait for a connection to a peer.",
        c"Bounds the whole connection attempt, including authentication. 0 waits without limit.",
        &CONNECT_TIMEOUT,
        0,
        3600,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"dg.remote_statement_timeout",
        c"Longest wait for one remote statement; -1 inherits statement_timeout.",
        c"When it expires the remote statement is cancelled and the distributed transaction aborts. \
          It also bounds waits during COMMIT and ROLLBACK, where interrupts cannot be processed.",
        &REMOTE_STATEMENT_TIMEOUT,
        -1,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"dg.max_cached_connections",
        c"Idle peer connections a session keeps open between transactions.",
        c"Connections beyond this number are closed when their transaction ends, least recently used first.",
        &MAX_CACHED_CONNECTIONS,
        0,
        10_000,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"dg.resolver_interval",
        c"Time between resolver passes over the in-doubt transactions.",
        c"A backend that cannot finish a prepared transaction also wakes the resolver at once.",
        &RESOLVER_INTERVAL,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"dg.resolver_enabled",
        c"Whether the resolver finishes in-doubt transactions on its own.",
        c"Off leaves them to dg.recover(); for tests and emergencies.",
        &RESOLVER_ENABLED,
        GucContext::Sighup,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"dg.snapshot_timeout",
        c"Longest wait of dg.dist_snapshot() for the commits ahead of it and for transactions in doubt.",
        c"A snapshot that would include a distributed transaction committed on some of its nodes \
          and not yet on others waits for the resolver to finish it, then fails with SQLSTATE 55P03.",
        &SNAPSHOT_TIMEOUT,
        0,
        3_600_000,
        GucContext::Userset,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_bool_guc(
        c"dg.synchronous_finish",
        c"Whether COMMIT waits for every node's COMMIT PREPARED to answer.",
        c"Off returns once the decision is durable and every COMMIT PREPARED is sent: atomicity and \
          durability are unchanged, but another session may for a moment not see the commit on a node.",
        &SYNCHRONOUS_FINISH,
        GucContext::Userset,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"dg.deadlock_check_interval",
        c"Time between checks for deadlocks across nodes; 0 turns detection off.",
        c"A check runs this long after a distributed transaction began waiting on a node, and on a \
          back-off while no lock waits are seen. The youngest distributed transaction of each cycle \
          fails with SQLSTATE 40P01.",
        &DEADLOCK_CHECK_INTERVAL,
        0,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    reserve_prefix();
}

#[cfg(any(feature = "pg13", feature = "pg14"))]
fn reserve_prefix() {
    // SAFETY: called from _PG_init with a static NUL-terminated string.
    unsafe { pgrx::pg_sys::EmitWarningsOnPlaceholders(c"dg".as_ptr()) }
}

#[cfg(not(any(feature = "pg13", feature = "pg14")))]
fn reserve_prefix() {
    // SAFETY: called from _PG_init with a static NUL-terminated string.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"dg".as_ptr()) }
}

/// `None` means no limit.
pub fn connect_timeout() -> Option<Duration> {
    match CONNECT_TIMEOUT.get() {
        0 => None,
        s => Some(Duration::from_secs(s as u64)),
    }
}

/// The bound on one remote statement wait, if dg sets one itself. `None`
/// leaves it to the local `statement_timeout`, which interrupts the wait.
pub fn remote_statement_timeout() -> Option<Duration> {
    match REMOTE_STATEMENT_TIMEOUT.get() {
        ms if ms > 0 => Some(Duration::from_millis(ms as u64)),
        _ => None,
    }
}

/// The bound on waits that cannot be interrupted (commit and abort paths).
pub fn cleanup_timeout() -> Duration {
    remote_statement_timeout().map_or(CLEANUP_TIMEOUT, |t| t.min(CLEANUP_TIMEOUT))
}

pub fn max_cached_connections() -> usize {
    MAX_CACHED_CONNECTIONS.get().max(0) as usize
}

pub fn resolver_interval() -> Duration {
    Duration::from_millis(RESOLVER_INTERVAL.get().max(1) as u64)
}

pub fn resolver_enabled() -> bool {
    RESOLVER_ENABLED.get()
}

/// `None` when detection is off.
pub fn deadlock_check_interval() -> Option<Duration> {
    match DEADLOCK_CHECK_INTERVAL.get() {
        ms if ms > 0 => Some(Duration::from_millis(ms as u64)),
        _ => None,
    }
}

/// `dg.snapshot_timeout`.
pub fn snapshot_timeout() -> Duration {
    Duration::from_millis(SNAPSHOT_TIMEOUT.get().max(0) as u64)
}

/// `dg.synchronous_finish`: COMMIT waits for the answers of its
/// `COMMIT PREPARED`s.
pub fn synchronous_finish() -> bool {
    SYNCHRONOUS_FINISH.get()
}

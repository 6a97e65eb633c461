//! Waiting on a peer's socket without blocking the backend: the latch is
//! watched too, so cancel requests, timeouts and postmaster death are
//! noticed while a peer is slow or gone.
//!
//! Upper layers learn of long waits through a `Watch` installed once at
//! start (the deadlock detector's), so this layer imports none of them.
//! They say what each wait is for with a `WaitEvent`, which
//! `pg_stat_activity.wait_event` shows by name on PostgreSQL 17+.

use pgrx::pg_sys;
use std::ffi::{c_int, CStr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// What a wait is for, as `pg_stat_activity` names it (`wait_event_type`
/// `Extension`). PostgreSQL 17 lets an extension name its waits
/// (`WaitEventExtensionNew`); 15 and 16 show every one as `Extension`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitEvent {
    /// Connecting to a peer, authentication and session setup included.
    Connect,
    /// A statement's result (the user's, or dg's own inside a DT).
    Result,
    /// The commit's first step: PREPARE TRANSACTION on the DT's writers,
    /// COMMIT on its readers (or the plain COMMIT of a one-phase DT).
    Prepare,
    /// COMMIT PREPARED after the local commit.
    CommitPrepared,
    /// Cancelling, draining and rolling back after an error or at abort.
    Cleanup,
    /// The resolver's work: listing and finishing prepared transactions,
    /// and its launcher's sleep between passes.
    Resolver,
    /// The deadlock detector's queries and its sleep between checks.
    Detector,
}

// 15 and 16 show no names, so there only `info` is used.
#[cfg_attr(not(any(feature = "pg17", feature = "pg18")), allow(dead_code))]
impl WaitEvent {
    const ALL: [WaitEvent; 7] = [
        WaitEvent::Connect,
        WaitEvent::Result,
        WaitEvent::Prepare,
        WaitEvent::CommitPrepared,
        WaitEvent::Cleanup,
        WaitEvent::Resolver,
        WaitEvent::Detector,
    ];

    /// The name `pg_stat_activity.wait_event` shows (17+).
    pub fn name(self) -> &'static CStr {
        match self {
            WaitEvent::Connect => c"DgConnect",
            WaitEvent::Result => c"DgResult",
            WaitEvent::Prepare => c"DgPrepare",
            WaitEvent::CommitPrepared => c"DgCommitPrepared",
            WaitEvent::Cleanup => c"DgCleanup",
            WaitEvent::Resolver => c"DgResolver",
            WaitEvent::Detector => c"DgDetector",
        }
    }

    /// The `wait_event_info` to pass to `WaitLatch*`.
    ///
    /// The names are registered in shared memory the first time a backend
    /// waits, all seven at once, and their ids kept for the backend's life
    /// (`WaitEventExtensionNew` returns the same id for the same name in
    /// every process). Never in the postmaster, which loads dg but must
    /// not take the lock registration needs. The first wait of a backend
    /// is a connect or a worker's sleep, never one with interrupts held
    /// (a commit or abort waits on connections opened before), so the
    /// ERROR registration may raise (no room for more events) comes where
    /// an ERROR may come anyway.
    #[cfg(any(feature = "pg17", feature = "pg18"))]
    fn info(self) -> u32 {
        use std::cell::Cell;
        thread_local! {
            static IDS: Cell<Option<[u32; 7]>> = const { Cell::new(None) };
        }
        // SAFETY: a plain read of a flag set once at process start.
        if !unsafe { pg_sys::IsUnderPostmaster } {
            return pg_sys::PG_WAIT_EXTENSION;
        }
        let ids = IDS.get().unwrap_or_else(|| {
            // SAFETY: static NUL-terminated names; called in a backend or
            // worker attached to shared memory, outside a critical section.
            let ids =
                WaitEvent::ALL.map(|e| unsafe { pg_sys::WaitEventExtensionNew(e.name().as_ptr()) });
            IDS.set(Some(ids));
            ids
        });
        ids[self as usize]
    }

    /// 15 and 16 have one wait event for every extension.
    #[cfg(not(any(feature = "pg17", feature = "pg18")))]
    fn info(self) -> u32 {
        pg_sys::PG_WAIT_EXTENSION
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Read,
    Write,
}

/// What an upper layer is told of each wait on a peer.
pub struct Watch {
    /// How long a wait lasts before it is reported as long (None: never).
    pub report_after: fn() -> Option<Duration>,
    /// The wait became long (true), or ended after it had (false).
    pub long_wait: fn(bool),
    /// Each time the wait wakes up (latch or timeout); may raise an ERROR,
    /// as a pending cancel may.
    pub woke: fn(),
}

static WATCH: OnceLock<Watch> = OnceLock::new();

/// Installs the watch; from _PG_init, once.
pub fn install_watch(watch: Watch) {
    let _ = WATCH.set(watch);
}

/// One wait as the watch sees it: reported once it lasts long enough,
/// and the report withdrawn when it ends (also when an ERROR unwinds it).
struct Watched {
    report_at: Option<Instant>,
    reported: bool,
}

impl Watched {
    fn start() -> Watched {
        Watched {
            report_at: WATCH
                .get()
                .and_then(|w| (w.report_after)())
                .map(|d| Instant::now() + d),
            reported: false,
        }
    }

    /// The earlier of `deadline` and the time to report.
    fn wake_by(&self, deadline: Option<Instant>) -> Option<Instant> {
        match (deadline, self.report_at.filter(|_| !self.reported)) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        }
    }

    fn woke(&mut self) {
        let Some(watch) = WATCH.get() else { return };
        if !self.reported && self.report_at.is_some_and(|r| Instant::now() >= r) {
            (watch.long_wait)(true);
            self.reported = true;
        }
        (watch.woke)();
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let (true, Some(watch)) = (self.reported, WATCH.get()) {
            (watch.long_wait)(false);
        }
    }
}

/// Waits until `sock` is ready for `want` (true) or `deadline` passes
/// (false), shown as `event`. Interrupts are checked each time the latch
/// is set, so a pending cancel raises an ERROR from here unless interrupts
/// are held; so may the watch. For sockets that may change between waits
/// (while libpq connects); an open connection waits with its `SocketWait`.
pub fn wait_socket(sock: c_int, want: Want, deadline: Option<Instant>, event: WaitEvent) -> bool {
    wait_loop(want, deadline, |events, timeout_ms| {
        // SAFETY: MyLatch is the backend's own latch; sock is a live socket
        // owned by a PGconn for the duration of the call.
        unsafe {
            pg_sys::WaitLatchOrSocket(
                pg_sys::MyLatch,
                events as c_int,
                sock,
                timeout_ms as _,
                event.info(),
            ) as u32
        }
    })
}

/// The loop both kinds of wait share: `once(events, timeout_ms)` waits
/// for the latch, the socket event `want` names, and (when `events` has
/// it) the timeout, and returns the events that occurred.
fn wait_loop(
    want: Want,
    deadline: Option<Instant>,
    mut once: impl FnMut(u32, std::ffi::c_long) -> u32,
) -> bool {
    let socket_event = want.event();
    let mut watched = Watched::start();
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        let mut events = pg_sys::WL_LATCH_SET | pg_sys::WL_EXIT_ON_PM_DEATH | socket_event;
        let mut timeout_ms: std::ffi::c_long = -1;
        if let Some(wake) = watched.wake_by(deadline) {
            let left = wake.saturating_duration_since(Instant::now());
            events |= pg_sys::WL_TIMEOUT;
            timeout_ms = left.as_millis().clamp(1, i32::MAX as u128) as std::ffi::c_long;
        }
        let rc = once(events, timeout_ms);
        if rc & pg_sys::WL_LATCH_SET != 0 {
            // SAFETY: resetting our own latch before checking interrupts.
            unsafe { pg_sys::ResetLatch(pg_sys::MyLatch) };
            pgrx::check_for_interrupts!();
        }
        if rc & (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT) != 0 {
            watched.woke();
        }
        if rc & socket_event != 0 {
            return true;
        }
    }
}

impl Want {
    fn event(self) -> u32 {
        match self {
            Want::Read => pg_sys::WL_SOCKET_READABLE,
            Want::Write => pg_sys::WL_SOCKET_WRITEABLE,
        }
    }
}

/// Whether the backend may open one more descriptor beside fd.c's files
/// (`AcquireExternalFD`'s budget). Every wait set takes one (its epoll
/// instance), and `CreateWaitEventSet` raises a bare "epoll_create1
/// failed" (XX000) when none is left, so a caller about to need one asks
/// first and refuses in its own words.
pub fn descriptor_left() -> bool {
    // SAFETY: bookkeeping calls; a descriptor acquired is given back at
    // once.
    unsafe {
        pg_sys::AcquireExternalFD() && {
            pg_sys::ReleaseExternalFD();
            true
        }
    }
}

/// The waits of one open connection, on a wait set kept for its life.
///
/// `WaitLatchOrSocket` builds and frees a set (an epoll instance, three
/// registrations) on every call: five system calls around each wait, a
/// tenth of a commit's CPU on the coordinator when every statement waits
/// once. This set is built once, when the connection is open (where an
/// ERROR may be raised: the commit and abort paths, which must not raise,
/// only reuse it), and freed with the connection.
///
/// Only for a socket that stays the same: libpq may replace its socket
/// while it connects, and a closed socket's number may come back for a
/// new one, which this set would not watch. Once a connection is open,
/// its socket lasts as long as the connection.
pub struct SocketWait {
    set: std::ptr::NonNull<pg_sys::WaitEventSet>,
    /// The socket's position in the set, and what it is watched for.
    pos: c_int,
    want: Want,
}

impl SocketWait {
    /// A set watching the latch, the postmaster and `sock` (for reading).
    /// It takes one of the backend's external descriptors: the caller
    /// makes sure one is left (`descriptor_left`), or this raises.
    pub fn new(sock: c_int) -> SocketWait {
        // SAFETY: a set with room for three events, in memory that lives
        // as long as the backend, not tracked by a resource owner (an
        // ERROR must not free it under the connection): Drop frees it,
        // also when adding an event below raises.
        let set = unsafe {
            #[cfg(any(feature = "pg15", feature = "pg16"))]
            let set = pg_sys::CreateWaitEventSet(pg_sys::TopMemoryContext, 3);
            #[cfg(not(any(feature = "pg15", feature = "pg16")))]
            let set = pg_sys::CreateWaitEventSet(std::ptr::null_mut(), 3);
            set
        };
        let mut wait = SocketWait {
            set: std::ptr::NonNull::new(set).expect("CreateWaitEventSet returns a set"),
            pos: -1,
            want: Want::Read,
        };
        let none = std::ptr::null_mut();
        // SAFETY: a live set with room left; MyLatch is the backend's own
        // latch; sock is the open connection's socket.
        unsafe {
            pg_sys::AddWaitEventToSet(set, pg_sys::WL_LATCH_SET, -1, pg_sys::MyLatch, none);
            pg_sys::AddWaitEventToSet(set, pg_sys::WL_EXIT_ON_PM_DEATH, -1, none.cast(), none);
            wait.pos = pg_sys::AddWaitEventToSet(set, wait.want.event(), sock, none.cast(), none);
        }
        wait
    }

    /// As `wait_socket`, on the socket this set watches.
    pub fn wait(&mut self, want: Want, deadline: Option<Instant>, event: WaitEvent) -> bool {
        let set = self.set.as_ptr();
        if self.want != want {
            // SAFETY: pos is the socket's entry in this live set; a socket
            // entry may change between reading and writing.
            unsafe { pg_sys::ModifyWaitEvent(set, self.pos, want.event(), std::ptr::null_mut()) };
            self.want = want;
        }
        // The set watches the same events every time; only the timeout
        // (-1: none) changes.
        wait_loop(want, deadline, |_, timeout_ms| {
            let mut occurred = [pg_sys::WaitEvent::default(); 3];
            // SAFETY: a live set and room for as many events as it holds.
            let n = unsafe {
                pg_sys::WaitEventSetWait(
                    set,
                    timeout_ms as _,
                    occurred.as_mut_ptr(),
                    occurred.len() as c_int,
                    event.info(),
                )
            };
            if n == 0 {
                return pg_sys::WL_TIMEOUT;
            }
            occurred[..n as usize].iter().fold(0, |rc, e| rc | e.events)
        })
    }
}

impl Drop for SocketWait {
    fn drop(&mut self) {
        // SAFETY: the set was made by `new` and is freed once, here.
        unsafe { pg_sys::FreeWaitEventSet(self.set.as_ptr()) };
    }
}

/// A background worker's sleep between rounds, shown as `event`: until its
/// latch is set or `timeout` passes. Interrupts are served as in any wait;
/// false if the postmaster died (the worker should exit).
pub fn sleep(timeout: Duration, event: WaitEvent) -> bool {
    let timeout_ms = timeout.as_millis().clamp(0, i32::MAX as u128) as std::ffi::c_long;
    // SAFETY: MyLatch is the process's own latch.
    let rc = unsafe {
        let rc = pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_POSTMASTER_DEATH) as c_int,
            timeout_ms as _,
            event.info(),
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
        rc
    };
    pgrx::check_for_interrupts!();
    rc & pg_sys::WL_POSTMASTER_DEATH as c_int == 0
}

/// A deadline `d` from now, if there is a limit.
pub fn deadline_after(d: Option<Duration>) -> Option<Instant> {
    d.map(|d| Instant::now() + d)
}

/// The deadline for one statement the user waits on.
pub fn statement_deadline() -> Option<Instant> {
    deadline_after(crate::gucs::remote_statement_timeout())
}

/// The deadline for cleanup and background work, where interrupts may be
/// held: `dg.remote_statement_timeout`, at most 30 s.
pub fn cleanup_deadline() -> Option<Instant> {
    deadline_after(Some(crate::gucs::cleanup_timeout()))
}

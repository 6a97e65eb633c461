//! Waiting on a peer's socket without blocking the backend: the latch is
//! watched too, so cancel requests, timeouts and postmaster death are
//! noticed while a peer is slow or gone.
//!
//! Upper layers learn of long waits through a `Watch` installed once at
//! start (the deadlock detector's), so this layer imports none of them.

use pgrx::pg_sys;
use std::ffi::c_int;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
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
/// (false). Interrupts are checked each time the latch is set, so a pending
/// cancel raises an ERROR from here unless interrupts are held; so may the
/// watch.
pub fn wait_socket(sock: c_int, want: Want, deadline: Option<Instant>) -> bool {
    let socket_event = match want {
        Want::Read => pg_sys::WL_SOCKET_READABLE,
        Want::Write => pg_sys::WL_SOCKET_WRITEABLE,
    };
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
            watched.woke();
        }
        if rc & socket_event as c_int != 0 {
            return true;
        }
    }
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

//! The shared-memory DT registry, where the backends and the deadlock
//! detectors meet: each backend's current DT (so a detector can tell which
//! local backends run DTs, how old they are, and which of them wait on a
//! peer for long), the cancellations a detector asks for, and the running
//! detectors. A low layer: `xact` publishes into it, `deadlock` reads it,
//! and neither imports the other.
//!
//! A DT is known by (pid, seq): a cancellation names both, so a backend
//! that has since moved on to another DT is left alone. Its sessions on
//! the nodes are known by (server, remote backend pid), published as
//! participants join: the only proof the detector accepts that a session
//! on a node is one of this coordinator's DTs (an application name is
//! anyone's to set).

use pgrx::bgworkers::BackgroundWorkerBuilder;
use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use std::cell::Cell;

/// Backends (by `my_procno`) that can take part in detection; one past
/// this runs DTs that are never chosen as victims.
pub const SLOTS: usize = 1024;
/// Databases with a detector at once.
const DETECTORS: usize = 32;
/// Cancellations waiting to be picked up.
const CANCELS: usize = 16;
/// Bytes of a cancellation's message and detail.
const TEXT: usize = 1000;
/// A detector claimed but not started by then is claimed again.
const CLAIM_EXPIRES_US: i64 = 10_000_000;
/// Sessions published per DT. Those past it are not tied to the DT: the
/// detector sees them as plain sessions, so a cycle through them goes
/// unseen (timeouts end it), and none of them makes the DT a victim.
pub const PARTICIPANTS: usize = 32;

/// One session of a DT on a node: the foreign server it was opened for
/// and the backend pid the peer gave it.
#[derive(Copy, Clone, Default, PartialEq, Eq, Hash)]
pub struct Participant {
    pub server: u32,
    pub remote_pid: i32,
}

#[derive(Copy, Clone, Default)]
pub struct Slot {
    pub pid: i32,
    pub database: u32,
    pub seq: u64,
    /// When the DT began (TimestampTz).
    pub started: i64,
    pub active: bool,
    /// A statement of the DT has waited on a peer for a check interval.
    pub waiting: bool,
    /// The detector asked to give up DT `seq` of this slot.
    cancel_seq: u64,
    participants: [Participant; PARTICIPANTS],
    joined: usize,
}

impl Slot {
    /// The DT's published sessions.
    pub fn participants(&self) -> &[Participant] {
        &self.participants[..self.joined]
    }
}

#[derive(Copy, Clone, Default)]
struct Detector {
    database: u32,
    /// 0 while claimed by the backend that starts it.
    pid: i32,
    claimed_at: i64,
}

#[derive(Copy, Clone)]
struct Cancel {
    pid: i32,
    seq: u64,
    len: usize,
    text: [u8; TEXT],
}

#[derive(Copy, Clone)]
pub struct Registry {
    slots: [Slot; SLOTS],
    detectors: [Detector; DETECTORS],
    cancels: [Cancel; CANCELS],
    next_cancel: usize,
}

impl Default for Registry {
    fn default() -> Registry {
        Registry {
            slots: [Slot::default(); SLOTS],
            detectors: [Detector::default(); DETECTORS],
            cancels: [Cancel {
                pid: 0,
                seq: 0,
                len: 0,
                text: [0; TEXT],
            }; CANCELS],
            next_cancel: 0,
        }
    }
}

// SAFETY: plain old data, no pointers.
unsafe impl PGRXSharedMemory for Registry {}

static REGISTRY: PgLwLock<Registry> = unsafe { PgLwLock::new(c"dg_deadlock") };

thread_local! {
    /// (slot, seq) of this backend's DT, if registered.
    static CURRENT: Cell<Option<(usize, u64)>> = const { Cell::new(None) };
    static SEQ: Cell<u64> = const { Cell::new(0) };
}

pub fn init() {
    pgrx::pg_shmem_init!(REGISTRY);
}

/// This backend's number among the PGPROCs: a field of PGPROC before 17,
/// a global of its own (`MyProcNumber`) since.
#[cfg(any(feature = "pg13", feature = "pg14", feature = "pg15", feature = "pg16"))]
pub fn my_procno() -> usize {
    // SAFETY: MyProc is set for every backend that runs SQL.
    unsafe { (*pg_sys::MyProc).pgprocno as usize }
}

#[cfg(any(feature = "pg17", feature = "pg18"))]
pub fn my_procno() -> usize {
    // SAFETY: reads a global set once at backend start.
    unsafe { pg_sys::MyProcNumber as usize }
}

fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

/// Publishes this backend's new DT. Returns true when its database has no
/// detector and this backend has claimed the job of starting one.
fn enter() -> bool {
    // SAFETY: reads the backend's own ids.
    let (procno, pid, database) = unsafe {
        (
            my_procno(),
            pg_sys::MyProcPid,
            pg_sys::MyDatabaseId.to_u32(),
        )
    };
    if procno >= SLOTS {
        return false;
    }
    let seq = SEQ.with(|s| {
        s.set(s.get() + 1);
        s.get()
    });
    CURRENT.with(|c| c.set(Some((procno, seq))));
    let started = now();
    let mut r = REGISTRY.exclusive();
    r.slots[procno] = Slot {
        pid,
        database,
        seq,
        started,
        active: true,
        waiting: false,
        cancel_seq: 0,
        participants: [Participant::default(); PARTICIPANTS],
        joined: 0,
    };
    r.claim_detector(database, started)
}

/// Held by a DT for its life: publishes it, and starts its database's
/// deadlock detector if none runs.
pub struct Registration(());

impl Registration {
    pub fn enter() -> Registration {
        if enter() {
            launch_detector();
        }
        Registration(())
    }

    /// A participant joined the DT through `server`; the peer gave its
    /// session backend pid `remote_pid`.
    pub fn join(&self, server: pg_sys::Oid, remote_pid: i32) {
        join(Participant {
            server: server.to_u32(),
            remote_pid,
        });
    }

    /// The DT's connections went back to the cache before its end.
    pub fn forget_participants(&self) {
        forget_participants();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        leave();
    }
}

/// Starts the detector of the current database (`dg_deadlock_detector`
/// in `deadlock::detector`, found by name). If no worker slot is free the
/// claim expires and a later DT tries again.
fn launch_detector() {
    // SAFETY: reads the backend's database.
    let database = unsafe { pg_sys::MyDatabaseId };
    let _ = BackgroundWorkerBuilder::new("dg deadlock detector")
        .set_type("dg deadlock detector")
        .set_library("dg")
        .set_function("dg_deadlock_detector")
        .set_argument(Some(pg_sys::Datum::from(database)))
        .enable_spi_access()
        .set_restart_time(None)
        .load_dynamic();
}

/// This backend's DT is over.
fn leave() {
    if let Some((procno, _)) = CURRENT.with(|c| c.take()) {
        let mut r = REGISTRY.exclusive();
        r.slots[procno].active = false;
        r.slots[procno].waiting = false;
        r.slots[procno].joined = 0;
    }
}

/// Publishes a session of this backend's DT; past `PARTICIPANTS`, the
/// session stays unpublished.
fn join(p: Participant) {
    if let Some((procno, seq)) = CURRENT.with(|c| c.get()) {
        let mut r = REGISTRY.exclusive();
        let slot = &mut r.slots[procno];
        if slot.seq == seq && slot.joined < PARTICIPANTS {
            slot.participants[slot.joined] = p;
            slot.joined += 1;
        }
    }
}

/// The DT's sessions went back to the connection cache, where other work
/// of this backend (`dg.recover()`) may use them: they are no longer the
/// DT's.
fn forget_participants() {
    if let Some((procno, seq)) = CURRENT.with(|c| c.get()) {
        let mut r = REGISTRY.exclusive();
        if r.slots[procno].seq == seq {
            r.slots[procno].joined = 0;
        }
    }
}

/// Marks (or clears) a long wait on a peer by this backend's DT.
pub fn set_waiting(waiting: bool) {
    if let Some((procno, seq)) = CURRENT.with(|c| c.get()) {
        let mut r = REGISTRY.exclusive();
        if r.slots[procno].seq == seq {
            r.slots[procno].waiting = waiting;
        }
    }
}

pub fn registered() -> bool {
    CURRENT.with(|c| c.get()).is_some()
}

/// Takes the detector's request to give up this backend's DT, if there is
/// one: its message and detail.
pub fn take_cancel() -> Option<(String, String)> {
    let (procno, seq) = CURRENT.with(|c| c.get())?;
    let mut r = REGISTRY.exclusive();
    if r.slots[procno].cancel_seq != seq || r.slots[procno].seq != seq {
        return None;
    }
    r.slots[procno].cancel_seq = 0;
    let pid = r.slots[procno].pid;
    let text = r
        .cancels
        .iter_mut()
        .find(|c| c.pid == pid && c.seq == seq)
        .map(|c| {
            c.pid = 0;
            String::from_utf8_lossy(&c.text[..c.len]).into_owned()
        })
        .unwrap_or_default();
    let (message, detail) = text.split_once('\0').unwrap_or((&text, ""));
    Some((message.to_string(), detail.to_string()))
}

/// The active DTs of `database`.
pub fn active(database: u32) -> Vec<Slot> {
    let r = REGISTRY.share();
    r.slots
        .iter()
        .filter(|s| s.active && s.database == database)
        .copied()
        .collect()
}

/// Asks backend `pid` to give up its DT `seq`, if it still runs it and was
/// not asked already; true if asked now.
pub fn request_cancel(pid: i32, seq: u64, message: &str, detail: &str) -> bool {
    let mut r = REGISTRY.exclusive();
    let Some(slot) = r
        .slots
        .iter_mut()
        .find(|s| s.pid == pid && s.seq == seq && s.active && s.cancel_seq != seq)
    else {
        return false;
    };
    slot.cancel_seq = seq;
    let text = format!("{message}\0{detail}");
    let mut len = text.len().min(TEXT);
    while !text.is_char_boundary(len) {
        len -= 1;
    }
    let at = r.next_cancel;
    r.next_cancel = (at + 1) % CANCELS;
    let c = &mut r.cancels[at];
    c.pid = pid;
    c.seq = seq;
    c.len = len;
    c.text[..len].copy_from_slice(&text.as_bytes()[..len]);
    true
}

impl Registry {
    /// Claims the start of `database`'s detector unless one runs or is
    /// being started.
    fn claim_detector(&mut self, database: u32, now: i64) -> bool {
        if let Some(d) = self.detectors.iter_mut().find(|d| d.database == database) {
            if d.pid != 0 || now - d.claimed_at < CLAIM_EXPIRES_US {
                return false;
            }
            d.claimed_at = now;
            return true;
        }
        match self.detectors.iter_mut().find(|d| d.database == 0) {
            Some(d) => {
                *d = Detector {
                    database,
                    pid: 0,
                    claimed_at: now,
                };
                true
            }
            None => false,
        }
    }
}

/// The detector of `database` starts: false if another one already runs.
pub fn detector_started(database: u32, pid: i32) -> bool {
    let mut r = REGISTRY.exclusive();
    if let Some(d) = r.detectors.iter_mut().find(|d| d.database == database) {
        if d.pid != 0 && d.pid != pid {
            return false;
        }
        d.pid = pid;
        return true;
    }
    match r.detectors.iter_mut().find(|d| d.database == 0) {
        Some(d) => {
            *d = Detector {
                database,
                pid,
                claimed_at: 0,
            };
            true
        }
        None => false,
    }
}

/// The detector `pid` of `database` may retire when no DT of its database
/// is active; decided under the lock, so a DT that starts now either is
/// seen here or finds no detector and starts one.
pub fn detector_retire(database: u32, pid: i32) -> bool {
    let mut r = REGISTRY.exclusive();
    if r.slots.iter().any(|s| s.active && s.database == database) {
        return false;
    }
    for d in r.detectors.iter_mut().filter(|d| d.pid == pid) {
        *d = Detector::default();
    }
    true
}

/// The detector `pid` exits.
pub fn detector_stopped(pid: i32) {
    let mut r = REGISTRY.exclusive();
    for d in r.detectors.iter_mut().filter(|d| d.pid == pid) {
        *d = Detector::default();
    }
}

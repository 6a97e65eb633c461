//! The commit fence (src/README.md, "The commit fence"): where two-phase
//! DTs finishing their commit and consistent snapshots being taken keep
//! out of each other's way, and what this server knows of DTs left
//! committed on some nodes and not yet on others (in doubt).
//!
//! A DT holds the fence from just before its local commit until every
//! `COMMIT PREPARED` has answered; one that could not finish on a node
//! leaves an in-doubt entry for (its xid, that node) until a resolver pass
//! has finished it there. A snapshot holds the fence while each of its
//! nodes takes its snapshot, and only once none of its nodes has an entry
//! and the resolver has listed every node since this server started (what
//! was in doubt before a restart is known only then). So no DT of this
//! server is half committed on the snapshot's nodes while it is taken.
//!
//! A low layer beside `registry`: `xact` (commits, snapshots) and
//! `recovery` (passes) meet here without importing each other.

use crate::fence_queue::{may_pass, Class, Holder};
use crate::visibility::Finishing;
use pgrx::lwlock::PgLwLock;
use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::shmem::PGRXSharedMemory;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// Backends (by procno) that can hold the fence: as the registry's.
const SLOTS: usize = crate::registry::SLOTS;
/// Nodes a DT's slot keeps for its in-doubt entries: as many as the
/// registry publishes. A DT with more writers gives up on the fence's
/// promise: see `Commit::enter`.
const NODES: usize = crate::registry::PARTICIPANTS;
/// In-doubt entries at once; past it, the databases concerned wait for a
/// new complete pass (see `add_entry`). Asynchronous finishes leave an
/// entry per node until their answers are read, so room for a few per
/// backend.
const ENTRIES: usize = 2048;
/// (database, server) pairs a resolver pass has listed since start.
const LISTED: usize = 1024;
/// Commits with local writes remembered after they left the fence.
const RECENT: usize = 1024;
/// Nodes of commits that arrived while snapshots watched, remembered for
/// them; a watch that more arrived during gives up (src/README.md,
/// "Watched snapshots").
const ARRIVALS: usize = 4096;

/// A node of a DT: the foreign server and the user mapping (which names
/// the prepared transaction's GID).
#[derive(Copy, Clone, Default, PartialEq, Eq, Debug)]
pub struct Node {
    pub server: u32,
    pub mapping: u32,
}

/// A node a DT prepared on, with the peer's xid of its transaction there
/// (0: the peer did not say), by which a watched snapshot tells whether
/// it sees the DT there.
#[derive(Copy, Clone, Default, Debug)]
pub struct Prepared {
    pub node: Node,
    pub remote_xid: u64,
}

#[derive(Copy, Clone, Default)]
struct Slot {
    /// 0: not at the fence.
    class: u8,
    inside: bool,
    ticket: u64,
    pid: i32,
    database: u32,
    /// A commit's local full xid, and the nodes it prepared on.
    xid: u64,
    /// A commit whose local transaction wrote more than its decision row.
    local: bool,
    nodes: [Prepared; NODES],
    n: usize,
    /// Every node the commit prepared on is in `nodes`.
    whole: bool,
}

const COMMIT: u8 = 1;
const SNAPSHOT: u8 = 2;
/// A watched snapshot: not in line (commits never wait for it), only
/// told of the commits that arrive.
const WATCH: u8 = 3;

impl Slot {
    fn holder(&self) -> Option<Holder> {
        let class = match self.class {
            COMMIT => Class::Commit,
            SNAPSHOT => Class::Snapshot,
            _ => return None,
        };
        Some(Holder {
            class,
            inside: self.inside,
            ticket: self.ticket,
        })
    }
}

/// A DT that may be committed on some nodes and not on `node`.
#[derive(Copy, Clone, Default)]
struct Entry {
    used: bool,
    database: u32,
    xid: u64,
    node: Node,
    /// Its `COMMIT PREPARED` was sent and not waited for: it lands within
    /// a round trip, unless the link failed since.
    sent: bool,
    /// The peer's xid of the prepared transaction (0: not known).
    remote_xid: u64,
    /// `events` when it was added: a pass removes only entries older than
    /// its start.
    added: u64,
}

/// A commit with local writes that left the fence at `at`.
#[derive(Copy, Clone, Default)]
struct Recent {
    database: u32,
    xid: u32,
    at: i64,
}

/// A node of a commit that arrived at the fence while a snapshot watched.
#[derive(Copy, Clone, Default)]
struct Arrival {
    database: u32,
    xid: u64,
    local: bool,
    whole: bool,
    node: Prepared,
}

#[derive(Copy, Clone)]
pub struct Fence {
    slots: [Slot; SLOTS],
    next_ticket: u64,
    /// Slots taken by snapshots, waiting or inside. While there are none,
    /// a commit passes and leaves without looking at the other slots: the
    /// commit path never scans them.
    snapshots: u32,
    entries: [Entry; ENTRIES],
    events: u64,
    /// (database, server) a resolver pass listed since the server started;
    /// (0, 0) is free.
    listed: [(u32, u32); LISTED],
    /// A ring of the latest commits with local writes; `forgotten_at`:
    /// when the newest one it has dropped left.
    recent: [Recent; RECENT],
    recent_next: usize,
    forgotten_at: i64,
    /// Slots taken by watched snapshots: while there are any, arriving
    /// commits leave their nodes in `arrivals` (the latest `arrived`).
    watches: u32,
    arrivals: [Arrival; ARRIVALS],
    arrived: u64,
}

impl Default for Fence {
    fn default() -> Fence {
        Fence {
            slots: [Slot::default(); SLOTS],
            next_ticket: 0,
            snapshots: 0,
            entries: [Entry::default(); ENTRIES],
            events: 0,
            listed: [(0, 0); LISTED],
            recent: [Recent::default(); RECENT],
            recent_next: 0,
            forgotten_at: 0,
            watches: 0,
            arrivals: [Arrival::default(); ARRIVALS],
            arrived: 0,
        }
    }
}

// SAFETY: plain old data, no pointers.
unsafe impl PGRXSharedMemory for Fence {}

static FENCE: PgLwLock<Fence> = unsafe { PgLwLock::new(c"dg_fence") };

thread_local! {
    /// This backend is at the fence (its slot is in use).
    static AT_FENCE: Cell<bool> = const { Cell::new(false) };
    /// Where the current transaction is with `hold_at_commit`.
    static COMMIT_HOLD: Cell<CommitHold> = const { Cell::new(CommitHold::None) };
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CommitHold {
    None,
    /// Asked for; entered at PRE_COMMIT.
    Asked,
    /// Entered for the asking transaction (not a DT's own hold).
    Held,
}

pub fn init() {
    pgrx::pg_shmem_init!(FENCE);
}

fn my_slot() -> Option<usize> {
    let procno = crate::registry::my_procno();
    (procno < SLOTS).then_some(procno)
}

fn database() -> u32 {
    // SAFETY: reads the backend's database oid.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

impl Fence {
    fn may_pass(&self, me: usize) -> bool {
        let Some(h) = self.slots[me].holder() else {
            return false;
        };
        if h.class == Class::Commit && self.snapshots == 0 {
            return true;
        }
        may_pass(
            h.class,
            h.ticket,
            self.slots
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != me)
                .filter_map(|(_, s)| s.holder()),
        )
    }

    /// Wakes everyone waiting at the fence: whoever the rule now lets in.
    fn wake_waiters(&self) {
        for s in self.slots.iter().filter(|s| s.class != 0 && !s.inside) {
            crate::wakeup::wake(s.pid);
        }
    }

    fn add_entry(&mut self, database: u32, xid: u64, node: Node, remote_xid: u64, sent: bool) {
        self.events += 1;
        let added = self.events;
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.used && e.database == database && e.xid == xid && e.node == node)
        {
            e.added = added;
            e.sent &= sent;
            return;
        }
        match self.entries.iter_mut().find(|e| !e.used) {
            Some(e) => {
                *e = Entry {
                    used: true,
                    database,
                    xid,
                    node,
                    sent,
                    remote_xid,
                    added,
                }
            }
            // No room to remember it: snapshots on the node wait until a
            // pass has listed it again (and found it still prepared, or not).
            None => self
                .listed
                .iter_mut()
                .filter(|l| **l == (database, node.server))
                .for_each(|l| *l = (0, 0)),
        }
    }

    /// Leaves the fence; `committed`: a commit that did (or may have), whose
    /// nodes in `unfinished` stay in doubt, and those in `sent` until the
    /// answers of their `COMMIT PREPARED` are read.
    fn leave(&mut self, me: usize, committed: bool, unfinished: &[Node], sent: &[Node]) {
        let s = self.slots[me];
        let remote_xid = |node: &Node| {
            s.nodes[..s.n]
                .iter()
                .find(|p| p.node == *node)
                .map_or(0, |p| p.remote_xid)
        };
        for node in unfinished {
            self.add_entry(s.database, s.xid, *node, remote_xid(node), false);
        }
        for node in sent {
            self.add_entry(s.database, s.xid, *node, remote_xid(node), true);
        }
        if committed && s.local {
            let old = self.recent[self.recent_next];
            self.forgotten_at = self.forgotten_at.max(old.at);
            self.recent[self.recent_next] = Recent {
                database: s.database,
                xid: s.xid as u32,
                at: now(),
            };
            self.recent_next = (self.recent_next + 1) % RECENT;
        }
        self.slots[me] = Slot::default();
        // Commits wait only behind a snapshot, so with none left no one
        // waits for a commit that leaves; nobody waits for a watch.
        match s.class {
            SNAPSHOT => self.snapshots -= 1,
            WATCH => {
                self.watches -= 1;
                return;
            }
            _ if self.snapshots == 0 => return,
            _ => {}
        }
        self.wake_waiters();
    }

    /// Takes a ticket in slot `me` for `class`, with a commit's xid,
    /// whether it wrote locally, and its nodes; a commit tells the
    /// watches of them.
    fn arrive(&mut self, me: usize, class: u8, xid: u64, local: bool, nodes: &[Prepared]) {
        self.next_ticket += 1;
        let mut slot = Slot {
            class,
            inside: class == WATCH,
            ticket: self.next_ticket,
            // SAFETY: reads the backend's pid.
            pid: unsafe { pg_sys::MyProcPid },
            database: database(),
            xid,
            local,
            whole: nodes.len() <= NODES,
            ..Slot::default()
        };
        slot.n = nodes.len().min(NODES);
        slot.nodes[..slot.n].copy_from_slice(&nodes[..slot.n]);
        match self.slots[me].class {
            SNAPSHOT => self.snapshots -= 1,
            WATCH => self.watches -= 1,
            _ => {}
        }
        match class {
            SNAPSHOT => self.snapshots += 1,
            WATCH => self.watches += 1,
            _ => {}
        }
        if class == COMMIT && self.watches > 0 {
            for node in &slot.nodes[..slot.n] {
                self.arrived += 1;
                self.arrivals[(self.arrived % ARRIVALS as u64) as usize] = Arrival {
                    database: slot.database,
                    xid,
                    local,
                    whole: slot.whole,
                    node: *node,
                };
            }
        }
        self.slots[me] = slot;
        AT_FENCE.with(|a| a.set(true));
    }
}

/// Waits at the fence in slot `me` until the rule lets it in, or fails at
/// `deadline`. Interrupts are served (a cancel raises here, and the
/// caller's guard leaves the fence).
fn wait_to_pass(me: usize, deadline: Option<Instant>) -> bool {
    loop {
        {
            let mut f = FENCE.exclusive();
            if f.may_pass(me) {
                f.slots[me].inside = true;
                return true;
            }
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => return false,
            },
            None => Duration::from_secs(1),
        };
        sleep(left.min(Duration::from_secs(1)));
    }
}

/// Sleeps on the latch (set by whoever leaves the fence) for at most `d`.
fn sleep(d: Duration) {
    // SAFETY: the backend's own latch, as every latch wait in PostgreSQL.
    unsafe {
        pg_sys::WaitLatch(
            pg_sys::MyLatch,
            (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT | pg_sys::WL_EXIT_ON_PM_DEATH) as i32,
            d.as_millis().clamp(1, 1000) as std::ffi::c_long,
            pg_sys::PG_WAIT_EXTENSION,
        );
        pg_sys::ResetLatch(pg_sys::MyLatch);
    }
    pgrx::check_for_interrupts!();
}

fn now() -> i64 {
    // SAFETY: reads the clock.
    unsafe { pg_sys::GetCurrentTimestamp() }
}

fn arrive(me: usize, class: u8, xid: u64, local: bool, nodes: &[Prepared]) {
    FENCE.exclusive().arrive(me, class, xid, local, nodes);
}

/// Clears this backend's slot, if it is at the fence; `committed`,
/// `unfinished` and `sent`: as `Fence::leave`. Never raises.
fn depart(committed: bool, unfinished: &[Node], sent: &[Node]) {
    if !AT_FENCE.with(|a| a.replace(false)) {
        return;
    }
    if let Some(me) = my_slot() {
        FENCE.exclusive().leave(me, committed, unfinished, sent);
    }
}

/// A two-phase DT's hold on the fence, from before its local commit until
/// its finish. Dropped without `finished` (an abort), it just leaves.
pub struct Commit(());

impl Commit {
    /// Waits while snapshots ahead of it are taken (one round trip each);
    /// `xid`: the local full xid, `local`: the local transaction wrote
    /// (besides the decision row), `nodes`: where it prepared.
    pub fn enter(xid: u64, local: bool, nodes: &[Prepared]) -> Commit {
        let Some(me) = my_slot() else {
            return Commit(());
        };
        arrive(me, COMMIT, xid, local, nodes);
        let _ = wait_to_pass(me, None);
        Commit(())
    }

    /// Every `COMMIT PREPARED` answered, or sent without waiting (`sent`:
    /// until `answered_late` hears of them, or a snapshot finds them
    /// done); those of `unfinished` failed, so the DT stays in doubt there
    /// until the resolver finishes it. Never raises (the commit callback).
    pub fn finished(self, unfinished: &[Node], sent: &[Node]) {
        depart(true, unfinished, sent);
        std::mem::forget(self);
    }
}

impl Drop for Commit {
    fn drop(&mut self) {
        depart(false, &[], &[]);
    }
}

/// The current transaction forgets decisions (a resolver pass): from its
/// PRE_COMMIT until it has committed it holds the fence as a commit does,
/// so that its commit is never inside a restore point's hold
/// (src/README.md, "Restore points").
pub fn hold_at_commit() {
    if COMMIT_HOLD.with(|h| h.get()) == CommitHold::None {
        COMMIT_HOLD.with(|h| h.set(CommitHold::Asked));
    }
}

/// PRE_COMMIT, after the transaction's DT entered (or not): takes the hold
/// `hold_at_commit` asked for, unless a DT's hold, which lasts past the
/// commit, covers it already. Waits while snapshots ahead of it are taken.
pub fn enter_at_commit() {
    if COMMIT_HOLD.with(|h| h.get()) != CommitHold::Asked || AT_FENCE.with(|a| a.get()) {
        return;
    }
    std::mem::forget(Commit::enter(0, false, &[]));
    COMMIT_HOLD.with(|h| h.set(CommitHold::Held));
}

/// COMMIT, after the transaction's DT finished: leaves the hold
/// `enter_at_commit` took. Never raises.
pub fn leave_at_commit() {
    if COMMIT_HOLD.with(|h| h.replace(CommitHold::None)) == CommitHold::Held {
        depart(true, &[], &[]);
    }
}

/// The answer of a finish that did not wait (`dg.synchronous_finish =
/// off`) was read on the node of `mapping`: its `COMMIT PREPARED`
/// succeeded (`finished`: the DT of `xid` is no longer in doubt there), or
/// failed (in doubt until the resolver finishes it, no longer on its way).
pub fn answered_late(xid: u64, mapping: u32, finished: bool) {
    let database = database();
    let mut f = FENCE.exclusive();
    for e in f
        .entries
        .iter_mut()
        .filter(|e| e.used && e.database == database && e.xid == xid && e.node.mapping == mapping)
    {
        e.used = !finished;
        e.sent = false;
    }
}

/// Why a snapshot could not be taken in time.
pub enum Blocked<E> {
    /// A DT is in doubt on this node (its xid, and its user mapping).
    InDoubt { xid: u64, node: Node },
    /// No resolver pass has listed this node since the server started.
    NotListed { server: u32 },
    /// Commits in flight did not finish in time.
    Busy,
    /// Asking the nodes about the DTs in doubt failed.
    Asking(E),
}

/// A snapshot's hold on the fence, while its nodes take their snapshots.
pub struct Snapshot(());

/// How long a snapshot inside the fence waits for the `COMMIT PREPARED`s
/// sent just before it (commits wait behind it meanwhile); past it, they
/// count as in doubt and the snapshot waits outside, as for any other.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(1);

/// (xid, node) of the entries of `database` on `servers`; `sent`: only
/// those, else only the others.
fn entries_on(database: u32, servers: &[u32], sent: Option<bool>) -> Vec<(u64, Node)> {
    FENCE
        .share()
        .entries
        .iter()
        .filter(|e| e.used && e.database == database && servers.contains(&e.node.server))
        .filter(|e| sent.is_none_or(|s| e.sent == s))
        .map(|e| (e.xid, e.node))
        .collect()
}

/// Applies `change` to the entries of `database` for the (xid, node) in
/// `which`.
fn change_entries(database: u32, which: &[(u64, Node)], change: impl Fn(&mut Entry)) {
    if which.is_empty() {
        return;
    }
    let mut f = FENCE.exclusive();
    f.entries
        .iter_mut()
        .filter(|e| e.used && e.database == database && which.contains(&(e.xid, e.node)))
        .for_each(change);
}

/// Drops the entries of `database` for `finished` (xid, node).
fn forget(database: u32, finished: &[(u64, Node)]) {
    change_entries(database, finished, |e| e.used = false);
}

/// The `sent` entries among `left` count as in doubt from now on.
fn demote(database: u32, left: &[(u64, Node)]) {
    change_entries(database, left, |e| e.sent = false);
}

impl Snapshot {
    /// Waits until no DT is in doubt on `servers`, the resolver has listed
    /// each of them since the server started, and the fence lets it in;
    /// at `deadline`, says what it waited for.
    ///
    /// `gone` asks the nodes which (xid, node) in doubt have no prepared
    /// transaction left there, within the deadline given (none: as any
    /// statement): those are finished on that node for good (a
    /// GID never comes back), so no longer in doubt. That is how a finish
    /// nobody waits for (`dg.synchronous_finish = off`: an idle session's
    /// unread answers) or one the resolver has just completed stops
    /// holding snapshots up. Finishes sent just before the snapshot got in
    /// are waited for inside (they land within a round trip; no new one
    /// can start meanwhile); DTs in doubt for other reasons are waited for
    /// outside, so commits go on.
    pub fn enter<E>(
        servers: &[u32],
        deadline: Instant,
        mut gone: impl FnMut(&[(u64, Node)], Option<Instant>) -> Result<Vec<(u64, Node)>, E>,
    ) -> Result<Snapshot, Blocked<E>> {
        let Some(me) = my_slot() else {
            return Err(Blocked::Busy);
        };
        let database = database();
        // What only the resolver (or time) can end: a node not listed
        // since start, or a DT whose finish failed there.
        let blocked = || {
            if let Some(&server) = {
                let f = FENCE.share();
                servers
                    .iter()
                    .find(|s| !f.listed.contains(&(database, **s)))
            } {
                return Some(Blocked::NotListed { server });
            }
            entries_on(database, servers, Some(false))
                .first()
                .map(|&(xid, node)| Blocked::InDoubt { xid, node })
        };
        let mut pause = Duration::from_millis(1);
        loop {
            match blocked() {
                None => {
                    arrive(me, SNAPSHOT, 0, false, &[]);
                    let guard = Snapshot(());
                    if !wait_to_pass(me, Some(deadline)) {
                        return Err(blocked().unwrap_or(Blocked::Busy));
                    }
                    let bound = deadline.min(Instant::now() + IN_FLIGHT_WAIT);
                    if settle_in_flight(database, servers, bound, &mut gone)
                        .map_err(Blocked::Asking)?
                    {
                        return Ok(guard);
                    }
                }
                // Finished since, perhaps (by the resolver): ask.
                Some(Blocked::InDoubt { .. }) => {
                    let asked = entries_on(database, servers, None);
                    // Asked as any statement is (outside the fence nobody
                    // waits for it): a slow answer is not a DT in doubt.
                    let finished = gone(&asked, None).map_err(Blocked::Asking)?;
                    forget(database, &finished);
                    if finished.len() == asked.len() && Instant::now() < deadline {
                        pause = Duration::from_millis(1);
                        continue;
                    }
                }
                Some(_) => {}
            }
            match deadline.checked_duration_since(Instant::now()) {
                // The resolver does not wake snapshot takers: poll, less
                // and less often.
                Some(left) if !left.is_zero() => {
                    sleep(left.min(pause));
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                _ => return Err(blocked().unwrap_or(Blocked::Busy)),
            }
        }
    }
}

/// Inside the fence: no commit leaves while the snapshot is there, so the
/// entries on `servers` can only shrink (or grow by a resolver pass). Asks
/// about them until none is left (true), or until one is in doubt for
/// another reason or `bound` passes (false: those still sent count as in
/// doubt, and the snapshot steps out).
fn settle_in_flight<E>(
    database: u32,
    servers: &[u32],
    bound: Instant,
    gone: &mut impl FnMut(&[(u64, Node)], Option<Instant>) -> Result<Vec<(u64, Node)>, E>,
) -> Result<bool, E> {
    let mut pause = Duration::from_millis(1);
    loop {
        let asked = entries_on(database, servers, None);
        if asked.is_empty() {
            return Ok(true);
        }
        let finished = gone(&asked, Some(bound))?;
        forget(database, &finished);
        let left = entries_on(database, servers, None);
        if left.is_empty() {
            return Ok(true);
        }
        let in_doubt = !entries_on(database, servers, Some(false)).is_empty();
        match bound.checked_duration_since(Instant::now()) {
            Some(d) if !d.is_zero() && !in_doubt => {
                sleep(d.min(pause));
                pause = (pause * 2).min(Duration::from_millis(10));
            }
            _ => {
                demote(database, &left);
                return Ok(false);
            }
        }
    }
}

impl Snapshot {
    /// Whether a DT of this database with local writes committed after the
    /// local transaction's snapshot `local` was taken, or may have: then the
    /// peers' new snapshots see its remote writes and `local` does not see
    /// its local ones. Asked while holding the fence, so every such DT has
    /// left it (and is in the ring) or has not committed yet.
    pub fn local_skew(&self, local: pg_sys::Snapshot) -> bool {
        skewed(&recent_local_commits(&FENCE.share()), local)
    }
}

/// The local xids of this database's commits with local writes that left
/// the fence since the current transaction started; None if the ring has
/// dropped one of those.
fn recent_local_commits(f: &Fence) -> Option<Vec<u32>> {
    let database = database();
    // SAFETY: reads the transaction's start time; its snapshot is younger.
    let since = unsafe { pg_sys::GetCurrentTransactionStartTimestamp() };
    (f.forgotten_at < since).then(|| {
        f.recent
            .iter()
            .filter(|r| r.database == database && r.at >= since)
            .map(|r| r.xid)
            .collect()
    })
}

/// Whether `local` misses one of `recent` that committed (or may have).
fn skewed(recent: &Option<Vec<u32>>, local: pg_sys::Snapshot) -> bool {
    recent.as_ref().is_none_or(|xids| {
        xids.iter()
            .any(|&xid| running_for(xid, local) && committed(xid))
    })
}

/// Does the local snapshot `local` see local transaction `xid` committed?
fn local_sees(xid: u32, local: pg_sys::Snapshot) -> bool {
    !running_for(xid, local) && committed(xid)
}

/// Was local transaction `xid` running (or not yet begun) for `local`?
fn running_for(xid: u32, local: pg_sys::Snapshot) -> bool {
    // SAFETY: `local` is the live transaction snapshot.
    unsafe { pg_sys::XidInMVCCSnapshot(pg_sys::TransactionId::from(xid), local) }
}

fn committed(xid: u32) -> bool {
    // SAFETY: the xids are recent (at the fence during this transaction),
    // so their commit status is still in the clog.
    unsafe { pg_sys::TransactionIdDidCommit(pg_sys::TransactionId::from(xid)) }
}

/// A snapshot taken without stopping commits (src/README.md, "Watched
/// snapshots"): it notes the commits at the fence when it starts, and is
/// told of every commit that arrives until it ends, so that afterwards it
/// can check that its nodes' snapshots see each of them whole.
pub struct Watch {
    mark: u64,
    /// The commits at the fence, and those whose finish was sent and not
    /// yet answered, on the watched servers when the watch started;
    /// whether each wrote locally.
    finishing: Vec<(Finishing, bool)>,
    recent: Option<Vec<u32>>,
}

impl Watch {
    /// Starts watching `servers`, unless what only waiting can settle is
    /// there (a node the resolver has not listed since start, a DT in
    /// doubt): then None, and the snapshot waits at the fence instead.
    pub fn start(servers: &[u32]) -> Option<Watch> {
        let me = my_slot()?;
        let database = database();
        let mut f = FENCE.exclusive();
        let on = |e: &&Entry| e.used && e.database == database && servers.contains(&e.node.server);
        if servers.iter().any(|s| !f.listed.contains(&(database, *s)))
            || f.entries.iter().filter(on).any(|e| !e.sent)
        {
            return None;
        }
        // A finish sent and not answered: committed on the DT's nodes that
        // have no entry, so these must be seen too.
        let mut finishing: Vec<(Finishing, bool)> = Vec::new();
        for e in f.entries.iter().filter(on) {
            let dt = Finishing {
                xid: e.xid,
                nodes: Vec::new(),
                whole: true,
                known: Some(true),
            };
            note(&mut finishing, (dt, false), (e.node.server, e.remote_xid));
        }
        for s in f
            .slots
            .iter()
            .filter(|s| s.class == COMMIT && s.database == database)
        {
            let dt = Finishing {
                xid: s.xid,
                nodes: s.nodes[..s.n]
                    .iter()
                    .map(|p| (p.node.server, p.remote_xid))
                    .collect(),
                whole: s.whole,
                known: None,
            };
            finishing.push((dt, s.local));
        }
        let recent = recent_local_commits(&f);
        let mark = f.arrived;
        f.arrive(me, WATCH, 0, false, &[]);
        Some(Watch {
            mark,
            finishing,
            recent,
        })
    }

    /// As `Snapshot::local_skew`, for the commits that left the fence
    /// before the watch started (those after it are among `end`'s).
    pub fn local_skew(&self, local: pg_sys::Snapshot) -> bool {
        skewed(&self.recent, local)
    }

    /// Ends the watch, once every node has taken its snapshot: the DTs
    /// that were finishing meanwhile, with what the local snapshot `local`
    /// shows of those that wrote locally; None if more commits arrived
    /// than the fence keeps for a watch.
    pub fn end(mut self, local: pg_sys::Snapshot) -> Option<Vec<Finishing>> {
        let database = database();
        {
            let f = FENCE.share();
            if f.arrived - self.mark > ARRIVALS as u64 {
                return None;
            }
            for seq in self.mark + 1..=f.arrived {
                let a = f.arrivals[(seq % ARRIVALS as u64) as usize];
                if a.database != database {
                    continue;
                }
                let dt = Finishing {
                    xid: a.xid,
                    nodes: Vec::new(),
                    whole: a.whole,
                    known: None,
                };
                let node = (a.node.node.server, a.node.remote_xid);
                note(&mut self.finishing, (dt, a.local), node);
            }
        }
        Some(
            std::mem::take(&mut self.finishing)
                .into_iter()
                .map(|(mut dt, wrote_locally)| {
                    if wrote_locally {
                        dt.known = Some(local_sees(dt.xid as u32, local));
                    }
                    dt
                })
                .collect(),
        )
    }
}

/// Adds `node` to the DT of `finishing` with `new`'s xid, or adds `new`
/// with it: a DT's nodes come one entry or arrival at a time. (A DT at the
/// fence when a watch starts is not among those it is told of, nor one
/// with a sent entry: local xids name one DT each.)
fn note(finishing: &mut Vec<(Finishing, bool)>, mut new: (Finishing, bool), node: (u32, u64)) {
    match finishing.iter_mut().find(|(dt, _)| dt.xid == new.0.xid) {
        Some((dt, _)) => dt.nodes.push(node),
        None => {
            new.0.nodes.push(node);
            finishing.push(new);
        }
    }
}

/// Waits until the commit of local xid `xid` (of this database) has left
/// the fence (its `COMMIT PREPARED`s answered, or it failed), or until
/// `deadline`. Polls: a leaving commit wakes nobody but the snapshots
/// holding the fence.
pub fn await_departure(xid: u64, deadline: Instant) {
    let database = database();
    let at_fence = || {
        FENCE
            .share()
            .slots
            .iter()
            .any(|s| s.class == COMMIT && s.database == database && s.xid == xid)
    };
    while at_fence() {
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => sleep(left.min(Duration::from_millis(1))),
            _ => return,
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        depart(false, &[], &[]);
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        depart(false, &[], &[]);
    }
}

/// A hold on the fence against commits alone, for a restore point (src/README.md,
/// "The commit fence"): in the snapshots' class, so it takes turns with
/// commits as they do and shares the fence with them, but it waits for no
/// in-doubt entry and no resolver pass, which a restore point needs not.
pub struct Exclusive(());

impl Exclusive {
    /// Waits until no commit is inside and the fence lets it in; None at
    /// `deadline`.
    pub fn enter(deadline: Instant) -> Option<Exclusive> {
        let me = my_slot()?;
        arrive(me, SNAPSHOT, 0, false, &[]);
        let guard = Exclusive(());
        wait_to_pass(me, Some(deadline)).then_some(guard)
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        depart(false, &[], &[]);
    }
}

/// The end of the backend or of its transaction, however it ends: a
/// commit still at the fence leaves its nodes in doubt (it may have
/// committed locally), anything else just leaves. Never raises.
pub fn at_exit() {
    COMMIT_HOLD.with(|h| h.set(CommitHold::None));
    if !AT_FENCE.with(|a| a.get()) {
        return;
    }
    let Some(me) = my_slot() else { return };
    let s = FENCE.share().slots[me];
    let unfinished: Vec<Node> = if s.class == COMMIT {
        s.nodes[..s.n].iter().map(|p| p.node).collect()
    } else {
        Vec::new()
    };
    depart(s.class == COMMIT, &unfinished, &[]);
}

/// A resolver pass is about to list the nodes; what it later reports
/// covers entries older than the returned mark.
pub fn pass_begins() -> u64 {
    let mut f = FENCE.exclusive();
    f.events += 1;
    f.events
}

/// A resolver pass of this database has listed `server` since the server
/// started (the shared memory was made).
pub fn listed_since_start(server: u32) -> bool {
    FENCE.share().listed.contains(&(database(), server))
}

/// A resolver pass of this database that began at `mark` listed the nodes
/// `listed`, and left the DTs `unfinished` (xid, node) committed but not
/// finished there. Entries of the listed nodes older than the pass and not
/// among them are finished now.
pub fn pass_ended(mark: u64, listed: &[u32], unfinished: &[(u64, Node)]) {
    let database = database();
    let mut f = FENCE.exclusive();
    for e in f.entries.iter_mut().filter(|e| {
        e.used && e.database == database && e.added < mark && listed.contains(&e.node.server)
    }) {
        if !unfinished.iter().any(|(x, n)| *x == e.xid && *n == e.node) {
            e.used = false;
        }
    }
    for (xid, node) in unfinished {
        f.add_entry(database, *xid, *node, 0, false);
    }
    for server in listed {
        if f.listed.contains(&(database, *server)) {
            continue;
        }
        // Full: the node stays unlisted, and snapshots on it fail (README).
        if let Some(l) = f.listed.iter_mut().find(|l| **l == (0, 0)) {
            *l = (database, *server);
        }
    }
}

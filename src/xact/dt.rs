//! One distributed transaction: its participants and the protocol steps
//! that move them (begin, savepoints, prepare, finish, abort).
//!
//! Every step that talks to several peers sends to all of them first and
//! then collects, so a phase costs one round trip, not one per peer.

use super::participant::{nest_level, Participant};
use super::sends::Sends;
use super::state::{protocol, DtState, PrepareAnswer, Protocol, RemoteState, Scope, Work};
use super::statement::Statement;
use crate::catalog;
use crate::error::{DgError, DgResult};
use crate::faults::{self, Point};
use crate::fdw;
use crate::fence;
use crate::gid::Gid;
use crate::gucs;
use crate::registry::Registration;
use crate::remote::cache;
use crate::remote::connection::{LateAnswer, Outcome, SentResult};
use crate::remote::wait::{cleanup_deadline, statement_deadline, WaitEvent};
use crate::stats::{self, Event, Step};
use crate::visibility::{first_fractured, NodeSnapshot};
use crate::wakeup;
use pgrx::{pg_sys, PgLogLevel};
use std::time::Instant;

/// Snapshots taken while commits go on, before one taken holding the
/// fence: each try fails only if a DT's finish crossed it on its nodes
/// (more than half of them with eight writers on the snapshot's two nodes
/// and one disk for all: six tries leave 3 % to the fence).
const WATCHED_TRIES: usize = 6;

/// Asked of a participant that only ran queries: did they write anyway
/// (a volatile function, a row lock)? Works on every supported peer.
const WROTE_QUERY: &str = "SELECT pg_catalog.txid_current_if_assigned() IS NOT NULL";

/// PREPARE, preceded in the same request by the question of the remote
/// transaction's id (PREPARE assigns one anyway), so learning it costs no
/// round trip. Both exist on every supported peer (13+).
fn prepare_statement(gid: &str) -> String {
    format!("SELECT pg_catalog.pg_current_xact_id(); PREPARE TRANSACTION '{gid}'")
}

/// The remote xid the first statement of `prepare_statement` returned.
fn remote_xid(out: &Outcome) -> Option<u64> {
    out.tuples
        .as_ref()
        .filter(|t| t.ntuples() == 1)
        .and_then(|t| t.text(0, 0))
        .and_then(|v| v.parse().ok())
}

pub struct Dt {
    pub(super) id: String,
    pub(super) scope: Scope,
    pub(super) state: DtState,
    pub(super) participants: Vec<Participant>,
    /// Session scope: the current local transaction ran dg calls, so its
    /// abort aborts the DT.
    pub(super) touched: bool,
    /// How the prepare phase committed, once it ran.
    protocol: Option<Protocol>,
    /// When the decision row began to be written: the decision step lasts
    /// until the local commit has made it durable.
    deciding_since: Option<Instant>,
    begin_sql: String,
    /// The `dg.dist_send` statements not yet reported by `dist_sync`.
    sends: Sends,
    /// Published to the deadlock detector while the DT lives.
    registration: Registration,
    /// Held from just before the local commit of a two-phase DT until its
    /// finish (src/README.md, "The commit fence").
    fence: Option<fence::Commit>,
    /// The local full xid of a two-phase DT, once decided.
    xid: u64,
    /// The servers of the DT's consistent snapshot, once taken: no other
    /// node may join.
    snapshot: Option<Vec<u32>>,
}

/// `BEGIN` with the local transaction's isolation level and access mode,
/// so each participant runs as the local transaction does.
fn begin_statement() -> String {
    // SAFETY: plain reads of the backend's transaction settings.
    let (iso, read_only) = unsafe { (pg_sys::XactIsoLevel, pg_sys::XactReadOnly) };
    let level = match iso as u32 {
        pg_sys::XACT_SERIALIZABLE => "SERIALIZABLE",
        pg_sys::XACT_REPEATABLE_READ => "REPEATABLE READ",
        pg_sys::XACT_READ_UNCOMMITTED => "READ UNCOMMITTED",
        _ => "READ COMMITTED",
    };
    let mode = if read_only { " READ ONLY" } else { "" };
    format!("BEGIN ISOLATION LEVEL {level}{mode}")
}

/// Sends `cmd(p)` to every participant it names (behind the statements
/// `dist_send` queued there, in the same pipeline), then collects each;
/// the waits show as `event`, the phase of the protocol this is.
fn broadcast(
    parts: &mut [Participant],
    (deadline, event): (Option<Instant>, WaitEvent),
    mut cmd: impl FnMut(&Participant) -> Option<String>,
) -> Vec<Option<DgResult<Outcome>>> {
    let sent: Vec<Option<DgResult<()>>> = parts
        .iter_mut()
        .map(|p| cmd(p).map(|sql| p.conn.send_behind_sends(&sql, deadline, event)))
        .collect();
    parts
        .iter_mut()
        .zip(sent)
        .map(|(p, s)| s.map(|s| s.and_then(|()| p.conn.collect(deadline, event, None))))
        .collect()
}

/// Sends `cmd(p)` to every participant it names and moves on: nobody
/// waits for the answers, which go to `late_finish` with `tag` when the
/// connection is next used.
fn detach(
    parts: &mut [Participant],
    (deadline, event): (Option<Instant>, WaitEvent),
    tag: u64,
    mut cmd: impl FnMut(&Participant) -> Option<String>,
) -> Vec<Option<DgResult<()>>> {
    parts
        .iter_mut()
        .map(|p| cmd(p).map(|sql| p.conn.send_detached(&sql, tag, deadline, event)))
        .collect()
}

/// `run` (a broadcast) over the commands `cmd` names, or, when fault
/// `point` is armed with k, over the first k, the fault, then the rest
/// (test builds only).
fn split<R>(
    parts: &mut [Participant],
    point: Point,
    cmd: impl Fn(&Participant) -> Option<String>,
    mut run: impl FnMut(
        &mut [Participant],
        &mut dyn FnMut(&Participant) -> Option<String>,
    ) -> Vec<Option<R>>,
) -> Vec<Option<R>> {
    let Some(k) = faults::split(point) else {
        return run(parts, &mut |p| cmd(p));
    };
    let mut sent = 0;
    let first = run(parts, &mut |p| {
        let c = cmd(p)?;
        sent += 1;
        (sent <= k).then_some(c)
    });
    faults::hit(point);
    let mut seen = 0;
    let rest = run(parts, &mut |p| {
        let c = cmd(p)?;
        seen += 1;
        (seen > k).then_some(c)
    });
    first.into_iter().zip(rest).map(|(a, b)| a.or(b)).collect()
}

impl Dt {
    pub(super) fn new(id: String, scope: Scope) -> Dt {
        Dt {
            id,
            scope,
            state: DtState::Active,
            participants: Vec::new(),
            touched: false,
            protocol: None,
            deciding_since: None,
            begin_sql: begin_statement(),
            sends: Sends::default(),
            registration: Registration::enter(),
            fence: None,
            xid: 0,
            snapshot: None,
        }
    }

    /// Whether another statement may run: an aborted DT raises the error
    /// of a failed send that aborted it, as `dist_exec` would have.
    pub(super) fn check_statement(&self) -> DgResult<()> {
        match (self.state, self.sends.error()) {
            (DtState::Aborted, Some(e)) => Err(e),
            (state, _) => state.check_statement(),
        }
    }

    /// The earliest failed send read so far.
    pub(super) fn failed_send(&self) -> Option<DgError> {
        self.sends.error()
    }

    /// The participant for `node` as the current role, joining it first.
    fn participant(&mut self, node: &str) -> DgResult<usize> {
        let target = fdw::lookup(node)?;
        if let Some(i) = self
            .participants
            .iter()
            .position(|p| p.conn.mapping == target.mapping)
        {
            return Ok(i);
        }
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| !s.contains(&target.server.to_u32()))
        {
            return Err(DgError::OutsideSnapshot(node.to_string()));
        }
        let conn = cache::take(&target)?;
        self.registration.join(target.server, conn.backend_pid());
        self.participants
            .push(Participant::new(conn, target.server));
        Ok(self.participants.len() - 1)
    }

    /// Queues `stmt` on its node's pipeline (`dg.dist_send`) and returns.
    pub(super) fn send(&mut self, stmt: Statement) -> DgResult<()> {
        let idx = self.participant(stmt.node)?;
        let read_only = self.read_only();
        let p = &mut self.participants[idx];
        if !read_only {
            p.work = Work::Write;
        }
        let seq = self.sends.add(&p.conn.node, nest_level());
        p.send(&self.begin_sql, &stmt, seq).inspect_err(|_| {
            self.sends.forget(seq);
        })
    }

    /// A sync point: reads everything sent to the participants `pick`
    /// chooses, from all of them at once (every pipeline is synced before
    /// any is read), and files what the sends came to. Errors of the sends
    /// are kept for the caller to raise (`Sends::error_at`); this returns
    /// only a failure of the connections themselves.
    fn sync(
        &mut self,
        deadline: Option<Instant>,
        pick: impl Fn(&Participant) -> bool,
    ) -> DgResult<()> {
        let mut first_error = None;
        let picked = |p: &Participant| p.conn.busy && pick(p);
        for p in self.participants.iter_mut().filter(|p| picked(p)) {
            if let Err(e) = p.conn.start_sync(deadline, WaitEvent::Result) {
                first_error.get_or_insert(e);
            }
        }
        for p in self.participants.iter_mut().filter(|p| picked(p)) {
            let read = p.conn.collect(deadline, WaitEvent::Result, None);
            let sent = p.take_sent();
            let all_ran = sent.iter().all(|o| matches!(o.result, SentResult::Rows(_)));
            self.sends.settle(sent);
            match read {
                // dg's own commands behind a failed send fail with it.
                Err(DgError::Remote(_)) if p.failed_send => {}
                Err(e) => {
                    first_error.get_or_insert(e);
                }
                Ok(_) if all_ran && !p.failed_send => {
                    if let Err(e) = p.check_still_open() {
                        first_error.get_or_insert(e);
                    }
                }
                Ok(_) => {}
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// `dg.dist_sync()`: waits for everything sent and returns what each
    /// send affected, in send order, or raises the earliest failure.
    pub(super) fn sync_all(&mut self) -> DgResult<Vec<(String, u32, i64)>> {
        self.sync(statement_deadline(), |_| true)?;
        if let Some(e) = self.sends.error() {
            return Err(e);
        }
        Ok(self.sends.take_rows())
    }

    /// Participants began READ ONLY (the local transaction was read-only
    /// when the DT started): what runs there writes nothing durable.
    pub(super) fn read_only(&self) -> bool {
        self.begin_sql.ends_with(" READ ONLY")
    }

    /// Runs `stmt` on its node as the current role, joining the node to
    /// the DT first. What was sent to the node before is read in the same
    /// round trip; if one of those failed, its error is raised instead.
    pub(super) fn run(&mut self, stmt: Statement) -> DgResult<i64> {
        let idx = self.participant(stmt.node)?;
        if self.participants[idx].failed_send {
            // The remote transaction is aborted: the statement would only
            // fail because of the send that did.
            return Err(self.earliest_failure());
        }
        let read_only = self.read_only();
        let p = &mut self.participants[idx];
        // A READ ONLY remote transaction may still write temporary tables;
        // the prepare phase asks a reader whether it did.
        if stmt.rows.is_none() && !read_only {
            p.work = Work::Write;
        }
        let started = Instant::now();
        let ran = p.run(&self.begin_sql, stmt);
        stats::time(Step::Statement, started.elapsed());
        self.sends.settle(p.take_sent());
        match ran? {
            Some(rows) => Ok(rows),
            None => Err(self.earliest_failure()),
        }
    }

    /// Files what the sends read by the last broadcast came to; the
    /// earliest failure if one failed.
    fn settle_sends(&mut self) -> Option<DgError> {
        let mut failed = false;
        for p in self.participants.iter_mut() {
            let sent = p.take_sent();
            failed |= p.failed_send;
            self.sends.settle(sent);
        }
        failed.then(|| self.earliest_failure())
    }

    /// A send failed: the error to raise is the earliest failure of all,
    /// where `dist_exec` would have stopped, so every other node's sends
    /// are read first (one more round trip, on the error path only).
    fn earliest_failure(&mut self) -> DgError {
        if let Err(e) = self.sync(statement_deadline(), |_| true) {
            return e;
        }
        self.sends
            .error()
            .unwrap_or_else(|| DgError::Internal("no failed send to report".into()))
    }

    /// The prepare phase. `local_must_agree`: the local transaction's
    /// commit must decide the DT together with the peers.
    pub(super) fn prepare(&mut self, local_must_agree: bool) -> DgResult<()> {
        let deadline = statement_deadline();
        // A send known to have failed fails the commit before it starts;
        // those not read yet are read with the first command of the
        // commit, in the same pipeline, which they skip if one fails.
        if self.sends.error().is_some() || self.participants.iter().any(|p| p.failed_send) {
            return Err(self.earliest_failure());
        }
        self.state.begin_commit();
        faults::hit(Point::BeforePrepare);
        let open = |p: &Participant| p.state == RemoteState::Open;
        let asked = broadcast(&mut self.participants, (deadline, WaitEvent::Result), |p| {
            (open(p) && p.work == Work::Read).then(|| WROTE_QUERY.to_string())
        });
        if let Some(e) = self.settle_sends() {
            return Err(e);
        }
        for (p, r) in self.participants.iter_mut().zip(asked) {
            if let Some(r) = r {
                let wrote = r?.tuples.is_some_and(|t| {
                    t.ntuples() == 1 && t.value(0, 0).is_some_and(|v| v.to_bytes() == b"t")
                });
                if wrote {
                    p.work = Work::Write;
                }
            }
        }
        let writers = self
            .participants
            .iter()
            .filter(|p| open(p) && p.work == Work::Write)
            .count();
        let chosen = protocol(writers, local_must_agree);
        // SAFETY: reads the local transaction's access mode.
        if chosen == Protocol::TwoPhase && unsafe { pg_sys::XactReadOnly } {
            return Err(DgError::ReadOnlyTwoPhase);
        }
        self.protocol = Some(chosen);
        match chosen {
            Protocol::ReadOnly | Protocol::OnePhase => self.commit_one_phase(deadline),
            Protocol::TwoPhase => self.prepare_two_phase(deadline, local_must_agree),
        }
    }

    /// Plain COMMIT everywhere: at most one participant wrote and nothing
    /// else must agree with it. A reader's failure loses nothing.
    fn commit_one_phase(&mut self, deadline: Option<Instant>) -> DgResult<()> {
        let until = (deadline, WaitEvent::Prepare);
        let results = broadcast(&mut self.participants, until, |p| {
            (p.state == RemoteState::Open).then(|| "COMMIT".to_string())
        });
        let mut first_error = self.settle_sends();
        for (p, r) in self.participants.iter_mut().zip(results) {
            if let Some(r) = r {
                if skipped(&r) {
                    continue;
                }
                p.state.end();
                if let (Err(e), Work::Write) = (r, p.work) {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// PREPARE every writer and COMMIT every reader at once, then record
    /// the decision in the local transaction (which wrote when
    /// `local_writes`).
    fn prepare_two_phase(&mut self, deadline: Option<Instant>, local_writes: bool) -> DgResult<()> {
        // SAFETY: assigns (or reads) the local transaction's full xid.
        let xid = unsafe { pg_sys::GetTopFullTransactionId() }.value;
        // SAFETY: reads the backend's database oid.
        let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
        let coordinator = catalog::coordinator_id();
        for p in self.participants.iter_mut() {
            if p.state == RemoteState::Open && p.work == Work::Write {
                let gid = Gid {
                    coordinator: coordinator.clone(),
                    database,
                    xid,
                    mapping: p.conn.mapping.to_u32(),
                };
                p.gid = Some(gid.to_string());
            }
        }
        let started = Instant::now();
        let until = (deadline, WaitEvent::Prepare);
        let results = split(
            &mut self.participants,
            Point::AfterPrepare,
            |p| match (p.state, &p.gid) {
                (RemoteState::Open, Some(gid)) => Some(prepare_statement(gid)),
                (RemoteState::Open, None) => Some("COMMIT".to_string()),
                _ => None,
            },
            |parts, cmd| broadcast(parts, until, cmd),
        );
        let mut first_error = self.settle_sends();
        for (p, r) in self.participants.iter_mut().zip(results) {
            let Some(r) = r.filter(|r| !skipped(r)) else {
                continue;
            };
            if p.gid.is_none() {
                // A reader, committed in the same round trip.
                p.state.end();
                continue;
            }
            p.state.prepare_sent();
            if let Ok(out) = &r {
                p.remote_xid = remote_xid(out);
            }
            p.state.prepare_answered(match &r {
                Ok(_) => PrepareAnswer::Prepared,
                Err(DgError::Remote(_)) => PrepareAnswer::Refused,
                Err(_) => PrepareAnswer::Unknown,
            });
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        stats::time(Step::Prepare, started.elapsed());
        if let Some(e) = first_error {
            return Err(e);
        }
        let prepared: Vec<fence::Prepared> = self
            .participants
            .iter()
            .filter(|p| p.state == RemoteState::Prepared)
            .map(|p| fence::Prepared {
                node: fence::Node {
                    server: p.server.to_u32(),
                    mapping: p.conn.mapping.to_u32(),
                },
                remote_xid: p.remote_xid.unwrap_or(0),
            })
            .collect();
        self.fence = Some(fence::Commit::enter(xid, local_writes, &prepared));
        self.xid = xid;
        self.deciding_since = Some(Instant::now());
        let prepared: Vec<(u32, Option<u64>)> = self
            .participants
            .iter()
            .filter(|p| p.gid.is_some())
            .map(|p| (p.conn.mapping.to_u32(), p.remote_xid))
            .collect();
        catalog::record_decision(xid, &self.id, &prepared);
        faults::hit(Point::AfterDecision);
        Ok(())
    }

    /// After the local commit: COMMIT PREPARED everywhere, waiting for the
    /// answers unless `dg.synchronous_finish` is off (then they are read
    /// when each connection is next used: `late_finish`). Never raises; a
    /// peer that cannot be finished now is left to the resolver.
    pub(super) fn finish(&mut self) {
        if let Some(since) = self.deciding_since {
            stats::time(Step::Decision, since.elapsed());
            faults::hit(Point::AfterLocalCommit);
        }
        let started = Instant::now();
        let until = (cleanup_deadline(), WaitEvent::CommitPrepared);
        let commit = |p: &Participant| {
            (p.state == RemoteState::Prepared)
                .then(|| format!("COMMIT PREPARED '{}'", p.gid.as_deref().unwrap_or_default()))
        };
        let wait = gucs::synchronous_finish();
        let point = Point::BetweenFinishes;
        let results: Vec<Option<DgResult<()>>> = if wait {
            split(&mut self.participants, point, commit, |parts, cmd| {
                broadcast(parts, until, cmd)
            })
            .into_iter()
            .map(|r| r.map(|r| r.map(drop)))
            .collect()
        } else {
            let xid = self.xid;
            split(&mut self.participants, point, commit, |parts, cmd| {
                detach(parts, until, xid, cmd)
            })
        };
        let (mut unfinished, mut sent) = (Vec::new(), Vec::new());
        for (p, r) in self.participants.iter_mut().zip(results) {
            let Some(r) = r else { continue };
            let node = fence::Node {
                server: p.server.to_u32(),
                mapping: p.conn.mapping.to_u32(),
            };
            match r {
                Ok(()) if !wait => sent.push(node),
                r => {
                    if !settle_prepared(&p.conn.node, "commit", r, PgLogLevel::WARNING) {
                        unfinished.push(node);
                    }
                }
            }
            p.state.end();
        }
        if let Some(f) = self.fence.take() {
            f.finished(&unfinished, &sent);
        }
        match self.protocol {
            Some(Protocol::TwoPhase) => {
                if wait {
                    stats::time(Step::Finish, started.elapsed());
                }
                stats::count(Event::Committed2pc);
            }
            Some(_) => stats::count(Event::Committed1pc),
            None => {}
        }
    }

    /// Rolls every participant back, prepared or not. Never raises.
    pub(super) fn abort(&mut self) {
        if !self.participants.is_empty() {
            stats::count(Event::Aborted);
        }
        let deadline = cleanup_deadline();
        for p in self.participants.iter_mut().filter(|p| p.conn.busy) {
            p.drain(deadline);
            p.take_sent();
        }
        self.sends.clear();
        let until = (deadline, WaitEvent::Cleanup);
        let results = broadcast(&mut self.participants, until, |p| match p.state {
            RemoteState::Open => Some("ROLLBACK".to_string()),
            RemoteState::Preparing | RemoteState::Prepared => Some(format!(
                "ROLLBACK PREPARED '{}'",
                p.gid.as_deref().unwrap_or_default()
            )),
            RemoteState::Ended => None,
        });
        for (p, r) in self.participants.iter_mut().zip(results) {
            if r.is_none() {
                continue;
            }
            if p.state.maybe_prepared() {
                let r = r.expect("sent above").map(drop);
                settle_prepared(&p.conn.node, "roll back", r, PgLogLevel::WARNING);
            }
            p.state.end();
        }
        // Rolled back or not, nothing of it is committed anywhere.
        self.fence = None;
    }

    /// Local subtransaction `level` commits: read what was sent inside it
    /// (raising a failure there, where a handler can catch it), then
    /// release its savepoints.
    pub(super) fn release_savepoints(&mut self, level: i32) -> DgResult<()> {
        self.sync(statement_deadline(), |p| p.depth >= level)?;
        if self.sends.error_at(level).is_some() {
            return Err(self.earliest_failure());
        }
        self.sends.released(level);
        let name = super::participant::savepoint(level);
        // A participant aborted by an earlier failed send cannot release
        // anything; that send's error comes at a later sync point.
        for p in self
            .participants
            .iter_mut()
            .filter(|p| p.failed_send && p.depth >= level)
        {
            p.depth = level - 1;
        }
        let until = (statement_deadline(), WaitEvent::Result);
        let results = broadcast(&mut self.participants, until, |p| {
            (p.depth >= level).then(|| format!("RELEASE SAVEPOINT {name}"))
        });
        let mut first_error = None;
        for (p, r) in self.participants.iter_mut().zip(results) {
            if let Some(r) = r {
                p.depth = level - 1;
                if let Err(e) = r {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Local subtransaction `level` aborts: undo its remote work. Never
    /// raises; a participant that cannot be rolled back aborts the DT.
    pub(super) fn rollback_savepoints(&mut self, level: i32) {
        let deadline = cleanup_deadline();
        let name = super::participant::savepoint(level);
        let mut failed = false;
        for p in self
            .participants
            .iter_mut()
            .filter(|p| p.depth >= level && p.conn.busy)
        {
            failed |= !p.drain(deadline);
            self.sends.settle(p.take_sent());
        }
        // What was sent inside never happened, failures included.
        self.sends.rolled_back(level);
        let results = broadcast(
            &mut self.participants,
            (deadline, WaitEvent::Cleanup),
            |p| {
                (p.depth >= level)
                    .then(|| format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"))
            },
        );
        let send_failed_outside = self.sends.error().is_some();
        for (p, r) in self.participants.iter_mut().zip(results) {
            if let Some(r) = r {
                p.depth = level - 1;
                match r {
                    // Back before any send that failed here.
                    Ok(_) => p.failed_send = false,
                    // A send that failed before the savepoint was made
                    // left the remote transaction aborted: an outer
                    // rollback may still undo it, and otherwise the next
                    // sync point raises that send's error.
                    Err(DgError::Remote(_)) if p.failed_send && send_failed_outside => {}
                    Err(_) => failed = true,
                }
            }
        }
        if failed {
            self.state.fail();
        }
    }

    /// Hands the connections back to the cache; the DT is over.
    pub(super) fn release(mut self) {
        self.release_participants();
    }

    /// Hands the participants' connections back to the cache and forgets
    /// them; the DT itself stays (aborted, until rolled back).
    pub(super) fn release_participants(&mut self) {
        self.registration.forget_participants();
        for p in std::mem::take(&mut self.participants) {
            cache::give_back(p.conn);
        }
        stats::flush_requests();
    }

    /// Rolls back on every participant and fails the DT, which stays
    /// until the block or `dist_rollback()` ends it.
    pub(super) fn abort_and_fail(&mut self) {
        self.abort();
        self.state.fail();
        self.release_participants();
    }

    /// `dg.dist_snapshot()`: joins `nodes` (connecting outside the fence),
    /// then has each open its transaction and take its snapshot, all in
    /// one round trip, while commits go on: the fence tells which DTs were
    /// finishing meanwhile, and the snapshots must see each of them whole
    /// (src/README.md, "Watched snapshots"); a DT they do not is waited
    /// for until its finish is done. After `WATCHED_TRIES` that do not, or
    /// when a DT is in doubt on a node, the snapshots are taken again
    /// holding the fence, which keeps commits out. Only those nodes may
    /// join later.
    pub(super) fn take_snapshot(&mut self, nodes: &[String]) -> DgResult<Vec<String>> {
        for node in nodes {
            self.participant(node)?;
        }
        let servers: Vec<u32> = self
            .participants
            .iter()
            .map(|p| p.server.to_u32())
            .collect();
        let timeout = gucs::snapshot_timeout();
        // SAFETY: the local transaction's snapshot, taken at its first
        // statement (REPEATABLE READ keeps it).
        let local = unsafe { pg_sys::GetTransactionSnapshot() };
        let deadline = Instant::now() + timeout;
        for _ in 0..WATCHED_TRIES {
            if Instant::now() >= deadline {
                break;
            }
            let Some(watch) = fence::Watch::start(&servers) else {
                break;
            };
            if watch.local_skew(local) {
                return Err(DgError::SnapshotSkew);
            }
            let snapshots = self.snapshot_round(deadline)?;
            let crossed = watch
                .end(local)
                .and_then(|finishing| snapshots.map(|s| first_fractured(&finishing, &s)));
            match crossed {
                Some(None) => {
                    stats::count(Event::SnapshotTaken { held: false });
                    self.snapshot = Some(servers);
                    return Ok(self.nodes());
                }
                // Its finish is under way: taken again at once, the
                // snapshots would most likely cross it again.
                Some(Some(xid)) => fence::await_departure(xid, deadline),
                None => {}
            }
            stats::count(Event::SnapshotRetaken);
        }
        let parts = &mut self.participants;
        let held = fence::Snapshot::enter(&servers, deadline, |asked, until| {
            gone_from_nodes(parts, asked, until)
        })
        .map_err(|b| self.blocked(b))?;
        if held.local_skew(local) {
            return Err(DgError::SnapshotSkew);
        }
        // Commits wait while the fence is held: bounded like the wait to
        // get in, whatever the statement timeout.
        self.snapshot_round(Instant::now() + timeout)?;
        drop(held);
        stats::count(Event::SnapshotTaken { held: true });
        self.snapshot = Some(servers);
        Ok(self.nodes())
    }

    /// Every participant (again, after a rollback, if it has begun) opens
    /// its transaction and takes its snapshot, in one round trip bounded
    /// by `bound` and the statement timeout; the snapshots by server, None
    /// if one could not be read.
    fn snapshot_round(&mut self, bound: Instant) -> DgResult<Option<Vec<(u32, NodeSnapshot)>>> {
        let deadline = Some(statement_deadline().map_or(bound, |d| d.min(bound)));
        let begin = self.begin_sql.clone();
        let sqls: Vec<String> = self
            .participants
            .iter_mut()
            .map(|p| p.snapshot_sql(&begin))
            .collect();
        let mut sqls = sqls.into_iter();
        let results = broadcast(
            &mut self.participants,
            (deadline, WaitEvent::Result),
            |_| sqls.next(),
        );
        let mut snapshots = Vec::new();
        for (p, r) in self.participants.iter().zip(results) {
            let Some(r) = r else { continue };
            let snapshot = r?
                .tuples
                .filter(|t| t.ntuples() == 1)
                .and_then(|t| t.text(0, 0))
                .and_then(|text| NodeSnapshot::parse(&text));
            snapshots.push(snapshot.map(|s| (p.server.to_u32(), s)));
        }
        Ok(snapshots.into_iter().collect())
    }

    /// The error of a snapshot that waited in vain.
    fn blocked(&self, b: fence::Blocked<DgError>) -> DgError {
        match b {
            fence::Blocked::Asking(e) => e,
            fence::Blocked::InDoubt { xid, node } => DgError::SnapshotInDoubt {
                node: self.node_of(node.server),
                gid: Gid {
                    coordinator: catalog::coordinator_id(),
                    // SAFETY: reads the backend's database oid.
                    database: unsafe { pg_sys::MyDatabaseId }.to_u32(),
                    xid,
                    mapping: node.mapping,
                }
                .to_string(),
            },
            fence::Blocked::NotListed { server } => {
                DgError::SnapshotNotListed(self.node_of(server))
            }
            fence::Blocked::Busy => DgError::SnapshotBusy,
        }
    }

    /// The name of the participant on `server`.
    fn node_of(&self, server: u32) -> String {
        self.participants
            .iter()
            .find(|p| p.server.to_u32() == server)
            .map_or_else(|| server.to_string(), |p| p.conn.node.clone())
    }

    pub(super) fn nodes(&self) -> Vec<String> {
        self.participants
            .iter()
            .map(|p| p.conn.node.clone())
            .collect()
    }
}

/// Which of `asked` (a DT in doubt on a node) have no prepared transaction
/// left on their node, asked of every node concerned in one round trip by
/// the snapshot's own connections (before their transactions begin).
fn gone_from_nodes(
    parts: &mut [Participant],
    asked: &[(u64, fence::Node)],
    until: Option<Instant>,
) -> DgResult<Vec<(u64, fence::Node)>> {
    let until = until.or_else(statement_deadline);
    let coordinator = catalog::coordinator_id();
    // SAFETY: reads the backend's database oid.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let gid = |&(xid, node): &(u64, fence::Node)| {
        Gid {
            coordinator: coordinator.clone(),
            database,
            xid,
            mapping: node.mapping,
        }
        .to_string()
    };
    // GIDs are dg's own (hex, digits, '-', '_'): safe as literals.
    let results = broadcast(parts, (until, WaitEvent::Result), |p| {
        let gids: Vec<String> = asked
            .iter()
            .filter(|(_, n)| n.server == p.server.to_u32())
            .map(|a| format!("'{}'", gid(a)))
            .collect();
        (!gids.is_empty()).then(|| {
            format!(
                "SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE gid IN ({})",
                gids.join(", ")
            )
        })
    });
    let mut prepared = Vec::new();
    for r in results.into_iter().flatten() {
        if let Some(t) = r?.tuples {
            prepared.extend((0..t.ntuples()).filter_map(|i| t.text(i, 0)));
        }
    }
    Ok(asked
        .iter()
        .filter(|a| !prepared.contains(&gid(a)))
        .copied()
        .collect())
}

/// The command was not run: a send before it in the pipeline failed, so
/// the remote transaction is still open (and aborted).
fn skipped(r: &DgResult<Outcome>) -> bool {
    matches!(r, Ok(o) if o.skipped)
}

/// The end of COMMIT or ROLLBACK PREPARED on one peer: whether it is
/// finished there. A failure is reported at `level` and wakes the
/// resolver: it finishes the job.
fn settle_prepared(node: &str, action: &'static str, r: DgResult<()>, level: PgLogLevel) -> bool {
    let e = match r {
        Ok(()) => return true,
        // Another finisher (the resolver) got there first, or the node
        // lost the prepared transaction. Only the node's word on the
        // remote xid tells which: the resolver asks it when it forgets the
        // decision, so a commit asks for a pass now (src/README.md, "Lost
        // commits"). A rollback that finds nothing has nothing to lose.
        Err(DgError::Remote(e)) if e.is_undefined_object() => {
            if action == "commit" {
                wakeup::request_resolver_pass();
            }
            return true;
        }
        Err(e) => e,
    };
    stats::count(Event::FinishFailure {
        reachable: !e.is_unreachable(),
    });
    wakeup::request_resolver_pass();
    DgError::Unfinished {
        node: node.to_string(),
        action,
        cause: e.message(),
        detail: e.detail(),
    }
    .report_below_error(level, None);
    false
}

/// The answer of a `COMMIT PREPARED` that a finish did not wait for
/// (`dg.synchronous_finish = off`), read when its connection was next
/// used: done there, or left to the resolver as after any failed finish.
/// Logged, not warned: the statement running now is not the one whose
/// commit it finishes.
pub(super) fn late_finish(a: LateAnswer) {
    let finished = settle_prepared(a.node, "commit", a.result, PgLogLevel::LOG);
    fence::answered_late(a.tag, a.mapping.to_u32(), finished);
}

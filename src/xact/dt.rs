//! One distributed transaction: its participants and the protocol steps
//! that move them (begin, savepoints, prepare, finish, abort).
//!
//! Every step that talks to several peers sends to all of them first and
//! then collects, so a phase costs one round trip, not one per peer.

use super::participant::Participant;
use super::state::{protocol, DtState, PrepareAnswer, Protocol, RemoteState, Scope, Work};
use super::statement::Statement;
use crate::catalog;
use crate::error::{DgError, DgResult};
use crate::faults::{self, Point};
use crate::fdw;
use crate::gid::Gid;
use crate::registry::Registration;
use crate::remote::cache;
use crate::remote::connection::Outcome;
use crate::remote::wait::{cleanup_deadline, statement_deadline};
use crate::stats::{self, Event, Step};
use crate::wakeup;
use pgrx::pg_sys;
use std::time::Instant;

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
    /// Published to the deadlock detector while the DT lives.
    registration: Registration,
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

/// Sends `cmd(p)` to every participant it names, then collects each.
fn broadcast(
    parts: &mut [Participant],
    deadline: Option<Instant>,
    mut cmd: impl FnMut(&Participant) -> Option<String>,
) -> Vec<Option<DgResult<Outcome>>> {
    let sent: Vec<Option<DgResult<()>>> = parts
        .iter_mut()
        .map(|p| cmd(p).map(|sql| p.conn.send(&sql, None, deadline)))
        .collect();
    parts
        .iter_mut()
        .zip(sent)
        .map(|(p, s)| s.map(|s| s.and_then(|()| p.conn.collect(deadline, None))))
        .collect()
}

/// `broadcast`, or, when fault `point` is armed with k, the first k
/// commands, the fault, then the rest (test builds only).
fn broadcast_split(
    parts: &mut [Participant],
    deadline: Option<Instant>,
    point: Point,
    cmd: impl Fn(&Participant) -> Option<String>,
) -> Vec<Option<DgResult<Outcome>>> {
    let Some(k) = faults::split(point) else {
        return broadcast(parts, deadline, cmd);
    };
    let mut sent = 0;
    let first = broadcast(parts, deadline, |p| {
        let c = cmd(p)?;
        sent += 1;
        (sent <= k).then_some(c)
    });
    faults::hit(point);
    let mut seen = 0;
    let rest = broadcast(parts, deadline, |p| {
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
            registration: Registration::enter(),
        }
    }

    /// Participants began READ ONLY (the local transaction was read-only
    /// when the DT started): what runs there writes nothing durable.
    pub(super) fn read_only(&self) -> bool {
        self.begin_sql.ends_with(" READ ONLY")
    }

    /// Runs `stmt` on its node as the current role, joining the node to
    /// the DT first.
    pub(super) fn run(&mut self, stmt: Statement) -> DgResult<i64> {
        let target = fdw::lookup(stmt.node)?;
        let idx = match self
            .participants
            .iter()
            .position(|p| p.conn.mapping == target.mapping)
        {
            Some(i) => i,
            None => {
                let conn = cache::take(&target)?;
                self.registration.join(target.server, conn.backend_pid());
                self.participants.push(Participant::new(conn));
                self.participants.len() - 1
            }
        };
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
        ran
    }

    /// The prepare phase. `local_must_agree`: the local transaction's
    /// commit must decide the DT together with the peers.
    pub(super) fn prepare(&mut self, local_must_agree: bool) -> DgResult<()> {
        self.state.begin_commit();
        faults::hit(Point::BeforePrepare);
        let deadline = statement_deadline();
        let open = |p: &Participant| p.state == RemoteState::Open;
        let asked = broadcast(&mut self.participants, deadline, |p| {
            (open(p) && p.work == Work::Read).then(|| WROTE_QUERY.to_string())
        });
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
            Protocol::TwoPhase => self.prepare_two_phase(deadline),
        }
    }

    /// Plain COMMIT everywhere: at most one participant wrote and nothing
    /// else must agree with it. A reader's failure loses nothing.
    fn commit_one_phase(&mut self, deadline: Option<Instant>) -> DgResult<()> {
        let results = broadcast(&mut self.participants, deadline, |p| {
            (p.state == RemoteState::Open).then(|| "COMMIT".to_string())
        });
        let mut first_error = None;
        for (p, r) in self.participants.iter_mut().zip(results) {
            if let Some(r) = r {
                p.state.end();
                if let (Err(e), Work::Write) = (r, p.work) {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// PREPARE every writer and COMMIT every reader at once, then record
    /// the decision in the local transaction.
    fn prepare_two_phase(&mut self, deadline: Option<Instant>) -> DgResult<()> {
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
        let results =
            broadcast_split(
                &mut self.participants,
                deadline,
                Point::AfterPrepare,
                |p| match (p.state, &p.gid) {
                    (RemoteState::Open, Some(gid)) => Some(prepare_statement(gid)),
                    (RemoteState::Open, None) => Some("COMMIT".to_string()),
                    _ => None,
                },
            );
        let mut first_error = None;
        for (p, r) in self.participants.iter_mut().zip(results) {
            let Some(r) = r else { continue };
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

    /// After the local commit: COMMIT PREPARED everywhere. Never raises; a
    /// peer that cannot be finished now is left to the resolver.
    pub(super) fn finish(&mut self) {
        if let Some(since) = self.deciding_since {
            stats::time(Step::Decision, since.elapsed());
            faults::hit(Point::AfterLocalCommit);
        }
        let started = Instant::now();
        let results = broadcast_split(
            &mut self.participants,
            cleanup_deadline(),
            Point::BetweenFinishes,
            |p| {
                (p.state == RemoteState::Prepared)
                    .then(|| format!("COMMIT PREPARED '{}'", p.gid.as_deref().unwrap_or_default()))
            },
        );
        for (p, r) in self.participants.iter_mut().zip(results) {
            if r.is_some() {
                settle_prepared(&p.conn.node, "commit", r);
                p.state.end();
            }
        }
        match self.protocol {
            Some(Protocol::TwoPhase) => {
                stats::time(Step::Finish, started.elapsed());
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
            p.conn.cancel_and_drain(deadline);
        }
        let results = broadcast(&mut self.participants, deadline, |p| match p.state {
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
                settle_prepared(&p.conn.node, "roll back", r);
            }
            p.state.end();
        }
    }

    /// Local subtransaction `level` commits: release its savepoints.
    pub(super) fn release_savepoints(&mut self, level: i32) -> DgResult<()> {
        let name = super::participant::savepoint(level);
        let results = broadcast(&mut self.participants, statement_deadline(), |p| {
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
            failed |= !p.conn.cancel_and_drain(deadline);
        }
        let results = broadcast(&mut self.participants, deadline, |p| {
            (p.depth >= level)
                .then(|| format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"))
        });
        for (p, r) in self.participants.iter_mut().zip(results) {
            if let Some(r) = r {
                p.depth = level - 1;
                failed |= r.is_err();
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

    pub(super) fn nodes(&self) -> Vec<String> {
        self.participants
            .iter()
            .map(|p| p.conn.node.clone())
            .collect()
    }
}

/// The end of COMMIT or ROLLBACK PREPARED on one peer. A failure is a
/// WARNING and wakes the resolver: it finishes the job.
fn settle_prepared(node: &str, action: &'static str, r: Option<DgResult<Outcome>>) {
    let e = match r {
        None | Some(Ok(_)) => return,
        // Another finisher (the resolver) got there first, or the node
        // lost the prepared transaction. Only the node's word on the
        // remote xid tells which: the resolver asks it when it forgets the
        // decision, so a commit asks for a pass now (src/README.md, "Lost
        // commits"). A rollback that finds nothing has nothing to lose.
        Some(Err(DgError::Remote(e))) if e.is_undefined_object() => {
            if action == "commit" {
                wakeup::request_resolver_pass();
            }
            return;
        }
        Some(Err(e)) => e,
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
    .warn();
}

//! One participant of a DT: one remote transaction on one node, as one
//! user mapping. Its state changes are the methods of
//! `state::RemoteState`; the nesting it mirrors is `depth`.

use super::state::{RemoteState, Work};
use super::statement::Statement;
use crate::error::{DgError, DgResult};
use crate::remote::connection::{Connection, SentOutcome, SentResult};
use crate::remote::wait::{statement_deadline, WaitEvent};
use pgrx::pg_sys;
use std::time::Instant;

pub struct Participant {
    pub(super) conn: Connection,
    /// The foreign server the connection was opened for.
    pub(super) server: pg_sys::Oid,
    pub(super) state: RemoteState,
    /// Local nesting level the remote side mirrors: 0 before BEGIN, 1 in
    /// the transaction, n with savepoints up to level n.
    pub(super) depth: i32,
    pub(super) work: Work,
    /// Set when the prepare phase picks this participant to prepare.
    pub(super) gid: Option<String>,
    /// A `dg.dist_send` failed here: the remote transaction is aborted
    /// until a rollback to a savepoint before that send. What dg sends it
    /// meanwhile fails too, and the failed send is the error to raise.
    pub(super) failed_send: bool,
    /// The peer's id of the remote transaction, learned with its PREPARE:
    /// kept with the decision, so a finisher that finds the prepared
    /// transaction gone can ask whether it committed (src/README.md,
    /// "Lost commits").
    pub(super) remote_xid: Option<u64>,
}

pub(super) fn savepoint(level: i32) -> String {
    format!("dg_sp_{level}")
}

pub(super) fn nest_level() -> i32 {
    // SAFETY: reads the current transaction's nesting level.
    unsafe { pg_sys::GetCurrentTransactionNestLevel() }
}

impl Participant {
    pub(super) fn new(conn: Connection, server: pg_sys::Oid) -> Participant {
        Participant {
            conn,
            server,
            state: RemoteState::Open,
            depth: 0,
            work: Work::Read,
            gid: None,
            failed_send: false,
            remote_xid: None,
        }
    }

    /// What brings the remote side to the local nesting `level`: BEGIN
    /// and the savepoints it lacks.
    fn catch_up(&mut self, begin_sql: &str, level: i32) -> Vec<String> {
        let mut stmts = Vec::new();
        if self.depth == 0 {
            stmts.push(begin_sql.to_string());
            self.depth = 1;
        }
        while self.depth < level {
            self.depth += 1;
            stmts.push(format!("SAVEPOINT {}", savepoint(self.depth)));
        }
        stmts
    }

    /// Queues `stmt` as `dg.dist_send` number `seq`, preceded by whatever
    /// mirrors the local nesting, without waiting for it.
    pub(super) fn send(&mut self, begin_sql: &str, stmt: &Statement, seq: u32) -> DgResult<()> {
        debug_assert_eq!(
            self.state,
            RemoteState::Open,
            "statements run in an open transaction"
        );
        let prelude = self.catch_up(begin_sql, nest_level());
        self.conn
            .queue_send(&prelude, stmt.sql, stmt.params, seq, statement_deadline())
    }

    /// The statements that open the remote transaction (after rolling
    /// back one a snapshot opened before) and take its snapshot (the
    /// first query of a REPEATABLE READ transaction takes it) and print
    /// it, as one simple-protocol string: one round trip.
    pub(super) fn snapshot_sql(&mut self, begin_sql: &str) -> String {
        let mut stmts = Vec::new();
        if self.depth > 0 {
            stmts.push("ROLLBACK".to_string());
            self.depth = 0;
        }
        stmts.extend(self.catch_up(begin_sql, nest_level()));
        stmts.push("SELECT pg_catalog.pg_current_snapshot()".to_string());
        stmts.join("; ")
    }

    /// Reads what is in flight, for cleanup: a statement someone waited
    /// on is cancelled first (it may run for long), sends are awaited.
    /// False if the connection is no longer fit for use.
    pub(super) fn drain(&mut self, deadline: Option<Instant>) -> bool {
        if !self.conn.busy {
            return !self.conn.broken;
        }
        if self.conn.awaits_statement() {
            return self.conn.cancel_and_drain(deadline, WaitEvent::Cleanup);
        }
        match self.conn.collect(deadline, WaitEvent::Cleanup, None) {
            Ok(_) | Err(DgError::Remote(_)) => !self.conn.broken,
            Err(_) => {
                self.conn.broken = true;
                false
            }
        }
    }

    /// What the sends read so far came to; notes a failure.
    pub(super) fn take_sent(&mut self) -> Vec<SentOutcome> {
        let sent = self.conn.take_sent();
        self.failed_send |= sent
            .iter()
            .any(|o| matches!(o.result, SentResult::Failed(_)));
        sent
    }

    /// A sync point read everything sent without an error: refuses a
    /// statement that ended the remote transaction, as `run` does.
    pub(super) fn check_still_open(&self) -> DgResult<()> {
        if self.conn.in_transaction() {
            return Ok(());
        }
        Err(DgError::Unsupported(format!(
            "a statement run through dg ended the transaction on node \"{}\"",
            self.conn.node
        )))
    }

    /// Runs `stmt` behind whatever was sent before it, preceded in the
    /// same round trip by whatever mirrors the local nesting; a statement
    /// that ends the remote transaction (COMMIT, ROLLBACK) is refused
    /// after the fact. None: not run, because an earlier `dg.dist_send`
    /// on this node failed.
    pub(super) fn run(&mut self, begin_sql: &str, stmt: Statement) -> DgResult<Option<i64>> {
        debug_assert_eq!(
            self.state,
            RemoteState::Open,
            "statements run in an open transaction"
        );
        let deadline = statement_deadline();
        let prelude = self.catch_up(begin_sql, nest_level());
        self.conn
            .send_after(&prelude, stmt.sql, stmt.params, deadline)?;
        if stmt.rows.is_some() {
            self.conn.stream_rows();
        }
        let out = self.conn.collect(deadline, WaitEvent::Result, stmt.rows)?;
        if out.skipped {
            return Ok(None);
        }
        self.check_still_open()?;
        Ok(Some(out.rows_affected))
    }

    /// The state label `dg.connections()` shows.
    pub(super) fn label(&self) -> &'static str {
        match self.state {
            RemoteState::Open if self.depth > 0 => "in transaction",
            RemoteState::Open => "idle",
            RemoteState::Preparing => "preparing",
            RemoteState::Prepared => "prepared",
            RemoteState::Ended => "ended",
        }
    }
}

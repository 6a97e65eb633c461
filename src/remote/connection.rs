//! One connection to one node as one remote user: connecting without
//! blocking, sending statements, collecting their results, and cancelling.
//!
//! `busy` is set while a statement is in flight and cleared once its
//! results are drained. An ERROR that unwinds through a wait (a cancel, a
//! timeout) leaves it set, which tells the abort path to cancel and drain
//! before using the connection again.
//!
//! Notices and warnings the peer sends are queued by libpq's receiver and
//! passed on here, after each libpq call returns: those about the user's
//! statement reach the client as what they are, those about dg's own
//! commands (BEGIN, PREPARE, a ROLLBACK with nothing open) only the
//! server log at DEBUG1.

use super::libpq::{Flush, PgConn, PgResult, Poll, ResultKind};
use super::target::Target;
use super::wait::{deadline_after, wait_socket, Want};
use crate::error::{DgError, DgResult, RemoteError};
use crate::gucs;
use pgrx::pg_sys;
use std::time::Instant;

pub struct Connection {
    pub node: String,
    pub mapping: pg_sys::Oid,
    /// The cache's entry for this connection, which keeps its
    /// invalidation state while the connection is lent out.
    pub(super) entry: u64,
    pub busy: bool,
    pub broken: bool,
    /// The peer asked for (and got) the mapping's password. A cached
    /// connection is only handed to a role for which that is enough.
    pub used_password: bool,
    /// Statements whose results are still to be read; the last is the one
    /// whose outcome counts, those before it (BEGIN, SAVEPOINT) only fail.
    queued: usize,
    /// The statements in flight went out as one pipeline.
    pipelined: bool,
    /// Rows of the last statement in flight come one result per row.
    stream_last: bool,
    /// The user's statement in flight (last of its pipeline), for the
    /// `remote SQL command` line of its errors and to tell its notices
    /// from those of dg's own commands.
    user_sql: Option<String>,
    conn: PgConn,
}

/// What a statement returned.
pub struct Outcome {
    pub rows_affected: i64,
    /// The last tuples result, when not streamed to a callback.
    pub tuples: Option<PgResult>,
}

const SESSION_SETUP: &str =
    "SET DateStyle = ISO; SET IntervalStyle = postgres; SET extra_float_digits = 3";

impl Connection {
    /// Opens a connection for `target`, bounded by `dg.connect_timeout` or
    /// the node's `connect_timeout` option, whichever is shorter, and
    /// interruptible. Enforces the password rule for non-superusers and sets
    /// the session so values come back in formats local input functions read.
    pub fn open(target: &Target) -> DgResult<Connection> {
        let node = target.node.clone();
        let connect_error = |message: String| DgError::Connect {
            node: node.clone(),
            message,
        };
        let conn = PgConn::start(&target.options).map_err(connect_error)?;
        // The tighter of dg.connect_timeout and the node's own option.
        let (limit, bound_by) = match (gucs::connect_timeout(), target.connect_timeout()) {
            (Some(g), Some(o)) if o < g => (Some(o), "the node's connect_timeout"),
            (None, Some(o)) => (Some(o), "the node's connect_timeout"),
            (g, _) => (g, "dg.connect_timeout"),
        };
        let deadline = deadline_after(limit);
        loop {
            let want = match conn.poll() {
                Poll::Ok => break,
                Poll::Failed => return Err(connect_error(conn.error_message())),
                Poll::Reading => Want::Read,
                Poll::Writing => Want::Write,
            };
            if !wait_socket(conn.socket(), want, deadline) {
                // Unreachable, like a refused connection: 08001, not a cancel.
                return Err(connect_error(format!("no answer within {bound_by}")));
            }
        }
        let used_password = conn.used_password();
        if target.password_required && !used_password {
            return Err(DgError::PasswordNotUsed(node));
        }
        let mut c = Connection {
            node,
            mapping: target.mapping,
            entry: 0,
            busy: false,
            broken: false,
            used_password,
            queued: 0,
            pipelined: false,
            stream_last: false,
            user_sql: None,
            conn,
        };
        c.exec(SESSION_SETUP, None, deadline)?;
        Ok(c)
    }

    pub fn backend_pid(&self) -> i32 {
        self.conn.backend_pid()
    }

    pub fn remote_user(&self) -> String {
        self.conn.user()
    }

    pub fn in_transaction(&self) -> bool {
        self.conn.in_transaction()
    }

    /// Healthy and idle outside any remote transaction: fit for another
    /// transaction, unless the cache knows its catalog entries changed.
    pub fn reusable(&self) -> bool {
        !self.broken && !self.busy && self.conn.is_ok() && self.conn.is_idle()
    }

    /// Queues `sql` (extended protocol when `params` is given, else simple
    /// protocol, which allows several statements) and flushes it.
    pub fn send(
        &mut self,
        sql: &str,
        params: Option<&[Option<String>]>,
        deadline: Option<Instant>,
    ) -> DgResult<()> {
        match params {
            Some(p) => self.queue_and_flush(&[], None, deadline, |c| c.send_query_params(sql, p)),
            None => self.queue_and_flush(&[], None, deadline, |c| c.send_query(sql)),
        }
    }

    /// Queues `prelude` (statements without parameters, such as BEGIN) and
    /// then the user's statement `sql` as one pipeline, so all of them cost
    /// one round trip. A failing prelude statement skips the rest.
    pub fn send_after(
        &mut self,
        prelude: &[String],
        sql: &str,
        params: &[Option<String>],
        deadline: Option<Instant>,
    ) -> DgResult<()> {
        self.queue_and_flush(prelude, Some(sql), deadline, |c| {
            c.send_query_params(sql, params)
        })
    }

    fn queue_and_flush(
        &mut self,
        prelude: &[String],
        user_sql: Option<&str>,
        deadline: Option<Instant>,
        queue_last: impl FnOnce(&PgConn) -> bool,
    ) -> DgResult<()> {
        if self.busy {
            return Err(self.lost("the connection is busy with another statement".into()));
        }
        // Anything left from before (the session setup) is dg's own.
        self.pass_on_notices();
        let pipelined = !prelude.is_empty();
        let queued = (!pipelined || self.conn.enter_pipeline_mode())
            && prelude.iter().all(|s| self.conn.send_query_params(s, &[]))
            && queue_last(&self.conn)
            && (!pipelined || self.conn.pipeline_sync());
        if !queued {
            return Err(self.lost(self.conn.error_message()));
        }
        crate::stats::count_request();
        self.busy = true;
        self.user_sql = user_sql.map(str::to_owned);
        self.queued = prelude.len() + 1;
        self.pipelined = pipelined;
        self.stream_last = false;
        loop {
            match self.conn.flush() {
                Flush::Done => return Ok(()),
                Flush::Failed => return Err(self.lost(self.conn.error_message())),
                // The server may be sending while we send; reading keeps
                // both sides moving.
                Flush::More => self.await_socket(Want::Write, deadline, "accept a statement")?,
            }
        }
    }

    /// Asks for the rows of the statement just sent one result per row.
    pub fn stream_rows(&mut self) {
        self.stream_last = true;
    }

    /// Reads every result of the statements in flight. Rows of the last one
    /// go to `on_tuples` when given (and are dropped after), otherwise its
    /// last tuples result is kept in the outcome. The first remote error is
    /// returned after the results are drained, so the connection is ready
    /// for the next command.
    pub fn collect(
        &mut self,
        deadline: Option<Instant>,
        mut on_tuples: Option<&mut dyn FnMut(&PgResult)>,
    ) -> DgResult<Outcome> {
        let mut outcome = Outcome {
            rows_affected: 0,
            tuples: None,
        };
        let mut first_error: Option<DgError> = None;
        loop {
            // libpq takes single-row mode only before the statement's
            // first result is parsed, which is_busy() may do.
            if self.stream_last && self.queued == 1 {
                self.conn.set_single_row_mode();
                self.stream_last = false;
            }
            while self.conn.is_busy() {
                self.await_socket(Want::Read, deadline, "finish a statement")?;
            }
            let res = self.conn.get_result();
            // Parsed while this statement's results were read: its own.
            self.pass_on_notices();
            let Some(res) = res else {
                // The end of one statement's results; in a pipeline the
                // next statement's follow, then the sync point.
                if self.pipelined && self.queued > 0 && self.conn.is_ok() {
                    self.queued -= 1;
                    continue;
                }
                break;
            };
            let last = self.queued == 1;
            match res.kind() {
                ResultKind::Error => {
                    if first_error.is_none() {
                        let statement = self.user_sql.clone().filter(|_| last);
                        first_error = Some(self.remote_error(&res, statement));
                    }
                }
                ResultKind::Tuples | ResultKind::SingleTuple if last => {
                    outcome.rows_affected = res.cmd_tuples();
                    match on_tuples.as_mut() {
                        Some(f) if first_error.is_none() => f(&res),
                        Some(_) => {}
                        None => outcome.tuples = Some(res),
                    }
                }
                ResultKind::Command if last => outcome.rows_affected = res.cmd_tuples(),
                ResultKind::Tuples
                | ResultKind::SingleTuple
                | ResultKind::Command
                | ResultKind::PipelineAborted => {}
                ResultKind::PipelineSync => {
                    self.pipelined = false;
                    if !self.conn.exit_pipeline_mode() {
                        self.broken = true;
                    }
                    break;
                }
                // COPY (or anything else dg does not drive): libpq hands
                // back the same result until the copy is driven, so stop
                // here. The connection is closed, which ends the remote
                // transaction; the DT aborts with this error.
                ResultKind::Other => {
                    self.busy = false;
                    self.user_sql = None;
                    self.broken = true;
                    return Err(DgError::Unsupported(format!(
                        "COPY and other streaming protocols are not supported through dg (node \"{}\")",
                        self.node
                    )));
                }
            }
        }
        self.busy = false;
        self.user_sql = None;
        self.queued = 0;
        if !self.conn.is_ok() || self.pipelined {
            self.broken = true;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// Sends and collects in one step.
    pub fn exec(
        &mut self,
        sql: &str,
        params: Option<&[Option<String>]>,
        deadline: Option<Instant>,
    ) -> DgResult<Outcome> {
        self.send(sql, params, deadline)?;
        self.collect(deadline, None)
    }

    /// Stops the statement in flight and drains it, within `deadline` (the
    /// cancel request included: a peer behind a dead link never answers it).
    /// Returns false (and marks the connection broken) if that fails, so the
    /// caller closes it: closing ends the remote transaction too.
    pub fn cancel_and_drain(&mut self, deadline: Option<Instant>) -> bool {
        if !self.busy {
            return !self.broken;
        }
        if self.conn.cancel(deadline).is_err() {
            self.broken = true;
            return false;
        }
        match self.collect(deadline, None) {
            Ok(_) | Err(DgError::Remote(_)) => !self.broken,
            Err(_) => {
                self.broken = true;
                false
            }
        }
    }

    /// Waits until the socket is ready for `want`, then reads what arrived.
    fn await_socket(
        &mut self,
        want: Want,
        deadline: Option<Instant>,
        what: &'static str,
    ) -> DgResult<()> {
        if !wait_socket(self.conn.socket(), want, deadline) {
            return Err(DgError::Timeout {
                node: self.node.clone(),
                what,
            });
        }
        if !self.conn.consume_input() {
            return Err(self.lost(self.conn.error_message()));
        }
        Ok(())
    }

    fn lost(&mut self, message: String) -> DgError {
        self.broken = true;
        DgError::ConnectionLost {
            node: self.node.clone(),
            message,
        }
    }

    /// Reports the notices libpq queued during the last calls: to the
    /// client while the user's statement is the one being read, else to
    /// the server log. A cancel that arrives meanwhile is served at the
    /// next wait.
    fn pass_on_notices(&mut self) {
        let to_client = self.user_sql.is_some() && self.queued == 1;
        for notice in self.conn.take_notices() {
            notice.report(&self.node, to_client);
        }
    }

    /// The peer's error, whole: its SQLSTATE, message, detail, hint and
    /// CONTEXT, and `statement` when it is the user's.
    fn remote_error(&mut self, res: &PgResult, statement: Option<String>) -> DgError {
        match res.error_field(b'C') {
            Some(sqlstate) => DgError::Remote(Box::new(RemoteError {
                node: self.node.clone(),
                sqlstate,
                message: res.error_field(b'M').unwrap_or_else(|| res.error_message()),
                detail: res.error_field(b'D'),
                hint: res.error_field(b'H'),
                context: res.error_field(b'W'),
                statement,
            })),
            // No SQLSTATE means libpq itself failed (the connection died).
            None => self.lost(res.error_message()),
        }
    }
}

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

use super::libpq::{Flush, PgConn, PgResult, Poll, ResultKind, OUT_OF_DESCRIPTORS};
use super::target::Target;
use super::wait::{deadline_after, descriptor_left, wait_socket, SocketWait, WaitEvent, Want};
use crate::error::{DgError, DgResult, RemoteError};
use crate::gucs;
use pgrx::pg_sys;
use std::collections::VecDeque;
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
    /// Statements sent whose results are still to be read, in order
    /// (src/README.md, "The pipeline queue").
    queue: VecDeque<Queued>,
    /// In libpq pipeline mode: left only once the sync point is read.
    pipelined: bool,
    /// Statements were queued in the pipeline after its last sync point:
    /// the peer runs them, but answers only once a sync follows.
    unsynced: bool,
    /// Rows of the last statement in flight come one result per row.
    stream_last: bool,
    /// What the `dg.dist_send` statements read so far came to, in send
    /// order, until the caller takes them.
    sent: Vec<SentOutcome>,
    /// Detached commands read, with their tags, until the late-answer
    /// hook has them.
    late: Vec<(u64, Result<(), DgError>)>,
    /// Every wait once the connection is open.
    wait: SocketWait,
    conn: PgConn,
}

/// One statement in flight, as its results are read.
struct Queued {
    role: Role,
    /// Results read so far: the rows counted, the first error, whether
    /// the pipeline skipped it after an earlier failure.
    rows: i64,
    error: Option<DgError>,
    skipped: bool,
}

enum Role {
    /// dg's own command (BEGIN, SAVEPOINT, PREPARE, …): only its failure
    /// matters, and its notices go to the server log.
    Own,
    /// A `dg.dist_send`: what it came to is kept for the caller.
    Sent { seq: u32, sql: String },
    /// The user's statement the caller waits on.
    Waited { sql: String },
    /// A command nobody waits for (`send_detached`): its answer is read
    /// at the connection's next use and goes to the late-answer hook with
    /// `tag`.
    Detached { tag: u64 },
}

/// The answer of a detached command, read after its sender moved on.
pub struct LateAnswer<'a> {
    pub node: &'a str,
    pub mapping: pg_sys::Oid,
    pub tag: u64,
    pub result: Result<(), DgError>,
}

/// Who hears late answers: the upper layer that sent the commands
/// (installed in `_PG_init`; `remote/` cannot know what a tag means).
static LATE_ANSWER_HOOK: std::sync::OnceLock<fn(LateAnswer)> = std::sync::OnceLock::new();

pub fn set_late_answer_hook(hook: fn(LateAnswer)) {
    let _ = LATE_ANSWER_HOOK.set(hook);
}

/// What one `dg.dist_send` statement came to.
pub struct SentOutcome {
    pub seq: u32,
    pub result: SentResult,
}

pub enum SentResult {
    Rows(i64),
    /// The peer's error, with the statement and its send named.
    Failed(DgError),
    /// Not run: an earlier statement in the pipeline failed.
    Skipped,
}

/// What a statement returned.
pub struct Outcome {
    pub rows_affected: i64,
    /// The last tuples result, when not streamed to a callback.
    pub tuples: Option<PgResult>,
    /// The last statement was not run: an earlier `dg.dist_send` on the
    /// same pipeline failed (its error is among the sent outcomes).
    pub skipped: bool,
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
        // Beside its socket, the connection needs a descriptor for a wait
        // set: one at a time while it connects, then the one it keeps.
        if !descriptor_left() {
            return Err(connect_error(OUT_OF_DESCRIPTORS.into()));
        }
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
            if !wait_socket(conn.socket(), want, deadline, WaitEvent::Connect) {
                // Unreachable, like a refused connection: 08001, not a cancel.
                return Err(connect_error(format!("no answer within {bound_by}")));
            }
        }
        let used_password = conn.used_password();
        if target.password_required && !used_password {
            return Err(DgError::PasswordNotUsed(node));
        }
        let wait = SocketWait::new(conn.socket());
        let mut c = Connection {
            node,
            mapping: target.mapping,
            entry: 0,
            busy: false,
            broken: false,
            used_password,
            queue: VecDeque::new(),
            pipelined: false,
            unsynced: false,
            stream_last: false,
            sent: Vec::new(),
            late: Vec::new(),
            wait,
            conn,
        };
        c.exec(SESSION_SETUP, None, deadline, WaitEvent::Connect)?;
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

    /// Healthy and idle outside any remote transaction, or with only
    /// detached commands in flight (read before its next use): fit for
    /// another transaction, unless the cache knows its catalog entries
    /// changed.
    pub fn reusable(&self) -> bool {
        !self.broken
            && self.conn.is_ok()
            && if self.busy {
                self.awaits_late_answers()
            } else {
                self.conn.is_idle()
            }
    }

    /// A statement someone waits on is in flight (its wait was cut short
    /// by an ERROR): it may run long, so it is cancelled, not awaited.
    pub fn awaits_statement(&self) -> bool {
        self.queue
            .iter()
            .any(|q| matches!(q.role, Role::Own | Role::Waited { .. }))
    }

    /// Only detached commands are in flight.
    pub fn awaits_late_answers(&self) -> bool {
        self.busy
            && !self.unsynced
            && !self.queue.is_empty()
            && self
                .queue
                .iter()
                .all(|q| matches!(q.role, Role::Detached { .. }))
    }

    /// Sends dg's own `sql` and moves on: nobody waits for its answer,
    /// which is read at the connection's next use (`read_late_answers`)
    /// and handed to the late-answer hook with `tag`.
    pub fn send_detached(
        &mut self,
        sql: &str,
        tag: u64,
        deadline: Option<Instant>,
        event: WaitEvent,
    ) -> DgResult<()> {
        let until = (deadline, event);
        self.queue_and_flush(&[], Role::Detached { tag }, true, until, |c| {
            c.send_query_params(sql, &[])
        })
    }

    /// Reads the answers of the detached commands in flight, within
    /// `deadline`; a connection that cannot is left broken.
    pub fn read_late_answers(&mut self, deadline: Option<Instant>) {
        if !self.awaits_late_answers() {
            return;
        }
        if let Err(e) = self.collect(deadline, WaitEvent::CommitPrepared, None) {
            // Cut short (a timeout): what was not read is unknown.
            self.fail_late_answers(e);
        }
    }

    /// Without waiting: whether the peer closed the connection while
    /// answers were still due (its detached commands then failed, as far
    /// as anyone can tell, and the connection is broken), so the cache
    /// opens another instead of lending this one.
    pub fn check_late_answers(&mut self) {
        if self.awaits_late_answers() && !self.conn.consume_input() {
            let e = self.lost(self.conn.error_message());
            self.fail_late_answers(e);
        }
    }

    /// The detached commands not read yet failed with `e`.
    fn fail_late_answers(&mut self, e: DgError) {
        self.broken = true;
        for q in std::mem::take(&mut self.queue) {
            if let Role::Detached { tag } = q.role {
                self.late.push((tag, Err(e.clone())));
            }
        }
        self.pass_on_late_answers();
    }

    /// Queues `sql` (extended protocol when `params` is given, else simple
    /// protocol, which allows several statements) and flushes it. Every
    /// method that may wait takes the `deadline` and the `event` the wait
    /// shows as: the caller knows which phase it is in.
    pub fn send(
        &mut self,
        sql: &str,
        params: Option<&[Option<String>]>,
        deadline: Option<Instant>,
        event: WaitEvent,
    ) -> DgResult<()> {
        let until = (deadline, event);
        match params {
            Some(p) => {
                self.queue_and_flush(&[], Role::Own, true, until, |c| c.send_query_params(sql, p))
            }
            None => {
                // The simple protocol (several statements in one string)
                // has no place in a pipeline: read what is still due first.
                if self.awaits_late_answers() {
                    self.read_late_answers(deadline);
                    if self.broken {
                        return Err(self.lost(self.conn.error_message()));
                    }
                }
                self.queue_and_flush(&[], Role::Own, true, until, |c| c.send_query(sql))
            }
        }
    }

    /// Queues `prelude` (statements without parameters, such as BEGIN) and
    /// then the user's statement `sql` behind whatever `dg.dist_send`
    /// queued, as one pipeline, and syncs it, so all of them cost one
    /// round trip. A failing statement skips the rest.
    pub fn send_after(
        &mut self,
        prelude: &[String],
        sql: &str,
        params: &[Option<String>],
        deadline: Option<Instant>,
    ) -> DgResult<()> {
        let role = Role::Waited { sql: sql.into() };
        self.queue_and_flush(prelude, role, true, (deadline, WaitEvent::Result), |c| {
            c.send_query_params(sql, params)
        })
    }

    /// Sends dg's own `sql` (statements joined by "; ", no parameters, no
    /// literal containing "; ") behind what `dg.dist_send` queued, in the
    /// same pipeline, and syncs it: one round trip for all of them
    /// (PREPARE TRANSACTION rides there). With nothing queued, as `send`.
    /// Skipped if a send before it failed (`Outcome::skipped`).
    pub fn send_behind_sends(
        &mut self,
        sql: &str,
        deadline: Option<Instant>,
        event: WaitEvent,
    ) -> DgResult<()> {
        if !self.unsynced && !self.awaits_late_answers() {
            return self.send(sql, None, deadline, event);
        }
        // A pipeline takes one statement per entry (extended protocol).
        let mut stmts: Vec<String> = sql.split("; ").map(str::to_string).collect();
        let last = stmts.pop().unwrap_or_default();
        self.queue_and_flush(&stmts, Role::Own, true, (deadline, event), |c| {
            c.send_query_params(&last, &[])
        })
    }

    /// `send_after` for a `dg.dist_send`: queued, flushed, not synced, so
    /// the caller goes on while the peer runs it. `seq` names it in its
    /// outcome and its errors.
    pub fn queue_send(
        &mut self,
        prelude: &[String],
        sql: &str,
        params: &[Option<String>],
        seq: u32,
        deadline: Option<Instant>,
    ) -> DgResult<()> {
        let role = Role::Sent {
            seq,
            sql: sql.into(),
        };
        self.queue_and_flush(prelude, role, false, (deadline, WaitEvent::Result), |c| {
            c.send_query_params(sql, params)
        })
    }

    /// Ends the open pipeline with its sync point, so the peer answers
    /// everything queued; `collect` then reads it. Nothing to do when
    /// nothing waits for a sync.
    pub fn start_sync(&mut self, deadline: Option<Instant>, event: WaitEvent) -> DgResult<()> {
        if !self.unsynced {
            return Ok(());
        }
        if !self.conn.pipeline_sync() {
            return Err(self.lost(self.conn.error_message()));
        }
        self.unsynced = false;
        self.flush(deadline, event)
    }

    /// The outcomes of the `dg.dist_send` statements read so far.
    pub fn take_sent(&mut self) -> Vec<SentOutcome> {
        std::mem::take(&mut self.sent)
    }

    fn queue_and_flush(
        &mut self,
        prelude: &[String],
        role: Role,
        sync: bool,
        (deadline, event): (Option<Instant>, WaitEvent),
        queue_last: impl FnOnce(&PgConn) -> bool,
    ) -> DgResult<()> {
        // Only an open pipeline takes more statements, or one that holds
        // only detached commands (what comes next is queued behind their
        // answers, which the next collect reads first); anything else in
        // flight must be read first.
        let behind_late = self.awaits_late_answers();
        if self.busy && !self.unsynced && !behind_late {
            return Err(self.lost("the connection is busy with another statement".into()));
        }
        if !self.busy {
            // Anything left from before (the session setup) is dg's own.
            self.pass_on_notices();
        }
        let detached = matches!(role, Role::Detached { .. });
        let pipelined = !prelude.is_empty() || !sync || self.unsynced || behind_late || detached;
        let queued = (!pipelined || self.pipelined || self.conn.enter_pipeline_mode())
            && prelude.iter().all(|s| self.conn.send_query_params(s, &[]))
            && queue_last(&self.conn)
            && (!pipelined || !sync || self.conn.pipeline_sync());
        if !queued {
            return Err(self.lost(self.conn.error_message()));
        }
        // One request per pipeline: counted as it starts going out.
        if !self.busy || behind_late {
            crate::stats::count_request();
            self.stream_last = false;
        }
        self.busy = true;
        self.pipelined = pipelined;
        self.unsynced = pipelined && !sync;
        let item = |role| Queued {
            role,
            rows: 0,
            error: None,
            skipped: false,
        };
        self.queue
            .extend(prelude.iter().map(|_| item(Role::Own)).chain([item(role)]));
        self.flush(deadline, event)
    }

    fn flush(&mut self, deadline: Option<Instant>, event: WaitEvent) -> DgResult<()> {
        loop {
            match self.conn.flush() {
                Flush::Done => return Ok(()),
                Flush::Failed => return Err(self.lost(self.conn.error_message())),
                // The server may be sending while we send; reading keeps
                // both sides moving.
                Flush::More => {
                    self.await_socket(Want::Write, deadline, event, "accept a statement")?
                }
            }
        }
    }

    /// Asks for the rows of the statement just sent one result per row.
    pub fn stream_rows(&mut self) {
        self.stream_last = true;
    }

    /// Reads every result of the statements in flight (syncing an open
    /// pipeline first). Rows of the last one go to `on_tuples` when given
    /// (and are dropped after), otherwise its last tuples result is kept
    /// in the outcome. What `dg.dist_send` statements came to is kept for
    /// `take_sent`. The first error of any other statement is returned
    /// after the results are drained, so the connection is ready for the
    /// next command.
    pub fn collect(
        &mut self,
        deadline: Option<Instant>,
        event: WaitEvent,
        mut on_tuples: Option<&mut dyn FnMut(&PgResult)>,
    ) -> DgResult<Outcome> {
        self.start_sync(deadline, event)?;
        let mut outcome = Outcome {
            rows_affected: 0,
            tuples: None,
            skipped: false,
        };
        let mut first_error: Option<DgError> = None;
        loop {
            // libpq takes single-row mode only before the statement's
            // first result is parsed, which is_busy() may do.
            if self.stream_last && self.queue.len() == 1 {
                self.conn.set_single_row_mode();
                self.stream_last = false;
            }
            while self.conn.is_busy() {
                self.await_socket(Want::Read, deadline, event, "finish a statement")?;
            }
            let res = self.conn.get_result();
            // Parsed while this statement's results were read: its own.
            self.pass_on_notices();
            let Some(res) = res else {
                // The end of one statement's results; in a pipeline the
                // next statement's follow, then the sync point.
                let last = self.queue.len() == 1;
                if let Some(done) = self.queue.pop_front() {
                    self.finish(done, last, &mut outcome, &mut first_error);
                }
                if self.pipelined && self.conn.is_ok() {
                    continue;
                }
                break;
            };
            let last = self.queue.len() == 1;
            let kind = res.kind();
            let e = (kind == ResultKind::Error).then(|| self.remote_error(&res));
            let front = self.queue.front_mut();
            match kind {
                ResultKind::Error => {
                    let e = e.expect("made for an error");
                    match front {
                        Some(q) if q.error.is_none() => q.error = Some(e),
                        Some(_) => {}
                        None => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                ResultKind::Tuples | ResultKind::SingleTuple => {
                    let Some(q) = front else { continue };
                    q.rows = res.cmd_tuples();
                    if last && !matches!(q.role, Role::Sent { .. }) {
                        outcome.rows_affected = q.rows;
                        match on_tuples.as_mut() {
                            Some(f) if first_error.is_none() && q.error.is_none() => f(&res),
                            Some(_) => {}
                            None => outcome.tuples = Some(res),
                        }
                    } else if matches!(q.role, Role::Own) && on_tuples.is_none() {
                        // dg's own query ahead of its command in one
                        // pipeline (the remote xid before PREPARE).
                        outcome.tuples = Some(res);
                    }
                }
                ResultKind::Command => {
                    if let Some(q) = front {
                        q.rows = res.cmd_tuples();
                    }
                }
                ResultKind::PipelineAborted => {
                    if let Some(q) = front {
                        q.skipped = true;
                    }
                }
                // The sync point of detached commands, with statements
                // queued behind it: read on.
                ResultKind::PipelineSync if !self.queue.is_empty() => {}
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
                    self.queue.clear();
                    self.broken = true;
                    return Err(DgError::Unsupported(format!(
                        "COPY and other streaming protocols are not supported through dg (node \"{}\")",
                        self.node
                    )));
                }
            }
        }
        self.busy = false;
        // Statements whose results never came (the connection died) count
        // as failed with it.
        let lost = !self.queue.is_empty() || !self.conn.is_ok() || self.pipelined;
        if lost {
            self.broken = true;
            let e = self.lost(self.conn.error_message());
            for q in std::mem::take(&mut self.queue) {
                match q.role {
                    Role::Sent { seq, .. } => self.sent.push(SentOutcome {
                        seq,
                        result: SentResult::Failed(e.clone()),
                    }),
                    Role::Detached { tag } => self.late.push((tag, Err(e.clone()))),
                    _ => {}
                }
            }
            first_error.get_or_insert(e);
        }
        self.pass_on_late_answers();
        match first_error {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// One statement's results are all read: file what it came to.
    fn finish(
        &mut self,
        done: Queued,
        last: bool,
        outcome: &mut Outcome,
        first_error: &mut Option<DgError>,
    ) {
        match done.role {
            Role::Sent { seq, sql } => self.sent.push(SentOutcome {
                seq,
                result: match done.error {
                    Some(e) => SentResult::Failed(e.naming_send(seq, sql)),
                    None if done.skipped => SentResult::Skipped,
                    None => SentResult::Rows(done.rows),
                },
            }),
            Role::Waited { sql } => {
                if let Some(e) = done.error {
                    first_error.get_or_insert(e.naming_statement(sql));
                }
                outcome.skipped |= done.skipped && last;
                if last {
                    outcome.rows_affected = done.rows;
                }
            }
            Role::Detached { tag } => self.late.push((tag, done.error.map_or(Ok(()), Err))),
            Role::Own => {
                if let Some(e) = done.error {
                    first_error.get_or_insert(e);
                }
                outcome.skipped |= done.skipped && last;
                if last {
                    outcome.rows_affected = done.rows;
                }
            }
        }
    }

    /// Sends and collects in one step.
    pub fn exec(
        &mut self,
        sql: &str,
        params: Option<&[Option<String>]>,
        deadline: Option<Instant>,
        event: WaitEvent,
    ) -> DgResult<Outcome> {
        self.send(sql, params, deadline, event)?;
        self.collect(deadline, event, None)
    }

    /// Runs `sql` on every connection in `conns`, all sent before any
    /// answer is read, so several nodes cost one round trip; one result
    /// per connection, in order.
    pub fn exec_each(
        conns: &mut [Connection],
        sql: &str,
        params: Option<&[Option<String>]>,
        deadline: Option<Instant>,
        event: WaitEvent,
    ) -> Vec<DgResult<Outcome>> {
        let sent: Vec<DgResult<()>> = conns
            .iter_mut()
            .map(|c| c.send(sql, params, deadline, event))
            .collect();
        conns
            .iter_mut()
            .zip(sent)
            .map(|(c, s)| s.and_then(|()| c.collect(deadline, event, None)))
            .collect()
    }

    /// Stops the statement in flight and drains it, within `deadline` (the
    /// cancel request included: a peer behind a dead link never answers it).
    /// Returns false (and marks the connection broken) if that fails, so the
    /// caller closes it: closing ends the remote transaction too.
    pub fn cancel_and_drain(&mut self, deadline: Option<Instant>, event: WaitEvent) -> bool {
        if !self.busy {
            return !self.broken;
        }
        if let Err(e) = self.cancel(deadline, event) {
            pgrx::debug1!("dg: cancel on node \"{}\" failed: {e}", self.node);
            self.broken = true;
            return false;
        }
        match self.collect(deadline, event, None) {
            Ok(_) | Err(DgError::Remote(_)) => !self.broken,
            Err(_) => {
                self.broken = true;
                false
            }
        }
    }

    /// Asks the peer to cancel the statement in flight; done when the peer
    /// has the request (its answer, the statement's error, is drained
    /// after).
    ///
    /// With libpq 17 or newer the request goes over a non-blocking cancel
    /// connection driven by the same latch wait as every other, so it ends
    /// at `deadline` even behind a link that accepts and never answers,
    /// and a cancel or a timeout of the backend itself is served meanwhile.
    #[cfg(libpq_cancel_poll)]
    fn cancel(&mut self, deadline: Option<Instant>, event: WaitEvent) -> Result<(), String> {
        let request = self.conn.cancel_start()?;
        loop {
            let want = match request.poll() {
                Poll::Ok => return Ok(()),
                Poll::Failed => return Err(request.error_message()),
                Poll::Reading => Want::Read,
                Poll::Writing => Want::Write,
            };
            // The socket may change while libpq tries the peer's addresses.
            let sock = request.socket();
            if sock < 0 {
                return Err(request.error_message());
            }
            if !wait_socket(sock, want, deadline, event) {
                return Err("the cancel request got no answer in time".into());
            }
        }
    }

    /// Older libpq has only the blocking `PQcancel`, which
    /// `PgConn::cancel` bounds by running it on a thread.
    #[cfg(not(libpq_cancel_poll))]
    fn cancel(&mut self, deadline: Option<Instant>, _event: WaitEvent) -> Result<(), String> {
        self.conn.cancel(deadline)
    }

    /// Waits until the socket is ready for `want`, then reads what arrived.
    fn await_socket(
        &mut self,
        want: Want,
        deadline: Option<Instant>,
        event: WaitEvent,
        what: &'static str,
    ) -> DgResult<()> {
        if !self.wait.wait(want, deadline, event) {
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

    /// Hands the detached commands' answers read so far to the hook.
    fn pass_on_late_answers(&mut self) {
        let Some(hook) = LATE_ANSWER_HOOK.get() else {
            self.late.clear();
            return;
        };
        for (tag, result) in std::mem::take(&mut self.late) {
            hook(LateAnswer {
                node: &self.node,
                mapping: self.mapping,
                tag,
                result,
            });
        }
    }

    /// Reports the notices libpq queued during the last calls: to the
    /// client while the user's statement is the one being read, else to
    /// the server log. A cancel that arrives meanwhile is served at the
    /// next wait.
    fn pass_on_notices(&mut self) {
        let to_client = self
            .queue
            .front()
            .is_some_and(|q| matches!(q.role, Role::Sent { .. } | Role::Waited { .. }));
        for notice in self.conn.take_notices() {
            notice.report(&self.node, to_client);
        }
    }

    /// The peer's error, whole: its SQLSTATE, message, detail, hint and
    /// CONTEXT (the statement is named once it is known to be the user's).
    fn remote_error(&mut self, res: &PgResult) -> DgError {
        match res.error_field(b'C') {
            Some(sqlstate) => DgError::Remote(Box::new(RemoteError {
                node: self.node.clone(),
                sqlstate,
                message: res.error_field(b'M').unwrap_or_else(|| res.error_message()),
                detail: res.error_field(b'D'),
                hint: res.error_field(b'H'),
                context: res.error_field(b'W'),
                statement: None,
                send: None,
            })),
            // No SQLSTATE means libpq itself failed (the connection died).
            None => self.lost(res.error_message()),
        }
    }
}

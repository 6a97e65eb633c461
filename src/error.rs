//! dg's errors and how they reach the client.
//!
//! Every error that concerns a peer names it in a context line
//! (`on node "bank_b"`). Remote errors keep the remote SQLSTATE, message,
//! detail, hint and CONTEXT, plus a `remote SQL command: …` line for the
//! user's statements (as postgres_fdw's `pgfdw_report_error` does);
//! notices and warnings from peers are passed on the same way. libpq's
//! own words (a refused connection, a lost one) go into DETAIL under a
//! short message. No variant carries connection options, so no password
//! can leak through an error.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CString};

use PgSqlErrorCode::*;

#[derive(Debug, Clone)]
pub enum DgError {
    NullArgument(&'static str),
    UnknownNode(String),
    NotANode {
        node: String,
        wrapper: String,
    },
    NoUsage(String),
    NoMapping(String),
    PasswordRequired(String),
    PasswordNotUsed(String),
    Connect {
        node: String,
        message: String,
    },
    ConnectionLost {
        node: String,
        message: String,
    },
    Timeout {
        node: String,
        what: &'static str,
    },
    Remote(Box<RemoteError>),
    AlreadyInProgress,
    NoneInProgress,
    Aborted,
    AlreadyCommitting,
    RolledBack,
    PrepareRefused,
    NodeInUse(String),
    InSubtransaction(&'static str),
    /// A dg function called from a parallel worker or a parallel plan.
    InParallelMode(&'static str),
    /// Two-phase commit needs a decision row, which a read-only local
    /// transaction (and every transaction on a hot standby) cannot write.
    ReadOnlyTwoPhase,
    /// Recovery decided on a hot standby, whose view of the primary's
    /// transactions lags: it could roll back a DT that is committing.
    OnStandby(&'static str),
    SuperuserOnly(&'static str),
    RowtypeMismatch {
        node: String,
        remote: usize,
        local: usize,
    },
    Unsupported(String),
    /// A user mapping named by a GID was dropped.
    MappingGone(u32),
    /// `dg.dist_snapshot()` outside a transaction block.
    SnapshotOutsideBlock,
    /// `dg.dist_snapshot()` in a block below REPEATABLE READ.
    SnapshotIsolation,
    /// `dg.dist_snapshot()` after the DT already used a node.
    SnapshotNotFirst,
    /// A node that is not in the DT's consistent snapshot.
    OutsideSnapshot(String),
    /// A snapshot waited in vain for a DT in doubt on `node`.
    SnapshotInDoubt {
        node: String,
        gid: String,
    },
    /// A snapshot waited in vain for the resolver to list a node once
    /// since the server started.
    SnapshotNotListed(String),
    /// A snapshot waited in vain for the commits ahead of it.
    SnapshotBusy,
    /// `dg.create_restore_point()` waited in vain for the commits ahead of it.
    RestorePointBusy,
    /// A DT with local writes committed between the block's local snapshot
    /// and its consistent snapshot on the nodes.
    SnapshotSkew,
    /// Cannot happen unless dg has a bug.
    Internal(String),
    /// A node lost its part of a committed DT; logged, never raised
    /// (src/README.md, "Lost commits").
    LostCommit(Box<Lost>),
    /// A finish or rollback that failed after the decision; a WARNING.
    Unfinished {
        node: String,
        action: &'static str,
        cause: String,
        /// The cause's detail.
        detail: Option<String>,
    },
}

/// What the lost-commit alarm names.
#[derive(Debug, Clone)]
pub struct Lost {
    pub node: String,
    pub gid: String,
    pub remote_xid: u64,
    pub remote_status: &'static str,
    pub dt_id: String,
    pub xid: u64,
    pub decided_at: String,
}

/// An error reported by a peer, as its server sent it.
#[derive(Debug, Clone)]
pub struct RemoteError {
    pub node: String,
    pub sqlstate: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// The peer's CONTEXT lines (the PL/pgSQL function that raised it, …).
    pub context: Option<String>,
    /// The user's statement that failed (never its parameters); None for
    /// dg's own commands.
    pub statement: Option<String>,
    /// The `seq` of the `dg.dist_send` that sent it, when one did.
    pub send: Option<u32>,
}

/// A notice or warning a peer sent, as its server sent it.
#[derive(Debug, Clone)]
pub struct RemoteNotice {
    /// The non-localized severity: WARNING, NOTICE, INFO, LOG or DEBUG.
    pub severity: String,
    pub sqlstate: Option<String>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    pub context: Option<String>,
}

pub type DgResult<T> = Result<T, DgError>;

impl RemoteError {
    /// PostgreSQL's "prepared transaction with identifier ... does not
    /// exist": on COMMIT/ROLLBACK PREPARED it means another finisher won.
    pub fn is_undefined_object(&self) -> bool {
        self.sqlstate == "42704"
    }
}

impl DgError {
    /// A peer's error about the user's statement `sql`.
    pub fn naming_statement(self, sql: String) -> DgError {
        match self {
            DgError::Remote(mut r) => {
                r.statement = Some(sql);
                DgError::Remote(r)
            }
            e => e,
        }
    }

    /// A peer's error about the statement `dg.dist_send` number `seq` sent.
    pub fn naming_send(self, seq: u32, sql: String) -> DgError {
        match self.naming_statement(sql) {
            DgError::Remote(mut r) => {
                r.send = Some(seq);
                DgError::Remote(r)
            }
            e => e,
        }
    }

    /// The node could not be reached, or stopped answering: trying again
    /// later may succeed, unlike an error the peer reported.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            DgError::Connect { .. } | DgError::ConnectionLost { .. } | DgError::Timeout { .. }
        )
    }

    /// The node named in a context line: for errors whose message is the
    /// peer's own, or does not say which node it concerns.
    fn context_node(&self) -> Option<&str> {
        match self {
            DgError::Remote(r) => Some(&r.node),
            DgError::RowtypeMismatch { node, .. } => Some(node),
            _ => None,
        }
    }

    fn sqlstate(&self) -> PgSqlErrorCode {
        use DgError::*;
        match self {
            NullArgument(_) => ERRCODE_NULL_VALUE_NOT_ALLOWED,
            UnknownNode(_) => ERRCODE_UNDEFINED_OBJECT,
            NotANode { .. } => ERRCODE_WRONG_OBJECT_TYPE,
            NoUsage(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            NoMapping(_) => ERRCODE_UNDEFINED_OBJECT,
            PasswordRequired(_) | PasswordNotUsed(_) => {
                ERRCODE_S_R_E_PROHIBITED_SQL_STATEMENT_ATTEMPTED
            }
            Connect { .. } => ERRCODE_SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION,
            ConnectionLost { .. } => ERRCODE_CONNECTION_FAILURE,
            Timeout { .. } => ERRCODE_QUERY_CANCELED,
            Remote(r) => sqlstate_from_text(&r.sqlstate),
            AlreadyInProgress => ERRCODE_ACTIVE_SQL_TRANSACTION,
            NoneInProgress => ERRCODE_NO_ACTIVE_SQL_TRANSACTION,
            Aborted => ERRCODE_IN_FAILED_SQL_TRANSACTION,
            AlreadyCommitting => ERRCODE_INVALID_TRANSACTION_STATE,
            RolledBack => ERRCODE_TRANSACTION_ROLLBACK,
            PrepareRefused | Unsupported(_) => ERRCODE_FEATURE_NOT_SUPPORTED,
            NodeInUse(_) => ERRCODE_OBJECT_IN_USE,
            InSubtransaction(_) => ERRCODE_INVALID_TRANSACTION_TERMINATION,
            InParallelMode(_) => ERRCODE_INVALID_TRANSACTION_STATE,
            ReadOnlyTwoPhase => ERRCODE_READ_ONLY_SQL_TRANSACTION,
            OnStandby(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            SuperuserOnly(_) => ERRCODE_INSUFFICIENT_PRIVILEGE,
            RowtypeMismatch { .. } => ERRCODE_DATATYPE_MISMATCH,
            MappingGone(_) => ERRCODE_UNDEFINED_OBJECT,
            // As SET TRANSACTION SNAPSHOT's own checks.
            SnapshotOutsideBlock => ERRCODE_NO_ACTIVE_SQL_TRANSACTION,
            SnapshotIsolation => ERRCODE_FEATURE_NOT_SUPPORTED,
            SnapshotNotFirst => ERRCODE_ACTIVE_SQL_TRANSACTION,
            OutsideSnapshot(_) => ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            // A wait that timed out, as lock_timeout's.
            SnapshotInDoubt { .. } | SnapshotNotListed(_) | SnapshotBusy | RestorePointBusy => {
                ERRCODE_LOCK_NOT_AVAILABLE
            }
            SnapshotSkew => ERRCODE_T_R_SERIALIZATION_FAILURE,
            Internal(_) => ERRCODE_INTERNAL_ERROR,
            Unfinished { .. } => ERRCODE_WARNING,
            LostCommit(_) => ERRCODE_DATA_CORRUPTED,
        }
    }

    pub fn message(&self) -> String {
        use DgError::*;
        match self {
            NullArgument(arg) => format!("argument \"{arg}\" of a dg function must not be null"),
            UnknownNode(n) => format!("node \"{n}\" does not exist"),
            NotANode { node, wrapper } => format!(
                "server \"{node}\" is not a dg node: it uses foreign-data wrapper \"{wrapper}\""
            ),
            NoUsage(n) => format!("permission denied for foreign server {n}"),
            NoMapping(n) => format!("no user mapping for the current role on node \"{n}\""),
            PasswordRequired(n) => {
                format!("a password is required to use node \"{n}\" as a non-superuser")
            }
            PasswordNotUsed(n) => {
                format!("node \"{n}\" accepted the connection without asking for the password")
            }
            Connect { node, .. } => format!("could not connect to node \"{node}\""),
            ConnectionLost { node, .. } => format!("lost the connection to node \"{node}\""),
            Timeout { node, what } => format!("timed out waiting for node \"{node}\" to {what}"),
            Remote(r) => r.message.clone(),
            AlreadyInProgress => "a distributed transaction is already in progress".into(),
            NoneInProgress => "there is no distributed transaction in progress".into(),
            Aborted => "current distributed transaction is aborted, commands ignored until \
                        dg.dist_rollback() or the end of the transaction block"
                .into(),
            AlreadyCommitting => {
                "the distributed transaction is already prepared and waits for COMMIT".into()
            }
            RolledBack => "the distributed transaction was rolled back".into(),
            PrepareRefused => {
                "cannot PREPARE a transaction that has run a distributed transaction".into()
            }
            NodeInUse(n) => {
                format!("cannot disconnect node \"{n}\" while the distributed transaction uses it")
            }
            SuperuserOnly(f) => format!("only a superuser may call {f}"),
            InSubtransaction(f) => {
                format!("{f} cannot run inside a subtransaction")
            }
            InParallelMode(f) => format!("{f} cannot run during a parallel operation"),
            OnStandby(f) => format!("{f} cannot run on a hot standby"),
            ReadOnlyTwoPhase => {
                "a distributed transaction that needs two-phase commit cannot commit in a \
                 read-only transaction"
                    .into()
            }
            RowtypeMismatch { remote, local, .. } => format!(
                "remote query returned {remote} columns but the column definition list has {local}"
            ),
            Unsupported(what) => what.clone(),
            MappingGone(oid) => format!("user mapping {oid} no longer exists"),
            SnapshotOutsideBlock => {
                "dg.dist_snapshot() can only be used in transaction blocks".into()
            }
            SnapshotIsolation => "a consistent snapshot needs a transaction of isolation level \
                                  REPEATABLE READ or SERIALIZABLE"
                .into(),
            SnapshotNotFirst => {
                "dg.dist_snapshot() must be called before the transaction uses any node".into()
            }
            OutsideSnapshot(n) => {
                format!("node \"{n}\" is not in the transaction's consistent snapshot")
            }
            SnapshotInDoubt { node, .. } => format!(
                "could not take a consistent snapshot: a distributed transaction is in doubt on \
                 node \"{node}\""
            ),
            SnapshotNotListed(n) => format!(
                "could not take a consistent snapshot: the resolver has not yet checked node \
                 \"{n}\" since the server started"
            ),
            SnapshotBusy => "could not take a consistent snapshot: the commits in progress did \
                             not finish within dg.snapshot_timeout"
                .into(),
            RestorePointBusy => "could not create a consistent restore point: the commits in \
                                 progress did not finish within dg.snapshot_timeout"
                .into(),
            SnapshotSkew => "could not serialize access: a distributed transaction committed \
                             locally after this transaction's snapshot"
                .into(),
            Internal(what) => format!("dg internal error: {what}"),
            Unfinished {
                node,
                action,
                cause,
                ..
            } => format!("could not {action} the prepared transaction on node \"{node}\": {cause}"),
            LostCommit(l) => format!(
                "dg: lost commit on node \"{}\": prepared transaction \"{}\" (remote xid {}) is gone and did not commit",
                l.node, l.gid, l.remote_xid
            ),
        }
    }

    pub fn detail(&self) -> Option<String> {
        match self {
            DgError::Remote(r) => r.detail.clone(),
            // libpq's own words: why the connection failed or broke.
            DgError::Connect { message, .. } | DgError::ConnectionLost { message, .. } => {
                Some(message.clone()).filter(|m| !m.is_empty())
            }
            DgError::Unfinished { detail, .. } => detail.clone(),
            DgError::LostCommit(l) => Some(format!(
                "Distributed transaction {} committed (local transaction {}, decided at {}), \
                 but the node reports its remote transaction {} as {}: \
                 the writes it made there are not on the node.",
                l.dt_id, l.xid, l.decided_at, l.remote_xid, l.remote_status
            )),
            DgError::SnapshotInDoubt { gid, .. } => Some(format!(
                "Prepared transaction {gid} is committed, but not yet finished there: a snapshot \
                 now would see it on some nodes and not on others."
            )),
            DgError::PasswordNotUsed(_) => Some(
                "A non-superuser may only use a node whose server authenticates with the \
                 password from the user mapping."
                    .into(),
            ),
            DgError::ReadOnlyTwoPhase => Some(
                "It wrote on more than one node (temporary tables count), and two-phase commit \
                 records its decision in dg.decisions, which a read-only transaction cannot write."
                    .into(),
            ),
            _ => None,
        }
    }

    fn hint(&self) -> Option<String> {
        use DgError::*;
        match self {
            Remote(r) => r.hint.clone(),
            UnknownNode(n) => Some(format!(
                "Create it with CREATE SERVER {} FOREIGN DATA WRAPPER dg OPTIONS (host '...', dbname '...').",
                pgrx::spi::quote_identifier(n)
            )),
            NoMapping(n) => Some(format!(
                "Create one with CREATE USER MAPPING FOR CURRENT_USER (or PUBLIC) SERVER {n} OPTIONS (user '...', password '...')."
            )),
            PasswordRequired(_) => Some(
                "Add a password option to the user mapping, or have a superuser set \
                 password_required 'false' on it."
                    .into(),
            ),
            Aborted => Some("Call dg.dist_rollback(), or ROLLBACK the transaction block.".into()),
            NoneInProgress => Some("Start one with dg.dist_begin().".into()),
            AlreadyInProgress => Some(
                "Finish it with dg.dist_commit() or dg.dist_rollback() first.".into(),
            ),
            AlreadyCommitting => {
                Some("COMMIT or ROLLBACK the transaction block to finish it.".into())
            }
            Unfinished { .. } => {
                Some("The dg resolver finishes it once the node can be reached.".into())
            }
            LostCommit(l) => Some(format!(
                "Redo those writes on node \"{}\" (from the application's records, or the node's old primary), \
                 then call dg.acknowledge_lost_commits(); dg.lost_commits lists every lost commit (README, \"Lost commits\").",
                l.node
            )),
            SnapshotOutsideBlock | SnapshotIsolation => Some(
                "Start the block with BEGIN ISOLATION LEVEL REPEATABLE READ.".into(),
            ),
            SnapshotNotFirst => {
                Some("Call it first in the block, before any other dg call.".into())
            }
            OutsideSnapshot(_) => Some(
                "Name every node the transaction uses in dg.dist_snapshot(), or call it without \
                 arguments for all the nodes you may use."
                    .into(),
            ),
            SnapshotInDoubt { .. } => Some(
                "The resolver finishes it once it can reach the node (dg.in_doubt shows what is \
                 left); retry then, or raise dg.snapshot_timeout."
                    .into(),
            ),
            SnapshotNotListed(_) => Some(
                "The resolver checks every node it can reach within dg.resolver_interval; retry \
                 then, or raise dg.snapshot_timeout."
                    .into(),
            ),
            SnapshotBusy | RestorePointBusy => Some("Retry, or raise dg.snapshot_timeout.".into()),
            SnapshotSkew => Some(
                "Retry the transaction: its local reads would miss writes that its reads on the \
                 nodes see."
                    .into(),
            ),
            OnStandby(_) => Some(
                "Run it on the primary: a standby sees the primary's transactions late, and \
                 could roll back one that is committing."
                    .into(),
            ),
            InParallelMode(_) => Some(
                "dg's functions are PARALLEL UNSAFE: do not call them from a function declared \
                 PARALLEL SAFE or PARALLEL RESTRICTED."
                    .into(),
            ),
            InSubtransaction(_) => Some(
                "Call it outside savepoints and PL/pgSQL exception blocks: a subtransaction \
                 cannot undo the end of a distributed transaction."
                    .into(),
            ),
            _ => None,
        }
    }

    /// The context lines of this error: the peer's CONTEXT and statement
    /// for a remote error, then the node.
    fn context(&self) -> Option<Context> {
        let node = self.context_node()?;
        Some(match self {
            DgError::Remote(r) => Context {
                node: c_text(node),
                code: packed_sqlstate(&r.sqlstate),
                remote: r.context.as_deref().map(c_text),
                statement: r.statement.as_deref().map(c_text),
                send: r.send.map(|seq| seq as c_int),
            },
            _ => Context::node(node),
        })
    }

    /// Raise at ERROR level; never returns.
    pub fn raise(self) -> ! {
        if let Some(context) = self.context() {
            push_context(context);
        }
        self.into_report(None).report(PgLogLevel::ERROR);
        unreachable!("ERROR does not return")
    }

    /// Report at WARNING level, with the context lines.
    pub fn warn(self) {
        self.report_below_error(PgLogLevel::WARNING, None)
    }

    /// Report at `level` (below ERROR), the message after `prefix` (what
    /// dg was doing) when given, with its SQLSTATE, detail, hint and
    /// context lines.
    pub fn report_below_error(self, level: PgLogLevel, prefix: Option<&str>) {
        let context = self.context();
        let report = self.into_report(prefix);
        match context {
            Some(context) => with_context(context, || report.report(level)),
            None => report.report(level),
        }
    }

    fn into_report(self, prefix: Option<&str>) -> ErrorReport {
        let message = match prefix {
            Some(p) => format!("{p}: {}", self.message()),
            None => self.message(),
        };
        let mut report = ErrorReport::new(self.sqlstate(), message, "dg");
        if let Some(d) = self.detail() {
            report = report.set_detail(d);
        }
        if let Some(h) = self.hint() {
            report = report.set_hint(h);
        }
        report
    }
}

impl From<DgError> for ErrorReport {
    fn from(e: DgError) -> ErrorReport {
        e.into_report(None)
    }
}

impl RemoteNotice {
    /// Passes the notice on as what it is (same level, SQLSTATE, detail,
    /// hint and CONTEXT) with a context line naming `node`; `to_client`
    /// false (a notice about one of dg's own commands, such as "there is
    /// no transaction in progress") sends it only to the server log at
    /// DEBUG1. Interrupts are held while it is reported, as the report
    /// would otherwise serve a pending cancel inside it, tagging the
    /// cancel with this notice's context lines.
    pub fn report(&self, node: &str, to_client: bool) {
        use PgLogLevel::*;
        let level = match self.severity.as_str() {
            _ if !to_client => DEBUG1,
            "WARNING" => WARNING,
            "INFO" => INFO,
            "LOG" => LOG,
            "DEBUG" => DEBUG1,
            _ => NOTICE,
        };
        let code = self.sqlstate.as_deref().and_then(packed_sqlstate);
        let mut report = ErrorReport::new(
            code.map_or(ERRCODE_WARNING, PgSqlErrorCode::from),
            self.message.clone(),
            "dg",
        );
        if let Some(d) = &self.detail {
            report = report.set_detail(d.clone());
        }
        if let Some(h) = &self.hint {
            report = report.set_hint(h.clone());
        }
        let context = Context {
            code,
            remote: self.context.as_deref().map(c_text),
            ..Context::node(node)
        };
        let _held = HeldInterrupts::hold();
        with_context(context, || report.report(level));
    }
}

/// HOLD_INTERRUPTS until dropped (also while unwinding).
struct HeldInterrupts(());

impl HeldInterrupts {
    fn hold() -> HeldInterrupts {
        // SAFETY: backend-local counter, touched only from its thread.
        unsafe { pg_sys::InterruptHoldoffCount += 1 };
        HeldInterrupts(())
    }
}

impl Drop for HeldInterrupts {
    fn drop(&mut self) {
        // SAFETY: as above; undoes hold(). An ERROR on the way out may
        // have zeroed the counter already.
        unsafe { pg_sys::InterruptHoldoffCount = pg_sys::InterruptHoldoffCount.saturating_sub(1) };
    }
}

/// SQLSTATEs arrive as five characters; PostgreSQL packs them six bits each.
fn packed_sqlstate(s: &str) -> Option<i32> {
    let b = s.as_bytes();
    (b.len() == 5).then(|| {
        b.iter().enumerate().fold(0i32, |acc, (i, c)| {
            acc | ((((*c as i32) - '0' as i32) & 0x3F) << (6 * i))
        })
    })
}

/// pgrx knows only PostgreSQL's own codes; others (a PL/pgSQL
/// `RAISE ... ERRCODE 'P0042'`) are restored by the context callback.
fn sqlstate_from_text(s: &str) -> PgSqlErrorCode {
    packed_sqlstate(s).map_or(ERRCODE_INTERNAL_ERROR, PgSqlErrorCode::from)
}

// The context lines are added by an error-context callback, the way
// PostgreSQL itself adds context: pgrx's ErrorReport has no field for it.
// The callback record is static because the Rust frames that raised the
// error are unwound before PostgreSQL calls it; PG_CATCH and the top-level
// error handler restore error_context_stack afterwards, which unlinks it
// again. The callback also sets the remote SQLSTATE exactly: errcode()
// applies to the error being reported, which is on top of the stack while
// it runs.

/// What the callback adds to the message being reported.
#[derive(Default)]
struct Context {
    node: CString,
    code: Option<i32>,
    /// The peer's own CONTEXT lines.
    remote: Option<CString>,
    /// The user's statement the message is about.
    statement: Option<CString>,
    /// The `dg.dist_send` that sent the statement.
    send: Option<c_int>,
}

impl Context {
    fn node(node: &str) -> Context {
        Context {
            node: c_text(node),
            ..Context::default()
        }
    }
}

fn c_text(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

thread_local! {
    static CONTEXT: RefCell<Context> = RefCell::new(Context::default());
}
static mut CONTEXT_CALLBACK: pg_sys::ErrorContextCallback = pg_sys::ErrorContextCallback {
    previous: std::ptr::null_mut(),
    callback: Some(context_callback),
    arg: std::ptr::null_mut(),
};

unsafe extern "C-unwind" {
    // Excluded from pgrx's bindings; PostgreSQL's errcontext() and errcode().
    fn errcontext_msg(fmt: *const c_char, ...) -> c_int;
    fn errcode(sqlerrcode: c_int) -> c_int;
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn context_callback(_arg: *mut c_void) {
    CONTEXT.with(|c| {
        let c = &*c.borrow();
        // SAFETY: called by errfinish with a message being reported;
        // formats and arguments are NUL-terminated and live for the call.
        unsafe {
            if let Some(remote) = &c.remote {
                errcontext_msg(c"%s".as_ptr(), remote.as_ptr());
            }
            match (&c.statement, c.send) {
                (Some(statement), Some(seq)) => {
                    errcontext_msg(
                        c"remote SQL command (dg.dist_send seq %d): %s".as_ptr(),
                        seq,
                        statement.as_ptr(),
                    );
                }
                (Some(statement), None) => {
                    errcontext_msg(c"remote SQL command: %s".as_ptr(), statement.as_ptr());
                }
                (None, _) => {}
            }
            errcontext_msg(c"on node \"%s\"".as_ptr(), c.node.as_ptr());
            if let Some(code) = c.code {
                errcode(code);
            }
        }
    });
}

fn set_context(context: Context) {
    CONTEXT.with(|c| *c.borrow_mut() = context);
}

/// Link the static callback for an ERROR about to be raised. Linking it
/// twice would make the list a cycle, so an already linked record stays.
fn push_context(context: Context) {
    set_context(context);
    // SAFETY: backend-local globals touched only from the backend's thread.
    unsafe {
        let cb = &raw mut CONTEXT_CALLBACK;
        if !is_linked(cb) {
            (*cb).previous = pg_sys::error_context_stack;
            pg_sys::error_context_stack = cb;
        }
    }
}

/// For messages below ERROR, which return: link the callback just for the
/// call. An already linked record (an error being handled) gets the new
/// lines for the call and its own back after.
fn with_context(context: Context, f: impl FnOnce()) {
    // SAFETY: as above; the previous stack is restored before returning.
    unsafe {
        let cb = &raw mut CONTEXT_CALLBACK;
        if is_linked(cb) {
            let saved = CONTEXT.with(|c| c.replace(context));
            f();
            set_context(saved);
            return;
        }
        set_context(context);
        let saved = pg_sys::error_context_stack;
        (*cb).previous = saved;
        pg_sys::error_context_stack = cb;
        f();
        pg_sys::error_context_stack = saved;
    }
}

unsafe fn is_linked(cb: *mut pg_sys::ErrorContextCallback) -> bool {
    let mut p = unsafe { pg_sys::error_context_stack };
    while !p.is_null() {
        if p == cb {
            return true;
        }
        p = unsafe { (*p).previous };
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_packing_matches_postgres() {
        assert_eq!(sqlstate_from_text("23505"), ERRCODE_UNIQUE_VIOLATION);
        assert_eq!(sqlstate_from_text("42601"), ERRCODE_SYNTAX_ERROR);
        assert_eq!(
            sqlstate_from_text("55000"),
            ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE
        );
        assert_eq!(sqlstate_from_text("bad"), ERRCODE_INTERNAL_ERROR);
    }
}

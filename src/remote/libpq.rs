//! The only module that calls libpq. RAII owners for `PGconn` and
//! `PGresult` and safe methods for the asynchronous API; nothing here
//! blocks past its caller's deadline.

use crate::error::RemoteNotice;
use libpq_sys as pq;
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::NonNull;
#[cfg(not(libpq_cancel_poll))]
use std::sync::mpsc;
#[cfg(not(libpq_cancel_poll))]
use std::time::Instant;

/// An open (or opening) libpq connection; closed on drop.
pub struct PgConn {
    conn: NonNull<pq::PGconn>,
    /// What the peer's notices left for `take_notices`; boxed, so the
    /// receiver's pointer to it survives moves of the `PgConn`.
    notices: Box<Notices>,
}

/// Notices received and not taken yet. A Cell, not a RefCell: the
/// receiver runs inside libpq calls, and must never fail.
type Notices = Cell<Vec<RemoteNotice>>;

/// A query result; cleared on drop.
pub struct PgResult(NonNull<pq::PGresult>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    Reading,
    Writing,
    Ok,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    Done,
    More,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultKind {
    Command,
    Tuples,
    SingleTuple,
    Error,
    /// The end of a pipeline (its sync point).
    PipelineSync,
    /// A pipelined statement skipped because an earlier one failed.
    PipelineAborted,
    Other,
}

// SAFETY: a PGconn is used by one thread at a time; dg keeps every
// connection in backend-local state and never shares it.
unsafe impl Send for PgConn {}

fn cstring_lossy(s: &str) -> CString {
    CString::new(s.replace('\0', "")).expect("NULs removed")
}

unsafe fn owned_string(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: libpq returns NUL-terminated strings it owns.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

/// libpq's notice receiver: runs inside PQisBusy, PQgetResult and the
/// like, on the backend's thread, so it must not report anything itself
/// (a report may raise an ERROR, which must never unwind through libpq's
/// frames). It copies the notice into the connection's queue; the caller
/// passes it on after the libpq call returns.
unsafe extern "C" fn queue_notice(arg: *mut c_void, res: *const pq::PGresult) {
    // SAFETY: `arg` is the connection's boxed queue, which outlives the
    // PGconn; `res` and its fields live for the call.
    unsafe {
        let field = |code: u8| owned_string(pq::PQresultErrorField(res, code as c_int));
        let notice = RemoteNotice {
            severity: field(pq::PG_DIAG_SEVERITY_NONLOCALIZED)
                .or_else(|| field(pq::PG_DIAG_SEVERITY))
                .unwrap_or_default(),
            sqlstate: field(pq::PG_DIAG_SQLSTATE),
            message: field(pq::PG_DIAG_MESSAGE_PRIMARY).unwrap_or_default(),
            detail: field(pq::PG_DIAG_MESSAGE_DETAIL),
            hint: field(pq::PG_DIAG_MESSAGE_HINT),
            context: field(pq::PG_DIAG_CONTEXT),
        };
        let queue = &*(arg as *const Notices);
        let mut queued = queue.take();
        queued.push(notice);
        queue.set(queued);
    }
}

/// Why a connection was refused when the backend's descriptors ran out.
pub const OUT_OF_DESCRIPTORS: &str =
    "too many open files in this backend to open another connection";

impl PgConn {
    /// Starts a non-blocking connection attempt (`PQconnectStartParams`
    /// with `expand_dbname = 0`, so a dbname is never parsed as a
    /// connection string). Drive it with `poll`.
    pub fn start(options: &[(String, String)]) -> Result<PgConn, String> {
        let keys: Vec<CString> = options.iter().map(|(k, _)| cstring_lossy(k)).collect();
        let vals: Vec<CString> = options.iter().map(|(_, v)| cstring_lossy(v)).collect();
        let mut kp: Vec<*const c_char> = keys.iter().map(|k| k.as_ptr()).collect();
        let mut vp: Vec<*const c_char> = vals.iter().map(|v| v.as_ptr()).collect();
        kp.push(std::ptr::null());
        vp.push(std::ptr::null());
        // Each connection holds a socket PostgreSQL's fd.c does not see:
        // count it against the backend's descriptor budget, as postgres_fdw
        // does, so neither side runs the process out of descriptors.
        // SAFETY: plain bookkeeping call; released in Drop or below.
        if !unsafe { pgrx::pg_sys::AcquireExternalFD() } {
            return Err(OUT_OF_DESCRIPTORS.into());
        }
        // SAFETY: both arrays are NULL-terminated and outlive the call.
        let raw = unsafe { pq::PQconnectStartParams(kp.as_ptr(), vp.as_ptr(), 0) };
        let Some(raw) = NonNull::new(raw) else {
            // SAFETY: gives back the descriptor acquired above.
            unsafe { pgrx::pg_sys::ReleaseExternalFD() };
            return Err("out of memory".into());
        };
        let conn = PgConn {
            conn: raw,
            notices: Box::default(),
        };
        // SAFETY: conn is a live PGconn.
        if unsafe { pq::PQstatus(conn.ptr()) } == pq::ConnStatusType::CONNECTION_BAD {
            return Err(conn.error_message());
        }
        // SAFETY: as above; the receiver is a static function, its
        // argument the queue the connection owns.
        unsafe {
            pq::PQsetnonblocking(conn.ptr(), 1);
            let queue: *const Notices = &*conn.notices;
            pq::PQsetNoticeReceiver(conn.ptr(), Some(queue_notice), queue as *mut c_void);
        }
        Ok(conn)
    }

    fn ptr(&self) -> *mut pq::PGconn {
        self.conn.as_ptr()
    }

    /// The notices and warnings received since the last call, in order.
    pub fn take_notices(&self) -> Vec<RemoteNotice> {
        self.notices.take()
    }

    pub fn poll(&self) -> Poll {
        // SAFETY: live PGconn.
        match unsafe { pq::PQconnectPoll(self.ptr()) } {
            pq::PostgresPollingStatusType::PGRES_POLLING_READING => Poll::Reading,
            pq::PostgresPollingStatusType::PGRES_POLLING_WRITING => Poll::Writing,
            pq::PostgresPollingStatusType::PGRES_POLLING_OK => Poll::Ok,
            _ => Poll::Failed,
        }
    }

    pub fn socket(&self) -> c_int {
        // SAFETY: live PGconn.
        unsafe { pq::PQsocket(self.ptr()) }
    }

    pub fn is_ok(&self) -> bool {
        // SAFETY: live PGconn.
        unsafe { pq::PQstatus(self.ptr()) == pq::ConnStatusType::CONNECTION_OK }
    }

    /// libpq's last error, trimmed of its trailing newline.
    pub fn error_message(&self) -> String {
        // SAFETY: live PGconn; the message is owned by it.
        unsafe { owned_string(pq::PQerrorMessage(self.ptr())) }
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    }

    pub fn used_password(&self) -> bool {
        // SAFETY: live PGconn.
        unsafe { pq::PQconnectionUsedPassword(self.ptr()) != 0 }
    }

    pub fn backend_pid(&self) -> i32 {
        // SAFETY: live PGconn.
        unsafe { pq::PQbackendPID(self.ptr()) }
    }

    pub fn user(&self) -> String {
        // SAFETY: live PGconn.
        unsafe { owned_string(pq::PQuser(self.ptr())) }.unwrap_or_default()
    }

    /// Queues a statement in the simple protocol (may hold several
    /// statements). Returns false if libpq refused it.
    pub fn send_query(&self, sql: &str) -> bool {
        let sql = cstring_lossy(sql);
        // SAFETY: live PGconn, NUL-terminated query.
        unsafe { pq::PQsendQuery(self.ptr(), sql.as_ptr()) == 1 }
    }

    /// Queues one statement in the extended protocol with text parameters
    /// (`None` is SQL NULL); values are never spliced into the SQL text.
    pub fn send_query_params(&self, sql: &str, params: &[Option<String>]) -> bool {
        let sql = cstring_lossy(sql);
        let values: Vec<Option<CString>> = params
            .iter()
            .map(|p| p.as_deref().map(cstring_lossy))
            .collect();
        let ptrs: Vec<*const c_char> = values
            .iter()
            .map(|v| v.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
            .collect();
        // SAFETY: arrays of params.len() entries that outlive the call; NULL
        // types let the server infer them, NULL lengths/formats mean text.
        unsafe {
            pq::PQsendQueryParams(
                self.ptr(),
                sql.as_ptr(),
                ptrs.len() as c_int,
                std::ptr::null(),
                ptrs.as_ptr(),
                std::ptr::null(),
                std::ptr::null(),
                0,
            ) == 1
        }
    }

    /// Rows then arrive one `PGresult` each, so a large result never sits
    /// in memory whole.
    pub fn set_single_row_mode(&self) -> bool {
        // SAFETY: live PGconn, called right after a send.
        unsafe { pq::PQsetSingleRowMode(self.ptr()) == 1 }
    }

    pub fn flush(&self) -> Flush {
        // SAFETY: live PGconn.
        match unsafe { pq::PQflush(self.ptr()) } {
            0 => Flush::Done,
            1 => Flush::More,
            _ => Flush::Failed,
        }
    }

    pub fn consume_input(&self) -> bool {
        // SAFETY: live PGconn.
        unsafe { pq::PQconsumeInput(self.ptr()) == 1 }
    }

    pub fn is_busy(&self) -> bool {
        // SAFETY: live PGconn.
        unsafe { pq::PQisBusy(self.ptr()) == 1 }
    }

    /// Pipeline mode lets several extended-protocol statements go out in
    /// one round trip; `pipeline_sync` ends the batch.
    pub fn enter_pipeline_mode(&self) -> bool {
        // SAFETY: live PGconn.
        unsafe { pq::PQenterPipelineMode(self.ptr()) == 1 }
    }

    /// Only succeeds once every result of the pipeline has been read.
    pub fn exit_pipeline_mode(&self) -> bool {
        // SAFETY: live PGconn.
        unsafe { pq::PQexitPipelineMode(self.ptr()) == 1 }
    }

    pub fn pipeline_sync(&self) -> bool {
        // SAFETY: live PGconn in pipeline mode.
        unsafe { pq::PQpipelineSync(self.ptr()) == 1 }
    }

    /// The next result of the current command, or None when it is done.
    /// Only call when `is_busy` is false, or it blocks.
    pub fn get_result(&self) -> Option<PgResult> {
        // SAFETY: live PGconn; ownership of the result passes to us.
        NonNull::new(unsafe { pq::PQgetResult(self.ptr()) }).map(PgResult)
    }

    /// True when the session is idle outside any transaction block.
    pub fn is_idle(&self) -> bool {
        // SAFETY: live PGconn.
        unsafe { pq::PQtransactionStatus(self.ptr()) == pq::PGTransactionStatusType::PQTRANS_IDLE }
    }

    /// True inside a transaction block that has not failed.
    pub fn in_transaction(&self) -> bool {
        // SAFETY: live PGconn.
        unsafe {
            pq::PQtransactionStatus(self.ptr()) == pq::PGTransactionStatusType::PQTRANS_INTRANS
        }
    }

    /// Starts a cancel request for the running statement over a connection
    /// of its own (libpq 17's `PQcancelCreate` and `PQcancelStart`), without
    /// blocking; drive it with `CancelConn::poll` until it is `Ok`.
    #[cfg(libpq_cancel_poll)]
    pub fn cancel_start(&self) -> Result<CancelConn, String> {
        // SAFETY: live PGconn; the cancel connection copies what it needs
        // (address, options, cancel key) and is independent of it.
        let raw = unsafe { cancel_poll::PQcancelCreate(self.ptr()) };
        let request = NonNull::new(raw)
            .map(CancelConn)
            .ok_or("out of memory for a cancel request")?;
        // SAFETY: live PGcancelConn, not started yet.
        if unsafe { cancel_poll::PQcancelStart(request.0.as_ptr()) } != 1 {
            return Err(request.error_message());
        }
        Ok(request)
    }

    /// Asks the server to cancel the running statement, waiting for the
    /// request to be delivered at most until `deadline`.
    ///
    /// libpq 15's only cancel, `PQcancel`, opens a connection of its own and
    /// blocks until the server closes it, which a peer behind a dead link
    /// (one that accepts connections but never answers) never does. So it
    /// runs on a short-lived thread: `PQcancel` is thread-safe and touches
    /// nothing but its own cancel object, never backend state. Past the
    /// deadline the thread is left to end on its own and the caller gives up
    /// on the connection. Only for libpq older than 17 (`cancel_start`
    /// needs no thread).
    #[cfg(not(libpq_cancel_poll))]
    pub fn cancel(&self, deadline: Option<Instant>) -> Result<(), String> {
        // SAFETY: live PGconn; the cancel object is independent of it.
        let handle = NonNull::new(unsafe { pq::PQgetCancel(self.ptr()) })
            .map(CancelRequest)
            .ok_or("could not create a cancel request")?;
        let (tx, rx) = mpsc::channel();
        spawn_without_signals(move || {
            let _ = tx.send(handle.send());
        })
        .map_err(|e| format!("could not start a thread to cancel: {e}"))?;
        let late = || "the cancel request got no answer in time".to_string();
        match deadline {
            Some(d) => rx
                .recv_timeout(d.saturating_duration_since(Instant::now()))
                .map_err(|_| late())?,
            None => rx.recv().map_err(|_| late())?,
        }
    }
}

/// libpq 17's non-blocking cancel. libpq-sys declares what the libpq
/// headers it was generated from have, which may be older, so the few
/// functions dg uses are declared here; `build.rs` sets `libpq_cancel_poll`
/// only when dg links a libpq 17 or newer. Enums come back as `c_int`:
/// libpq 17 has values (`CONNECTION_ALLOCATED`) an older binding lacks.
#[cfg(libpq_cancel_poll)]
mod cancel_poll {
    use super::pq;
    use std::ffi::{c_char, c_int};

    /// libpq's opaque `PGcancelConn`.
    #[repr(C)]
    pub struct PGcancelConn {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn PQcancelCreate(conn: *mut pq::PGconn) -> *mut PGcancelConn;
        pub fn PQcancelStart(cancel_conn: *mut PGcancelConn) -> c_int;
        pub fn PQcancelPoll(cancel_conn: *mut PGcancelConn) -> c_int;
        pub fn PQcancelSocket(cancel_conn: *const PGcancelConn) -> c_int;
        pub fn PQcancelErrorMessage(cancel_conn: *const PGcancelConn) -> *mut c_char;
        pub fn PQcancelFinish(cancel_conn: *mut PGcancelConn);
    }
}

/// A cancel request in progress on a connection of its own; closed (and
/// given up, if not done) on drop.
#[cfg(libpq_cancel_poll)]
pub struct CancelConn(NonNull<cancel_poll::PGcancelConn>);

#[cfg(libpq_cancel_poll)]
impl CancelConn {
    /// One step, as `PgConn::poll`: `Ok` once the server has the request
    /// and closed the cancel connection.
    pub fn poll(&self) -> Poll {
        use pq::PostgresPollingStatusType as S;
        // SAFETY: live, started PGcancelConn.
        match unsafe { cancel_poll::PQcancelPoll(self.0.as_ptr()) } {
            r if r == S::PGRES_POLLING_READING as c_int => Poll::Reading,
            r if r == S::PGRES_POLLING_WRITING as c_int => Poll::Writing,
            r if r == S::PGRES_POLLING_OK as c_int => Poll::Ok,
            _ => Poll::Failed,
        }
    }

    /// The socket to wait on; may change from one `poll` to the next.
    pub fn socket(&self) -> c_int {
        // SAFETY: live PGcancelConn.
        unsafe { cancel_poll::PQcancelSocket(self.0.as_ptr()) }
    }

    /// libpq's last error for the request, trimmed.
    pub fn error_message(&self) -> String {
        // SAFETY: live PGcancelConn; the message is owned by it.
        unsafe { owned_string(cancel_poll::PQcancelErrorMessage(self.0.as_ptr())) }
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    }
}

#[cfg(libpq_cancel_poll)]
impl Drop for CancelConn {
    fn drop(&mut self) {
        // SAFETY: we own the PGcancelConn and finish it once; this closes
        // its socket.
        unsafe { cancel_poll::PQcancelFinish(self.0.as_ptr()) }
    }
}

/// A `PGcancel`: what `PQcancel` needs, apart from the connection.
#[cfg(not(libpq_cancel_poll))]
struct CancelRequest(NonNull<pq::PGcancel>);

// SAFETY: a PGcancel holds only the peer's address and the cancel key;
// libpq documents PQcancel as safe to call from another thread.
#[cfg(not(libpq_cancel_poll))]
unsafe impl Send for CancelRequest {}

#[cfg(not(libpq_cancel_poll))]
impl CancelRequest {
    fn send(&self) -> Result<(), String> {
        let mut buf = [0 as c_char; 256];
        // SAFETY: live PGcancel; libpq NUL-terminates what it writes to buf.
        unsafe {
            if pq::PQcancel(self.0.as_ptr(), buf.as_mut_ptr(), buf.len() as c_int) == 1 {
                Ok(())
            } else {
                Err(owned_string(buf.as_ptr())
                    .unwrap_or_default()
                    .trim_end()
                    .to_owned())
            }
        }
    }
}

#[cfg(not(libpq_cancel_poll))]
impl Drop for CancelRequest {
    fn drop(&mut self) {
        // SAFETY: we own the PGcancel and free it once.
        unsafe { pq::PQfreeCancel(self.0.as_ptr()) }
    }
}

/// Starts a thread that receives no signals: PostgreSQL's handlers belong
/// to the backend's own thread.
#[cfg(not(libpq_cancel_poll))]
fn spawn_without_signals(f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    // SAFETY: plain signal-mask calls on sets that live on this stack; the
    // old mask is restored before returning, and the new thread inherits
    // the full one.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let spawned = std::thread::Builder::new()
            .name("dg cancel".into())
            .spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned.map(|_| ())
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // SAFETY: we own the PGconn and drop it once, with the descriptor
        // start() acquired for it.
        unsafe {
            pq::PQfinish(self.ptr());
            pgrx::pg_sys::ReleaseExternalFD();
        }
    }
}

impl PgResult {
    fn ptr(&self) -> *mut pq::PGresult {
        self.0.as_ptr()
    }

    pub fn kind(&self) -> ResultKind {
        use pq::ExecStatusType::*;
        // SAFETY: live PGresult.
        match unsafe { pq::PQresultStatus(self.ptr()) } {
            PGRES_COMMAND_OK | PGRES_EMPTY_QUERY => ResultKind::Command,
            PGRES_TUPLES_OK => ResultKind::Tuples,
            PGRES_SINGLE_TUPLE => ResultKind::SingleTuple,
            PGRES_BAD_RESPONSE | PGRES_NONFATAL_ERROR | PGRES_FATAL_ERROR => ResultKind::Error,
            PGRES_PIPELINE_SYNC => ResultKind::PipelineSync,
            PGRES_PIPELINE_ABORTED => ResultKind::PipelineAborted,
            _ => ResultKind::Other,
        }
    }

    pub fn ntuples(&self) -> usize {
        // SAFETY: live PGresult.
        unsafe { pq::PQntuples(self.ptr()) as usize }
    }

    pub fn nfields(&self) -> usize {
        // SAFETY: live PGresult.
        unsafe { pq::PQnfields(self.ptr()) as usize }
    }

    /// A field as text, None for SQL NULL. Borrowed from the result.
    /// The value at (row, col) as text; None for SQL NULL.
    pub fn text(&self, row: usize, col: usize) -> Option<String> {
        self.value(row, col)
            .map(|v| v.to_string_lossy().into_owned())
    }

    pub fn value(&self, row: usize, col: usize) -> Option<&CStr> {
        // SAFETY: live PGresult; callers pass in-range indexes; libpq keeps
        // the value alive as long as the result.
        unsafe {
            if pq::PQgetisnull(self.ptr(), row as c_int, col as c_int) == 1 {
                None
            } else {
                Some(CStr::from_ptr(pq::PQgetvalue(
                    self.ptr(),
                    row as c_int,
                    col as c_int,
                )))
            }
        }
    }

    /// Rows affected by the command (0 when it reports none).
    pub fn cmd_tuples(&self) -> i64 {
        // SAFETY: live PGresult; the string is owned by it.
        unsafe { owned_string(pq::PQcmdTuples(self.ptr())) }
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// A diagnostic field such as `b'C'` (SQLSTATE) or `b'M'` (message).
    pub fn error_field(&self, code: u8) -> Option<String> {
        // SAFETY: live PGresult; the string is owned by it.
        unsafe { owned_string(pq::PQresultErrorField(self.ptr(), code as c_int)) }
    }

    pub fn error_message(&self) -> String {
        // SAFETY: live PGresult.
        unsafe { owned_string(pq::PQresultErrorMessage(self.ptr())) }
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    }
}

impl Drop for PgResult {
    fn drop(&mut self) {
        // SAFETY: we own the PGresult and clear it once.
        unsafe { pq::PQclear(self.ptr()) }
    }
}

/// One connection keyword libpq knows, and whether it is secret.
pub struct ConnOption {
    pub keyword: String,
    pub secret: bool,
    pub debug: bool,
}

/// The keywords of the linked libpq (`PQconndefaults`), so the validator
/// accepts exactly what this libpq understands.
pub fn conn_options() -> Vec<ConnOption> {
    let mut out = Vec::new();
    // SAFETY: PQconndefaults returns an array terminated by a NULL keyword,
    // freed with PQconninfoFree once copied.
    unsafe {
        let defaults = pq::PQconndefaults();
        if defaults.is_null() {
            return out;
        }
        let mut p = defaults;
        while !(*p).keyword.is_null() {
            let disp = owned_string((*p).dispchar).unwrap_or_default();
            out.push(ConnOption {
                keyword: owned_string((*p).keyword).unwrap_or_default(),
                secret: disp.contains('*'),
                debug: disp.contains('D'),
            });
            p = p.add(1);
        }
        pq::PQconninfoFree(defaults);
    }
    out
}

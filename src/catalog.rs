//! The only module that runs SQL against dg's own tables.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use std::cell::RefCell;

thread_local! {
    /// (dg.coordinator's oid, coordinator id): re-read if the extension is re-created.
    static COORDINATOR: RefCell<Option<(pg_sys::Oid, String)>> = const { RefCell::new(None) };
}

thread_local! {
    /// The decision INSERT, planned once per backend: it runs in every
    /// two-phase commit. The plan cache replans it if the table changes;
    /// the flag says whether it writes the remote xids.
    static RECORD_DECISION: RefCell<Option<(bool, OwnedPreparedStatement)>> = const { RefCell::new(None) };
}

/// Does `dg.decisions` keep remote xids (0.2.0 on)? A new library runs
/// with the old catalog between its install and `ALTER EXTENSION dg
/// UPDATE`, and DTs must commit meanwhile. Two syscache lookups.
fn decisions_keep_xids() -> bool {
    // SAFETY: catalog lookups by name; missing ones give InvalidOid or
    // InvalidAttrNumber.
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"dg".as_ptr(), true);
        let rel = pg_sys::get_relname_relid(c"decisions".as_ptr(), ns);
        rel != pg_sys::InvalidOid
            && pg_sys::get_attnum(rel, c"remote_xids".as_ptr()) as u32 != pg_sys::InvalidAttrNumber
    }
}

/// The first column of the first row of a read-only query, read with the
/// latest snapshot: the resolver reads a decision only after it saw the
/// deciding transaction end, so an older snapshot could miss the row and
/// roll back a committed DT. Not `Spi::get_one`: that runs the query as a
/// write, which assigns the local transaction an xid (turning a one-phase
/// DT into a two-phase one, and failing on a hot standby).
pub fn read_one<T: FromDatum + IntoDatum>(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid],
) -> pgrx::spi::Result<Option<T>> {
    // SAFETY: reads the latest committed state, in the current transaction.
    let _snapshot = ActiveSnapshot::push(unsafe { pg_sys::GetLatestSnapshot() });
    Spi::connect(|client| client.select(sql, Some(1), args)?.first().get_one())
}

/// A snapshot pushed as the active one, popped on drop. Not while an
/// ERROR unwinds: the transaction's abort pops every snapshot pushed in
/// it, and what is on top of the stack then may not be ours.
struct ActiveSnapshot;

impl ActiveSnapshot {
    fn push(snapshot: pg_sys::Snapshot) -> ActiveSnapshot {
        // SAFETY: a valid snapshot of the current transaction.
        unsafe { pg_sys::PushActiveSnapshot(snapshot) };
        ActiveSnapshot
    }

    /// The transaction snapshot, if no snapshot is active (at a block's
    /// COMMIT no statement runs, and SPI needs one).
    fn ensure() -> Option<ActiveSnapshot> {
        // SAFETY: plain reads of the snapshot manager's state.
        unsafe {
            (!pg_sys::ActiveSnapshotSet()).then(|| Self::push(pg_sys::GetTransactionSnapshot()))
        }
    }
}

impl Drop for ActiveSnapshot {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: the snapshot pushed in `push` is the active one:
            // everything pushed after it was popped by its own guard.
            unsafe { pg_sys::PopActiveSnapshot() };
        }
    }
}

/// The current user switched to the bootstrap superuser, switched back on
/// drop. Not while an ERROR unwinds: the transaction's abort restores the
/// user, as PostgreSQL does for every security-restricted operation.
struct AsOwner {
    user: pg_sys::Oid,
    context: i32,
}

impl AsOwner {
    fn enter() -> AsOwner {
        let mut user = pg_sys::InvalidOid;
        let mut context = 0;
        // SAFETY: saves and switches the backend's user id.
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                pg_sys::Oid::from(pg_sys::BOOTSTRAP_SUPERUSERID),
                context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
        }
        AsOwner { user, context }
    }
}

impl Drop for AsOwner {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: restores what `enter` saved.
            unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
        }
    }
}

/// This installation's coordinator UUID, made at CREATE EXTENSION.
pub fn coordinator_id() -> String {
    // Keyed by dg.coordinator's oid, so that a session sees the new id
    // after the extension is dropped and created again. Two syscache
    // lookups: pg_extension has no syscache, and scanning it by name on
    // every DT was 7 % of the coordinator backend's user CPU per DT.
    // SAFETY: catalog lookups by name; missing_ok (InvalidOid matches no
    // relation).
    let table = unsafe {
        pg_sys::get_relname_relid(
            c"coordinator".as_ptr(),
            pg_sys::get_namespace_oid(c"dg".as_ptr(), true),
        )
    };
    if let Some(id) = COORDINATOR.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|(o, _)| *o == table)
            .map(|(_, id)| id.clone())
    }) {
        return id;
    }
    let id: String = as_owner(|| read_one("SELECT id::text FROM dg.coordinator", &[]))
        .ok()
        .flatten()
        .unwrap_or_else(|| pgrx::error!("dg.coordinator is empty; re-create the extension"));
    COORDINATOR.with(|c| *c.borrow_mut() = Some((table, id.clone())));
    id
}

/// `{a,b,NULL}`: a one-dimensional array literal of numbers.
fn array_literal(values: impl Iterator<Item = Option<u64>>) -> String {
    let items: Vec<String> = values
        .map(|v| v.map_or_else(|| "NULL".to_string(), |v| v.to_string()))
        .collect();
    format!("{{{}}}", items.join(","))
}

/// Records the commit decision of local transaction `xid` in the current
/// transaction, and forces that commit to be flushed: the decision must be
/// durable even under `synchronous_commit = off`. `prepared` holds each
/// prepared participant's user mapping and remote xid (None if the peer
/// did not say), for the lost-commit check.
pub fn record_decision(xid: u64, dt_id: &str, prepared: &[(u32, Option<u64>)]) {
    let mappings = array_literal(prepared.iter().map(|(m, _)| Some(u64::from(*m))));
    let remote_xids = array_literal(prepared.iter().map(|(_, x)| *x));
    let with_xids = decisions_keep_xids();
    as_owner(|| {
        Spi::connect_mut(|client| {
            RECORD_DECISION.with(|plan| {
                let mut plan = plan.borrow_mut();
                if plan.as_ref().is_none_or(|(w, _)| *w != with_xids) {
                    let text = PgBuiltInOids::TEXTOID.oid();
                    let (sql, types) = if with_xids {
                        (
                            "INSERT INTO dg.decisions (xid, dt_id, mappings, remote_xids) \
                             VALUES ($1, $2, $3::oid[], $4::xid8[])",
                            vec![PgBuiltInOids::INT8OID.oid(), text, text, text],
                        )
                    } else {
                        (
                            "INSERT INTO dg.decisions (xid, dt_id) VALUES ($1, $2)",
                            vec![PgBuiltInOids::INT8OID.oid(), text],
                        )
                    };
                    *plan = Some((with_xids, client.prepare_mut(sql, &types)?.keep()));
                }
                let (_, plan) = plan.as_ref().expect("planned above");
                let mut args = vec![(xid as i64).into(), dt_id.into()];
                if with_xids {
                    args.extend([mappings.as_str().into(), remote_xids.as_str().into()]);
                }
                client.update(plan, None, &args)?;
                Ok::<_, pgrx::spi::SpiError>(())
            })
        })
    })
    .unwrap_or_else(|e| pgrx::error!("could not record the commit decision: {e}"));
    // SAFETY: marks the current transaction's commit as synchronous.
    unsafe { pg_sys::ForceSyncCommit() };
}

/// Is there a commit decision for local transaction `xid`? Read with a
/// fresh snapshot, after the caller found the transaction finished.
pub fn decision_exists(xid: u64, mapping: u32) -> bool {
    // The mapping too, not the xid alone: an xid that reached no WAL
    // record before a crash (nothing written locally yet when the DT
    // prepared) is handed out again after it, and a new DT with that xid
    // may decide to commit. Its decision names its own participants; the
    // old DT's GID on any of them would have made its PREPARE fail.
    // Decisions written before 0.2.0 name no mappings.
    as_owner(|| {
        read_one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM dg.decisions \
              WHERE xid = $1 AND (mappings IS NULL OR $2::oid = ANY (mappings)))",
            &[(xid as i64).into(), i64::from(mapping).into()],
        )
    })
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// The oldest full xid still running now: every older transaction has
/// committed or aborted.
pub fn xid_horizon() -> u64 {
    read_one::<i64>(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
        &[],
    )
    .ok()
    .flatten()
    .unwrap_or(0) as u64
}

/// A decision the resolver may forget, with what it needs to check that
/// every participant really committed.
pub struct Decision {
    pub xid: u64,
    pub dt_id: String,
    pub decided_at: String,
    /// (user mapping, remote xid) of each prepared participant; empty for
    /// decisions written before dg kept them (0.1.0), which cannot be
    /// checked.
    pub prepared: Vec<(u32, Option<u64>)>,
}

/// The decisions of transactions older than `horizon`, except those of
/// `keep` (whose prepared transactions are not finished yet).
pub fn forgettable_decisions(horizon: u64, keep: &[u64]) -> Vec<Decision> {
    let keep: Vec<i64> = keep.iter().map(|x| *x as i64).collect();
    let sql = if decisions_keep_xids() {
        "SELECT d.xid, d.dt_id, d.decided_at::text, p.mapping::int8, p.remote_xid::text::int8 \
         FROM dg.decisions d \
         LEFT JOIN LATERAL unnest(d.mappings, d.remote_xids) AS p(mapping, remote_xid) ON true \
         WHERE d.xid < $1 AND d.xid <> ALL ($2) \
         ORDER BY d.xid"
    } else {
        // The catalog of 0.1.0, not updated yet: nothing to check.
        "SELECT xid, dt_id, decided_at::text, NULL::int8, NULL::int8 \
         FROM dg.decisions WHERE xid < $1 AND xid <> ALL ($2)"
    };
    let rows = as_owner(|| {
        Spi::connect(|client| {
            client
                .select(sql, None, &[(horizon as i64).into(), keep.into()])?
                .map(|r| {
                    Ok((
                        r.get::<i64>(1)?.unwrap_or(0) as u64,
                        r.get::<String>(2)?.unwrap_or_default(),
                        r.get::<String>(3)?.unwrap_or_default(),
                        r.get::<i64>(4)?,
                        r.get::<i64>(5)?,
                    ))
                })
                .collect::<pgrx::spi::Result<Vec<_>>>()
        })
    })
    .unwrap_or_else(|e| pgrx::error!("could not read finished decisions: {e}"));
    let mut decisions: Vec<Decision> = Vec::new();
    for (xid, dt_id, decided_at, mapping, remote_xid) in rows {
        if decisions.last().is_none_or(|d| d.xid != xid) {
            decisions.push(Decision {
                xid,
                dt_id,
                decided_at,
                prepared: Vec::new(),
            });
        }
        if let (Some(d), Some(m)) = (decisions.last_mut(), mapping) {
            d.prepared.push((m as u32, remote_xid.map(|x| x as u64)));
        }
    }
    decisions
}

/// Deletes the decisions of local transactions `xids`. Returns how many
/// went. Runs even with none to delete: the faults tests show that
/// without this write statement in every pass, the xid of a DT whose
/// backend died before any WAL of it was flushed stays "in progress" to
/// the next passes (it is past the last completed xid after crash
/// recovery), and its prepared transactions wait for some other local
/// transaction to end. A caller that deletes any holds the commit fence
/// at its commit (`fence::hold_at_commit`, src/README.md).
pub fn forget_decisions(xids: &[u64]) -> usize {
    let xids: Vec<i64> = xids.iter().map(|x| *x as i64).collect();
    write(
        "DELETE FROM dg.decisions WHERE xid = ANY ($1)",
        vec![xids.into()],
        "forget finished decisions",
    )
}

/// Runs the data-changing `sql` as the owner; returns the rows it
/// changed. An error is raised saying what could not be done.
fn write(sql: &str, args: Vec<pgrx::datum::DatumWithOid>, what: &str) -> usize {
    as_owner(|| Spi::connect_mut(|client| client.update(sql, None, &args).map(|t| t.len())))
        .unwrap_or_else(|e| pgrx::error!("could not {what}: {e}"))
}

/// A participant of a committed DT whose node no longer has its writes.
pub struct LostCommit<'a> {
    pub node: &'a str,
    pub gid: &'a str,
    pub remote_xid: u64,
    /// What the node said of the remote xid (`recovery::decide::Lost`).
    pub remote_status: &'static str,
    pub decision: &'a Decision,
}

/// Records a lost commit in `dg.lost_commits`, where it stays until a
/// superuser acknowledges it. False if it was recorded already (by a
/// concurrent pass).
pub fn record_lost_commit(lost: &LostCommit) -> bool {
    let remote_xid = lost.remote_xid.to_string();
    let inserted = write(
        "INSERT INTO dg.lost_commits \
             (gid, node, remote_xid, remote_status, dt_id, xid, decided_at) \
         VALUES ($1, $2, $3::xid8, $4, $5, $6, $7::timestamptz) \
         ON CONFLICT (gid) DO NOTHING",
        vec![
            lost.gid.into(),
            lost.node.into(),
            remote_xid.as_str().into(),
            lost.remote_status.into(),
            lost.decision.dt_id.as_str().into(),
            (lost.decision.xid as i64).into(),
            lost.decision.decided_at.as_str().into(),
        ],
        "record a lost commit",
    );
    inserted == 1
}

/// `dg.acknowledge_lost_commits(gid)`: forgets the alarm of `gid`, or of
/// every lost commit when None. Returns how many went.
pub fn acknowledge_lost_commits(gid: Option<&str>) -> i64 {
    write(
        "DELETE FROM dg.lost_commits WHERE $1::text IS NULL OR gid = $1",
        vec![gid.into()],
        "acknowledge lost commits",
    ) as i64
}

/// VACUUM dg.decisions, so the space of forgotten decisions is reused
/// within one resolver interval instead of one autovacuum naptime: under
/// load the table would otherwise grow by every decision of a minute.
/// Without truncation, which would lock out committing transactions.
/// Only for a background worker, outside any transaction.
pub fn vacuum_decisions() {
    // SAFETY: the worker is between transactions, as a top-level command
    // runs; VACUUM starts and commits transactions of its own and needs a
    // portal context to allocate in, as under autovacuum.
    unsafe {
        pg_sys::StartTransactionCommand();
        let portal = pg_sys::AllocSetContextCreateExtended(
            pg_sys::TopMemoryContext,
            c"dg vacuum".as_ptr(),
            pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
            pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
        );
        let old_portal = pg_sys::PortalContext;
        pg_sys::PortalContext = portal;
        let sql = c"VACUUM (TRUNCATE false) dg.decisions";
        #[cfg(feature = "pg13")]
        let parsed = pg_sys::raw_parser(sql.as_ptr());
        #[cfg(not(feature = "pg13"))]
        let parsed = pg_sys::raw_parser(sql.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        let raw = pg_sys::list_nth(parsed, 0) as *mut pg_sys::RawStmt;
        let pstate = pg_sys::make_parsestate(std::ptr::null_mut());
        pg_sys::ExecVacuum(pstate, (*raw).stmt as *mut pg_sys::VacuumStmt, true);
        pg_sys::CommitTransactionCommand();
        pg_sys::PortalContext = old_portal;
        pg_sys::MemoryContextDelete(portal);
    }
}

/// Some user mapping of `node`, PUBLIC's first.
pub fn any_mapping(node: &str) -> Option<pg_sys::Oid> {
    as_owner(|| {
        read_one::<pg_sys::Oid>(
            "SELECT umid FROM pg_user_mappings WHERE srvname = $1 ORDER BY umuser <> 0, umid LIMIT 1",
            &[node.into()],
        )
    })
    .ok()
    .flatten()
}

/// The names of every server usable as a node.
pub fn node_names() -> Vec<String> {
    Spi::connect(|client| {
        client
            .select("SELECT node::text FROM dg.nodes ORDER BY node", None, &[])
            .map(|rows| {
                rows.filter_map(|r| r.get::<String>(1).ok().flatten())
                    .collect()
            })
            .unwrap_or_default()
    })
}

/// Runs SQL `f` as the bootstrap superuser, which owns dg's tables: users
/// of dg need no privileges on them, and cannot write them directly.
fn as_owner<T>(f: impl FnOnce() -> T) -> T {
    let _snapshot = ActiveSnapshot::ensure();
    let _owner = AsOwner::enter();
    f()
}

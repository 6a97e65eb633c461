//! One recovery pass over the in-doubt transactions: prepared
//! transactions on the nodes that carry this coordinator database's GID
//! prefix. A pass lists them on each node first, then asks for each
//! whether its deciding local transaction is still running, and only then
//! whether it left a decision row, so a DT that is committing right now is
//! never rolled back (the argument, step by step: src/README.md,
//! "Recovery").

use super::decide::{decide, lost, Action};
use crate::catalog::{self, LostCommit};
use crate::error::{DgError, DgResult, Lost};
use crate::faults::{self, Point};
use crate::fdw;
use crate::fence;
use crate::gid::Gid;
use crate::remote::cache;
use crate::remote::target::Target;
use crate::remote::wait::WaitEvent;
use crate::stats::{self, Event, Step};
use pgrx::pg_sys;
use std::collections::{HashMap, HashSet};
use std::time::Instant;

const LIST_SQL: &str = "SELECT gid, prepared::pg_catalog.text, \
     (pg_catalog.date_part('epoch', prepared) * 1000000)::pg_catalog.int8 \
     FROM pg_catalog.pg_prepared_xacts \
     WHERE database = pg_catalog.current_database() AND pg_catalog.starts_with(gid, $1) \
     ORDER BY prepared, gid";

/// How a node sees each remote xid asked about (`decide::lost` reads the
/// answer). An xid at or past the node's next one is `future`: asking
/// `pg_xact_status()` about it would be an error for the whole query.
const STATUS_SQL: &str = "SELECT x::pg_catalog.text, \
     CASE WHEN x >= pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot()) \
          THEN 'future' ELSE pg_catalog.pg_xact_status(x) END \
     FROM pg_catalog.unnest($1::pg_catalog.xid8[]) AS x";

/// One prepared transaction found on a node.
pub struct InDoubt {
    pub node: String,
    /// The node's foreign server.
    pub server: u32,
    pub gid: String,
    pub prepared: String,
    /// The same time, in microseconds since the Unix epoch.
    pub prepared_us: i64,
    pub action: Action,
}

fn prefix() -> String {
    // SAFETY: reads the backend's database oid.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    Gid::prefix(&catalog::coordinator_id(), database)
}

/// `(gid, prepared, prepared in µs since the epoch)` of this coordinator
/// database's prepared transactions on `node`.
fn list(target: &Target, prefix: &str) -> DgResult<Vec<(String, String, i64)>> {
    let tuples = cache::exec_once(
        target,
        LIST_SQL,
        Some(&[Some(prefix.to_string())]),
        WaitEvent::Resolver,
    )?
    .tuples;
    Ok(tuples.map_or_else(Vec::new, |t| {
        (0..t.ntuples())
            .map(|r| {
                (
                    t.text(r, 0).unwrap_or_default(),
                    t.text(r, 1).unwrap_or_default(),
                    t.text(r, 2).and_then(|v| v.parse().ok()).unwrap_or(0),
                )
            })
            .collect()
    }))
}

/// What presumed abort says about `gid`, in the order that makes it safe.
fn classify(gid: &Gid) -> Action {
    // SAFETY: asks the proc array about a 32-bit xid; the full xid's epoch
    // is current for any transaction recent enough to be running.
    let in_progress =
        unsafe { pg_sys::TransactionIdIsInProgress(pg_sys::TransactionId::from(gid.xid as u32)) };
    // The window in which the deciding transaction may commit: the crash
    // tests hold a pass here.
    faults::hit(Point::BeforeDecisionRead);
    decide(
        in_progress,
        in_progress || catalog::decision_exists(gid.xid, gid.mapping),
    )
}

/// What a scan found.
pub struct Scan {
    pub found: Vec<InDoubt>,
    /// The servers of the nodes it listed.
    pub listed: Vec<u32>,
    /// Every node was listed.
    pub complete: bool,
}

/// Every node's in-doubt transactions, each once (two servers may name
/// the same peer database), and whether every node could be read; a node
/// that cannot is skipped with a WARNING naming it. Every node is listed
/// before any transaction is classified, so the xids that nobody holds
/// are passed first (`pass_unassigned`).
pub fn scan() -> Scan {
    let prefix = prefix();
    let mut listings = Vec::new();
    let mut before_start = Vec::new();
    let mut listed = Vec::new();
    let mut complete = true;
    for node in catalog::node_names() {
        let listing = fdw::worker_target(&node)
            .and_then(|target| Ok((target.server.to_u32(), list(&target, &prefix)?)));
        match listing {
            Ok((server, rows)) => {
                listed.push(server);
                let rows: Vec<_> = rows
                    .into_iter()
                    .filter_map(|(gid, prepared, us)| Some((Gid::parse(&gid)?, gid, prepared, us)))
                    .collect();
                if !fence::listed_since_start(server) {
                    before_start.extend(rows.iter().map(|(parsed, ..)| parsed.clone()));
                }
                listings.push((node, server, rows));
            }
            Err(e) => {
                skip_node(&node, e);
                complete = false;
            }
        }
    }
    pass_unassigned(&before_start);
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    for (node, server, rows) in listings {
        for (parsed, gid, prepared, prepared_us) in rows {
            if seen.insert(gid.clone()) {
                let action = classify(&parsed);
                found.push(InDoubt {
                    node: node.clone(),
                    server,
                    gid,
                    prepared,
                    prepared_us,
                    action,
                });
            }
        }
    }
    Scan {
        found,
        listed,
        complete,
    }
}

/// How far past the next xid a transaction in doubt since before the
/// start may name its local transaction and still have the counter moved
/// past it: far more than the xids a crash can leave unlogged (those of
/// the transactions then running, and of commits not yet flushed), and a
/// bound on what a GID made up on a node can make this server consume.
const MAX_UNASSIGNED: u64 = 100_000;

/// Moves the transaction counter past the local xids of `gids` that no
/// transaction has been given yet, by handing out (and aborting) every
/// xid up to the newest.
///
/// A DT that prepared on a node before it wrote anything locally has an
/// xid no WAL record carries. After a crash, recovery restarts the counter
/// past the xids it replayed only, so that xid may lie ahead, where the
/// proc array calls it running (it is newer than every completed one):
/// the pass would leave the prepared transaction, holding its locks, until
/// other transactions had used up the xids in between, which on an idle
/// coordinator is never. Passed, the xid is an aborted transaction of this
/// pass's, and can never be handed out again: its GIDs are rolled back as
/// any whose transaction ended without a decision. The caller gives only
/// GIDs from a node's first listing since the start: those can predate
/// the crash, and a GID made up on a node later cannot make every pass
/// consume xids.
fn pass_unassigned(gids: &[Gid]) {
    // SAFETY: reads the shared next xid under its lock.
    let next = unsafe { pg_sys::ReadNextFullTransactionId() }.value;
    let mut newest = None;
    for gid in gids.iter().filter(|g| g.xid >= next) {
        if gid.xid - next < MAX_UNASSIGNED {
            newest = newest.max(Some(gid.xid));
        } else {
            pgrx::log!(
                "dg resolver: {gid} names local transaction {}, {} past the next one; it stays in doubt until the transaction counter passes it",
                gid.xid,
                gid.xid - next
            );
        }
    }
    let Some(newest) = newest else {
        return;
    };
    // SAFETY: an internal subtransaction per xid, given one and rolled
    // back at once, as PL/pgSQL's exception blocks do; the memory context
    // and resource owner are restored after each.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        while pg_sys::ReadNextFullTransactionId().value <= newest {
            pg_sys::BeginInternalSubTransaction(std::ptr::null());
            pg_sys::GetCurrentTransactionId();
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
        }
    }
    pgrx::log!(
        "dg resolver: moved the transaction counter past {newest}, the local transaction of a DT in doubt since before the start"
    );
}

fn skip_node(node: &str, e: DgError) {
    e.report_below_error(
        pgrx::PgLogLevel::WARNING,
        Some(&format!("dg: skipping node \"{node}\" during recovery")),
    );
}

/// What a pass did with one in-doubt transaction.
pub enum Outcome {
    /// Its local transaction still runs: left alone.
    Left,
    Committed,
    RolledBack,
    /// "Does not exist": another finisher (the DT's own backend) won.
    AlreadyFinished,
    /// Could not be finished now; the next pass tries again.
    Failed(DgError),
}

impl Outcome {
    /// The text `dg.recover()` shows.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Left => "in progress".into(),
            Outcome::Committed => "committed".into(),
            Outcome::RolledBack => "rolled back".into(),
            Outcome::AlreadyFinished => "already finished".into(),
            Outcome::Failed(e) => e.message(),
        }
    }
}

pub struct Resolution {
    pub node: String,
    pub gid: String,
    pub action: Action,
    pub outcome: Outcome,
}

/// One resolver pass: finish every in-doubt transaction that can be
/// decided now, then forget the decisions nobody needs any more. Returns
/// what happened to each transaction seen, and how many decisions went.
///
/// A decision may go once its local transaction finished before the pass
/// began listing (its xid is below the horizon: every GID of it still
/// prepared was then listed) and none of its GIDs is still prepared. That
/// needs every node listed; after a partial pass all rows stay.
pub fn pass() -> (Vec<Resolution>, usize) {
    let horizon = catalog::xid_horizon();
    let mark = fence::pass_begins();
    let Scan {
        found,
        listed,
        complete,
    } = scan();
    let mut still_prepared = Vec::new();
    // Committed DTs still prepared somewhere: in doubt for snapshots.
    let mut unfinished = Vec::new();
    let mut oldest = i64::MAX;
    let report: Vec<Resolution> = found
        .into_iter()
        .map(|t| {
            let outcome = match t.action {
                Action::Leave => Outcome::Left,
                action => finish(&t.gid, action),
            };
            match outcome {
                Outcome::Committed => stats::count(Event::ResolverCommit),
                Outcome::RolledBack => stats::count(Event::ResolverAbort),
                Outcome::Left | Outcome::Failed(_) => {
                    let gid = Gid::parse(&t.gid);
                    if let (Outcome::Failed(_), Action::Commit, Some(g)) =
                        (&outcome, t.action, &gid)
                    {
                        let node = fence::Node {
                            server: t.server,
                            mapping: g.mapping,
                        };
                        unfinished.push((g.xid, node));
                    }
                    still_prepared.extend(gid.map(|g| g.xid));
                    oldest = oldest.min(t.prepared_us);
                }
                Outcome::AlreadyFinished => {}
            }
            Resolution {
                node: t.node,
                gid: t.gid,
                action: t.action,
                outcome,
            }
        })
        .collect();
    // SAFETY: reads the backend's database oid.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    stats::set_in_doubt(database, still_prepared.len() as u64, oldest);
    fence::pass_ended(mark, &listed, &unfinished);
    let forgotten = if complete {
        forget(horizon, &still_prepared)
    } else {
        0
    };
    (report, forgotten)
}

/// Forgets the decisions nobody needs any more, after checking that each
/// of their participants committed: a prepared transaction that is gone
/// was finished by someone, or lost by its node (a failover to a standby
/// that never received the PREPARE, a ROLLBACK PREPARED behind dg's back),
/// and only the node's word on the remote xid tells which. A lost one is
/// recorded in `dg.lost_commits` in the same transaction that deletes
/// its decision, so the alarm never goes without the decision going too.
/// A decision whose node cannot be asked now stays for the next pass.
fn forget(horizon: u64, still_prepared: &[u64]) -> usize {
    let decisions = catalog::forgettable_decisions(horizon, still_prepared);
    let coordinator = catalog::coordinator_id();
    // SAFETY: reads the backend's database oid.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    // Each mapping's node, and each node's remote xids to ask about.
    let mut nodes: HashMap<u32, Option<String>> = HashMap::new();
    let mut asked: HashMap<String, Vec<u64>> = HashMap::new();
    for d in &decisions {
        for (mapping, remote_xid) in &d.prepared {
            let node = nodes
                .entry(*mapping)
                .or_insert_with(|| {
                    fdw::lookup_mapping(pg_sys::Oid::from(*mapping))
                        .map(|t| t.node)
                        .ok()
                })
                .clone();
            if let (Some(node), Some(x)) = (node, remote_xid) {
                asked.entry(node).or_default().push(*x);
            }
        }
    }
    // node -> remote xid -> status; a node that did not answer is absent.
    let mut answers: HashMap<String, HashMap<u64, Option<String>>> = HashMap::new();
    for (node, xids) in asked {
        match statuses(&node, &xids) {
            Ok(s) => {
                answers.insert(node, s);
            }
            Err(e) => e.report_below_error(
                pgrx::PgLogLevel::WARNING,
                Some(&format!(
                    "dg: cannot ask node \"{node}\" whether committed transactions committed there; their decisions stay"
                )),
            ),
        }
    }
    let mut forget = Vec::new();
    'decisions: for d in &decisions {
        let mut lost_here = Vec::new();
        for (mapping, remote_xid) in &d.prepared {
            // A mapping dropped since, or a peer that did not say its
            // xid: nothing to ask, as before dg kept xids.
            let (Some(node), Some(x)) = (nodes.get(mapping).cloned().flatten(), remote_xid) else {
                continue;
            };
            let Some(status) = answers.get(&node).map(|a| a.get(x).cloned().flatten()) else {
                continue 'decisions;
            };
            if let Some(status) = lost(status.as_deref()) {
                lost_here.push((node, *mapping, *x, status));
            }
        }
        for (node, mapping, remote_xid, status) in lost_here {
            let gid = Gid {
                coordinator: coordinator.clone(),
                database,
                xid: d.xid,
                mapping,
            }
            .to_string();
            alarm(&LostCommit {
                node: &node,
                gid: &gid,
                remote_xid,
                remote_status: status,
                decision: d,
            });
        }
        forget.push(d.xid);
    }
    if !forget.is_empty() {
        // A restore point between a node's point and the coordinator's
        // must not see the decision go (src/README.md, "Restore points").
        fence::hold_at_commit();
    }
    catalog::forget_decisions(&forget)
}

/// The status of each of `xids` on `node`, as `decide::lost` reads it.
fn statuses(node: &str, xids: &[u64]) -> DgResult<HashMap<u64, Option<String>>> {
    let list: Vec<String> = xids.iter().map(u64::to_string).collect();
    let tuples = cache::exec_once(
        &fdw::worker_target(node)?,
        STATUS_SQL,
        Some(&[Some(format!("{{{}}}", list.join(",")))]),
        WaitEvent::Resolver,
    )?
    .tuples;
    Ok(tuples.map_or_else(HashMap::new, |t| {
        (0..t.ntuples())
            .filter_map(|r| Some((t.text(r, 0)?.parse().ok()?, t.text(r, 1))))
            .collect()
    }))
}

/// Raises the lost-commit alarm once: the record, the counter and a LOG
/// line (a pass that races another records nothing twice).
fn alarm(lost: &LostCommit) {
    if !catalog::record_lost_commit(lost) {
        return;
    }
    stats::count(Event::LostCommit);
    DgError::LostCommit(Box::new(Lost {
        node: lost.node.to_string(),
        gid: lost.gid.to_string(),
        remote_xid: lost.remote_xid,
        remote_status: lost.remote_status,
        dt_id: lost.decision.dt_id.clone(),
        xid: lost.decision.xid,
        decided_at: lost.decision.decided_at.clone(),
    }))
    .report_below_error(pgrx::PgLogLevel::LOG, None);
}

/// Commits or rolls back `gid` with the credentials that prepared it.
fn finish(gid: &str, action: Action) -> Outcome {
    let commit = action == Action::Commit;
    let started = Instant::now();
    let done = Gid::parse(gid)
        .ok_or_else(|| DgError::Internal(format!("not a dg GID: {gid}")))
        .and_then(|parsed| fdw::lookup_mapping(pg_sys::Oid::from(parsed.mapping)))
        .and_then(|target| end_prepared(&target, gid, commit));
    stats::time(Step::Resolve, started.elapsed());
    match done {
        Ok(()) if commit => Outcome::Committed,
        Ok(()) => Outcome::RolledBack,
        Err(DgError::Remote(e)) if e.is_undefined_object() => Outcome::AlreadyFinished,
        Err(e) => Outcome::Failed(e),
    }
}

/// `COMMIT PREPARED` or `ROLLBACK PREPARED` on a connection of its own.
fn end_prepared(target: &Target, gid: &str, commit: bool) -> DgResult<()> {
    let verb = if commit { "COMMIT" } else { "ROLLBACK" };
    let sql = format!("{verb} PREPARED {}", pgrx::spi::quote_literal(gid));
    cache::exec_once(target, &sql, None, WaitEvent::Resolver).map(|_| ())
}

/// `dg.resolve()`: a superuser's manual decision for a prepared transaction
/// whose coordinator is gone, with the superuser's own mapping for `node`.
pub fn resolve(node: &str, gid: &str, commit: bool) -> DgResult<String> {
    // SAFETY: plain catalog lookup of the current user.
    if !unsafe { pg_sys::superuser() } {
        return Err(DgError::SuperuserOnly("dg.resolve()"));
    }
    end_prepared(&fdw::lookup(node)?, gid, commit)?;
    Ok(if commit { "committed" } else { "rolled back" }.to_string())
}

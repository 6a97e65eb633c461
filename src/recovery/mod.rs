//! Recovery of in-doubt transactions: prepared transactions on the nodes
//! that carry this coordinator database's GID prefix. One pass lists them
//! on each node first, then asks for each whether its deciding local
//! transaction is still running, and only then whether it left a decision
//! row, so a DT that is committing right now is never rolled back.

pub mod decide;
pub mod worker;

use crate::catalog;
use crate::error::{DgError, DgResult};
use crate::fdw;
use crate::gid::Gid;
use crate::remote::cache;
use decide::{decide, Action};
use pgrx::pg_sys;
use std::collections::HashSet;

const LIST_SQL: &str = "SELECT gid, prepared::text FROM pg_prepared_xacts \
     WHERE database = current_database() AND starts_with(gid, $1) ORDER BY prepared, gid";

/// One prepared transaction found on a node.
pub struct InDoubt {
    pub node: String,
    pub gid: String,
    pub prepared: String,
    pub action: Action,
}

fn prefix() -> String {
    // SAFETY: reads the backend's database oid.
    let database = unsafe { pg_sys::MyDatabaseId }.to_u32();
    Gid::prefix(&catalog::coordinator_id(), database)
}

/// How a worker reaches `node`: with the current role's mapping, else any
/// mapping of the node, as workers run as a superuser that may have none.
pub fn worker_target(node: &str) -> DgResult<fdw::Target> {
    match fdw::lookup(node) {
        Err(DgError::NoMapping(_)) => match catalog::any_mapping(node) {
            Some(mapping) => fdw::lookup_mapping(mapping),
            None => Err(DgError::NoMapping(node.into())),
        },
        target => target,
    }
}

/// `(gid, prepared)` of this coordinator database's prepared transactions
/// on `node`.
fn list(node: &str, prefix: &str) -> DgResult<Vec<(String, String)>> {
    let tuples = cache::exec_once(
        &worker_target(node)?,
        LIST_SQL,
        Some(&[Some(prefix.to_string())]),
    )?
    .tuples;
    Ok(tuples.map_or_else(Vec::new, |t| {
        (0..t.ntuples())
            .map(|r| {
                (
                    t.text(r, 0).unwrap_or_default(),
                    t.text(r, 1).unwrap_or_default(),
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
    decide(
        in_progress,
        in_progress || catalog::decision_exists(gid.xid),
    )
}

/// Every node's in-doubt transactions, each once (two servers may name
/// the same peer database), and whether every node could be read; a node
/// that cannot is skipped with a WARNING naming it.
pub fn scan() -> (Vec<InDoubt>, bool) {
    let prefix = prefix();
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    let mut complete = true;
    for node in catalog::node_names() {
        let rows = match list(&node, &prefix) {
            Ok(rows) => rows,
            Err(e) => {
                skip_node(&node, e);
                complete = false;
                continue;
            }
        };
        for (gid, prepared) in rows {
            let Some(parsed) = Gid::parse(&gid) else {
                continue;
            };
            if seen.insert(gid.clone()) {
                let action = classify(&parsed);
                found.push(InDoubt {
                    node: node.clone(),
                    gid,
                    prepared,
                    action,
                });
            }
        }
    }
    (found, complete)
}

fn skip_node(node: &str, e: DgError) {
    e.report_below_error(
        pgrx::PgLogLevel::WARNING,
        Some(&format!("dg: skipping node \"{node}\" during recovery")),
    );
}

/// One resolver pass: finish every in-doubt transaction that can be
/// decided now, then forget the decisions nobody needs any more. Returns
/// (node, gid, action, result) for each transaction seen.
///
/// A decision may go once its local transaction finished before the pass
/// began listing (its xid is below the horizon: every GID of it still
/// prepared was then listed) and none of its GIDs is still prepared. That
/// needs every node listed; after a partial pass all rows stay. Also
/// returns how many decisions went.
#[allow(clippy::type_complexity)]
pub fn pass() -> (Vec<(String, String, &'static str, String)>, usize) {
    let horizon = catalog::xid_horizon();
    let (found, complete) = scan();
    let mut still_prepared = Vec::new();
    let report = found
        .into_iter()
        .map(|t| {
            let result = match t.action {
                Action::Leave => Err(DgError::Unsupported("in progress".into())),
                action => finish(&t.gid, action),
            };
            if result.as_deref().is_ok_and(|r| r != "already finished") {
                let commit = t.action == Action::Commit;
                crate::stats::add(|s| {
                    if commit {
                        s.resolver_commits += 1
                    } else {
                        s.resolver_aborts += 1
                    }
                });
            }
            if result.is_err() {
                still_prepared.extend(Gid::parse(&t.gid).map(|g| g.xid));
            }
            let result = result.unwrap_or_else(|e| e.message());
            (t.node, t.gid, t.action.name(), result)
        })
        .collect();
    let forgotten = if complete {
        catalog::forget_decisions(horizon, &still_prepared)
    } else {
        0
    };
    (report, forgotten)
}

/// Commits or rolls back `gid` with the credentials that prepared it.
/// "Does not exist" means another finisher (the DT's own backend) won.
fn finish(gid: &str, action: Action) -> DgResult<String> {
    let parsed =
        Gid::parse(gid).ok_or_else(|| DgError::Unsupported(format!("not a dg GID: {gid}")))?;
    let target = fdw::lookup_mapping(pg_sys::Oid::from(parsed.mapping))?;
    match end_prepared(&target, gid, action == Action::Commit) {
        Err(DgError::Remote(e)) if e.is_undefined_object() => Ok("already finished".to_string()),
        other => other,
    }
}

/// `COMMIT PREPARED` or `ROLLBACK PREPARED` on a connection of its own.
fn end_prepared(target: &fdw::Target, gid: &str, commit: bool) -> DgResult<String> {
    let verb = if commit { "COMMIT" } else { "ROLLBACK" };
    let sql = format!("{verb} PREPARED {}", pgrx::spi::quote_literal(gid));
    cache::exec_once(target, &sql, None)
        .map(|_| if commit { "committed" } else { "rolled back" }.to_string())
}

/// `dg.resolve()`: a superuser's manual decision for a prepared transaction
/// whose coordinator is gone, with the superuser's own mapping for `node`.
pub fn resolve(node: &str, gid: &str, commit: bool) -> DgResult<String> {
    // SAFETY: plain catalog lookup of the current user.
    if !unsafe { pg_sys::superuser() } {
        return Err(DgError::SuperuserOnly("dg.resolve()"));
    }
    end_prepared(&fdw::lookup(node)?, gid, commit)
}

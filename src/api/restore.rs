//! `dg.create_restore_point(name)` (README, "Consistent restore (PITR)"):
//! a named restore point on the coordinator and on every node, made while
//! no DT of this server is between its local commit and its last `COMMIT
//! PREPARED`, so that restoring all of them to that name is consistent
//! (src/README.md, "The commit fence", restore points).

use super::guards::{ok, refuse_in_parallel_mode, required};
use crate::catalog;
use crate::error::{DgError, DgResult};
use crate::faults::{self, Point};
use crate::fdw;
use crate::fence;
use crate::remote::cache;
use crate::remote::connection::{Connection, Outcome};
use crate::remote::wait::{statement_deadline, WaitEvent};
use pgrx::prelude::*;
use std::time::Instant;

const FUNCTION: &str = "dg.create_restore_point()";

/// The peer's own function: its checks (superuser or a grant, wal_level,
/// the name's length, not on a standby) and their SQLSTATEs come back as
/// the peer raised them.
const REMOTE_SQL: &str = "SELECT pg_catalog.pg_create_restore_point($1)::text";

/// One row per place a point was made: the node (NULL for the coordinator
/// itself) and the point's LSN there. The LSN is returned as the 64-bit
/// integer a `pg_lsn` datum is (by value, as `LSNGetDatum` makes it); the
/// SQL declaration in sql/dg.sql gives the column its type, since pgrx
/// maps no Rust type to `pg_lsn`.
#[pg_extern(sql = false)]
fn create_restore_point(
    name: Option<&str>,
) -> TableIterator<'static, (name!(node, Option<String>), name!(lsn, i64))> {
    refuse_in_parallel_mode(FUNCTION);
    // SAFETY: plain catalog lookup of the current user.
    if !unsafe { pg_sys::superuser() } {
        DgError::SuperuserOnly(FUNCTION).raise()
    }
    let name = required(name, "name");
    let points = ok(make_points(name));
    TableIterator::new(points.into_iter().map(|(node, lsn)| (node, lsn as i64)))
}

/// Connections lent for the call, given back however it ends (an ERROR
/// from the local restore point unwinds through here).
struct Lent(Vec<Connection>);

impl Drop for Lent {
    fn drop(&mut self) {
        for c in self.0.drain(..) {
            cache::give_back(c);
        }
    }
}

/// Connects to every node first (a slow connect must not stall commits),
/// then, holding the fence against commits, makes every node's point in
/// one round trip and then the coordinator's, and releases the fence
/// before returning, also inside a transaction block. The coordinator's
/// comes last, in a transaction with an xid of its own: see src/README.md
/// on the xids a restored coordinator hands out.
fn make_points(name: &str) -> DgResult<Vec<(Option<String>, u64)>> {
    let nodes = catalog::node_names();
    let mut conns = Lent(Vec::with_capacity(nodes.len()));
    for node in &nodes {
        let target = fdw::lookup(node)?;
        conns.0.push(cache::take(&target)?);
    }
    let timeout = crate::gucs::snapshot_timeout();
    let held =
        fence::Exclusive::enter(Instant::now() + timeout).ok_or(DgError::RestorePointBusy)?;
    // Commits wait while the fence is held: bounded as the wait to get
    // in, whatever the statement timeout (as a snapshot's round trip).
    let bound = Instant::now() + timeout;
    let until = Some(statement_deadline().map_or(bound, |d| d.min(bound)));
    let params = [Some(name.to_string())];
    let run = |conns: &mut [Connection]| {
        Connection::exec_each(conns, REMOTE_SQL, Some(&params), until, WaitEvent::Result)
    };
    // Test builds may pause after the first k nodes' points.
    let k = faults::split(Point::BetweenRestorePoints)
        .unwrap_or(usize::MAX)
        .min(conns.0.len());
    let (first, rest) = conns.0.split_at_mut(k);
    let mut results = run(first);
    faults::hit(Point::BetweenRestorePoints);
    results.extend(run(rest));
    let local = local_restore_point(name);
    drop(held);
    let mut points = vec![(None, local)];
    let mut failed = None;
    for (node, r) in nodes.into_iter().zip(results) {
        match r.and_then(|out| lsn_of(&node, &out)) {
            Ok(lsn) => points.push((Some(node), lsn)),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    let Some(e) = failed else {
        return Ok(points);
    };
    // Nothing to undo: a restore point is one WAL record that only a
    // restore asks for by name.
    pgrx::notice!(
        "restore point \"{name}\" was made only on {}; those points are harmless, and a retry \
         may use a new name",
        made_on(&points)
    );
    Err(e)
}

/// `pg_create_restore_point(name)` here, with its own checks and errors,
/// in a transaction that has an xid: the point's WAL record carries it,
/// and a restore to the point hands out only xids past it.
fn local_restore_point(name: &str) -> u64 {
    // SAFETY: plain reads of the server's state; on a standby the
    // function's own check raises below.
    if !unsafe { pg_sys::RecoveryInProgress() } {
        // SAFETY: assigns the current (sub)transaction's xid.
        unsafe { pg_sys::GetCurrentTransactionId() };
    }
    // SAFETY: a builtin called with one non-NULL text argument, as SQL
    // would; it raises its own errors. pg_lsn datums are by value.
    let lsn = unsafe {
        pgrx::direct_function_call::<i64>(pg_sys::pg_create_restore_point, &[name.into_datum()])
    };
    lsn.unwrap_or_else(|| DgError::Internal("pg_create_restore_point returned NULL".into()).raise())
        as u64
}

/// The LSN a node's `pg_create_restore_point` returned, as text.
fn lsn_of(node: &str, out: &Outcome) -> DgResult<u64> {
    out.tuples
        .as_ref()
        .filter(|t| t.ntuples() == 1)
        .and_then(|t| t.text(0, 0))
        .and_then(|v| parse_lsn(&v))
        .ok_or_else(|| DgError::Internal(format!("node \"{node}\" returned no restore point LSN")))
}

/// `X/Y` (hexadecimal halves), as pg_lsn prints.
fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

fn made_on(points: &[(Option<String>, u64)]) -> String {
    let names: Vec<String> = points
        .iter()
        .map(|(n, _)| {
            n.as_ref()
                .map_or_else(|| "the coordinator".into(), |n| format!("\"{n}\""))
        })
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::parse_lsn;

    #[test]
    fn reads_lsns_as_pg_lsn_prints_them() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("0/3000090"), Some(0x3000090));
        assert_eq!(parse_lsn("1A/FFFFFFFF"), Some(0x1A_FFFF_FFFF));
        assert_eq!(parse_lsn("x/1"), None);
        assert_eq!(parse_lsn("12"), None);
    }
}

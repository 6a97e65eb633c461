//! Whether the snapshots a consistent snapshot took on its nodes see each
//! DT that was finishing meanwhile whole (src/README.md, "Watched
//! snapshots"). Pure: the fence gathers the DTs, the nodes print their
//! snapshots, and this decides.

/// A node's snapshot as `pg_current_snapshot()` prints it
/// (`xmin:xmax:xip,...`, full transaction ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSnapshot {
    xmin: u64,
    xmax: u64,
    running: Vec<u64>,
}

impl NodeSnapshot {
    pub fn parse(text: &str) -> Option<NodeSnapshot> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let running = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        (xmin <= xmax).then_some(NodeSnapshot {
            xmin,
            xmax,
            running,
        })
    }

    /// Does the snapshot see transaction `xid` committed? For a prepared
    /// transaction that a commit decision finishes: one not running when
    /// the snapshot was taken had been committed by then (only an outside
    /// `ROLLBACK PREPARED` would make it otherwise: a lost commit).
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.running.contains(&xid))
    }
}

/// A two-phase DT that was at the commit fence while the snapshots were
/// taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finishing {
    /// The coordinator's (local) full xid: the DT's name here.
    pub xid: u64,
    /// Where it prepared: (foreign server, the peer's xid; 0 if unknown).
    pub nodes: Vec<(u32, u64)>,
    /// False when the fence could not keep all of its nodes.
    pub whole: bool,
    /// What another part of the read already shows of it: whether the
    /// block's local snapshot sees its local writes, or `Some(true)` for
    /// a DT already committed on every node not in `nodes`.
    pub known: Option<bool>,
}

/// The first DT of `finishing` that `snapshots` (by foreign server) see
/// on some nodes and not on others, or cannot tell of (a peer xid not
/// known, nodes missing): the snapshots must be taken again.
pub fn first_fractured(finishing: &[Finishing], snapshots: &[(u32, NodeSnapshot)]) -> Option<u64> {
    finishing
        .iter()
        .find(|dt| !seen_whole(dt, snapshots))
        .map(|dt| dt.xid)
}

fn seen_whole(dt: &Finishing, snapshots: &[(u32, NodeSnapshot)]) -> bool {
    if !dt.whole {
        return false;
    }
    let mut seen = dt.known;
    for &(server, xid) in &dt.nodes {
        let Some((_, snapshot)) = snapshots.iter().find(|(s, _)| *s == server) else {
            continue;
        };
        if xid == 0 {
            return false;
        }
        let sees = snapshot.sees(xid);
        if seen.is_some_and(|s| s != sees) {
            return false;
        }
        seen = Some(sees);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(text: &str) -> NodeSnapshot {
        NodeSnapshot::parse(text).unwrap()
    }

    fn dt(nodes: &[(u32, u64)], known: Option<bool>) -> Finishing {
        Finishing {
            xid: 7,
            nodes: nodes.to_vec(),
            whole: true,
            known,
        }
    }

    #[test]
    fn parses_what_pg_current_snapshot_prints() {
        assert_eq!(
            snap("10:20:12,15"),
            NodeSnapshot {
                xmin: 10,
                xmax: 20,
                running: vec![12, 15]
            }
        );
        assert_eq!(snap("10:10:").running, Vec::<u64>::new());
        for bad in ["", "10", "10:20", "10:x:", "20:10:", "10:20:1,,2"] {
            assert_eq!(NodeSnapshot::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_snapshot_sees_what_ended_before_it_and_not_what_ran() {
        let s = snap("10:20:12,15");
        assert!(s.sees(9));
        assert!(s.sees(11));
        assert!(!s.sees(12));
        assert!(!s.sees(15));
        assert!(!s.sees(20));
        assert!(!s.sees(25));
    }

    #[test]
    fn a_dt_seen_on_every_node_or_on_none_is_whole() {
        let snapshots = [(1, snap("100:200:")), (2, snap("50:60:55"))];
        // Committed on both before they were taken.
        assert_eq!(
            first_fractured(&[dt(&[(1, 150), (2, 52)], None)], &snapshots),
            None
        );
        // Still prepared on both (running on 2, past xmax on 1).
        assert_eq!(
            first_fractured(&[dt(&[(1, 200), (2, 55)], None)], &snapshots),
            None
        );
        // Nodes outside the snapshot do not count.
        assert_eq!(
            first_fractured(&[dt(&[(1, 150), (3, 0)], None)], &snapshots),
            None
        );
    }

    #[test]
    fn a_dt_seen_on_one_node_and_not_another_is_fractured() {
        let snapshots = [(1, snap("100:200:")), (2, snap("50:60:55"))];
        assert_eq!(
            first_fractured(&[dt(&[(1, 150), (2, 55)], None)], &snapshots),
            Some(7)
        );
        assert_eq!(
            first_fractured(&[dt(&[(1, 250), (2, 52)], None)], &snapshots),
            Some(7)
        );
    }

    #[test]
    fn what_cannot_be_told_counts_as_fractured() {
        let snapshots = [(1, snap("100:200:"))];
        // A peer xid not known, on a node of the snapshot.
        assert_eq!(first_fractured(&[dt(&[(1, 0)], None)], &snapshots), Some(7));
        // Nodes the fence could not keep.
        let mut partial = dt(&[(1, 150)], None);
        partial.whole = false;
        assert_eq!(first_fractured(&[partial], &snapshots), Some(7));
    }

    #[test]
    fn what_the_rest_of_the_read_shows_must_agree() {
        let snapshots = [(1, snap("100:200:"))];
        // Local writes the block sees, remote ones it does not.
        assert_eq!(
            first_fractured(&[dt(&[(1, 250)], Some(true))], &snapshots),
            Some(7)
        );
        assert_eq!(
            first_fractured(&[dt(&[(1, 250)], Some(false))], &snapshots),
            None
        );
        // Committed elsewhere (an unanswered finish): must be seen here too.
        assert_eq!(
            first_fractured(&[dt(&[(1, 150)], Some(true))], &snapshots),
            None
        );
    }
}

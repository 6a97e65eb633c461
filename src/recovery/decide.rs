//! What the resolver does with one prepared transaction: presumed abort;
//! and what a node's word on a committed participant's remote xid means.
//! Pure, so every case is tested without a server.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The deciding local transaction is still running: it may yet commit.
    Leave,
    Commit,
    Rollback,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Leave => "leave",
            Action::Commit => "commit",
            Action::Rollback => "rollback",
        }
    }
}

/// `in_progress` must be read before `decided`: a transaction seen as
/// finished has either written its decision (visible to the later read)
/// or never will.
pub fn decide(in_progress: bool, decided: bool) -> Action {
    match (in_progress, decided) {
        (true, _) => Action::Leave,
        (false, true) => Action::Commit,
        (false, false) => Action::Rollback,
    }
}

/// What a node says of the remote xid of a participant whose DT
/// committed, once its prepared transaction is gone: the answer of
/// `pg_xact_status()`, or `future` when the xid is at or past the node's
/// next xid (which `pg_xact_status()` would refuse with an error).
/// `None`: it committed, nothing was lost. `Some(status)`: the writes are
/// gone, and `status` says how the node sees the xid (the
/// `dg.lost_commits.remote_status` values).
pub fn lost(status: Option<&str>) -> Option<&'static str> {
    match status {
        Some("committed") => None,
        // Rolled back behind dg's back (ROLLBACK PREPARED by hand, or a
        // crash of a node that never made the PREPARE durable).
        Some("aborted") => Some("aborted"),
        // Another transaction has that xid now: the node came back from
        // a standby or a backup that had not seen the PREPARE, and has
        // handed the xid out again.
        Some("in progress") => Some("in progress"),
        // The node has not reached that xid yet: it went back in time
        // (a failover to a standby behind it, a restore).
        Some("future") => Some("not yet assigned"),
        // Older than the node's commit log keeps, or an answer dg does
        // not know: no proof that it committed.
        _ => Some("unknown"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_committed_is_not_lost() {
        assert_eq!(lost(Some("committed")), None);
        assert_eq!(lost(Some("aborted")), Some("aborted"));
        assert_eq!(lost(Some("in progress")), Some("in progress"));
        assert_eq!(lost(Some("future")), Some("not yet assigned"));
        assert_eq!(lost(None), Some("unknown"));
        assert_eq!(lost(Some("something new")), Some("unknown"));
    }

    #[test]
    fn presumed_abort() {
        assert_eq!(decide(true, false), Action::Leave);
        assert_eq!(decide(true, true), Action::Leave);
        assert_eq!(decide(false, true), Action::Commit);
        assert_eq!(decide(false, false), Action::Rollback);
    }
}

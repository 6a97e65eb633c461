//! The distributed transaction as pure state: what a call may do in each
//! state, and which commit protocol the participants' work calls for.
//! Tested without a server.

use crate::error::DgError;

/// Where a DT ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Bound to the local transaction (a block, or one autocommit
    /// statement): its COMMIT or ROLLBACK ends the DT everywhere.
    Transaction,
    /// Opened by `dist_begin()` outside a block: spans statements until
    /// `dist_commit()` or `dist_rollback()`.
    Session,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DtState {
    /// Statements may run.
    Active,
    /// A participant failed; only a rollback ends it.
    Aborted,
    /// The prepare phase has run in the current local transaction, whose
    /// commit or abort now decides the DT.
    Committing,
}

impl DtState {
    /// May a statement run on a participant?
    pub fn check_statement(self) -> Result<(), DgError> {
        match self {
            DtState::Active => Ok(()),
            DtState::Aborted => Err(DgError::Aborted),
            DtState::Committing => Err(DgError::AlreadyCommitting),
        }
    }

    /// May `dist_commit()` start the prepare phase?
    pub fn check_commit(self) -> Result<(), DgError> {
        self.check_statement()
    }

    pub fn name(self) -> &'static str {
        match self {
            DtState::Active => "active",
            DtState::Aborted => "aborted",
            DtState::Committing => "committing",
        }
    }
}

/// What a participant has done in the DT, as far as dg can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Work {
    /// Only queries ran; whether they wrote (a volatile function, a row
    /// lock) is asked of the peer at commit.
    Read,
    /// A statement ran through `dist_exec`.
    Write,
}

/// Where a participant's remote transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteState {
    Open,
    Prepared,
    /// Committed or rolled back on the peer: nothing left to finish.
    Ended,
}

/// How the prepare phase commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Nobody wrote: participants just commit.
    ReadOnly,
    /// One writer and nothing else that must agree with it: a plain COMMIT
    /// on that writer is atomic by itself.
    OnePhase,
    TwoPhase,
}

/// `local_must_agree`: local writes belong to the DT (transaction scope),
/// or may still be added before it ends.
pub fn protocol(writers: usize, local_must_agree: bool) -> Protocol {
    match (writers, local_must_agree) {
        (0, _) => Protocol::ReadOnly,
        (1, false) => Protocol::OnePhase,
        _ => Protocol::TwoPhase,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_only_in_active() {
        assert!(DtState::Active.check_statement().is_ok());
        assert!(matches!(
            DtState::Aborted.check_statement(),
            Err(DgError::Aborted)
        ));
        assert!(matches!(
            DtState::Committing.check_statement(),
            Err(DgError::AlreadyCommitting)
        ));
        assert!(matches!(
            DtState::Aborted.check_commit(),
            Err(DgError::Aborted)
        ));
    }

    #[test]
    fn protocol_choice() {
        assert_eq!(protocol(0, true), Protocol::ReadOnly);
        assert_eq!(protocol(0, false), Protocol::ReadOnly);
        assert_eq!(protocol(1, false), Protocol::OnePhase);
        assert_eq!(protocol(1, true), Protocol::TwoPhase);
        assert_eq!(protocol(2, false), Protocol::TwoPhase);
        assert_eq!(protocol(8, true), Protocol::TwoPhase);
    }

    #[test]
    fn work_orders_read_below_write() {
        assert_eq!(Work::Read.max(Work::Write), Work::Write);
    }
}

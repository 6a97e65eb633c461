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

    /// The prepare phase starts: only an active DT may commit.
    pub fn begin_commit(&mut self) {
        debug_assert_eq!(*self, DtState::Active, "only an active DT starts to commit");
        *self = DtState::Committing;
    }

    /// A participant failed, or the DT was rolled back while its block
    /// goes on: only a rollback ends it now. A committing DT is not failed
    /// this way; the local transaction's abort ends it.
    pub fn fail(&mut self) {
        debug_assert_ne!(
            *self,
            DtState::Committing,
            "a committing DT ends, it is not failed"
        );
        *self = DtState::Aborted;
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

/// Where a participant's remote transaction is. The life cycle, as
/// src/README.md tells it:
///
/// 1. `Open`: joined the DT (BEGIN goes out with its first statement).
/// 2. `Preparing`: PREPARE TRANSACTION sent; until its answer is read the
///    transaction may or may not be prepared, and stays so if the
///    connection fails then (abort and the resolver handle "maybe").
/// 3. `Prepared`: the peer answered PREPARE.
/// 4. `Ended`: committed or rolled back on the peer, or known gone: nothing
///    left to finish. Reached from any other state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteState {
    Open,
    Preparing,
    Prepared,
    Ended,
}

/// What the answer to a PREPARE TRANSACTION said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrepareAnswer {
    Prepared,
    /// The peer answered with an error: it rolled the transaction back.
    Refused,
    /// No answer (the connection failed): maybe prepared.
    Unknown,
}

impl RemoteState {
    pub fn prepare_sent(&mut self) {
        debug_assert_eq!(
            *self,
            RemoteState::Open,
            "only an open transaction is prepared"
        );
        *self = RemoteState::Preparing;
    }

    pub fn prepare_answered(&mut self, answer: PrepareAnswer) {
        debug_assert_eq!(*self, RemoteState::Preparing, "no PREPARE was sent");
        *self = match answer {
            PrepareAnswer::Prepared => RemoteState::Prepared,
            PrepareAnswer::Refused => RemoteState::Ended,
            PrepareAnswer::Unknown => RemoteState::Preparing,
        };
    }

    /// COMMIT, ROLLBACK, COMMIT PREPARED or ROLLBACK PREPARED was sent
    /// (whatever the answer: a failed finish is the resolver's).
    pub fn end(&mut self) {
        debug_assert_ne!(*self, RemoteState::Ended, "ended twice");
        *self = RemoteState::Ended;
    }

    /// May hold a prepared transaction, to finish with COMMIT or
    /// ROLLBACK PREPARED.
    pub fn maybe_prepared(self) -> bool {
        matches!(self, RemoteState::Preparing | RemoteState::Prepared)
    }
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
    fn dt_transitions() {
        let mut s = DtState::Active;
        s.begin_commit();
        assert_eq!(s, DtState::Committing);
        let mut s = DtState::Active;
        s.fail();
        s.fail();
        assert_eq!(s, DtState::Aborted);
    }

    #[test]
    #[should_panic(expected = "only an active DT starts to commit")]
    fn an_aborted_dt_does_not_commit() {
        DtState::Aborted.begin_commit();
    }

    #[test]
    fn participant_life_cycle() {
        for (answer, after) in [
            (PrepareAnswer::Prepared, RemoteState::Prepared),
            (PrepareAnswer::Refused, RemoteState::Ended),
            (PrepareAnswer::Unknown, RemoteState::Preparing),
        ] {
            let mut s = RemoteState::Open;
            s.prepare_sent();
            assert!(s.maybe_prepared());
            s.prepare_answered(answer);
            assert_eq!(s, after);
        }
        let mut s = RemoteState::Open;
        s.end();
        assert!(!s.maybe_prepared());
    }

    #[test]
    #[should_panic(expected = "no PREPARE was sent")]
    fn an_answer_needs_a_prepare() {
        RemoteState::Open.prepare_answered(PrepareAnswer::Prepared);
    }

    #[test]
    #[should_panic(expected = "ended twice")]
    fn ended_is_final() {
        let mut s = RemoteState::Ended;
        s.end();
    }

    #[test]
    fn work_orders_read_below_write() {
        assert_eq!(Work::Read.max(Work::Write), Work::Write);
    }
}

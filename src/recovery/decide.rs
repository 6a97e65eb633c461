//! What the resolver does with one prepared transaction: presumed abort.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presumed_abort() {
        assert_eq!(decide(true, false), Action::Leave);
        assert_eq!(decide(true, true), Action::Leave);
        assert_eq!(decide(false, true), Action::Commit);
        assert_eq!(decide(false, false), Action::Rollback);
    }
}

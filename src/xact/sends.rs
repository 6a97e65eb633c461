//! The `dg.dist_send` statements of a DT, from the send to the sync point
//! that reads what they came to (src/README.md, "Sync points").
//!
//! Each send is numbered (`seq`, from 1 in each DT) and remembers the local
//! nesting level it was sent at, so that a subtransaction's end deals with
//! exactly what was sent inside it: its commit raises their errors, its
//! abort forgets them. An error is raised as the earliest failed send
//! (lowest `seq`), which is the error `dist_exec` would have raised.

use crate::error::DgError;
use crate::remote::connection::{SentOutcome, SentResult};

#[derive(Default)]
pub struct Sends {
    last_seq: u32,
    /// In send order; kept until `dist_sync` reports them, the DT ends, or
    /// the subtransaction they were sent in rolls back.
    list: Vec<Sent>,
}

struct Sent {
    seq: u32,
    node: String,
    level: i32,
    state: State,
}

enum State {
    Waiting,
    Rows(i64),
    /// The peer's error; what the next sync point that covers it raises.
    Failed(DgError),
    /// Skipped by the pipeline after an earlier failure.
    Skipped,
}

impl Sends {
    /// Numbers a new send to `node` at local nesting `level`.
    pub fn add(&mut self, node: &str, level: i32) -> u32 {
        self.last_seq += 1;
        self.list.push(Sent {
            seq: self.last_seq,
            node: node.to_string(),
            level,
            state: State::Waiting,
        });
        self.last_seq
    }

    /// The send could not even go out (its error was raised at once).
    pub fn forget(&mut self, seq: u32) {
        self.list.retain(|s| s.seq != seq);
    }

    /// Files what a sync point read.
    pub fn settle(&mut self, outcomes: Vec<SentOutcome>) {
        for o in outcomes {
            if let Some(s) = self.list.iter_mut().find(|s| s.seq == o.seq) {
                s.state = match o.result {
                    SentResult::Rows(n) => State::Rows(n),
                    SentResult::Failed(e) => State::Failed(e),
                    SentResult::Skipped => State::Skipped,
                };
            }
        }
    }

    /// The error a sync point covering nesting `level` and deeper raises:
    /// none unless a send at that level or deeper failed; then the
    /// earliest failure of all, which is where `dist_exec` would have
    /// stopped.
    pub fn error_at(&self, level: i32) -> Option<DgError> {
        let failed = |s: &&Sent| matches!(s.state, State::Failed(_));
        if !self.list.iter().filter(failed).any(|s| s.level >= level) {
            return None;
        }
        self.list.iter().find_map(|s| match &s.state {
            State::Failed(e) => Some(e.clone()),
            _ => None,
        })
    }

    /// Any failure read so far.
    pub fn error(&self) -> Option<DgError> {
        self.error_at(i32::MIN)
    }

    /// Subtransaction `level` committed: its sends belong to its parent.
    pub fn released(&mut self, level: i32) {
        for s in self.list.iter_mut().filter(|s| s.level >= level) {
            s.level = level - 1;
        }
    }

    /// Subtransaction `level` rolled back: its sends never happened.
    pub fn rolled_back(&mut self, level: i32) {
        self.list.retain(|s| s.level < level);
    }

    /// What `dist_sync` returns once everything is read without error:
    /// (node, seq, rows) in send order, and forgotten.
    pub fn take_rows(&mut self) -> Vec<(String, u32, i64)> {
        let (done, kept): (Vec<Sent>, Vec<Sent>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|s| matches!(s.state, State::Rows(_) | State::Skipped));
        self.list = kept;
        done.into_iter()
            .filter_map(|s| match s.state {
                State::Rows(n) => Some((s.node, s.seq, n)),
                _ => None,
            })
            .collect()
    }

    /// The DT rolled back: nothing sent counts any more.
    pub fn clear(&mut self) {
        self.list.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(seq: u32, what: &str) -> SentOutcome {
        SentOutcome {
            seq,
            result: SentResult::Failed(DgError::Unsupported(what.into())),
        }
    }

    fn rows(seq: u32, n: i64) -> SentOutcome {
        SentOutcome {
            seq,
            result: SentResult::Rows(n),
        }
    }

    fn message(e: Option<DgError>) -> Option<String> {
        e.map(|e| e.message())
    }

    #[test]
    fn the_earliest_failure_is_raised() {
        let mut s = Sends::default();
        let a = s.add("n1", 1);
        let b = s.add("n2", 1);
        let c = s.add("n1", 1);
        assert_eq!((a, b, c), (1, 2, 3));
        s.settle(vec![rows(1, 1), failed(2, "second")]);
        s.settle(vec![failed(3, "third")]);
        assert_eq!(message(s.error()).as_deref(), Some("second"));
    }

    #[test]
    fn a_subtransaction_end_covers_what_was_sent_in_it() {
        let mut s = Sends::default();
        s.add("n1", 1);
        s.add("n2", 2);
        s.settle(vec![failed(1, "outer")]);
        // The inner block's own sends did not fail: nothing to raise there.
        s.settle(vec![rows(2, 1)]);
        assert!(s.error_at(2).is_none());
        assert_eq!(message(s.error_at(1)).as_deref(), Some("outer"));
        // An inner failure raises the earliest failure of all.
        s.add("n2", 2);
        s.settle(vec![failed(3, "inner")]);
        assert_eq!(message(s.error_at(2)).as_deref(), Some("outer"));
        // Rolled back, the inner sends are gone; the outer failure stays.
        s.rolled_back(2);
        assert!(s.error_at(2).is_none());
        assert_eq!(message(s.error()).as_deref(), Some("outer"));
    }

    #[test]
    fn released_sends_roll_back_with_their_parent() {
        let mut s = Sends::default();
        s.add("n1", 1);
        s.add("n1", 3);
        s.released(3);
        s.rolled_back(2);
        s.settle(vec![rows(1, 4), rows(2, 9)]);
        assert_eq!(s.take_rows(), vec![("n1".to_string(), 1, 4)]);
    }

    #[test]
    fn rows_are_reported_once_in_send_order() {
        let mut s = Sends::default();
        s.add("n2", 1);
        s.add("n1", 1);
        s.add("n1", 1);
        s.settle(vec![rows(2, 5), rows(3, 0), rows(1, 7)]);
        assert_eq!(
            s.take_rows(),
            vec![
                ("n2".to_string(), 1, 7),
                ("n1".to_string(), 2, 5),
                ("n1".to_string(), 3, 0)
            ]
        );
        assert!(s.take_rows().is_empty());
        s.add("n1", 1);
        // Not read yet: kept for the next dist_sync.
        assert!(s.take_rows().is_empty());
        s.forget(4);
        s.settle(vec![rows(4, 1)]);
        assert!(s.take_rows().is_empty());
    }
}

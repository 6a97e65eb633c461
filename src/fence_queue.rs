//! Who may pass the commit fence (src/README.md, "The commit fence").
//!
//! Two classes share the fence: DTs finishing a commit, and consistent
//! snapshots being taken. Members of one class never exclude each other;
//! the two classes exclude each other. Every arrival takes a ticket, and a
//! newcomer may pass only when everyone of the other class is outside and
//! behind it in line. So a run of commits and a run of snapshots take
//! turns in arrival order: a steady stream of either cannot starve the
//! other, and each waits at most for the run ahead of it.

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Class {
    Commit,
    Snapshot,
}

/// Someone at the fence: inside it, or waiting with ticket `ticket`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub class: Class,
    pub inside: bool,
    pub ticket: u64,
}

/// May the waiter of `class` holding `ticket` pass, given everyone else
/// at the fence?
pub fn may_pass(class: Class, ticket: u64, others: impl IntoIterator<Item = Holder>) -> bool {
    others
        .into_iter()
        .all(|o| o.class == class || (!o.inside && o.ticket > ticket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use Class::*;

    /// A fence of holders driven by the rule, as the shared-memory one is.
    #[derive(Default)]
    struct Fence {
        holders: Vec<(u32, Holder)>,
        next: u64,
    }

    impl Fence {
        fn arrive(&mut self, who: u32, class: Class) {
            self.next += 1;
            let h = Holder {
                class,
                inside: false,
                ticket: self.next,
            };
            self.holders.push((who, h));
            self.admit();
        }

        fn leave(&mut self, who: u32) {
            self.holders.retain(|(w, _)| *w != who);
            self.admit();
        }

        /// Lets in every waiter the rule allows (what waking them does).
        fn admit(&mut self) {
            loop {
                let snapshot: Vec<(u32, Holder)> = self.holders.clone();
                let next = snapshot.iter().find(|(w, h)| {
                    !h.inside
                        && may_pass(
                            h.class,
                            h.ticket,
                            snapshot.iter().filter(|(o, _)| o != w).map(|(_, h)| *h),
                        )
                });
                let Some((who, _)) = next else { return };
                let who = *who;
                for (w, h) in self.holders.iter_mut() {
                    if *w == who {
                        h.inside = true;
                    }
                }
            }
        }

        fn inside(&self, who: u32) -> bool {
            self.holders.iter().any(|(w, h)| *w == who && h.inside)
        }
    }

    #[test]
    fn a_class_shares_the_fence_with_itself() {
        let mut f = Fence::default();
        f.arrive(1, Commit);
        f.arrive(2, Commit);
        assert!(f.inside(1) && f.inside(2));
        let mut f = Fence::default();
        f.arrive(1, Snapshot);
        f.arrive(2, Snapshot);
        assert!(f.inside(1) && f.inside(2));
    }

    #[test]
    fn a_snapshot_waits_for_the_commits_inside_and_only_those() {
        let mut f = Fence::default();
        f.arrive(1, Commit);
        f.arrive(2, Snapshot);
        assert!(!f.inside(2));
        // A commit arriving after the snapshot waits behind it.
        f.arrive(3, Commit);
        assert!(!f.inside(3));
        f.leave(1);
        assert!(f.inside(2) && !f.inside(3));
        f.leave(2);
        assert!(f.inside(3));
    }

    #[test]
    fn streams_of_either_class_cannot_starve_the_other() {
        let mut f = Fence::default();
        f.arrive(1, Snapshot);
        f.arrive(2, Commit);
        // Snapshots keep coming while one is inside: they queue behind the
        // waiting commit rather than join the run inside.
        f.arrive(3, Snapshot);
        assert!(f.inside(1) && !f.inside(2) && !f.inside(3));
        f.leave(1);
        assert!(f.inside(2) && !f.inside(3));
        // And commits that keep coming queue behind the waiting snapshot.
        f.arrive(4, Commit);
        assert!(!f.inside(4));
        f.leave(2);
        assert!(f.inside(3) && !f.inside(4));
        f.leave(3);
        assert!(f.inside(4));
    }

    #[test]
    fn waiters_of_one_class_pass_together() {
        let mut f = Fence::default();
        f.arrive(1, Commit);
        f.arrive(2, Snapshot);
        f.arrive(3, Snapshot);
        f.arrive(4, Commit);
        f.leave(1);
        // Both snapshots were in line before the second commit.
        assert!(f.inside(2) && f.inside(3) && !f.inside(4));
    }

    #[test]
    fn a_holder_that_leaves_while_waiting_unblocks_the_line() {
        let mut f = Fence::default();
        f.arrive(1, Snapshot);
        f.arrive(2, Commit);
        f.arrive(3, Snapshot);
        // The commit gives up (an error while it waited).
        f.leave(2);
        assert!(f.inside(3));
    }
}

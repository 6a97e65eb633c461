//! The global wait-for graph, as pure data: which waits form cycles, and
//! which distributed transaction each cycle gives up. Tested without a
//! server.
//!
//! A vertex is a distributed transaction (known by the coordinator backend
//! that runs it: all of its sessions on all nodes are one vertex) or any
//! other session (known by node and pid). Only DT vertices link nodes, so
//! a cycle that spans nodes always passes through one.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The node label of waits observed on the coordinator itself.
pub const COORDINATOR: &str = "";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Vertex {
    /// The DT run by backend `pid` of coordinator `coordinator` (a UUID).
    Dt { coordinator: String, pid: i32 },
    /// A session that is not part of a DT dg can identify.
    Session { node: String, pid: i32 },
}

/// `waiter` waits on `node` for a lock `blocker` holds (or waits for
/// ahead of it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    pub node: String,
    pub waiter: Vertex,
    pub blocker: Vertex,
}

pub struct Cycle {
    /// The waits of the cycle, in order: each blocker waits in the next.
    pub edges: Vec<Edge>,
    /// The DT to give up: the youngest when every DT of the cycle is this
    /// coordinator's (their ages are known); otherwise the greatest by
    /// (coordinator, pid), a choice every coordinator that sees the cycle
    /// makes alike.
    pub victim: Vertex,
    /// This coordinator's youngest DT in the cycle, if it has one.
    pub youngest_own: Option<Vertex>,
}

impl Cycle {
    /// The nodes the cycle passes through, sorted (the coordinator, "",
    /// first).
    pub fn nodes(&self) -> Vec<&str> {
        let set: BTreeSet<&str> = self.edges.iter().map(|e| e.node.as_str()).collect();
        set.into_iter().collect()
    }

    /// The DT vertices of the cycle, sorted; with the victim, a cycle's
    /// identity from one check to the next.
    pub fn dts(&self) -> Vec<&Vertex> {
        let set: BTreeSet<&Vertex> = self
            .edges
            .iter()
            .map(|e| &e.waiter)
            .filter(|v| matches!(v, Vertex::Dt { .. }))
            .collect();
        set.into_iter().collect()
    }
}

/// Every cycle through a DT, each broken by removing its victim before
/// the next is looked for, so one victim never stands for two cycles it
/// does not break. `own` is this coordinator's UUID; `started` gives the
/// start time of this coordinator's DTs. Deterministic: vertices are
/// visited in order.
pub fn cycles(edges: &[Edge], own: &str, started: &dyn Fn(&Vertex) -> Option<i64>) -> Vec<Cycle> {
    let mut adjacent: BTreeMap<&Vertex, BTreeMap<&Vertex, &str>> = BTreeMap::new();
    for e in edges {
        adjacent
            .entry(&e.waiter)
            .or_default()
            .entry(&e.blocker)
            .or_insert(&e.node);
    }
    let starts: Vec<&Vertex> = adjacent
        .keys()
        .copied()
        .filter(|v| matches!(v, Vertex::Dt { .. }))
        .collect();
    let mut removed: BTreeSet<&Vertex> = BTreeSet::new();
    let mut found = Vec::new();
    while let Some(path) = starts
        .iter()
        .filter(|v| !removed.contains(*v))
        .find_map(|v| shortest_cycle(&adjacent, &removed, v))
    {
        let cycle = judge(path, own, started);
        removed.insert(
            adjacent
                .keys()
                .copied()
                .find(|v| **v == cycle.victim)
                .expect("the victim is a waiter of the graph"),
        );
        found.push(cycle);
    }
    found
}

/// The shortest cycle from `start` back to itself avoiding `removed`
/// (breadth first), as edges.
fn shortest_cycle(
    adjacent: &BTreeMap<&Vertex, BTreeMap<&Vertex, &str>>,
    removed: &BTreeSet<&Vertex>,
    start: &Vertex,
) -> Option<Vec<Edge>> {
    let mut parent: BTreeMap<&Vertex, (&Vertex, &str)> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(u) = queue.pop_front() {
        for (w, node) in adjacent.get(u).into_iter().flatten() {
            if removed.contains(w) {
                continue;
            }
            if *w == start {
                let mut path = vec![edge(node, u, start)];
                let mut at = u;
                while at != start {
                    let (p, n) = parent[at];
                    path.push(edge(n, p, at));
                    at = p;
                }
                path.reverse();
                return Some(path);
            }
            if !parent.contains_key(w) && *w != start {
                parent.insert(w, (u, node));
                queue.push_back(w);
            }
        }
    }
    None
}

fn edge(node: &str, waiter: &Vertex, blocker: &Vertex) -> Edge {
    Edge {
        node: node.to_string(),
        waiter: waiter.clone(),
        blocker: blocker.clone(),
    }
}

fn judge(edges: Vec<Edge>, own: &str, started: &dyn Fn(&Vertex) -> Option<i64>) -> Cycle {
    let dts: Vec<&Vertex> = edges
        .iter()
        .map(|e| &e.waiter)
        .filter(|v| matches!(v, Vertex::Dt { .. }))
        .collect();
    let is_own = |v: &Vertex| matches!(v, Vertex::Dt { coordinator, .. } if coordinator == own);
    let age_key = |v: &&Vertex| (started(v).unwrap_or(i64::MIN), (*v).clone());
    let youngest_own = dts
        .iter()
        .copied()
        .filter(|v| is_own(v))
        .max_by_key(age_key)
        .cloned();
    let victim = if dts.iter().all(|v| is_own(v)) {
        youngest_own.clone()
    } else {
        dts.iter().copied().max().cloned()
    }
    .expect("a cycle found from a DT has one");
    Cycle {
        edges,
        victim,
        youngest_own,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "c1";

    fn dt(pid: i32) -> Vertex {
        dt_of(OWN, pid)
    }

    fn dt_of(coordinator: &str, pid: i32) -> Vertex {
        Vertex::Dt {
            coordinator: coordinator.into(),
            pid,
        }
    }

    fn session(node: &str, pid: i32) -> Vertex {
        Vertex::Session {
            node: node.into(),
            pid,
        }
    }

    fn e(node: &str, waiter: Vertex, blocker: Vertex) -> Edge {
        Edge {
            node: node.into(),
            waiter,
            blocker,
        }
    }

    /// DT pid `p` started at time `p`: a higher pid is younger.
    fn by_pid(v: &Vertex) -> Option<i64> {
        match v {
            Vertex::Dt { coordinator, pid } if coordinator == OWN => Some(*pid as i64),
            _ => None,
        }
    }

    #[test]
    fn no_waits_no_cycles() {
        assert!(cycles(&[], OWN, &by_pid).is_empty());
    }

    #[test]
    fn a_chain_is_no_cycle() {
        let edges = [
            e("a", dt(1), dt(2)),
            e("b", dt(2), dt(3)),
            e("b", dt(3), session("b", 9)),
        ];
        assert!(cycles(&edges, OWN, &by_pid).is_empty());
    }

    #[test]
    fn two_node_cycle_gives_up_the_youngest() {
        let edges = [e("a", dt(1), dt(2)), e("b", dt(2), dt(1))];
        let found = cycles(&edges, OWN, &by_pid);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].victim, dt(2));
        assert_eq!(found[0].nodes(), ["a", "b"]);
        assert_eq!(found[0].edges.len(), 2);
    }

    #[test]
    fn age_decides_not_pid() {
        let edges = [e("a", dt(1), dt(2)), e("b", dt(2), dt(1))];
        let older_pid_2 = |v: &Vertex| match v {
            Vertex::Dt { pid: 2, .. } => Some(0),
            _ => Some(5),
        };
        assert_eq!(cycles(&edges, OWN, &older_pid_2)[0].victim, dt(1));
    }

    #[test]
    fn three_node_cycle_through_sessions_and_the_coordinator() {
        // 1 waits on a for a plain session that waits there for 2; 2 waits
        // on the coordinator for 3; 3 waits on c for 1.
        let edges = [
            e("a", dt(1), session("a", 50)),
            e("a", session("a", 50), dt(2)),
            e(COORDINATOR, dt(2), dt(3)),
            e("c", dt(3), dt(1)),
            e("c", session("c", 7), dt(1)),
        ];
        let found = cycles(&edges, OWN, &by_pid);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].victim, dt(3));
        assert_eq!(found[0].nodes(), [COORDINATOR, "a", "c"]);
        assert_eq!(found[0].dts(), [&dt(1), &dt(2), &dt(3)]);
    }

    #[test]
    fn a_dt_waiting_for_itself_is_a_cycle() {
        let found = cycles(&[e("a", dt(4), dt(4))], OWN, &by_pid);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].victim, dt(4));
    }

    #[test]
    fn a_local_cycle_of_sessions_is_left_to_postgres() {
        let edges = [
            e("a", session("a", 1), session("a", 2)),
            e("a", session("a", 2), session("a", 1)),
        ];
        assert!(cycles(&edges, OWN, &by_pid).is_empty());
    }

    #[test]
    fn one_victim_per_cycle_and_none_twice() {
        // Two cycles sharing DT 3, the youngest: giving it up breaks both.
        let edges = [
            e("a", dt(1), dt(3)),
            e("b", dt(3), dt(1)),
            e("a", dt(2), dt(3)),
            e("c", dt(3), dt(2)),
        ];
        let found = cycles(&edges, OWN, &by_pid);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].victim, dt(3));
        // Two disjoint cycles: two victims.
        let edges = [
            e("a", dt(1), dt(2)),
            e("b", dt(2), dt(1)),
            e("a", dt(5), dt(6)),
            e("b", dt(6), dt(5)),
        ];
        let victims: Vec<Vertex> = cycles(&edges, OWN, &by_pid)
            .into_iter()
            .map(|c| c.victim)
            .collect();
        assert_eq!(victims, [dt(2), dt(6)]);
    }

    #[test]
    fn a_cycle_with_another_coordinator_agrees_on_its_victim() {
        let edges = [e("a", dt(1), dt_of("c2", 9)), e("b", dt_of("c2", 9), dt(1))];
        let found = cycles(&edges, OWN, &by_pid);
        assert_eq!(found[0].victim, dt_of("c2", 9));
        assert_eq!(found[0].youngest_own, Some(dt(1)));
        // Seen from c2, the same cycle gives up the same DT.
        let theirs = |v: &Vertex| match v {
            Vertex::Dt { coordinator, .. } if coordinator == "c2" => Some(0),
            _ => None,
        };
        assert_eq!(cycles(&edges, "c2", &theirs)[0].victim, dt_of("c2", 9));
    }

    #[test]
    fn deterministic() {
        let edges = [
            e("b", dt(2), dt(1)),
            e("a", dt(1), dt(2)),
            e("a", dt(1), dt(3)),
            e("c", dt(3), dt(1)),
        ];
        let run = |edges: &[Edge]| -> Vec<(Vertex, Vec<String>)> {
            cycles(edges, OWN, &by_pid)
                .into_iter()
                .map(|c| {
                    (
                        c.victim.clone(),
                        c.nodes().iter().map(|n| n.to_string()).collect(),
                    )
                })
                .collect()
        };
        let mut reversed = edges.to_vec();
        reversed.reverse();
        assert_eq!(run(&edges), run(&reversed));
    }
}

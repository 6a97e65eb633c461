//! Distributed deadlock detection. Two DTs that lock rows on two nodes in
//! opposite orders wait for each other, but each node sees one plain wait
//! and no cycle. A detector worker per database (`detector`, started by the
//! first DT there through the registry, gone when DTs are) collects the
//! lock waits of the coordinator and of every node, builds the global
//! wait-for graph (`graph`, pure), and asks the youngest DT of each cycle
//! to give up; `victim` is how the chosen backend learns it and raises
//! 40P01. The design: src/README.md, "Deadlock detection".

pub mod detector;
pub mod graph;
pub mod victim;

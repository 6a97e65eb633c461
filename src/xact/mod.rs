//! Distributed transactions: the pure state machine (`state`), one
//! participant (`participant`), the statements `dg.dist_send` queued
//! (`sends`), one DT and its protocol steps (`dt`), the
//! session's DT and its scopes (`session`, what the SQL functions call),
//! and the transaction callbacks that end it (`callbacks`). The life
//! cycles and the commit protocol are told in src/README.md.

pub mod callbacks;
mod dt;
mod participant;
mod sends;
pub mod session;
pub mod state;
pub mod statement;

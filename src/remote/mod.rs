//! Everything that talks to peers over libpq.

pub mod cache;
pub mod connection;
pub mod libpq;
pub mod wait;

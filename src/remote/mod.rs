//! libpq for backends: connect requests, connections, the per-backend
//! cache, interruptible waits, and the only raw libpq code (`libpq`). It
//! imports nothing of dg but `error`, `gucs` and `stats`; it knows no DT,
//! resolver or detector (src/README.md, "Layers").

pub mod cache;
pub mod connection;
pub mod libpq;
pub mod target;
pub mod wait;

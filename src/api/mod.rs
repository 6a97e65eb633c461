//! The SQL surface: the `dist_*` functions (`dist`, `query`), monitoring
//! and recovery (`monitor`), consistent restore points (`restore`), and
//! the argument and caller checks they share (`guards`). The top layer:
//! nothing below imports it.

mod check;
mod dist;
mod guards;
mod monitor;
mod query;
mod restore;

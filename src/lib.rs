//! dg: one PostgreSQL node coordinates atomic transactions across others.
//!
//! `_PG_init` refuses to load unless dg is preloaded (its transaction
//! callbacks, shared memory and resolver worker must exist in every
//! backend from the start), then sets up each part, lowest layer first.
//! The layers and the design: src/README.md.

use pgrx::prelude::*;

mod api;
mod catalog;
mod deadlock;
mod error;
mod faults;
mod fdw;
mod fence;
mod fence_queue;
mod gid;
mod gucs;
mod recovery;
mod registry;
mod remote;
mod session_name;
mod stats;
mod visibility;
mod wakeup;
mod xact;

#[cfg(any(test, feature = "pg_test"))]
mod tests;

pgrx::pg_module_magic!();

extension_sql_file!("../sql/dg.sql", name = "dg_schema", finalize);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // SAFETY: reads a postmaster-set flag.
    if !unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        ereport!(
            ERROR,
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            "dg must be loaded via shared_preload_libraries",
            "Add dg to shared_preload_libraries in postgresql.conf and restart the server."
        );
    }
    gucs::init();
    #[cfg(feature = "fault_injection")]
    faults::init();
    stats::init();
    registry::init();
    fence::init();
    wakeup::init();
    remote::cache::init();
    xact::callbacks::init();
    deadlock::victim::init();
    recovery::worker::init();
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec!["shared_preload_libraries = 'dg'"]
    }
}

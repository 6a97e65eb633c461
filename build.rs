//! Links the libpq of the PostgreSQL dg is built for, and tells the code
//! what that libpq offers (src/README.md, "PostgreSQL versions").
//!
//! libpq-sys links whatever `pg_config` is first on PATH (Debian's 15
//! here). A build for another major must use that tree's own libpq: its
//! server loads it (scripts/lib.sh puts the tree's `lib/` on the library
//! path), and from 17 on it has the non-blocking cancel
//! (`PQcancelCreate`), which dg then uses instead of a thread. So this
//! finds the `pg_config` pgrx builds against, as pgrx does
//! (`PGRX_PG_CONFIG_PATH`, else the `pgNN` entry of `$PGRX_HOME/config.toml`
//! for the enabled `pgNN` feature), puts its `--libdir` first on the link
//! path, and sets `cfg(libpq_cancel_poll)` when its version is 17 or newer.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(libpq_cancel_poll)");
    println!("cargo:rerun-if-env-changed=PGRX_PG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=PGRX_HOME");
    let Some(pg_config) = pg_config() else {
        // Without a pg_config pgrx cannot build either; keep libpq-sys's
        // choice and the thread-based cancel, which every libpq has.
        return;
    };
    if let Some(libdir) = ask(&pg_config, "--libdir") {
        println!("cargo:rustc-link-search=native={libdir}");
        // And the same libpq at run time, also where the environment does
        // not say (`sudo` drops LD_LIBRARY_PATH, so `cargo pgrx test
        // --runas` starts its server without it): a run path, which
        // LD_LIBRARY_PATH still overrides. An installation whose libpq is
        // elsewhere finds none there and falls back to the default search.
        println!("cargo:rustc-cdylib-link-arg=-Wl,-rpath,{libdir}");
    }
    // "PostgreSQL 17.11" (or "PostgreSQL 18devel"): the major is what
    // counts; the tree's libpq is of the same release.
    let major = ask(&pg_config, "--version").and_then(|v| {
        let digits: String = v
            .trim_start_matches("PostgreSQL ")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse::<u32>().ok()
    });
    if major.is_some_and(|m| m >= 17) {
        println!("cargo:rustc-cfg=libpq_cancel_poll");
    }
}

/// The pg_config pgrx builds against.
fn pg_config() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("PGRX_PG_CONFIG_PATH") {
        return Some(PathBuf::from(p));
    }
    let feature = ["13", "14", "15", "16", "17", "18"]
        .into_iter()
        .find(|m| std::env::var_os(format!("CARGO_FEATURE_PG{m}")).is_some())?;
    let home = match std::env::var_os("PGRX_HOME") {
        Some(h) => PathBuf::from(h),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".pgrx"),
    };
    let config = home.join("config.toml");
    println!("cargo:rerun-if-changed={}", config.display());
    // `[configs]` lines are `pgNN = "path"`; nothing else in the file
    // starts with the label.
    let label = format!("pg{feature}");
    std::fs::read_to_string(config)
        .ok()?
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once('=')?;
            (key.trim() == label).then(|| PathBuf::from(value.trim().trim_matches('"')))
        })
}

fn ask(pg_config: &PathBuf, arg: &str) -> Option<String> {
    let out = Command::new(pg_config).arg(arg).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

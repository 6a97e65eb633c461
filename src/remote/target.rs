//! A connect request: everything `connection` needs to open a session on a
//! node and `cache` needs to find or invalidate one. `fdw` builds it from
//! the catalogs; nothing in `remote/` reads a catalog itself. It carries
//! the libpq options, secrets included, so it is never printed and no
//! error is built from it.

use pgrx::pg_sys::Oid;
use std::time::Duration;

pub struct Target {
    /// The node (foreign server) name, for messages.
    pub node: String,
    /// The foreign server: with a remote backend pid, what identifies one
    /// of this coordinator's sessions to its deadlock detector.
    pub server: Oid,
    /// The user mapping whose credentials connect: the cache key.
    pub mapping: Oid,
    /// Syscache hash values of the server and the mapping, matched by
    /// the invalidation callback.
    pub server_hash: u32,
    pub mapping_hash: u32,
    /// The connection must have used the mapping's password
    /// (postgres_fdw's rule for non-superusers).
    pub password_required: bool,
    /// libpq keywords and values, complete.
    pub options: Vec<(String, String)>,
}

impl Target {
    /// The node's own `connect_timeout` option, read as libpq reads it
    /// (whole seconds; 0, negative or absent is no limit; under 2 is 2).
    /// libpq enforces it only in its blocking connect, and dg connects
    /// without blocking, so `Connection::open` applies it.
    pub fn connect_timeout(&self) -> Option<Duration> {
        option_timeout(&self.options)
    }
}

fn option_timeout(options: &[(String, String)]) -> Option<Duration> {
    let (_, value) = options.iter().rev().find(|(k, _)| k == "connect_timeout")?;
    let secs: i64 = value.trim().parse().ok()?;
    (secs > 0).then(|| Duration::from_secs(secs.max(2) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeout(v: &str) -> Option<Duration> {
        option_timeout(&[
            ("host".into(), "h".into()),
            ("connect_timeout".into(), v.into()),
        ])
    }

    #[test]
    fn connect_timeout_as_libpq_reads_it() {
        assert_eq!(timeout("5"), Some(Duration::from_secs(5)));
        assert_eq!(timeout(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(timeout("1"), Some(Duration::from_secs(2)));
        assert_eq!(timeout("0"), None);
        assert_eq!(timeout("-3"), None);
        assert_eq!(timeout("soon"), None);
        assert_eq!(option_timeout(&[("host".into(), "h".into())]), None);
    }
}

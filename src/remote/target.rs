//! A connect request: everything `connection` needs to open a session on a
//! node and `cache` needs to find or invalidate one. `fdw` builds it from
//! the catalogs; nothing in `remote/` reads a catalog itself. It carries
//! the libpq options, secrets included, so it is never printed and no
//! error is built from it.

use pgrx::pg_sys::Oid;

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

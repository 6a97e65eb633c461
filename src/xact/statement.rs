//! One user statement for a node, as the SQL functions hand it to the DT.

use crate::remote::libpq::PgResult;

pub struct Statement<'a> {
    pub node: &'a str,
    pub sql: &'a str,
    /// Text parameters; `None` is SQL NULL. Never spliced into `sql`.
    pub params: &'a [Option<String>],
    /// Where the rows of a query go (`dist_query`), one result per row;
    /// `None` for a statement run for its effect (`dist_exec`), which
    /// counts as a write.
    pub rows: Option<&'a mut dyn FnMut(&PgResult)>,
}

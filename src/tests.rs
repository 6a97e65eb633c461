//! In-server tests (`cargo pgrx test`): what needs a running PostgreSQL but
//! no peer. Commit paths cannot be tested here (each test's transaction is
//! rolled back); pg_regress and tests/ cover them.

#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    #[pg_test]
    fn coordinator_id_is_a_uuid() {
        let id = crate::catalog::coordinator_id();
        assert_eq!(id.len(), 36);
        assert_eq!(
            Some(id.clone()),
            Spi::get_one::<String>("SELECT id::text FROM dg.coordinator").unwrap()
        );
    }

    /// DROP and CREATE EXTENSION in a session make a new dg.coordinator
    /// with a new id; the cached id must follow (its key is the table).
    #[pg_test]
    fn coordinator_id_follows_a_new_coordinator_table() {
        let old = crate::catalog::coordinator_id();
        Spi::run("ALTER TABLE dg.coordinator RENAME TO coordinator_before").unwrap();
        Spi::run("CREATE TABLE dg.coordinator AS SELECT gen_random_uuid() AS id").unwrap();
        let new = crate::catalog::coordinator_id();
        assert_ne!(new, old);
        assert_eq!(
            Some(new),
            Spi::get_one::<String>("SELECT id::text FROM dg.coordinator").unwrap()
        );
    }

    #[pg_test(error = "a distributed transaction is already in progress")]
    fn dist_begin_twice_is_refused() {
        Spi::run("SELECT dg.dist_begin()").unwrap();
        Spi::run("SELECT dg.dist_begin()").unwrap();
    }

    #[pg_test]
    fn validator_knows_libpq_keywords() {
        Spi::run("CREATE SERVER t_ok FOREIGN DATA WRAPPER dg OPTIONS (host 'localhost', port '1', dbname 'x')").unwrap();
        Spi::run("CREATE USER MAPPING FOR PUBLIC SERVER t_ok OPTIONS (user 'u', password 'p')")
            .unwrap();
        assert_eq!(
            Spi::get_one::<i64>("SELECT count(*) FROM dg.nodes WHERE node = 't_ok'").unwrap(),
            Some(1)
        );
    }

    #[pg_test(error = "invalid option \"bogus\"")]
    fn validator_rejects_unknown() {
        Spi::run("CREATE SERVER t_bad FOREIGN DATA WRAPPER dg OPTIONS (bogus '1')").unwrap();
    }

    #[pg_test(error = "invalid option \"password\"")]
    fn validator_keeps_password_off_servers() {
        Spi::run("CREATE SERVER t_pw FOREIGN DATA WRAPPER dg OPTIONS (password 'x')").unwrap();
    }
}

-- dg 0.1.0 -> 0.2.0. ALTER EXTENSION dg UPDATE runs this; the catalog it
-- leaves must equal a fresh CREATE EXTENSION of 0.2.0 (sql/dg.sql), which
-- tests/tests/upgrade.rs checks object by object. Every change to
-- sql/dg.sql in this release comes here too.

-- 0.2.0 changes no SQL object yet: the release is the restructured code
-- behind the same functions.

-- dblink and postgres_fdw, the bench's baselines, load and reach a peer.
-- Both use libpq: a server of a wheel tree (scripts/pg.sh) must load its
-- own tree's libpq (scripts/lib.sh puts the tree's lib/ on the library
-- path), or loading them fails on 17 and later (undefined symbol
-- PQcancelStart, from the system's libpq 15).
\getenv peer1_port DG_REGRESS_PEER1_PORT
CREATE EXTENSION dblink;
SELECT * FROM dblink(format('host=127.0.0.1 port=%s dbname=regress_peer user=postgres', :'peer1_port'),
                     'SELECT current_database(), count(*) FROM accounts') AS t(db name, n bigint);
-- postgres_fdw's own connection (nodes created the extension and the
-- server pgfdw_peer).
CREATE FOREIGN TABLE pgfdw_accounts (id int, balance bigint)
    SERVER pgfdw_peer OPTIONS (table_name 'accounts');
SELECT count(*) FROM pgfdw_accounts;
DROP FOREIGN TABLE pgfdw_accounts;
DROP EXTENSION dblink;

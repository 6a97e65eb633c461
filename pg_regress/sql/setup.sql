-- dg's pg_regress suite runs against a coordinator and three peers that
-- scripts/regress.sh starts: peer1 and peer2 with prepared
-- transactions enabled, peer_noprep with max_prepared_transactions = 0.
-- Their ports come from regress.sh's environment (they move per major).
CREATE EXTENSION dg;
-- (not \dx: its columns differ between majors)
SELECT extname, extversion, extnamespace::regnamespace AS schema FROM pg_extension WHERE extname = 'dg';

\getenv peer1_port DG_REGRESS_PEER1_PORT
\getenv peer2_port DG_REGRESS_PEER2_PORT
\getenv peer_noprep_port DG_REGRESS_PEER_NOPREP_PORT
CREATE SERVER peer1 FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'peer1_port', dbname 'regress_peer');
CREATE SERVER peer2 FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'peer2_port', dbname 'regress_peer');
CREATE SERVER peer_noprep FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'peer_noprep_port', dbname 'regress_peer');
CREATE USER MAPPING FOR PUBLIC SERVER peer1 OPTIONS (user 'postgres');
CREATE USER MAPPING FOR PUBLIC SERVER peer2 OPTIONS (user 'postgres');
CREATE USER MAPPING FOR PUBLIC SERVER peer_noprep OPTIONS (user 'postgres');

-- Peer tables, made through dg itself: DDL runs in the DT like anything else.
SELECT dg.dist_exec('peer1', 'CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)');
SELECT dg.dist_exec('peer2', 'CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)');
SELECT dg.dist_exec('peer_noprep', 'CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)');
SELECT dg.dist_exec('peer1', 'INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 5) g');
SELECT dg.dist_exec('peer2', 'INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 5) g');

-- A view of both peers' balances, used by the other files.
CREATE FUNCTION balances() RETURNS TABLE (node text, id int, balance bigint)
LANGUAGE sql AS $$
    SELECT 'peer1', * FROM dg.dist_query('peer1', 'SELECT id, balance FROM accounts ORDER BY id')
        AS t(id int, balance bigint)
    UNION ALL
    SELECT 'peer2', * FROM dg.dist_query('peer2', 'SELECT id, balance FROM accounts ORDER BY id')
        AS t(id int, balance bigint)
$$;
SELECT * FROM balances();

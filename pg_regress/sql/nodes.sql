-- Nodes are foreign servers; the validator accepts libpq keywords only,
-- each on its side (server or user mapping).
-- (terse: the HINT lists the linked libpq's keywords, which grow with
-- each major; server_messages shows it whole)
\set VERBOSITY terse
CREATE SERVER bad FOREIGN DATA WRAPPER dg OPTIONS (hots 'x');
\set VERBOSITY default
CREATE SERVER bad FOREIGN DATA WRAPPER dg OPTIONS (user 'x');
CREATE SERVER bad FOREIGN DATA WRAPPER dg OPTIONS (password 'x');
\set VERBOSITY terse
CREATE SERVER bad FOREIGN DATA WRAPPER dg OPTIONS (client_encoding 'UTF8');
\set VERBOSITY default
ALTER USER MAPPING FOR PUBLIC SERVER peer1 OPTIONS (ADD host 'x');
ALTER USER MAPPING FOR PUBLIC SERVER peer1 OPTIONS (ADD password_required 'maybe');
CREATE FOREIGN DATA WRAPPER dg2 VALIDATOR dg.dg_fdw_validator OPTIONS (host 'x');

-- dg.nodes lists dg and postgres_fdw servers, never a password.
CREATE ROLE regress_dg_alice LOGIN;
CREATE USER MAPPING FOR regress_dg_alice SERVER peer1
    OPTIONS (user 'postgres', password 'very-secret');
CREATE EXTENSION postgres_fdw;
\getenv peer1_port DG_REGRESS_PEER1_PORT
CREATE SERVER pgfdw_peer FOREIGN DATA WRAPPER postgres_fdw
    OPTIONS (host '127.0.0.1', port :'peer1_port', dbname 'regress_peer', fetch_size '500');
CREATE USER MAPPING FOR PUBLIC SERVER pgfdw_peer OPTIONS (user 'postgres');
-- (the ports move per major, so they are masked)
SELECT node, wrapper, regexp_replace(options::text, 'port=[0-9]+', 'port=N') AS options,
       remote_user, usable FROM dg.nodes ORDER BY node;
SELECT count(*) AS rows_mentioning_password
FROM dg.nodes WHERE nodes::text LIKE '%very-secret%';

-- A postgres_fdw server works as a node; its own options (fetch_size) are
-- not passed to libpq.
SELECT * FROM dg.dist_query('pgfdw_peer', 'SELECT count(*) FROM accounts') AS t(n bigint);

-- Lookup errors.
SELECT dg.dist_exec('nosuch', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
CREATE EXTENSION file_fdw;
CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
SELECT dg.dist_exec('files', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE

-- Security: nodes are used as the current role, through its user mapping.
GRANT USAGE ON SCHEMA public TO regress_dg_alice;
SET ROLE regress_dg_alice;
SELECT dg.dist_exec('peer2', 'SELECT 1');   -- no USAGE on peer2
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT USAGE ON FOREIGN SERVER peer2 TO regress_dg_alice;
SET ROLE regress_dg_alice;
SELECT dg.dist_exec('peer2', 'SELECT 1');   -- PUBLIC mapping has no password
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
GRANT USAGE ON FOREIGN SERVER peer1 TO regress_dg_alice;
SET ROLE regress_dg_alice;
-- alice's own mapping has a password, but the peer trusts loopback and
-- never asks for it: a non-superuser may not borrow that trust.
SELECT dg.dist_exec('peer1', 'SELECT 1');
RESET ROLE;
SET ROLE regress_dg_alice;
CREATE USER MAPPING FOR regress_dg_alice SERVER peer2 OPTIONS (user 'postgres', password_required 'false');
RESET ROLE;
-- A superuser may waive the password for a mapping.
CREATE USER MAPPING FOR regress_dg_alice SERVER peer2 OPTIONS (user 'postgres', password_required 'false');
SET ROLE regress_dg_alice;
SELECT * FROM dg.dist_query('peer2', 'SELECT current_user') AS t(u name);
RESET ROLE;

-- A connection a superuser opened through a PUBLIC mapping is not handed
-- to a non-superuser unless the peer asked for the password.
CREATE SERVER peer1_shared FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'peer1_port', dbname 'regress_peer');
CREATE USER MAPPING FOR PUBLIC SERVER peer1_shared OPTIONS (user 'postgres', password 'unused');
GRANT USAGE ON FOREIGN SERVER peer1_shared TO regress_dg_alice;
SELECT * FROM dg.dist_query('peer1_shared', 'SELECT 1') AS t(one int);
SELECT node, state FROM dg.connections() WHERE node = 'peer1_shared';
SET ROLE regress_dg_alice;
SELECT * FROM dg.dist_query('peer1_shared', 'SELECT 1') AS t(one int);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP SERVER peer1_shared CASCADE;

DROP USER MAPPING FOR regress_dg_alice SERVER peer1;
DROP USER MAPPING FOR regress_dg_alice SERVER peer2;
REVOKE ALL ON FOREIGN SERVER peer1, peer2 FROM regress_dg_alice;
REVOKE ALL ON SCHEMA public FROM regress_dg_alice;
DROP ROLE regress_dg_alice;
DROP SERVER files;
DROP EXTENSION file_fdw;

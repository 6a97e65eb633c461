-- dg.create_restore_point(): a restore point on the coordinator (node
-- NULL) and on every node, under the commit fence (README, "Consistent
-- restore (PITR)"). In a database of its own, so the nodes it reaches are
-- exactly peer1 and peer2 (the suite's other servers include ones that
-- cannot make one). LSNs differ per run: only their presence is shown.
\getenv peer1_port DG_REGRESS_PEER1_PORT
\getenv peer2_port DG_REGRESS_PEER2_PORT
\getenv standby_port DG_REGRESS_STANDBY_PORT
CREATE DATABASE dg_regress_restore;
\c dg_regress_restore
SET client_min_messages = warning;
CREATE EXTENSION dg;
RESET client_min_messages;
CREATE SERVER peer1 FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'peer1_port', dbname 'regress_peer');
CREATE SERVER peer2 FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'peer2_port', dbname 'regress_peer');
CREATE USER MAPPING FOR PUBLIC SERVER peer1 OPTIONS (user 'postgres');
CREATE USER MAPPING FOR PUBLIC SERVER peer2 OPTIONS (user 'postgres');

-- One row per place, the coordinator first.
SELECT node, lsn IS NOT NULL AND lsn > '0/0' AS made
FROM dg.create_restore_point('regress_point');
-- Allowed in a transaction block, as pg_create_restore_point is; the
-- fence is released when it returns, so a commit of the block's own DT
-- (two nodes: two-phase, which passes the fence) does not wait for it.
BEGIN;
SELECT count(*) FROM dg.create_restore_point('regress_point_in_block');
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance WHERE id = 1');
SELECT dg.dist_exec('peer2', 'UPDATE accounts SET balance = balance WHERE id = 1');
COMMIT;

-- NULL name.
SELECT * FROM dg.create_restore_point(NULL);
-- Too long a name: pg_create_restore_point's own check.
SELECT * FROM dg.create_restore_point(repeat('x', 64));

-- Not for other roles: EXECUTE is revoked from PUBLIC, and a grant does not
-- let a non-superuser in either.
CREATE ROLE regress_dg_erin;
SET ROLE regress_dg_erin;
SELECT * FROM dg.create_restore_point('nope');
RESET ROLE;
GRANT EXECUTE ON FUNCTION dg.create_restore_point(text) TO regress_dg_erin;
SET ROLE regress_dg_erin;
SELECT * FROM dg.create_restore_point('nope');
\set VERBOSITY sqlstate
SELECT * FROM dg.create_restore_point('nope');
\set VERBOSITY default
RESET ROLE;
REVOKE EXECUTE ON FUNCTION dg.create_restore_point(text) FROM regress_dg_erin;
DROP ROLE regress_dg_erin;

-- A node that cannot make one (a hot standby): its error comes back with
-- its SQLSTATE and names the node; the points made elsewhere are harmless.
CREATE SERVER standby FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'standby_port', dbname 'regress_peer');
CREATE USER MAPPING FOR PUBLIC SERVER standby OPTIONS (user 'postgres');
\set VERBOSITY sqlstate
SELECT * FROM dg.create_restore_point('regress_point_standby');
\set VERBOSITY default
SELECT * FROM dg.create_restore_point('regress_point_standby');

\c dg_regress
-- (FORCE: the deadlock detector of that database may linger for a moment.)
DROP DATABASE dg_regress_restore WITH (FORCE);

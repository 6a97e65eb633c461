-- Privileges: what a role without superuser may and may not do with dg.
CREATE ROLE regress_dg_carol;
SET ROLE regress_dg_carol;
-- dg's own tables are superuser-only, for reading and for writing.
SELECT * FROM dg.decisions;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO dg.decisions (xid, dt_id) VALUES (1, 'forged');
UPDATE dg.decisions SET dt_id = 'forged';
DELETE FROM dg.decisions;
SELECT * FROM dg.coordinator;
UPDATE dg.coordinator SET id = gen_random_uuid();
DELETE FROM dg.coordinator;
-- So are the recovery functions.
SELECT * FROM dg.recover();
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM dg.in_doubt_transactions();
SELECT * FROM dg.in_doubt;
SELECT dg.resolve('peer1', 'x', false);
-- Without USAGE on a server, it is not usable.
SELECT node, usable FROM dg.nodes ORDER BY node;
SELECT dg.dist_exec('peer1', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM dg.dist_query('peer1', 'SELECT 1') AS t(x int);
-- What every role may use.
SELECT state FROM dg.dist_status();
SELECT count(*) FROM dg.connections();
SELECT committed_2pc >= 0 AS readable FROM dg.stats;
RESET ROLE;
-- A grant of EXECUTE does not open the recovery functions to a
-- non-superuser: they finish other roles' transactions.
GRANT EXECUTE ON FUNCTION dg.recover(), dg.in_doubt_transactions(), dg.resolve(name, text, boolean)
    TO regress_dg_carol;
SET ROLE regress_dg_carol;
SELECT * FROM dg.recover();
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM dg.in_doubt_transactions();
SELECT dg.resolve('peer1', 'x', false);
RESET ROLE;
REVOKE ALL ON FUNCTION dg.recover(), dg.in_doubt_transactions(), dg.resolve(name, text, boolean)
    FROM regress_dg_carol;
DROP ROLE regress_dg_carol;

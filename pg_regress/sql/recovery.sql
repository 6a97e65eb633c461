-- Recovery by hand: dg.in_doubt, dg.recover() and dg.resolve(). In-doubt
-- transactions are made the way a coordinator crash leaves them: a
-- transaction prepared on a peer under this coordinator database's GID
-- prefix, here pushed through dist_exec in a block that then aborts.
SELECT dg.dist_exec('peer1', 'CREATE TABLE recovered (id int)');
SELECT dg.dist_exec('peer2', 'CREATE TABLE recovered (id int)');
CREATE FUNCTION test_gid(node name, xid bigint) RETURNS text LANGUAGE sql AS $$
    SELECT format('dg_%s_%s_%s_%s', (SELECT id FROM dg.coordinator),
                  (SELECT oid FROM pg_database WHERE datname = current_database()),
                  xid, (SELECT umid FROM pg_user_mappings WHERE srvname = node))
$$;
CREATE FUNCTION recovered() RETURNS TABLE (node text, ids int[]) LANGUAGE sql AS $$
    SELECT 'peer1', ids FROM dg.dist_query('peer1', 'SELECT array_agg(id ORDER BY id) FROM recovered') AS t(ids int[])
    UNION ALL
    SELECT 'peer2', ids FROM dg.dist_query('peer2', 'SELECT array_agg(id ORDER BY id) FROM recovered') AS t(ids int[])
$$;

-- The earlier files' two-phase commits left decision rows.
SELECT count(*) > 0 AS has_decisions FROM dg.decisions;

-- Local transactions 3 and 4 finished long ago; 4 left a decision row.
INSERT INTO dg.decisions (xid, dt_id) VALUES (4, 'decided');
BEGIN;
SELECT dg.dist_exec('peer1', 'INSERT INTO recovered VALUES (3)');
SELECT dg.dist_exec('peer1', format('PREPARE TRANSACTION %L', test_gid('peer1', 3)));
ROLLBACK;
BEGIN;
SELECT dg.dist_exec('peer2', 'INSERT INTO recovered VALUES (4)');
SELECT dg.dist_exec('peer2', format('PREPARE TRANSACTION %L', test_gid('peer2', 4)));
ROLLBACK;
-- Another coordinator's transaction on the same peer is never touched.
BEGIN;
SELECT dg.dist_exec('peer1', 'INSERT INTO recovered VALUES (5)');
SELECT dg.dist_exec('peer1', 'PREPARE TRANSACTION ''dg_00000000-0000-0000-0000-000000000000_1_5_1''');
ROLLBACK;

SELECT node, gid = test_gid(node, 3) AS gid_3, gid = test_gid(node, 4) AS gid_4, age >= '0'::interval AS aged, action
FROM dg.in_doubt ORDER BY gid;

-- A transaction whose deciding local transaction still runs is left alone.
BEGIN;
SELECT txid_current() AS mine \gset
SAVEPOINT a;
SELECT dg.dist_exec('peer2', 'INSERT INTO recovered VALUES (6)');
SELECT dg.dist_exec('peer2', format('PREPARE TRANSACTION %L', test_gid('peer2', :mine)));
ROLLBACK TO SAVEPOINT a;
SELECT node, gid = test_gid(node, :mine) AS mine, action, result FROM dg.recover() ORDER BY gid;
ROLLBACK;
SELECT * FROM recovered();

-- Its local transaction ended without a decision: rolled back now.
SELECT node, gid = test_gid(node, :mine) AS mine, action, result FROM dg.recover();
SELECT * FROM dg.recover();
SELECT count(*) FROM dg.in_doubt;
-- Every prepared transaction is finished: no decision is needed any more.
SELECT count(*) AS decisions_left FROM dg.decisions;

-- While a node cannot be read, no decision is forgotten: it may hold a
-- prepared transaction that needs one.
INSERT INTO dg.decisions (xid, dt_id) VALUES (7, 'maybe needed');
CREATE SERVER peer_gone FOREIGN DATA WRAPPER dg OPTIONS (host '127.0.0.1', port '1', dbname 'x');
CREATE USER MAPPING FOR PUBLIC SERVER peer_gone OPTIONS (user 'postgres');
\set VERBOSITY terse
SELECT * FROM dg.recover();
\set VERBOSITY default
SELECT xid FROM dg.decisions;
DROP SERVER peer_gone CASCADE;
SELECT * FROM dg.recover();
SELECT count(*) AS decisions_left FROM dg.decisions;

-- The other coordinator is gone for good: a superuser decides by hand.
SELECT dg.resolve('peer1', 'dg_00000000-0000-0000-0000-000000000000_1_5_1', true);
SELECT dg.resolve('peer1', 'dg_00000000-0000-0000-0000-000000000000_1_5_1', true);
SELECT dg.resolve('peer1', 'no such gid', false);
SELECT dg.resolve('peer1', NULL, false);
SELECT * FROM recovered();

-- Superuser only.
CREATE ROLE regress_dg_bob;
SET ROLE regress_dg_bob;
SELECT * FROM dg.recover();
SELECT * FROM dg.in_doubt;
SELECT dg.resolve('peer1', 'x', false);
RESET ROLE;
DROP ROLE regress_dg_bob;

-- dg.stats counts what this suite did (the cluster is fresh each run).
SELECT committed_2pc > 0 AS two_phase, committed_1pc > 0 AS one_phase, aborted > 0 AS aborted,
       finish_failures, resolver_commits, resolver_aborts, prepare_mean_ms > 0 AS timed, deadlocks
FROM dg.stats;

-- Each step of the commit path is timed in the style of
-- pg_stat_statements: calls, total, min, max, mean.
SELECT statement_calls > 0 AS statements, prepare_calls > 0 AS prepares,
       decision_calls > 0 AS decisions, finish_calls > 0 AS finishes, resolve_calls AS resolves,
       prepare_min_ms <= prepare_mean_ms AND prepare_mean_ms <= prepare_max_ms AS ordered,
       finish_failures_unreachable, in_doubt, oldest_in_doubt_age IS NULL AS none_in_doubt
FROM dg.stats;

-- dg.stats_reset() is a superuser's, as pg_stat_statements_reset() is.
CREATE ROLE regress_dg_dave;
SET ROLE regress_dg_dave;
SELECT dg.stats_reset();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE regress_dg_dave;
SELECT dg.stats_reset();
SELECT committed_2pc, aborted, resolver_commits, statement_calls, statement_min_ms,
       statement_max_ms, statement_mean_ms, in_doubt
FROM dg.stats;

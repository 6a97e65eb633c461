-- Consistent snapshots across nodes: dg.dist_snapshot() (README,
-- "Consistent reads"). The multi-node cases (a transfer never half seen,
-- a DT in doubt, a restart, a dead holder) are in tests/snapshots.rs.
\getenv peer1_port DG_REGRESS_PEER1_PORT
SET dg.snapshot_timeout = '100ms';

-- Only first in a REPEATABLE READ or SERIALIZABLE block.
SELECT dg.dist_snapshot('peer1');
BEGIN;
SELECT dg.dist_snapshot('peer1');
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT dg.dist_exec('peer1', 'SELECT 1');
SELECT dg.dist_snapshot('peer2');
ROLLBACK;

-- Nothing is known of a node the resolver has not listed since the
-- server started (this suite's coordinator runs no resolver; dg.recover()
-- is a pass).
CREATE SERVER peer1_again FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'peer1_port', dbname 'regress_peer');
CREATE USER MAPPING FOR PUBLIC SERVER peer1_again OPTIONS (user 'postgres');
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT dg.dist_snapshot('peer1_again');
ROLLBACK;
SELECT count(*) >= 0 AS recovered FROM dg.recover();

-- The snapshot's nodes, in the order they joined; only they may be used.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM dg.dist_snapshot('peer2', 'peer1');
SELECT * FROM dg.dist_query('peer1', 'SELECT 1') AS t(x int);
SELECT dg.dist_exec('peer1_again', 'SELECT 1');
ROLLBACK;

-- Writes in a snapshot block commit as in any DT.
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM dg.dist_snapshot('peer1', 'peer2');
SELECT dg.dist_exec('peer1', 'CREATE TABLE snapshot_t (id int)');
SELECT dg.dist_exec('peer2', 'CREATE TABLE snapshot_t (id int)');
COMMIT;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM dg.dist_snapshot('peer1', 'peer2');
SELECT count(*) FROM dg.dist_query('peer1', 'SELECT * FROM snapshot_t') AS t(id int);
COMMIT;

-- Bad nodes.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT dg.dist_snapshot('nosuch');
ROLLBACK;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT dg.dist_snapshot('peer1', NULL);
ROLLBACK;

-- Without arguments: every node the role may use.
DROP SERVER peer1_again CASCADE;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM dg.dist_snapshot() ORDER BY node;
ROLLBACK;
SELECT dg.dist_exec('peer1', 'DROP TABLE snapshot_t');
SELECT dg.dist_exec('peer2', 'DROP TABLE snapshot_t');

-- A finish that does not wait (README, "What COMMIT does"): per session
-- or per transaction; a snapshot right after it, and the session's next
-- DT, see the DT on both nodes, and nothing stays prepared.
SHOW dg.synchronous_finish;
SET dg.synchronous_finish = maybe;
SELECT dg.dist_exec('peer1', 'CREATE TABLE async_t (id int)');
SELECT dg.dist_exec('peer2', 'CREATE TABLE async_t (id int)');
BEGIN;
SET LOCAL dg.synchronous_finish = off;
SELECT dg.dist_exec('peer1', 'INSERT INTO async_t VALUES (1)');
SELECT dg.dist_exec('peer2', 'INSERT INTO async_t VALUES (2)');
COMMIT;
SHOW dg.synchronous_finish;
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM dg.dist_snapshot('peer1', 'peer2');
SELECT (SELECT count(*) FROM dg.dist_query('peer1', 'SELECT * FROM async_t') AS a(id int))
     + (SELECT count(*) FROM dg.dist_query('peer2', 'SELECT * FROM async_t') AS b(id int)) AS seen;
COMMIT;
SET dg.synchronous_finish = off;
BEGIN;
SELECT dg.dist_exec('peer1', 'INSERT INTO async_t VALUES (3)');
SELECT dg.dist_exec('peer2', 'INSERT INTO async_t VALUES (4)');
COMMIT;
SELECT * FROM dg.dist_query('peer2', 'SELECT count(*) FROM async_t') AS t(n bigint);
SELECT * FROM dg.dist_query('peer1',
    'SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE ''dg\_%''') AS t(prepared bigint);
RESET dg.synchronous_finish;
SELECT dg.dist_exec('peer1', 'DROP TABLE async_t');
SELECT dg.dist_exec('peer2', 'DROP TABLE async_t');
-- dg.stats counts the snapshots: with no commit going on, one is taken
-- at the first try, while commits could go on (not holding the fence).
SELECT snapshots AS snapshots0, snapshots_held AS held0, snapshot_retakes AS retakes0 FROM dg.stats \gset
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM dg.dist_snapshot('peer1', 'peer2');
COMMIT;
SELECT snapshots - :snapshots0 AS taken, snapshots_held - :held0 AS held,
       snapshot_retakes - :retakes0 AS retaken
FROM dg.stats;
RESET dg.snapshot_timeout;

-- Where a DT ends (DESIGN §2, "Scope of a DT").
CREATE TABLE local_log (note text);

-- In a block, local and remote writes commit together...
BEGIN;
INSERT INTO local_log VALUES ('committed with the block');
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance - 5 WHERE id = 4');
SELECT dg.dist_exec('peer2', 'UPDATE accounts SET balance = balance + 5 WHERE id = 4');
SELECT state, scope, participants FROM dg.dist_status();
COMMIT;
SELECT * FROM local_log;
SELECT * FROM balances() WHERE id = 4;

-- ...and roll back together.
BEGIN;
INSERT INTO local_log VALUES ('rolled back');
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = 0 WHERE id = 4');
ROLLBACK;
SELECT * FROM local_log;
SELECT * FROM balances() WHERE id = 4;

-- An error on a peer aborts the block; nothing is left anywhere.
BEGIN;
INSERT INTO local_log VALUES ('never');
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = 0 WHERE id = 4');
SELECT dg.dist_exec('peer2', 'INSERT INTO accounts VALUES (4, 0)');
COMMIT;
SELECT * FROM local_log;
SELECT * FROM balances() WHERE id = 4;

-- dist_commit in a block prepares at once; the block's COMMIT seals it.
BEGIN;
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT state, scope FROM dg.dist_status();
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance + 1 WHERE id = 5');
SELECT dg.dist_commit();
SELECT state FROM dg.dist_status();
INSERT INTO local_log VALUES ('written after dist_commit, still part of the DT');
COMMIT;
SELECT * FROM local_log;
SELECT * FROM balances() WHERE id = 5;
-- After dist_commit in a block, the DT takes no more statements.
BEGIN;
SELECT dg.dist_exec('peer1', 'SELECT 1');
SELECT dg.dist_commit();
SELECT dg.dist_exec('peer1', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance + 1 WHERE id = 5');
SELECT dg.dist_commit();
ROLLBACK;
SELECT * FROM balances() WHERE id = 5;

-- dist_rollback in a block rolls the peers back; the block can then only
-- roll back: its COMMIT fails and takes the local writes with it.
BEGIN;
INSERT INTO local_log VALUES ('gone with the DT');
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = 0 WHERE id = 5');
SELECT dg.dist_rollback();
SELECT state FROM dg.dist_status();
COMMIT;
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM local_log;
BEGIN;
SELECT dg.dist_exec('peer1', 'SELECT 1');
SELECT dg.dist_rollback();
SELECT dg.dist_exec('peer1', 'SELECT 1');
ROLLBACK;
SELECT * FROM balances() WHERE id = 5;

-- A session DT: local statements in between commit on their own.
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance + 10 WHERE id = 5');
INSERT INTO local_log VALUES ('on its own');
SELECT 1/0;
SELECT state FROM dg.dist_status();
SELECT dg.dist_rollback();
SELECT * FROM local_log;
SELECT * FROM balances() WHERE id = 5;

-- A statement that fails after a dg call in it aborts the session DT.
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance + 10 WHERE id = 5'),
       1 / (random() * 0)::int;
SELECT state FROM dg.dist_status();
SELECT dg.dist_rollback();

-- A failed dist_commit ends the DT, rolled back everywhere.
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance + 10 WHERE id = 5');
SELECT dg.dist_exec('peer_noprep', 'INSERT INTO accounts VALUES (3, 1)');
-- (terse: the peer's HINT quotes the setting's name from PostgreSQL 17 on;
-- server_messages shows the whole error)
\set VERBOSITY terse
SELECT dg.dist_commit();
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
SELECT state FROM dg.dist_status();
SELECT * FROM balances() WHERE id = 5;

-- A transaction that used dg cannot be prepared locally.
BEGIN;
SELECT dg.dist_exec('peer1', 'SELECT 1');
PREPARE TRANSACTION 'local_gid';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pg_prepared_xacts;

-- Isolation: each participant runs at the local transaction's level.
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT * FROM dg.dist_query('peer1', 'SELECT current_setting(''transaction_isolation''), current_setting(''transaction_read_only'')')
    AS t(isolation text, read_only text);
COMMIT;
SELECT * FROM dg.dist_query('peer1', 'SELECT current_setting(''transaction_isolation'')') AS t(isolation text);

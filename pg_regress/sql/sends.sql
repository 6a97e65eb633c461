-- dg.dist_send queues a statement on the node's pipeline and returns at
-- once; dg.dist_sync waits for everything sent and reports, in send order,
-- the rows each statement affected.
BEGIN;
SELECT dg.dist_send(n, 'UPDATE accounts SET balance = balance + $1 WHERE id <= $2', '1', '2')
    FROM unnest(ARRAY['peer1', 'peer2']) n;
SELECT dg.dist_send('peer1', 'INSERT INTO accounts VALUES (100, 0)');
SELECT * FROM dg.dist_sync();
-- Reported once: a second sync has nothing left to report.
SELECT * FROM dg.dist_sync();
-- A dist_exec or dist_query on a node waits for that node's sends first,
-- in the same round trip.
SELECT dg.dist_send('peer2', 'UPDATE accounts SET balance = balance + 1 WHERE id = 1');
SELECT * FROM dg.dist_query('peer2', 'SELECT balance FROM accounts WHERE id = 1') AS t(balance bigint);
SELECT * FROM dg.dist_sync();
ROLLBACK;
SELECT * FROM balances() WHERE id <= 2;

-- With nothing sent, or no distributed transaction at all, dist_sync
-- returns no rows.
SELECT * FROM dg.dist_sync();
BEGIN;
SELECT dg.dist_exec('peer1', 'SELECT 1');
SELECT * FROM dg.dist_sync();
COMMIT;

-- COMMIT is a sync point: what was sent commits with the block.
BEGIN;
SELECT dg.dist_send('peer1', 'UPDATE accounts SET balance = balance - 5 WHERE id = 5');
SELECT dg.dist_send('peer2', 'UPDATE accounts SET balance = balance + 5 WHERE id = 5');
COMMIT;
SELECT * FROM balances() WHERE id = 5;

-- A send to an unknown node fails at once.
SELECT dg.dist_send('nowhere', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE

-- NULL arguments are refused as dist_exec refuses them; a NULL parameter
-- is SQL NULL.
SELECT dg.dist_send(NULL, 'SELECT 1');
SELECT dg.dist_send('peer1', NULL);
SELECT dg.dist_send('peer1', 'SELECT 1', VARIADIC NULL::text[]);
BEGIN;
SELECT dg.dist_send('peer1', 'SELECT $1::int IS NULL', NULL);
SELECT * FROM dg.dist_sync();
COMMIT;

-- An error of a sent statement is raised at the sync point with the
-- peer's SQLSTATE, message and detail, the node, and which send it was;
-- the transaction is then aborted, as if dist_exec had failed.
BEGIN;
SELECT dg.dist_send('peer1', 'UPDATE accounts SET balance = balance + 1 WHERE id = 2');
SELECT dg.dist_send('peer2', 'INSERT INTO accounts VALUES (1, 0)');
SELECT dg.dist_send('peer1', 'SELECT 1/0');
SELECT * FROM dg.dist_sync();
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_send('peer1', 'SELECT 1');
ROLLBACK;
-- The earliest failure is the one raised, whichever node answers first.
BEGIN;
SELECT dg.dist_send('peer1', 'SELECT 1/0');
SELECT dg.dist_send('peer2', 'INSERT INTO accounts VALUES (1, 0)');
COMMIT;
\echo :LAST_ERROR_SQLSTATE
-- At a dist_exec on the node, the send's error is raised instead of the
-- statement's result (the statement is skipped).
BEGIN;
SELECT dg.dist_send('peer1', 'INSERT INTO accounts VALUES (1, 0)');
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = 0');
ROLLBACK;
-- At COMMIT outside a block.
SELECT dg.dist_send('peer2', 'DO $$BEGIN RAISE EXCEPTION ''custom'' USING ERRCODE = ''P0042'', DETAIL = ''the detail'', HINT = ''the hint''; END$$');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM balances() WHERE id = 2;

-- The end of a PL/pgSQL exception block syncs what was sent inside it,
-- so its handler catches the error; what the block sent is undone, the
-- rest of the transaction goes on.
BEGIN;
SELECT dg.dist_send('peer1', 'UPDATE accounts SET balance = balance + 100 WHERE id = 3');
DO $$
BEGIN
    PERFORM dg.dist_send('peer2', 'UPDATE accounts SET balance = balance + 100 WHERE id = 3');
    PERFORM dg.dist_send('peer2', 'INSERT INTO accounts VALUES (3, 0)');
    RAISE NOTICE 'not reached: the error comes at the end of the block';
EXCEPTION WHEN unique_violation THEN
    RAISE NOTICE 'caught % at the end of the block', SQLSTATE;
END
$$;
SELECT * FROM dg.dist_sync();
COMMIT;
SELECT * FROM balances() WHERE id = 3;

-- RELEASE SAVEPOINT syncs what was sent since the savepoint; ROLLBACK TO
-- forgets it, errors included.
BEGIN;
SAVEPOINT a;
SELECT dg.dist_send('peer1', 'INSERT INTO accounts VALUES (4, 0)');
ROLLBACK TO a;
SELECT dg.dist_send('peer1', 'UPDATE accounts SET balance = balance + 1 WHERE id = 4');
SAVEPOINT b;
SELECT dg.dist_send('peer2', 'INSERT INTO accounts VALUES (4, 0)');
RELEASE b;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO a;
SELECT * FROM dg.dist_sync();
COMMIT;
SELECT * FROM balances() WHERE id = 4;

-- A session DT: sends span statements until dist_commit syncs them.
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT dg.dist_send('peer1', 'UPDATE accounts SET balance = balance + 5 WHERE id = 5');
SELECT dg.dist_send('peer2', 'UPDATE accounts SET balance = balance - 5 WHERE id = 5');
SELECT state, participants FROM dg.dist_status();
SELECT dg.dist_commit();
SELECT * FROM balances() WHERE id = 5;
-- ... and a send that fails makes dist_commit fail with its error; as any
-- failed dist_commit, that ends the DT, rolled back everywhere.
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT dg.dist_send('peer1', 'INSERT INTO accounts VALUES (5, 0)');
SELECT dg.dist_commit();
SELECT state FROM dg.dist_status();
SELECT * FROM balances() WHERE id = 5;
-- A failed send before dist_commit aborts the session DT at that sync
-- point, as a failed dist_exec would, until dist_rollback.
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT dg.dist_send('peer1', 'INSERT INTO accounts VALUES (5, 0)');
SELECT * FROM dg.dist_sync();
SELECT state FROM dg.dist_status();
SELECT dg.dist_commit();
SELECT dg.dist_rollback();
-- (the other files expect the balances as they were)
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance - 100 WHERE id = 3');

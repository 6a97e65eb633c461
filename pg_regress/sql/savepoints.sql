-- Savepoints and PL/pgSQL exception blocks are mirrored on the peers.
SELECT dg.dist_exec('peer1', 'CREATE TABLE items (id int PRIMARY KEY)');
SELECT dg.dist_exec('peer2', 'CREATE TABLE items (id int PRIMARY KEY)');

BEGIN;
SELECT dg.dist_exec('peer1', 'INSERT INTO items VALUES (1)');
SAVEPOINT a;
SELECT dg.dist_exec('peer1', 'INSERT INTO items VALUES (2)');
SELECT dg.dist_exec('peer2', 'INSERT INTO items VALUES (2)');
ROLLBACK TO SAVEPOINT a;
SELECT dg.dist_exec('peer2', 'INSERT INTO items VALUES (3)');
SAVEPOINT b;
SELECT dg.dist_exec('peer1', 'INSERT INTO items VALUES (4)');
RELEASE SAVEPOINT b;
COMMIT;
SELECT * FROM dg.dist_query('peer1', 'SELECT id FROM items ORDER BY id') AS t(id int);
SELECT * FROM dg.dist_query('peer2', 'SELECT id FROM items ORDER BY id') AS t(id int);

-- An error caught in a savepoint does not abort the DT.
BEGIN;
SELECT dg.dist_exec('peer1', 'INSERT INTO items VALUES (5)');
SAVEPOINT c;
SELECT dg.dist_exec('peer1', 'INSERT INTO items VALUES (1)');
ROLLBACK TO SAVEPOINT c;
SELECT dg.dist_exec('peer2', 'INSERT INTO items VALUES (5)');
COMMIT;
SELECT * FROM dg.dist_query('peer1', 'SELECT id FROM items ORDER BY id') AS t(id int);
SELECT * FROM dg.dist_query('peer2', 'SELECT id FROM items ORDER BY id') AS t(id int);

-- A PL/pgSQL exception block rolls back the remote work done inside it.
CREATE FUNCTION move_item(id int) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM dg.dist_exec('peer1', 'DELETE FROM items WHERE id = $1', id::text);
    PERFORM dg.dist_exec('peer2', 'INSERT INTO items VALUES ($1)', id::text);
    RETURN 'moved';
EXCEPTION WHEN unique_violation THEN
    RETURN 'kept: ' || SQLERRM;
END $$;
BEGIN;
SELECT move_item(4);
SELECT move_item(5);
COMMIT;
SELECT * FROM dg.dist_query('peer1', 'SELECT id FROM items ORDER BY id') AS t(id int);
SELECT * FROM dg.dist_query('peer2', 'SELECT id FROM items ORDER BY id') AS t(id int);

-- The same in autocommit, inside a session DT.
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT move_item(1);
SELECT move_item(3);
SELECT dg.dist_commit();
SELECT * FROM dg.dist_query('peer1', 'SELECT id FROM items ORDER BY id') AS t(id int);
SELECT * FROM dg.dist_query('peer2', 'SELECT id FROM items ORDER BY id') AS t(id int);

-- Ending a DT inside a subtransaction is refused: rolling the
-- subtransaction back could not undo it.
BEGIN;
SELECT dg.dist_exec('peer1', 'SELECT 1');
SAVEPOINT s;
SELECT dg.dist_commit();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT dg.dist_begin() IS NOT NULL AS started;
DO $$
BEGIN
    PERFORM dg.dist_rollback();
EXCEPTION WHEN division_by_zero THEN NULL;
END $$;
\echo :LAST_ERROR_SQLSTATE
-- The refused call did nothing to the DT, so the failed statement leaves
-- the session DT active.
SELECT state FROM dg.dist_status();
SELECT dg.dist_rollback();

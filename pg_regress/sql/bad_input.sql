-- Bad input gets a clear error with its SQLSTATE, never a crash or a hang.
SELECT dg.dist_exec('', 'SELECT 1');
SELECT dg.dist_exec(repeat('x', 100), 'SELECT 1');
SELECT dg.dist_exec('peer1', '');
SELECT * FROM dg.dist_query('peer1', '') AS t(x int);

-- COPY would leave the connection streaming: refused, and the DT aborts.
SELECT dg.dist_exec('peer1', 'COPY accounts TO STDOUT');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM dg.dist_query('peer1', 'COPY accounts TO STDOUT') AS t(a int, b bigint);
SELECT dg.dist_exec('peer1', 'COPY accounts FROM STDIN');
SELECT dg.dist_exec('peer1', 'SELECT 1');

-- A megabyte of parameter and of SQL text.
SELECT dg.dist_exec('peer1', 'SELECT length($1)', repeat('y', 1000000));
SELECT * FROM dg.dist_query('peer1', 'SELECT length($1)', repeat('y', 1000000)) AS t(n int);
SELECT * FROM dg.dist_query('peer1', 'SELECT 42 /* ' || repeat('z', 1000000) || ' */') AS t(n int);

-- A read-only local transaction runs its participants read-only.
BEGIN READ ONLY;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance');
ROLLBACK;

-- The peer ends the session mid-statement: a connection error, and the
-- next call connects again.
\set VERBOSITY sqlstate
SELECT dg.dist_exec('peer1', 'SELECT pg_terminate_backend(pg_backend_pid())');
\set VERBOSITY default
SELECT dg.dist_exec('peer1', 'SELECT 1');

-- dg calls from a trigger join the transaction like any other call.
CREATE TABLE trig_t (id int);
CREATE FUNCTION trig_f() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance + 1 WHERE id = $1', NEW.id::text);
    RETURN NEW;
END $$;
CREATE TRIGGER trig AFTER INSERT ON trig_t FOR EACH ROW EXECUTE FUNCTION trig_f();
BEGIN;
INSERT INTO trig_t VALUES (1);
SELECT state, participants FROM dg.dist_status();
ROLLBACK;
SELECT * FROM dg.dist_query('peer1', 'SELECT balance FROM accounts WHERE id = 1') AS t(balance bigint);

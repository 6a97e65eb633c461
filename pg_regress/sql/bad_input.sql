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

-- NULL and empty arguments, function by function (a NULL element of
-- params is SQL NULL; gid_info is STRICT).
SELECT * FROM dg.dist_query('peer1', NULL) AS t(x int);
SELECT * FROM dg.dist_query('peer1', 'SELECT 1', VARIADIC NULL::text[]) AS t(x int);
SELECT * FROM dg.dist_query('', 'SELECT 1') AS t(x int);
SELECT * FROM dg.dist_query('peer1', 'SELECT $1::int IS NULL', NULL) AS t(is_null bool);
SELECT dg.dist_exec('peer1', '   ');
SELECT dg.dist_exec('peer1', ';');
SELECT dg.dist_exec('peer1', 'SELECT $1');
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_exec('peer1', 'SELECT 1', 'unused');
\echo :LAST_ERROR_SQLSTATE
SELECT dg.disconnect('');
SELECT dg.disconnect('nosuch');
SELECT dg.resolve(NULL, 'x', true);
SELECT dg.resolve('peer1', 'x', NULL);
SELECT dg.resolve('', 'x', true);
SELECT dg.resolve('peer1', '', true);
SELECT count(*) FROM dg.gid_info(NULL);
SELECT count(*) FROM dg.gid_info('');

-- A megabyte of SQL through dist_exec, and a megabyte that fails.
SELECT dg.dist_exec('peer1', 'SELECT 1 /* ' || repeat('z', 1000000) || ' */');
\set VERBOSITY terse
SELECT dg.dist_exec('peer1', 'SELEC 1 /* ' || repeat('z', 1000000) || ' */');
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE

-- Servers dg cannot use: no user mapping, a wrapper of no use to dg.
\getenv peer1_port DG_REGRESS_PEER1_PORT
CREATE SERVER peer1_nomap FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'peer1_port', dbname 'regress_peer');
SELECT dg.dist_exec('peer1_nomap', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
DROP SERVER peer1_nomap;
CREATE FOREIGN DATA WRAPPER regress_dummy;
CREATE SERVER dummy_srv FOREIGN DATA WRAPPER regress_dummy;
SELECT dg.dist_exec('dummy_srv', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
DROP FOREIGN DATA WRAPPER regress_dummy CASCADE;

-- Misplaced calls leave the peers as they were.
CREATE FUNCTION peer1_balance() RETURNS bigint LANGUAGE sql AS $$
    SELECT balance FROM dg.dist_query('peer1', 'SELECT balance FROM accounts WHERE id = 2') AS t(balance bigint)
$$;
CREATE FUNCTION prepared_on_peers() RETURNS bigint LANGUAGE sql AS $$
    SELECT sum(n)::bigint FROM (
        SELECT n FROM dg.dist_query('peer1', 'SELECT count(*) FROM pg_prepared_xacts') AS t(n bigint)
        UNION ALL
        SELECT n FROM dg.dist_query('peer2', 'SELECT count(*) FROM pg_prepared_xacts') AS t(n bigint)) s
$$;
SELECT peer1_balance();
-- Nested dist_begin() in a block.
BEGIN;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = 0 WHERE id = 2');
SELECT dg.dist_begin();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- dist_commit() with no DT in a block.
BEGIN;
SELECT dg.dist_commit();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- A local PREPARE TRANSACTION after a write through dg: refused, and the
-- write is rolled back on the peer, not left open or prepared there.
BEGIN;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = 0 WHERE id = 2');
PREPARE TRANSACTION 'regress_local';
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS prepared_locally FROM pg_prepared_xacts;
-- The same for a session DT the block used: the DT is aborted.
SELECT dg.dist_begin() IS NOT NULL AS started;
BEGIN;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = 0 WHERE id = 2');
PREPARE TRANSACTION 'regress_local';
SELECT state FROM dg.dist_status();
SELECT dg.dist_rollback();
-- A block that did not use the open session DT may still be prepared.
SELECT dg.dist_begin() IS NOT NULL AS started;
BEGIN;
CREATE TABLE local_2pc (id int);
PREPARE TRANSACTION 'regress_local';
ROLLBACK PREPARED 'regress_local';
SELECT state FROM dg.dist_status();
SELECT dg.dist_rollback();
-- dist_begin() in a trigger of a block whose DT is open.
CREATE FUNCTION trig_begin() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM dg.dist_begin();
    RETURN NEW;
END $$;
CREATE TRIGGER trig_begin BEFORE INSERT ON trig_t FOR EACH ROW EXECUTE FUNCTION trig_begin();
BEGIN;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = 0 WHERE id = 2');
\set VERBOSITY terse
INSERT INTO trig_t VALUES (2);
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
DROP TRIGGER trig_begin ON trig_t;
SELECT peer1_balance(), prepared_on_peers();

-- Parallel query: every dg function is PARALLEL UNSAFE, so a forced
-- parallel plan keeps dg calls in the leader and they work.
SELECT proname FROM pg_proc WHERE pronamespace = 'dg'::regnamespace AND proparallel <> 'u';
-- force_parallel_mode is debug_parallel_query from PostgreSQL 16 on.
SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
    THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'regress', false) AS parallel_setting \gset
SELECT dg.dist_exec('peer1', 'SELECT 1');
SELECT * FROM dg.dist_query('peer1', 'SELECT 1') AS t(one int);
-- A wrapper that claims to be PARALLEL SAFE would run dg in a parallel
-- worker, whose remote work the leader's commit would never see: refused.
CREATE FUNCTION lying_safe() RETURNS bigint LANGUAGE plpgsql PARALLEL SAFE AS $$
BEGIN
    RETURN dg.dist_exec('peer1', 'UPDATE accounts SET balance = 0 WHERE id = 2');
END $$;
\set VERBOSITY terse
SELECT lying_safe();
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
SELECT set_config(CASE WHEN current_setting('server_version_num')::int >= 160000
    THEN 'debug_parallel_query' ELSE 'force_parallel_mode' END, 'off', false) AS parallel_setting \gset
SELECT peer1_balance(), prepared_on_peers();

-- Read-only: participants run READ ONLY, so nothing needs a prepare and
-- a read-only block with several participants commits.
BEGIN READ ONLY;
SELECT dg.dist_exec('peer1', 'SELECT 1');
SELECT dg.dist_exec('peer2', 'SELECT 1');
SELECT state, participants FROM dg.dist_status();
COMMIT;
-- A write that a read-only transaction still allows (temporary tables)
-- on a peer and locally would need a decision row: refused up front.
SELECT dg.dist_exec('peer1', 'CREATE TEMP TABLE scratch (x int)');
CREATE TEMP TABLE local_scratch (x int);
BEGIN READ ONLY;
INSERT INTO local_scratch VALUES (1);
SELECT dg.dist_exec('peer1', 'INSERT INTO scratch VALUES (1)');
COMMIT;
\echo :LAST_ERROR_SQLSTATE
SELECT prepared_on_peers();

-- Remote errors keep the peer's SQLSTATE, message, detail and hint, and
-- name the node in a context line. \echo shows the SQLSTATE the client got.
SELECT dg.dist_exec('peer1', 'SELEC 1');
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_exec('peer2', 'INSERT INTO accounts VALUES (1, 0)');
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_exec('peer1', 'SELECT 1/0');
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_exec('peer1', 'DO $$BEGIN RAISE EXCEPTION ''custom'' USING ERRCODE = ''P0042'', DETAIL = ''the detail'', HINT = ''the hint''; END$$');
\echo :LAST_ERROR_SQLSTATE

-- A peer function's error keeps the peer's CONTEXT and gets a line with
-- the statement, never its parameters; the function's notices and
-- warnings reach the client as what they are, tagged with the node
-- (psql shows the context of notices with SHOW_CONTEXT always).
\set SHOW_CONTEXT always
SELECT dg.dist_exec('peer1', $$CREATE FUNCTION chatty(t text) RETURNS int LANGUAGE plpgsql AS '
BEGIN
    RAISE NOTICE ''checking'' USING DETAIL = ''a detail'', HINT = ''a hint'';
    RAISE WARNING ''careful'' USING ERRCODE = ''01P42'';
    IF t = ''sekrit'' THEN
        RAISE EXCEPTION ''refused'' USING ERRCODE = ''22023'';
    END IF;
    RETURN length(t);
END'$$);
SELECT dg.dist_exec('peer1', 'SELECT chatty($1)', 'fine');
SELECT dg.dist_exec('peer1', 'SELECT chatty($1)', 'sekrit');
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_exec('peer1', 'DROP FUNCTION chatty(text)');
\set SHOW_CONTEXT errors

-- An error aborts the whole session DT until dist_rollback().
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance - 1 WHERE id = 2');
SELECT dg.dist_exec('peer2', 'INSERT INTO accounts VALUES (1, 0)');
SELECT dg.dist_exec('peer1', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_commit();
SELECT state, participants FROM dg.dist_status();
SELECT dg.dist_rollback();
SELECT * FROM balances() WHERE id = 2;

-- A peer without prepared transactions can take part alone (one phase),
-- but not in a two-phase commit: the peer's hint says what to change.
SELECT dg.dist_exec('peer_noprep', 'INSERT INTO accounts VALUES (1, 1)');
BEGIN;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance + 1 WHERE id = 3');
SELECT dg.dist_exec('peer_noprep', 'INSERT INTO accounts VALUES (2, 1)');
-- (terse: the peer's HINT quotes the setting's name from PostgreSQL 17 on;
-- server_messages shows the whole error)
\set VERBOSITY terse
COMMIT;
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM dg.dist_query('peer_noprep', 'SELECT id FROM accounts ORDER BY id') AS t(id int);
SELECT * FROM balances() WHERE id = 3;

-- Statements that end the remote transaction are refused.
SELECT dg.dist_exec('peer1', 'COMMIT');
SELECT dg.dist_exec('peer1', 'SELECT 1; SELECT 2');

-- An unreachable peer: a connection error (08xxx) that names the node.
CREATE SERVER peer_down FOREIGN DATA WRAPPER dg OPTIONS (host '127.0.0.1', port '1', dbname 'x');
CREATE USER MAPPING FOR PUBLIC SERVER peer_down OPTIONS (user 'postgres');
\set VERBOSITY terse
SELECT dg.dist_exec('peer_down', 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
DROP SERVER peer_down CASCADE;

-- A cancelled local statement cancels the remote one; nothing is left
-- running or open on the peer.
SET statement_timeout = '200ms';
SELECT dg.dist_exec('peer1', 'SELECT pg_sleep(60)');
\echo :LAST_ERROR_SQLSTATE
RESET statement_timeout;
SET dg.remote_statement_timeout = '200ms';
SELECT dg.dist_exec('peer1', 'SELECT pg_sleep(60)');
\echo :LAST_ERROR_SQLSTATE
RESET dg.remote_statement_timeout;
SELECT * FROM dg.dist_query('peer1',
    'SELECT count(*) FROM pg_stat_activity WHERE query LIKE ''%pg_sleep(60)%'' AND pid <> pg_backend_pid()')
    AS t(still_running bigint);
SELECT node, state FROM dg.connections() WHERE node = 'peer1';

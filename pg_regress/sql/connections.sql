-- Connections are cached per user mapping and reused across transactions.
SELECT dg.disconnect_all() >= 0 AS ok;
SELECT * FROM dg.connections();
SELECT * FROM dg.dist_query('peer1', 'SELECT pg_backend_pid()') AS t(pid int) \gset first_
SELECT * FROM dg.dist_query('peer1', 'SELECT pg_backend_pid()') AS t(pid int) \gset second_
SELECT :first_pid = :second_pid AS reused;
SELECT node, remote_user, state, valid FROM dg.connections();

-- Inside a DT the connection shows its remote state.
BEGIN;
SELECT dg.dist_exec('peer2', 'SELECT 1');
SELECT node, state FROM dg.connections() ORDER BY node;
SELECT dg.disconnect('peer2');
COMMIT;

-- Changing the server drops the cached connection.
ALTER SERVER peer1 OPTIONS (ADD connect_timeout '5');
SELECT * FROM dg.dist_query('peer1', 'SELECT pg_backend_pid()') AS t(pid int) \gset third_
SELECT :first_pid = :third_pid AS reused_after_alter;

SELECT dg.disconnect('peer1');
SELECT dg.disconnect('peer1');
SELECT dg.disconnect(NULL);
SELECT node FROM dg.connections() ORDER BY node;

-- Settings.
SHOW dg.connect_timeout;
-- (out-of-range values: server_messages, since the range's text differs by major)
SET dg.remote_statement_timeout = '2s';
SHOW dg.remote_statement_timeout;
SET dg.max_cached_connections = 0;
SELECT * FROM dg.dist_query('peer1', 'SELECT 1') AS t(one int);
SELECT count(*) FROM dg.connections();
RESET dg.max_cached_connections;
-- Reload-only settings: not per session, and range-checked.
SHOW dg.deadlock_check_interval;
SET dg.deadlock_check_interval = '1s';
SET dg.no_such_setting = 1;

-- The SQL API: each function's happy path and its argument errors.

-- A session-level DT in autocommit spans statements.
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT state, scope, participants FROM dg.dist_status();
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance - $1 WHERE id = $2', '100', '1');
SELECT dg.dist_exec('peer2', 'UPDATE accounts SET balance = balance + $1 WHERE id = $2', '100', '1');
SELECT * FROM dg.dist_query('peer1', 'SELECT balance FROM accounts WHERE id = $1', '1') AS t(balance bigint);
SELECT state, scope, participants FROM dg.dist_status();
SELECT dg.dist_commit();
SELECT state, scope, participants FROM dg.dist_status();
SELECT * FROM balances() WHERE id = 1;

-- dist_rollback undoes everything.
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = 0');
SELECT dg.dist_rollback();
SELECT sum(balance) FROM balances();

-- Parameters are protocol parameters: never spliced, NULL stays NULL.
SELECT * FROM dg.dist_query('peer1', 'SELECT $1::text AS a, $2::text IS NULL AS b_is_null, $3::int + 1 AS c',
                            'it''s; DROP TABLE accounts --', NULL, '41')
    AS t(a text, b_is_null bool, c int);
SELECT * FROM dg.dist_query('peer1', 'SELECT 1') AS t(one int);

-- Rows are converted by the local input functions of the declared types.
SELECT * FROM dg.dist_query('peer1',
    'SELECT now()::date - now()::date, ''{1,2}''::int[], ''1.5''::numeric, ''2026-01-02 03:04:05+00''::timestamptz')
    AS t(d int, a int[], n numeric, ts timestamptz);
SELECT * FROM dg.dist_query('peer1', 'SELECT ''x''') AS t(n int);
SELECT * FROM dg.dist_query('peer1', 'SELECT 1, 2') AS t(a int);
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_query('peer1', 'SELECT 1');

-- A lone dist_exec in autocommit is a DT of its own.
SELECT dg.dist_exec('peer2', 'UPDATE accounts SET balance = balance WHERE id <= $1', '3');
SELECT state FROM dg.dist_status();

-- Misplaced calls and NULL arguments.
SELECT dg.dist_commit();
SELECT dg.dist_rollback();
SELECT dg.dist_exec(NULL, 'SELECT 1');
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_exec('peer1', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_exec('peer1', 'SELECT 1', VARIADIC NULL::text[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM dg.dist_query(NULL, 'SELECT 1') AS t(x int);
\echo :LAST_ERROR_SQLSTATE
SELECT dg.dist_begin() IS NOT NULL AS started;
SELECT dg.dist_begin();
SELECT dg.dist_rollback();

-- GIDs: dg_<coordinator>_<database>_<xid>_<user mapping>.
SELECT database = (SELECT oid FROM pg_database WHERE datname = current_database()) AS db_ok,
       xid, user_mapping, coordinator = (SELECT id::text FROM dg.coordinator) AS coordinator_ok
FROM dg.gid_info('dg_' || (SELECT id FROM dg.coordinator) || '_'
                 || (SELECT oid FROM pg_database WHERE datname = current_database()) || '_42_16500');
SELECT count(*) FROM dg.gid_info('citus_1_2_3_4');

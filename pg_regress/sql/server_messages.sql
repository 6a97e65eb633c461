-- Messages whose text is PostgreSQL's or libpq's own and differs between
-- majors; the other tests show these cases in terse form, or not at all.
-- pg_regress takes whichever expected file matches: server_messages.out
-- (PostgreSQL 15), _1 (16), _2 (17), _3 (18). Each differs only in the
-- server's text: libpq's keyword list grows (16: load_balance_hosts,
-- require_auth...; 17: sslnegotiation; 18: min/max_protocol_version,
-- oauth_*); from 17 a setting's range carries its unit and a HINT quotes
-- the setting it names.

-- The validator's HINT lists the keywords of the libpq dg is linked with.
CREATE SERVER bad FOREIGN DATA WRAPPER dg OPTIONS (hots 'x');

-- Out-of-range settings.
SET dg.connect_timeout = -1;
ALTER SYSTEM SET dg.deadlock_check_interval = -1;
ALTER SYSTEM SET dg.resolver_interval = 0;

-- A peer without prepared transactions, in a two-phase commit: the peer's
-- error whole (its HINT), with the node it came from.
BEGIN;
SELECT dg.dist_exec('peer1', 'UPDATE accounts SET balance = balance WHERE id = 3');
SELECT dg.dist_exec('peer_noprep', 'INSERT INTO accounts VALUES (10, 1)');
COMMIT;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS left_on_noprep FROM dg.dist_query('peer_noprep', 'SELECT 1 FROM accounts WHERE id = 10') AS t(one int);

-- dg.check_node(): one row per check of a node, as the caller's mapped
-- role. Timings are masked as "N ms", the version and libpq's port too,
-- so the output does not depend on the machine or the PostgreSQL release.
\getenv peer1_port DG_REGRESS_PEER1_PORT
\getenv standby_port DG_REGRESS_STANDBY_PORT
\getenv unreachable_port DG_REGRESS_UNREACHABLE_PORT
CREATE SERVER check_standby FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'standby_port', dbname 'regress_peer');
CREATE SERVER check_unreachable FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'unreachable_port', dbname 'regress_peer', connect_timeout '2');
CREATE USER MAPPING FOR PUBLIC SERVER check_standby OPTIONS (user 'postgres');
CREATE USER MAPPING FOR PUBLIC SERVER check_unreachable OPTIONS (user 'postgres');
CREATE FUNCTION checks(node name) RETURNS TABLE ("check" text, ok boolean, detail text, hint text)
LANGUAGE sql AS $$
    SELECT c."check", c.ok,
           CASE WHEN c."check" = 'version' AND c.ok THEN '(version)'
                ELSE regexp_replace(regexp_replace(regexp_replace(c.detail,
                         '[0-9]+\.[0-9]+ ms', 'N ms'), 'port [0-9]+', 'port N'), '\s+', ' ', 'g')
           END,
           c.hint
    FROM dg.check_node(node) c
$$;
-- A healthy node.
SELECT * FROM checks('peer1');
-- A node that cannot prepare.
SELECT * FROM checks('peer_noprep');
-- A hot standby of peer1.
SELECT * FROM checks('check_standby');
-- Nothing listens: connect fails with libpq's words, the rest is not checked.
SELECT * FROM checks('check_unreachable');
-- A mapped role that is neither superuser nor pg_read_all_stats: it can
-- prepare, but the detector and the resolver are limited.
SELECT dg.dist_exec('peer1', 'CREATE ROLE regress_dg_dave LOGIN');
CREATE SERVER check_dave FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'peer1_port', dbname 'regress_peer');
CREATE USER MAPPING FOR PUBLIC SERVER check_dave OPTIONS (user 'regress_dg_dave');
SELECT * FROM checks('check_dave');
-- The same privilege checks, and errors, as dg.dist_exec.
SELECT * FROM dg.check_node('no_such_node');
\echo :LAST_ERROR_SQLSTATE
CREATE SERVER check_nomap FOREIGN DATA WRAPPER dg
    OPTIONS (host '127.0.0.1', port :'peer1_port', dbname 'regress_peer');
CREATE ROLE regress_dg_erin;
GRANT USAGE ON FOREIGN SERVER check_nomap TO regress_dg_erin;
SET ROLE regress_dg_erin;
-- No USAGE on peer_noprep.
SELECT * FROM dg.check_node('peer_noprep');
\echo :LAST_ERROR_SQLSTATE
-- USAGE, but no user mapping.
SELECT * FROM dg.check_node('check_nomap');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- Not a superuser, with a mapping but no password: dist_exec's rule.
CREATE USER MAPPING FOR regress_dg_erin SERVER check_nomap OPTIONS (user 'postgres');
SET ROLE regress_dg_erin;
SELECT * FROM dg.check_node('check_nomap');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
-- A superuser may waive the password: the rule row says so.
ALTER USER MAPPING FOR regress_dg_erin SERVER check_nomap OPTIONS (ADD password_required 'false');
SET ROLE regress_dg_erin;
SELECT "check", ok, detail FROM dg.check_node('check_nomap') WHERE "check" = 'password_rule';
RESET ROLE;
-- The probe left no prepared transaction behind.
SELECT count(*) FROM dg.dist_query('peer1', 'SELECT 1 FROM pg_catalog.pg_prepared_xacts') AS t(x int);
SELECT dg.dist_exec('peer1', 'DROP ROLE regress_dg_dave');
DROP SERVER check_standby, check_unreachable, check_dave, check_nomap CASCADE;
DROP ROLE regress_dg_erin;
DROP FUNCTION checks(name);

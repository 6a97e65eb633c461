-- The lost-commit alarm (README, "Lost commits"): a node that lost its
-- part of a committed DT is listed in dg.lost_commits until a superuser
-- acknowledges it. Nothing here loses a commit (tests/tests/lost_commits.rs
-- fakes real losses), so the table is empty and the counter 0.
SELECT * FROM dg.lost_commits;
SELECT lost_commits FROM dg.stats;
-- Acknowledging returns how many alarms went: one GID's, or every one.
SELECT dg.acknowledge_lost_commits('dg_no_such_gid');
SELECT dg.acknowledge_lost_commits();
-- Decisions now keep each prepared participant's user mapping and remote
-- xid, which the check asks the node about.
SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute
WHERE attrelid = 'dg.decisions'::regclass AND attnum > 0 ORDER BY attnum;
-- Readable by pg_monitor and superusers only; only a superuser
-- acknowledges, even with EXECUTE granted.
CREATE ROLE regress_dg_erin;
CREATE ROLE regress_dg_mona IN ROLE pg_monitor;
SET ROLE regress_dg_erin;
SELECT * FROM dg.lost_commits;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM dg.lost_commits;
SELECT dg.acknowledge_lost_commits();
\echo :LAST_ERROR_SQLSTATE
SELECT lost_commits FROM dg.stats;
RESET ROLE;
SET ROLE regress_dg_mona;
SELECT count(*) AS alarms FROM dg.lost_commits;
DELETE FROM dg.lost_commits;
SELECT dg.acknowledge_lost_commits();
RESET ROLE;
GRANT EXECUTE ON FUNCTION dg.acknowledge_lost_commits(text) TO regress_dg_mona;
SET ROLE regress_dg_mona;
SELECT dg.acknowledge_lost_commits(NULL);
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
REVOKE EXECUTE ON FUNCTION dg.acknowledge_lost_commits(text) FROM regress_dg_mona;
DROP ROLE regress_dg_erin;
DROP ROLE regress_dg_mona;

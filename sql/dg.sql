-- dg's SQL objects. CREATE EXTENSION creates the schema dg (dg.control).
-- Every object carries a COMMENT: \dt+, \df+ and \dv+ document dg.

GRANT USAGE ON SCHEMA dg TO PUBLIC;

-- Tables -------------------------------------------------------------------

CREATE TABLE dg.coordinator (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton)
);
INSERT INTO dg.coordinator DEFAULT VALUES;
COMMENT ON TABLE dg.coordinator IS
    'This installation''s identity: the UUID that starts every GID it prepares.';
COMMENT ON COLUMN dg.coordinator.id IS 'Coordinator UUID, made at CREATE EXTENSION.';
COMMENT ON COLUMN dg.coordinator.singleton IS 'Keeps the table to one row.';

CREATE TABLE dg.decisions (
    xid bigint PRIMARY KEY,
    dt_id text NOT NULL,
    decided_at timestamptz NOT NULL DEFAULT now(),
    mappings oid[],
    remote_xids xid8[]
);
REVOKE ALL ON dg.coordinator, dg.decisions FROM PUBLIC;
COMMENT ON TABLE dg.decisions IS
    'Commit decisions of two-phase distributed transactions: a row means commit, no row means abort.';
COMMENT ON COLUMN dg.decisions.xid IS
    'Full transaction id of the local transaction that decided; it also appears in the GIDs.';
COMMENT ON COLUMN dg.decisions.dt_id IS 'The distributed transaction id dist_begin() returned.';
COMMENT ON COLUMN dg.decisions.decided_at IS 'When the decision was written.';
COMMENT ON COLUMN dg.decisions.mappings IS 'User mapping of each prepared participant (the last part of its GID).';
COMMENT ON COLUMN dg.decisions.remote_xids IS
    'Each prepared participant''s transaction id on its node, in the order of mappings: how the resolver tells a finished participant from a lost one.';

-- Lost commits -----------------------------------------------------------------
-- A node that lost its part of a committed DT (README, "Lost commits"). A
-- table, not shared memory: an alarm must outlive a restart of the
-- coordinator, until a superuser acknowledges it. Only the resolver
-- writes it, as the owner, in the transaction that forgets the decision.

CREATE TABLE dg.lost_commits (
    node text NOT NULL,
    gid text PRIMARY KEY,
    remote_xid xid8 NOT NULL,
    remote_status text NOT NULL,
    dt_id text NOT NULL,
    xid bigint NOT NULL,
    decided_at timestamptz NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON dg.lost_commits FROM PUBLIC;
GRANT SELECT ON dg.lost_commits TO pg_monitor;
COMMENT ON TABLE dg.lost_commits IS
    'Committed DTs whose part on a node is gone, until dg.acknowledge_lost_commits(); written by the resolver only (pg_monitor and superusers read it).';
COMMENT ON COLUMN dg.lost_commits.node IS 'Node (server name) that lost it, when it was found.';
COMMENT ON COLUMN dg.lost_commits.gid IS 'GID of the prepared transaction the node lost (see dg.gid_info).';
COMMENT ON COLUMN dg.lost_commits.remote_xid IS 'The node''s transaction id of it, learned at PREPARE.';
COMMENT ON COLUMN dg.lost_commits.remote_status IS
    'How the node saw that xid: aborted, in progress (reused), not yet assigned (the node went back in time) or unknown.';
COMMENT ON COLUMN dg.lost_commits.dt_id IS 'The distributed transaction id dist_begin() returned.';
COMMENT ON COLUMN dg.lost_commits.xid IS 'Full transaction id of the local transaction that decided commit.';
COMMENT ON COLUMN dg.lost_commits.decided_at IS 'When the commit was decided.';
COMMENT ON COLUMN dg.lost_commits.detected_at IS 'When the resolver found the loss.';

CREATE FUNCTION dg.acknowledge_lost_commits(gid text DEFAULT NULL) RETURNS bigint
    LANGUAGE c AS 'MODULE_PATHNAME', 'acknowledge_lost_commits_wrapper';
REVOKE ALL ON FUNCTION dg.acknowledge_lost_commits(text) FROM PUBLIC;
COMMENT ON FUNCTION dg.acknowledge_lost_commits(text) IS
    'Clears the lost-commit alarm of one GID, or of all when NULL, once dealt with; returns how many (superuser only).';

-- Nodes --------------------------------------------------------------------

CREATE FUNCTION dg.dg_fdw_validator(options text[], catalog oid) RETURNS void
    LANGUAGE c STRICT AS 'MODULE_PATHNAME', 'dg_fdw_validator_wrapper';
COMMENT ON FUNCTION dg.dg_fdw_validator(text[], oid) IS
    'Accepts libpq connection keywords: server-side ones on servers, user, password and ssl credentials on user mappings.';

CREATE FOREIGN DATA WRAPPER dg VALIDATOR dg.dg_fdw_validator;
COMMENT ON FOREIGN DATA WRAPPER dg IS 'Peers of dg: one foreign server per node, credentials in user mappings.';

CREATE VIEW dg.nodes AS
SELECT s.srvname AS node,
       w.fdwname AS wrapper,
       ARRAY(SELECT o FROM unnest(s.srvoptions) AS o
             WHERE split_part(o, '=', 1) NOT IN ('password', 'sslpassword')) AS options,
       um.remote_user,
       has_server_privilege(s.oid, 'USAGE') AS usable
FROM pg_foreign_server s
JOIN pg_foreign_data_wrapper w ON w.oid = s.srvfdw
LEFT JOIN LATERAL (
    SELECT (SELECT substr(o, 6) FROM unnest(m.umoptions) AS o WHERE o LIKE 'user=%') AS remote_user
    FROM pg_user_mappings m
    WHERE m.srvid = s.oid
      AND m.umuser IN (0, (SELECT oid FROM pg_roles WHERE rolname = current_user))
    ORDER BY m.umuser DESC
    LIMIT 1
) um ON true
WHERE w.fdwname IN ('dg', 'postgres_fdw');
GRANT SELECT ON dg.nodes TO PUBLIC;
COMMENT ON VIEW dg.nodes IS
    'Servers usable as dg nodes (of wrapper dg or postgres_fdw). Passwords are never shown.';
COMMENT ON COLUMN dg.nodes.node IS 'Server name, as passed to dist_exec and dist_query.';
COMMENT ON COLUMN dg.nodes.wrapper IS 'dg or postgres_fdw.';
COMMENT ON COLUMN dg.nodes.options IS 'Server options (host, port, dbname, ...).';
COMMENT ON COLUMN dg.nodes.remote_user IS
    'Remote user of the mapping the current role would use (its own, else PUBLIC); null when none is visible.';
COMMENT ON COLUMN dg.nodes.usable IS 'Whether the current role has USAGE on the server.';

-- Distributed transactions -------------------------------------------------

CREATE FUNCTION dg.dist_begin() RETURNS text
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_begin_wrapper';
COMMENT ON FUNCTION dg.dist_begin() IS
    'Starts a distributed transaction and returns its id: bound to the transaction block inside one, spanning statements outside.';

CREATE FUNCTION dg.dist_exec(node name, sql text, VARIADIC params text[] DEFAULT '{}') RETURNS bigint
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_exec_wrapper';
COMMENT ON FUNCTION dg.dist_exec(name, text, text[]) IS
    'Runs one statement on a node inside the distributed transaction, with $1, $2, ... bound to params; returns rows affected.';

CREATE FUNCTION dg.dist_query(node name, sql text, VARIADIC params text[] DEFAULT '{}') RETURNS SETOF record
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_query';
COMMENT ON FUNCTION dg.dist_query(name, text, text[]) IS
    'Runs a query on a node inside the distributed transaction; call as SELECT * FROM dg.dist_query(...) AS t(col type, ...).';

CREATE FUNCTION dg.dist_send(node name, sql text, VARIADIC params text[] DEFAULT '{}') RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_send_wrapper';
COMMENT ON FUNCTION dg.dist_send(name, text, text[]) IS
    'Queues one statement on a node''s pipeline inside the distributed transaction and returns without waiting; its outcome is read at the next sync point (dist_sync, a dist_exec or dist_query on the node, the end of the subtransaction, COMMIT).';

CREATE FUNCTION dg.dist_sync() RETURNS TABLE (node text, seq integer, rows bigint)
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_sync_wrapper';
COMMENT ON FUNCTION dg.dist_sync() IS
    'Waits for every statement dist_send queued and returns, in send order, the rows each affected; raises the error of the first that failed.';

CREATE FUNCTION dg.dist_snapshot(VARIADIC nodes name[] DEFAULT '{}') RETURNS TABLE (node text)
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_snapshot_wrapper';
COMMENT ON FUNCTION dg.dist_snapshot(name[]) IS
    'First in a REPEATABLE READ block: starts the distributed transaction with one snapshot on each node (all usable nodes when none are named) in which every distributed transaction of this coordinator is wholly visible or not at all; returns the nodes.';

CREATE FUNCTION dg.dist_commit() RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_commit_wrapper';
COMMENT ON FUNCTION dg.dist_commit() IS
    'Commits the distributed transaction on every participant or on none. In a block it prepares now and the block''s COMMIT seals it.';

CREATE FUNCTION dg.dist_rollback() RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_rollback_wrapper';
COMMENT ON FUNCTION dg.dist_rollback() IS 'Rolls the distributed transaction back on every participant.';

CREATE FUNCTION dg.dist_status(OUT id text, OUT state text, OUT scope text, OUT participants text[])
    RETURNS SETOF record ROWS 1
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_status_wrapper';
COMMENT ON FUNCTION dg.dist_status() IS
    'This session''s distributed transaction: id, state (none, active, aborted, committing), scope (transaction, session) and participant nodes.';

-- Connections --------------------------------------------------------------

CREATE FUNCTION dg.connections(OUT node text, OUT remote_user text, OUT state text,
                               OUT backend_pid integer, OUT valid boolean)
    RETURNS SETOF record
    LANGUAGE c AS 'MODULE_PATHNAME', 'connections_wrapper';
COMMENT ON FUNCTION dg.connections() IS
    'This session''s connections to nodes, cached or in use, with the remote backend''s pid.';

CREATE FUNCTION dg.disconnect(node name) RETURNS boolean
    LANGUAGE c AS 'MODULE_PATHNAME', 'disconnect_wrapper';
COMMENT ON FUNCTION dg.disconnect(name) IS
    'Closes this session''s cached connections to a node; false if there were none.';

CREATE FUNCTION dg.disconnect_all() RETURNS integer
    LANGUAGE c AS 'MODULE_PATHNAME', 'disconnect_all_wrapper';
COMMENT ON FUNCTION dg.disconnect_all() IS 'Closes all of this session''s cached connections; returns how many.';

-- Node checks ----------------------------------------------------------------

CREATE FUNCTION dg.check_node(node name)
    RETURNS TABLE ("check" text, ok boolean, detail text, hint text)
    LANGUAGE c AS 'MODULE_PATHNAME', 'check_node_wrapper';
COMMENT ON FUNCTION dg.check_node(name) IS
    'Whether a node will work for dg as the caller''s mapped role: one row per check (README, "Registering a node").';

CREATE FUNCTION dg.gid_info(gid text, OUT coordinator text, OUT database oid, OUT xid bigint, OUT user_mapping oid)
    RETURNS SETOF record ROWS 1
    LANGUAGE c STRICT IMMUTABLE AS 'MODULE_PATHNAME', 'gid_info_wrapper';
COMMENT ON FUNCTION dg.gid_info(text) IS
    'Splits a dg GID (as in pg_prepared_xacts on a peer) into coordinator, database, local xid and user mapping; no row for other GIDs.';

-- Recovery -------------------------------------------------------------------
-- Superuser only: these finish other sessions' (and for resolve, other
-- coordinators') prepared transactions.

CREATE FUNCTION dg.recover(OUT node text, OUT gid text, OUT action text, OUT result text)
    RETURNS SETOF record
    LANGUAGE c AS 'MODULE_PATHNAME', 'recover_wrapper';
REVOKE ALL ON FUNCTION dg.recover() FROM PUBLIC;
COMMENT ON FUNCTION dg.recover() IS
    'One resolver pass now: commits in-doubt transactions with a decision row, rolls back those without, leaves those whose local transaction still runs.';

CREATE FUNCTION dg.resolve(node name, gid text, commit boolean) RETURNS text
    LANGUAGE c AS 'MODULE_PATHNAME', 'resolve_wrapper';
REVOKE ALL ON FUNCTION dg.resolve(name, text, boolean) FROM PUBLIC;
COMMENT ON FUNCTION dg.resolve(name, text, boolean) IS
    'Manual resolution of a prepared transaction on a node, for a coordinator that is gone for good (superuser only).';

CREATE FUNCTION dg.create_restore_point(name text) RETURNS TABLE (node text, lsn pg_lsn)
    LANGUAGE c AS 'MODULE_PATHNAME', 'create_restore_point_wrapper';
REVOKE ALL ON FUNCTION dg.create_restore_point(text) FROM PUBLIC;
COMMENT ON FUNCTION dg.create_restore_point(text) IS
    'pg_create_restore_point(name) on the coordinator (node NULL) and on every node, while no distributed transaction of this server is between its commit and its last COMMIT PREPARED, so restoring every one of them to that name is consistent (superuser only).';

CREATE FUNCTION dg.in_doubt_transactions(OUT node text, OUT gid text, OUT prepared text, OUT action text)
    RETURNS SETOF record
    LANGUAGE c AS 'MODULE_PATHNAME', 'in_doubt_transactions_wrapper';
REVOKE ALL ON FUNCTION dg.in_doubt_transactions() FROM PUBLIC;
COMMENT ON FUNCTION dg.in_doubt_transactions() IS 'Behind the dg.in_doubt view.';

CREATE VIEW dg.in_doubt AS
SELECT node, gid, prepared::timestamptz AS prepared, now() - prepared::timestamptz AS age, action
FROM dg.in_doubt_transactions();
COMMENT ON VIEW dg.in_doubt IS
    'Prepared transactions of this coordinator database on every node, with the action the resolver will apply.';
COMMENT ON COLUMN dg.in_doubt.node IS 'Node where the transaction is prepared.';
COMMENT ON COLUMN dg.in_doubt.gid IS 'Its GID (see dg.gid_info).';
COMMENT ON COLUMN dg.in_doubt.prepared IS 'When it was prepared, by the node''s clock.';
COMMENT ON COLUMN dg.in_doubt.age IS 'How long it has been prepared.';
COMMENT ON COLUMN dg.in_doubt.action IS
    'leave (its local transaction still runs), commit (a decision row exists) or rollback (none: presumed abort).';

-- Monitoring -----------------------------------------------------------------

CREATE FUNCTION dg.stats_counters(OUT committed_2pc bigint, OUT committed_1pc bigint, OUT aborted bigint,
                                  OUT finish_failures bigint, OUT finish_failures_unreachable bigint,
                                  OUT resolver_commits bigint, OUT resolver_aborts bigint,
                                  OUT remote_requests bigint, OUT deadlocks bigint, OUT lost_commits bigint,
                                  OUT in_doubt bigint, OUT oldest_in_doubt_us bigint,
                                  OUT snapshots bigint, OUT snapshots_held bigint, OUT snapshot_retakes bigint)
    RETURNS SETOF record ROWS 1
    LANGUAGE c AS 'MODULE_PATHNAME', 'stats_counters_wrapper';
COMMENT ON FUNCTION dg.stats_counters() IS 'Behind the dg.stats view: the counters.';

CREATE FUNCTION dg.stats_steps(OUT step text, OUT calls bigint, OUT total_us bigint,
                               OUT min_us bigint, OUT max_us bigint)
    RETURNS SETOF record ROWS 5
    LANGUAGE c AS 'MODULE_PATHNAME', 'stats_steps_wrapper';
COMMENT ON FUNCTION dg.stats_steps() IS 'Behind the dg.stats view: the timed steps, one row each, in microseconds.';

CREATE FUNCTION dg.stats_reset() RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'stats_reset_wrapper';
REVOKE EXECUTE ON FUNCTION dg.stats_reset() FROM PUBLIC;
COMMENT ON FUNCTION dg.stats_reset() IS 'Zeroes dg.stats (superuser only unless granted).';

CREATE VIEW dg.stats AS
SELECT c.committed_2pc, c.committed_1pc, c.aborted, c.finish_failures, c.finish_failures_unreachable,
       c.resolver_commits, c.resolver_aborts, c.remote_requests, c.deadlocks, c.lost_commits, c.in_doubt,
       now() - to_timestamp(c.oldest_in_doubt_us / 1000000.0) AS oldest_in_doubt_age,
       c.snapshots, c.snapshots_held, c.snapshot_retakes,
       max(calls) FILTER (WHERE step = 'statement') AS statement_calls,
       round(max(total_us) FILTER (WHERE step = 'statement') / 1000.0, 3) AS statement_total_ms,
       round(max(min_us) FILTER (WHERE step = 'statement') / 1000.0, 3) AS statement_min_ms,
       round(max(max_us) FILTER (WHERE step = 'statement') / 1000.0, 3) AS statement_max_ms,
       round(max(total_us) FILTER (WHERE step = 'statement') / nullif(max(calls) FILTER (WHERE step = 'statement'), 0) / 1000.0, 3) AS statement_mean_ms,
       max(calls) FILTER (WHERE step = 'prepare') AS prepare_calls,
       round(max(total_us) FILTER (WHERE step = 'prepare') / 1000.0, 3) AS prepare_total_ms,
       round(max(min_us) FILTER (WHERE step = 'prepare') / 1000.0, 3) AS prepare_min_ms,
       round(max(max_us) FILTER (WHERE step = 'prepare') / 1000.0, 3) AS prepare_max_ms,
       round(max(total_us) FILTER (WHERE step = 'prepare') / nullif(max(calls) FILTER (WHERE step = 'prepare'), 0) / 1000.0, 3) AS prepare_mean_ms,
       max(calls) FILTER (WHERE step = 'decision') AS decision_calls,
       round(max(total_us) FILTER (WHERE step = 'decision') / 1000.0, 3) AS decision_total_ms,
       round(max(min_us) FILTER (WHERE step = 'decision') / 1000.0, 3) AS decision_min_ms,
       round(max(max_us) FILTER (WHERE step = 'decision') / 1000.0, 3) AS decision_max_ms,
       round(max(total_us) FILTER (WHERE step = 'decision') / nullif(max(calls) FILTER (WHERE step = 'decision'), 0) / 1000.0, 3) AS decision_mean_ms,
       max(calls) FILTER (WHERE step = 'finish') AS finish_calls,
       round(max(total_us) FILTER (WHERE step = 'finish') / 1000.0, 3) AS finish_total_ms,
       round(max(min_us) FILTER (WHERE step = 'finish') / 1000.0, 3) AS finish_min_ms,
       round(max(max_us) FILTER (WHERE step = 'finish') / 1000.0, 3) AS finish_max_ms,
       round(max(total_us) FILTER (WHERE step = 'finish') / nullif(max(calls) FILTER (WHERE step = 'finish'), 0) / 1000.0, 3) AS finish_mean_ms,
       max(calls) FILTER (WHERE step = 'resolve') AS resolve_calls,
       round(max(total_us) FILTER (WHERE step = 'resolve') / 1000.0, 3) AS resolve_total_ms,
       round(max(min_us) FILTER (WHERE step = 'resolve') / 1000.0, 3) AS resolve_min_ms,
       round(max(max_us) FILTER (WHERE step = 'resolve') / 1000.0, 3) AS resolve_max_ms,
       round(max(total_us) FILTER (WHERE step = 'resolve') / nullif(max(calls) FILTER (WHERE step = 'resolve'), 0) / 1000.0, 3) AS resolve_mean_ms
FROM dg.stats_counters() c, dg.stats_steps() s
GROUP BY c.committed_2pc, c.committed_1pc, c.aborted, c.finish_failures, c.finish_failures_unreachable,
         c.resolver_commits, c.resolver_aborts, c.remote_requests, c.deadlocks, c.lost_commits, c.in_doubt,
         c.oldest_in_doubt_us, c.snapshots, c.snapshots_held, c.snapshot_retakes;
GRANT SELECT ON dg.stats TO PUBLIC;
COMMENT ON VIEW dg.stats IS 'Distributed transactions of this server since it started or dg.stats_reset() (all databases).';
COMMENT ON COLUMN dg.stats.committed_2pc IS 'DTs committed with two-phase commit.';
COMMENT ON COLUMN dg.stats.committed_1pc IS 'DTs committed in one phase (one writer, or none).';
COMMENT ON COLUMN dg.stats.aborted IS 'DTs rolled back on their participants.';
COMMENT ON COLUMN dg.stats.finish_failures IS 'COMMIT/ROLLBACK PREPARED that failed after the decision and were left to the resolver.';
COMMENT ON COLUMN dg.stats.finish_failures_unreachable IS
    'Of finish_failures, those where the node could not be reached or stopped answering (retryable); the rest the node refused.';
COMMENT ON COLUMN dg.stats.resolver_commits IS 'In-doubt transactions the resolver (or dg.recover()) committed.';
COMMENT ON COLUMN dg.stats.resolver_aborts IS 'In-doubt transactions the resolver (or dg.recover()) rolled back.';
COMMENT ON COLUMN dg.stats.remote_requests IS
    'Requests sent to peers, counted when each DT ends: one per statement, or per pipeline (BEGIN goes with the first statement), per peer.';
COMMENT ON COLUMN dg.stats.deadlocks IS
    'Distributed deadlocks broken by failing one of this server''s DTs with SQLSTATE 40P01 (see dg.deadlock_check_interval).';
COMMENT ON COLUMN dg.stats.lost_commits IS
    'Participants of committed DTs whose node lost them, found by the resolver since start or reset (each stays in dg.lost_commits).';
COMMENT ON COLUMN dg.stats.in_doubt IS
    'dg prepared transactions the last resolver pass of each database left prepared (still committing, or not finishable yet).';
COMMENT ON COLUMN dg.stats.oldest_in_doubt_age IS 'How long ago the oldest of them was prepared; NULL with none.';
COMMENT ON COLUMN dg.stats.snapshots IS 'Consistent snapshots taken (dist_snapshot).';
COMMENT ON COLUMN dg.stats.snapshots_held IS 'Of those, snapshots taken holding the commit fence (commits waited for them): after six tries crossed by finishing DTs, or with a DT in doubt on a node.';
COMMENT ON COLUMN dg.stats.snapshot_retakes IS 'Snapshots taken while commits went on that a finishing DT crossed, taken again.';
COMMENT ON COLUMN dg.stats.statement_calls IS 'Times of one user statement on a node (dist_exec, dist_query), sent to answered: how many.';
COMMENT ON COLUMN dg.stats.statement_total_ms IS 'Times of one user statement on a node (dist_exec, dist_query), sent to answered: total, ms.';
COMMENT ON COLUMN dg.stats.statement_min_ms IS 'Times of one user statement on a node (dist_exec, dist_query), sent to answered: shortest, ms (0 before the first).';
COMMENT ON COLUMN dg.stats.statement_max_ms IS 'Times of one user statement on a node (dist_exec, dist_query), sent to answered: longest, ms.';
COMMENT ON COLUMN dg.stats.statement_mean_ms IS 'Times of one user statement on a node (dist_exec, dist_query), sent to answered: mean, ms.';
COMMENT ON COLUMN dg.stats.prepare_calls IS 'Times of PREPARE TRANSACTION on every writer of a two-phase DT, all at once: how many.';
COMMENT ON COLUMN dg.stats.prepare_total_ms IS 'Times of PREPARE TRANSACTION on every writer of a two-phase DT, all at once: total, ms.';
COMMENT ON COLUMN dg.stats.prepare_min_ms IS 'Times of PREPARE TRANSACTION on every writer of a two-phase DT, all at once: shortest, ms (0 before the first).';
COMMENT ON COLUMN dg.stats.prepare_max_ms IS 'Times of PREPARE TRANSACTION on every writer of a two-phase DT, all at once: longest, ms.';
COMMENT ON COLUMN dg.stats.prepare_mean_ms IS 'Times of PREPARE TRANSACTION on every writer of a two-phase DT, all at once: mean, ms.';
COMMENT ON COLUMN dg.stats.decision_calls IS 'Times of the decision row and the local commit that makes it durable: how many.';
COMMENT ON COLUMN dg.stats.decision_total_ms IS 'Times of the decision row and the local commit that makes it durable: total, ms.';
COMMENT ON COLUMN dg.stats.decision_min_ms IS 'Times of the decision row and the local commit that makes it durable: shortest, ms (0 before the first).';
COMMENT ON COLUMN dg.stats.decision_max_ms IS 'Times of the decision row and the local commit that makes it durable: longest, ms.';
COMMENT ON COLUMN dg.stats.decision_mean_ms IS 'Times of the decision row and the local commit that makes it durable: mean, ms.';
COMMENT ON COLUMN dg.stats.finish_calls IS 'Times of COMMIT PREPARED on every participant of a two-phase DT, all at once: how many.';
COMMENT ON COLUMN dg.stats.finish_total_ms IS 'Times of COMMIT PREPARED on every participant of a two-phase DT, all at once: total, ms.';
COMMENT ON COLUMN dg.stats.finish_min_ms IS 'Times of COMMIT PREPARED on every participant of a two-phase DT, all at once: shortest, ms (0 before the first).';
COMMENT ON COLUMN dg.stats.finish_max_ms IS 'Times of COMMIT PREPARED on every participant of a two-phase DT, all at once: longest, ms.';
COMMENT ON COLUMN dg.stats.finish_mean_ms IS 'Times of COMMIT PREPARED on every participant of a two-phase DT, all at once: mean, ms.';
COMMENT ON COLUMN dg.stats.resolve_calls IS 'Times of one COMMIT or ROLLBACK PREPARED by the resolver (or dg.recover()): how many.';
COMMENT ON COLUMN dg.stats.resolve_total_ms IS 'Times of one COMMIT or ROLLBACK PREPARED by the resolver (or dg.recover()): total, ms.';
COMMENT ON COLUMN dg.stats.resolve_min_ms IS 'Times of one COMMIT or ROLLBACK PREPARED by the resolver (or dg.recover()): shortest, ms (0 before the first).';
COMMENT ON COLUMN dg.stats.resolve_max_ms IS 'Times of one COMMIT or ROLLBACK PREPARED by the resolver (or dg.recover()): longest, ms.';
COMMENT ON COLUMN dg.stats.resolve_mean_ms IS 'Times of one COMMIT or ROLLBACK PREPARED by the resolver (or dg.recover()): mean, ms.';

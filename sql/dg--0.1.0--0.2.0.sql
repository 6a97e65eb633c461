-- dg 0.1.0 -> 0.2.0. ALTER EXTENSION dg UPDATE runs this; the catalog it
-- leaves must equal a fresh CREATE EXTENSION of 0.2.0 (sql/dg.sql), which
-- tests/tests/upgrade.rs checks object by object. Every change to
-- sql/dg.sql in this release comes here too.

-- dg.stats gains each step's timings (pg_stat_statements style), finish
-- failures split by reachability, the in-doubt count and age, and
-- dg.stats_reset(). A view's columns cannot be changed in place: drop it
-- and the function behind it, and create both anew.
DROP VIEW dg.stats;
DROP FUNCTION dg.stats_counters();

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

-- dg.check_node(): will this node work?
CREATE FUNCTION dg.check_node(node name)
    RETURNS TABLE ("check" text, ok boolean, detail text, hint text)
    LANGUAGE c AS 'MODULE_PATHNAME', 'check_node_wrapper';
COMMENT ON FUNCTION dg.check_node(name) IS
    'Whether a node will work for dg as the caller''s mapped role: one row per check (README, "Registering a node").';

-- dg.dist_send and dg.dist_sync: statements that do not wait (issue 13).
CREATE FUNCTION dg.dist_send(node name, sql text, VARIADIC params text[] DEFAULT '{}') RETURNS void
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_send_wrapper';
COMMENT ON FUNCTION dg.dist_send(name, text, text[]) IS
    'Queues one statement on a node''s pipeline inside the distributed transaction and returns without waiting; its outcome is read at the next sync point (dist_sync, a dist_exec or dist_query on the node, the end of the subtransaction, COMMIT).';

CREATE FUNCTION dg.dist_sync() RETURNS TABLE (node text, seq integer, rows bigint)
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_sync_wrapper';
COMMENT ON FUNCTION dg.dist_sync() IS
    'Waits for every statement dist_send queued and returns, in send order, the rows each affected; raises the error of the first that failed.';

-- dg.decisions keeps each prepared participant's remote xid, and a node
-- that lost a committed participant raises an alarm (dg.lost_commits).
ALTER TABLE dg.decisions ADD COLUMN mappings oid[], ADD COLUMN remote_xids xid8[];
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

-- dg.dist_snapshot: consistent reads across nodes (issue 14).
CREATE FUNCTION dg.dist_snapshot(VARIADIC nodes name[] DEFAULT '{}') RETURNS TABLE (node text)
    LANGUAGE c AS 'MODULE_PATHNAME', 'dist_snapshot_wrapper';
COMMENT ON FUNCTION dg.dist_snapshot(name[]) IS
    'First in a REPEATABLE READ block: starts the distributed transaction with one snapshot on each node (all usable nodes when none are named) in which every distributed transaction of this coordinator is wholly visible or not at all; returns the nodes.';

-- dg.create_restore_point: a consistent restore point on every node (issue 14).
CREATE FUNCTION dg.create_restore_point(name text) RETURNS TABLE (node text, lsn pg_lsn)
    LANGUAGE c AS 'MODULE_PATHNAME', 'create_restore_point_wrapper';
REVOKE ALL ON FUNCTION dg.create_restore_point(text) FROM PUBLIC;
COMMENT ON FUNCTION dg.create_restore_point(text) IS
    'pg_create_restore_point(name) on the coordinator (node NULL) and on every node, while no distributed transaction of this server is between its commit and its last COMMIT PREPARED, so restoring every one of them to that name is consistent (superuser only).';

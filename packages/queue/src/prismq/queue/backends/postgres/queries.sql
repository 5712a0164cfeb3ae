-- Named queries of the PostgreSQL backend. Each starts with "-- name: <name>".
-- {task_columns} is replaced by the task column list when the file is loaded; {schema}
-- is filled by psycopg.sql as a quoted identifier. Values are always bound parameters.

-- ---------------------------------------------------------------------------------------
-- Schema and versioning
-- ---------------------------------------------------------------------------------------

-- name: create_schema
CREATE SCHEMA IF NOT EXISTS {schema};

-- Removes a schema and everything in it (prismq.queue.testing's temporary queues only).
-- name: drop_schema
DROP SCHEMA IF EXISTS {schema} CASCADE;

-- Serialises schema creation and migrations per schema (the configured one, else the
-- first schema of the search_path).
-- name: lock_migrations
SELECT pg_advisory_xact_lock(
    hashtext('prismq_queue_migrate:' || coalesce(%(schema)s::text, current_schema(), '')));

-- name: current_schema
SELECT current_schema();

-- The server's wall clock now (not the transaction's start): every lease is timed by it.
-- name: server_time
SELECT extract(epoch FROM clock_timestamp())::double precision;

-- name: catalog_state
SELECT to_regclass('prismq_schema_version') IS NOT NULL, to_regclass('tasks') IS NOT NULL;

-- Objects of the current schema bearing a name a pending migration would create.
-- name: clashing_names
SELECT 'table or index' AS kind, c.relname FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%(names)s::text[])
UNION ALL
SELECT 'function', p.proname FROM pg_proc p
WHERE p.pronamespace = current_schema()::regnamespace AND p.proname = ANY(%(names)s::text[])
ORDER BY 2;

-- name: read_schema_version
SELECT coalesce(max(version), 0) FROM prismq_schema_version;

-- name: write_schema_version
INSERT INTO prismq_schema_version (version) VALUES (%(version)s);

-- name: clear_schema_version
DELETE FROM prismq_schema_version;

-- name: schema_tables
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'S');

-- name: schema_indexes
SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = 'tasks';

-- name: schema_triggers
SELECT tgname FROM pg_trigger
WHERE tgrelid = to_regclass('tasks') AND NOT tgisinternal;

-- name: invalid_indexes
SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = to_regclass('tasks') AND NOT (i.indisvalid AND i.indisready);

-- name: inconsistent_leases
SELECT count(*) FROM tasks WHERE (status = 'leased') <> (lease_token IS NOT NULL);

-- ---------------------------------------------------------------------------------------
-- Change tracking
-- ---------------------------------------------------------------------------------------

-- Takes the schema's advisory lock exclusively without waiting: NULL while a writer is
-- between its bump and its commit (see migrations/0001_initial.sql).
-- name: data_version
SELECT CASE WHEN pg_try_advisory_xact_lock(hashtext('prismq_queue:' || current_schema()))
            THEN (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM prismq_data_version) END;

-- Inside this thread's own transaction: no lock (it would hold back every writer).
-- name: data_version_in_transaction
SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM prismq_data_version;

-- name: listen
LISTEN prismq_queue;

-- ---------------------------------------------------------------------------------------
-- Client side
-- ---------------------------------------------------------------------------------------

-- name: insert_task
INSERT INTO tasks (task_type, payload, priority, run_after, max_attempts, retry_policy,
                   idempotency_key, trace_context, created_at, updated_at)
VALUES (%(task_type)s, %(payload)s, %(priority)s, %(run_after)s, %(max_attempts)s,
        %(retry_policy)s, %(idempotency_key)s, %(trace_context)s, %(now)s, %(now)s)
RETURNING id;

-- name: insert_task_idempotent
INSERT INTO tasks (task_type, payload, priority, run_after, max_attempts, retry_policy,
                   idempotency_key, trace_context, created_at, updated_at)
VALUES (%(task_type)s, %(payload)s, %(priority)s, %(run_after)s, %(max_attempts)s,
        %(retry_policy)s, %(idempotency_key)s, %(trace_context)s, %(now)s, %(now)s)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: task_id_by_idempotency_key
SELECT id FROM tasks WHERE idempotency_key = %(idempotency_key)s;

-- name: get_task
SELECT {task_columns} FROM tasks WHERE id = %(id)s;

-- name: list_tasks_newest_first
SELECT {task_columns} FROM tasks
WHERE (%(statuses)s::text[] IS NULL OR status = ANY (%(statuses)s::text[]))
  AND (%(task_types)s::text[] IS NULL OR task_type = ANY (%(task_types)s::text[]))
  AND (%(created_after)s::double precision IS NULL OR created_at >= %(created_after)s::double precision)
  AND (%(created_before)s::double precision IS NULL OR created_at < %(created_before)s::double precision)
ORDER BY id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: list_tasks_oldest_first
SELECT {task_columns} FROM tasks
WHERE (%(statuses)s::text[] IS NULL OR status = ANY (%(statuses)s::text[]))
  AND (%(task_types)s::text[] IS NULL OR task_type = ANY (%(task_types)s::text[]))
  AND (%(created_after)s::double precision IS NULL OR created_at >= %(created_after)s::double precision)
  AND (%(created_before)s::double precision IS NULL OR created_at < %(created_before)s::double precision)
ORDER BY id ASC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: count_by_status
SELECT status, count(*) FROM tasks GROUP BY status;

-- name: count_by_type
SELECT task_type, status, count(*) FROM tasks GROUP BY task_type, status;

-- name: count_ready
SELECT count(*), min(run_after) FROM tasks WHERE status = 'queued' AND run_after <= %(now)s;

-- name: count_delayed
SELECT count(*) FROM tasks WHERE status = 'queued' AND run_after > %(now)s;

-- name: count_expired_leases
SELECT count(*) FROM tasks WHERE status = 'leased' AND lease_until < %(now)s;

-- name: count_finished_since
SELECT count(*) FROM tasks
WHERE status IN ('completed', 'dead', 'cancelled') AND finished_at >= %(since)s;

-- name: cancel_queued
UPDATE tasks
SET status = 'cancelled', finished_at = %(now)s, updated_at = %(now)s
WHERE id = %(id)s AND status = 'queued'
RETURNING {task_columns};

-- name: request_cancel_leased
UPDATE tasks
SET cancel_requested = true, updated_at = %(now)s
WHERE id = %(id)s AND status = 'leased'
RETURNING {task_columns};

-- name: retry_finished
UPDATE tasks
SET status = 'queued', run_after = %(now)s, finished_at = NULL, cancel_requested = false,
    attempts = CASE WHEN %(reset)s THEN 0 ELSE attempts END,
    max_attempts = CASE WHEN %(reset)s THEN max_attempts ELSE greatest(max_attempts, attempts + 1) END,
    updated_at = %(now)s
WHERE id = %(id)s AND status IN ('dead', 'cancelled')
RETURNING {task_columns};

-- name: prune
DELETE FROM tasks
WHERE status = ANY (%(statuses)s::text[])
  AND finished_at IS NOT NULL AND finished_at < %(before)s
  AND id < (SELECT max(id) FROM tasks);  -- the newest task stays, as on SQLite

-- ---------------------------------------------------------------------------------------
-- Worker side. A task type is tested as a closed range ("task_type >= x AND task_type <=
-- x", the same rows as "=") and orders start with task_type: the planner then keeps that
-- order and reads the per-type index even in a generic (prepared) plan, instead of
-- filtering the global index, which reads past every other type's rows when x is rare.
-- Every claim is one statement: a MATERIALIZED CTE reads the ready index in
-- strategy order and locks rows with FOR UPDATE SKIP LOCKED (concurrent claimers pass
-- each other's rows instead of waiting), so the LIMIT holds; the UPDATE leases exactly
-- those rows.
-- ---------------------------------------------------------------------------------------

-- name: next_run_after_any
SELECT min(run_after) FROM tasks WHERE status = 'queued';

-- name: next_run_after_types
SELECT min(earliest.run_after)
FROM unnest(%(task_types)s::text[]) AS wanted(task_type)
CROSS JOIN LATERAL (
    SELECT run_after FROM tasks
    WHERE status = 'queued' AND task_type >= wanted.task_type AND task_type <= wanted.task_type
    ORDER BY task_type, run_after
    LIMIT 1
) AS earliest;

-- name: reclaim_expired
WITH expired AS MATERIALIZED (
    SELECT id FROM tasks
    WHERE status = 'leased' AND lease_until < %(now)s
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks
SET status = CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN attempts >= max_attempts THEN 'dead'
                  ELSE 'queued' END,
    finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN %(now)s END,
    last_error = 'lease expired: worker ' || locked_by || ' did not finish attempt '
                 || attempts || ' of ' || max_attempts || ' before its lease ran out',
    last_traceback = NULL,
    run_after = %(now)s, lease_until = NULL, locked_by = NULL, lease_token = NULL,
    updated_at = %(now)s
WHERE id IN (SELECT id FROM expired) AND status = 'leased';

-- The claim. Every claim variant is this one UPDATE with a pick_* selection of the rows
-- to lease (a "picked" CTE, read in strategy order with FOR UPDATE SKIP LOCKED) in place
-- of {picked}: claim_<variant> is built from pick_<variant> when the queries are loaded
-- (prismq.queue.backends.sqlfile.build_claims).
-- name: claim_template
WITH {picked}
UPDATE tasks
SET status = 'leased', attempts = attempts + 1, locked_by = %(worker)s, lease_token = %(token)s,
    lease_until = %(lease_until)s, started_at = %(now)s, updated_at = %(now)s,
    progress = NULL, progress_message = NULL
WHERE id IN (SELECT id FROM picked) AND status = 'queued'
RETURNING {task_columns};

-- Conditions every ready row a claim picks must meet besides being queued and due, as
-- "AND ...", put in place of {ready_filter} in the picks; both conditions apply. A run's task
-- (prismq.run:<module>, RUN_TASK_PREFIX of prismq.queue.backends.runstore) is claimed only by a
-- worker that names its task types (%(explicit)s true), never by one that claims every type.
-- blocked_types/blocked_keys are NULL, or the [task type, key] scopes whose flow limit is
-- reached ('' for every type or every key): their tasks wait (prismq.queue.flow).
-- name: ready_filter
AND (%(explicit)s OR substr(task_type, 1, 11) <> 'prismq.run:')
AND (%(blocked_types)s::text[] IS NULL OR NOT EXISTS (
    SELECT 1 FROM unnest(%(blocked_types)s::text[], %(blocked_keys)s::text[]) AS b(task_type, concurrency_key)
    WHERE b.task_type IN ('', tasks.task_type)
      AND b.concurrency_key IN ('', coalesce(tasks.concurrency_key, ''))))

-- name: pick_id
-- One known task by id (lease_again), not a ready scan.
picked AS MATERIALIZED (SELECT id FROM tasks WHERE id = %(id)s FOR UPDATE)

-- name: pick_oldest_first_any
picked AS MATERIALIZED (
    SELECT id FROM tasks
    WHERE status = 'queued' AND run_after <= %(now)s {ready_filter}
    ORDER BY run_after, id LIMIT %(count)s
    FOR UPDATE SKIP LOCKED
)

-- name: pick_newest_first_any
picked AS MATERIALIZED (
    SELECT id FROM tasks
    WHERE status = 'queued' AND run_after <= %(now)s {ready_filter}
    ORDER BY run_after DESC, id DESC LIMIT %(count)s
    FOR UPDATE SKIP LOCKED
)

-- name: pick_priority_any
picked AS MATERIALIZED (
    SELECT id FROM tasks
    WHERE status = 'queued' AND run_after <= %(now)s {ready_filter}
    ORDER BY priority, run_after, id LIMIT %(count)s
    FOR UPDATE SKIP LOCKED
)

-- name: pick_oldest_first_type
picked AS MATERIALIZED (
    SELECT id FROM tasks
    WHERE status = 'queued' AND task_type >= %(task_type)s AND task_type <= %(task_type)s
      AND run_after <= %(now)s {ready_filter}
    ORDER BY task_type, run_after, id LIMIT %(count)s
    FOR UPDATE SKIP LOCKED
)

-- name: pick_newest_first_type
picked AS MATERIALIZED (
    SELECT id FROM tasks
    WHERE status = 'queued' AND task_type >= %(task_type)s AND task_type <= %(task_type)s
      AND run_after <= %(now)s {ready_filter}
    ORDER BY task_type DESC, run_after DESC, id DESC LIMIT %(count)s
    FOR UPDATE SKIP LOCKED
)

-- name: pick_priority_type
picked AS MATERIALIZED (
    SELECT id FROM tasks
    WHERE status = 'queued' AND task_type >= %(task_type)s AND task_type <= %(task_type)s
      AND run_after <= %(now)s {ready_filter}
    ORDER BY task_type, priority, run_after, id LIMIT %(count)s
    FOR UPDATE SKIP LOCKED
)

-- Several task types merged: each type's best rows are read (and locked, skipping rows
-- other claimers hold) off its own index, then the overall best are leased; the few extra
-- rows locked are released at commit.
-- name: pick_oldest_first_types
candidates AS MATERIALIZED (
    SELECT c.id, c.run_after
    FROM unnest(%(task_types)s::text[]) AS wanted(task_type)
    CROSS JOIN LATERAL (
        SELECT id, run_after FROM tasks
        WHERE status = 'queued' AND task_type >= wanted.task_type AND task_type <= wanted.task_type
          AND run_after <= %(now)s {ready_filter}
        ORDER BY task_type, run_after, id LIMIT %(count)s
        FOR UPDATE SKIP LOCKED
    ) AS c
), picked AS MATERIALIZED (
    SELECT id FROM candidates ORDER BY run_after, id LIMIT %(count)s
)

-- name: pick_newest_first_types
candidates AS MATERIALIZED (
    SELECT c.id, c.run_after
    FROM unnest(%(task_types)s::text[]) AS wanted(task_type)
    CROSS JOIN LATERAL (
        SELECT id, run_after FROM tasks
        WHERE status = 'queued' AND task_type >= wanted.task_type AND task_type <= wanted.task_type
          AND run_after <= %(now)s {ready_filter}
        ORDER BY task_type DESC, run_after DESC, id DESC LIMIT %(count)s
        FOR UPDATE SKIP LOCKED
    ) AS c
), picked AS MATERIALIZED (
    SELECT id FROM candidates ORDER BY run_after DESC, id DESC LIMIT %(count)s
)

-- name: pick_priority_types
candidates AS MATERIALIZED (
    SELECT c.id, c.priority, c.run_after
    FROM unnest(%(task_types)s::text[]) AS wanted(task_type)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_after FROM tasks
        WHERE status = 'queued' AND task_type >= wanted.task_type AND task_type <= wanted.task_type
          AND run_after <= %(now)s {ready_filter}
        ORDER BY task_type, priority, run_after, id LIMIT %(count)s
        FOR UPDATE SKIP LOCKED
    ) AS c
), picked AS MATERIALIZED (
    SELECT id FROM candidates ORDER BY priority, run_after, id LIMIT %(count)s
)

-- Distinct task types with queued work, by skipping through the type index (one index
-- probe per type, however many tasks each has).
-- name: queued_task_types
WITH RECURSIVE seen(task_type) AS (
    SELECT min(task_type) FROM tasks WHERE status = 'queued'
    UNION ALL
    SELECT (SELECT min(t.task_type) FROM tasks t WHERE t.status = 'queued' AND t.task_type > seen.task_type)
    FROM seen WHERE seen.task_type IS NOT NULL
)
SELECT task_type FROM seen WHERE task_type IS NOT NULL;

-- One index probe per type (LIMIT 1 keeps it a probe rather than a join).
-- name: ready_task_types
SELECT wanted.task_type
FROM unnest(%(task_types)s::text[]) WITH ORDINALITY AS wanted(task_type, position)
CROSS JOIN LATERAL (
    SELECT 1 FROM tasks
    WHERE status = 'queued' AND task_type >= wanted.task_type AND task_type <= wanted.task_type
      AND run_after <= %(now)s
    ORDER BY task_type, run_after
    LIMIT 1
) AS ready
ORDER BY wanted.position;

-- name: insert_leased
-- A task inserted already leased by :worker under a fresh :token (its first attempt), so
-- only that holder's fenced operations can change it; one attempt allowed, so a lease
-- that runs out makes it dead (reclaim_expired), never queued for another worker.
INSERT INTO tasks (task_type, payload, status, priority, attempts, max_attempts, retry_policy,
                   run_after, lease_until, locked_by, lease_token, created_at, started_at,
                   updated_at)
VALUES (%(task_type)s, %(payload)s, 'leased', %(priority)s, 1, 1, %(retry_policy)s, %(run_after)s,
        %(lease_until)s, %(worker)s, %(token)s, %(now)s, %(now)s, %(now)s)
RETURNING {task_columns};

-- name: hand_over
-- lease_again on a leased task: a new holder and token (fencing off the previous one) when
-- its lease ran out, :worker already holds it, or its holder hands it over (:handover
-- is its current token). A queued, dead or cancelled task is leased again by
-- retry_finished then claim_id (the claim template), in the same transaction.
UPDATE tasks
SET locked_by = %(worker)s, lease_token = %(token)s, lease_until = %(lease_until)s, updated_at = %(now)s
WHERE id = %(id)s AND status = 'leased'
  AND (locked_by = %(worker)s OR lease_token = %(handover)s OR lease_until < %(now)s)
RETURNING {task_columns};

-- name: renew_lease
UPDATE tasks SET lease_until = %(lease_until)s, updated_at = %(now)s
WHERE id = %(id)s AND status = 'leased' AND locked_by = %(worker)s AND lease_token = %(token)s
RETURNING {task_columns};

-- Reporting progress renews the lease too; it never shortens a longer one.
-- name: update_progress
UPDATE tasks SET progress = %(percent)s, progress_message = %(message)s, updated_at = %(now)s,
    lease_until = greatest(lease_until, %(lease_until)s)
WHERE id = %(id)s AND status = 'leased' AND locked_by = %(worker)s AND lease_token = %(token)s
RETURNING {task_columns};

-- name: complete_task
UPDATE tasks
SET status = 'completed', result = %(result)s::text, finished_at = %(now)s, updated_at = %(now)s,
    progress = 100, lease_until = NULL, locked_by = NULL, lease_token = NULL
WHERE id = %(id)s AND status = 'leased' AND locked_by = %(worker)s AND lease_token = %(token)s;

-- name: complete_many
-- Several completions in one statement; parallel arrays of ids, workers, lease tokens
-- and results (JSON text or null). Returns the ids completed.
UPDATE tasks
SET status = 'completed', result = done.result, finished_at = %(now)s, updated_at = %(now)s,
    progress = 100, lease_until = NULL, locked_by = NULL, lease_token = NULL
FROM unnest(%(ids)s::bigint[], %(workers)s::text[], %(tokens)s::text[], %(results)s::text[])
     AS done(id, worker, token, result)
WHERE tasks.id = done.id AND tasks.status = 'leased' AND tasks.locked_by = done.worker
  AND tasks.lease_token = done.token
RETURNING tasks.id;

-- name: finish_attempt
UPDATE tasks
SET status = %(status)s::text,
    run_after = coalesce(%(run_after)s::double precision, run_after),
    attempts = CASE WHEN %(count_attempt)s THEN attempts ELSE greatest(attempts - 1, 0) END,
    last_error = coalesce(%(error)s::text, last_error),
    last_traceback = CASE WHEN %(error)s::text IS NULL THEN last_traceback ELSE %(traceback)s::text END,
    finished_at = CASE WHEN %(status)s::text IN ('dead', 'cancelled') THEN %(now)s END,
    lease_until = NULL, locked_by = NULL, lease_token = NULL, updated_at = %(now)s
WHERE id = %(id)s AND status = 'leased' AND locked_by = %(worker)s AND lease_token = %(token)s
RETURNING {task_columns};

-- name: lease_holder
SELECT status, locked_by, lease_token FROM tasks WHERE id = %(id)s;

-- ---------------------------------------------------------------------------------------
-- Worker registry
-- ---------------------------------------------------------------------------------------

-- name: upsert_worker
INSERT INTO workers (worker_id, hostname, pid, task_types, strategy, started_at, last_heartbeat)
VALUES (%(worker_id)s, %(hostname)s, %(pid)s, %(task_types)s, %(strategy)s, %(started_at)s,
        %(last_heartbeat)s)
ON CONFLICT (worker_id) DO UPDATE SET
    hostname = excluded.hostname, pid = excluded.pid, task_types = excluded.task_types,
    strategy = excluded.strategy, started_at = excluded.started_at,
    last_heartbeat = excluded.last_heartbeat;

-- name: heartbeat_worker
UPDATE workers SET last_heartbeat = %(now)s WHERE worker_id = %(worker_id)s;

-- name: delete_worker
DELETE FROM workers WHERE worker_id = %(worker_id)s;

-- name: list_workers
SELECT worker_id, hostname, pid, task_types, strategy, started_at, last_heartbeat
FROM workers ORDER BY worker_id;

-- ---------------------------------------------------------------------------------------
-- Maintenance
-- ---------------------------------------------------------------------------------------

-- Every table of the queue (PostgresBackend's QUEUE_TABLES, put in place of the marker). The
-- flow-control tables churn the most (a row written and deleted per task under a limit).
-- name: vacuum
VACUUM (ANALYZE) {queue_tables};

-- name: analyze
ANALYZE {queue_tables};

-- ---------------------------------------------------------------------------------------
-- Flow control (prismq.queue.flow): limits, the claim's view of them, unique enqueues.
-- ---------------------------------------------------------------------------------------

-- The limits a claim of :task_types (NULL for every type) is under, locked in one order:
-- a claim whose optimistic attempt went over a limit (see
-- PostgresBackend._claim_under_limits) takes them first when its transaction is made again.
-- name: lock_flow_limits
SELECT 1 FROM flow_limits
WHERE %(task_types)s::text[] IS NULL OR task_type = '' OR task_type = ANY (%(task_types)s::text[])
ORDER BY task_type, concurrency_key
FOR UPDATE;

-- Each limit with the tasks of its scope leased now (its counter, less the releases not
-- yet folded into it) and its claims within the rate period (the buckets that reach into
-- it). A bucket ends at most one width after its claim, so one ending more than a period
-- ahead was left by a clock since stepped back and does not count; bounded on both sides,
-- the range also keeps the planner on the primary key however many old buckets are kept.
-- name: flow_limits_for_claim
SELECT l.task_type, l.concurrency_key, l.max_leased, l.max_starts, l.period,
       CASE WHEN l.max_leased IS NULL THEN 0 ELSE l.leased - coalesce((
           SELECT sum(r.released) FROM flow_released r
           WHERE r.task_type = l.task_type AND r.concurrency_key = l.concurrency_key), 0) END,
       CASE WHEN l.max_starts IS NULL THEN 0 ELSE (
           SELECT coalesce(sum(s.starts), 0) FROM flow_starts s
           WHERE s.task_type = l.task_type AND s.concurrency_key = l.concurrency_key
             AND s.bucket_end > %(now)s - l.period AND s.bucket_end <= %(now)s + l.period) END
FROM flow_limits l
WHERE %(task_types)s::text[] IS NULL OR l.task_type = '' OR l.task_type = ANY (%(task_types)s::text[]);

-- Whether a limit a claim of :task_types is under holds more than it allows: read after an
-- optimistic claim, whose trigger counted it in and locked the limits it counted into, so
-- the counters read here are exact for them. A NULL limit compares as not exceeded.
-- name: flow_over_limit
SELECT EXISTS (
    SELECT 1
    FROM ({flow_limits_for_claim})
        AS u (task_type, concurrency_key, max_leased, max_starts, period, leased, started)
    WHERE u.leased > u.max_leased OR u.started > u.max_starts);

-- name: forget_flow_starts
DELETE FROM flow_starts
WHERE task_type = %(task_type)s AND concurrency_key = %(key)s AND bucket_end <= %(before)s;

-- Writers of tasks wait while a limit is set, and a limit set waits for them: its counter
-- is set from committed leases only, and every later change of a task counts into it.
-- name: lock_tasks_for_limit
LOCK TABLE tasks IN SHARE ROW EXCLUSIVE MODE;

-- A limit's counter set from the tasks of its scope leased now (when the limit is set),
-- its releases not yet folded dropped (the count holds them).
-- name: recount_flow_limit
WITH dropped AS (
    DELETE FROM flow_released WHERE task_type = %(task_type)s AND concurrency_key = %(key)s
)
UPDATE flow_limits l SET leased = (
    SELECT count(*) FROM tasks t
    WHERE t.status = 'leased'
      AND (l.task_type = '' OR t.task_type = l.task_type)
      AND (l.concurrency_key = '' OR t.concurrency_key = l.concurrency_key))
WHERE l.task_type = %(task_type)s AND l.concurrency_key = %(key)s;

-- name: set_concurrency_limit
INSERT INTO flow_limits (task_type, concurrency_key, max_leased) VALUES (%(task_type)s, %(key)s, %(limit)s)
ON CONFLICT (task_type, concurrency_key) DO UPDATE SET max_leased = excluded.max_leased;

-- name: set_rate_limit
INSERT INTO flow_limits (task_type, concurrency_key, max_starts, period)
VALUES (%(task_type)s, %(key)s, %(limit)s, %(period)s)
ON CONFLICT (task_type, concurrency_key) DO UPDATE
SET max_starts = excluded.max_starts, period = excluded.period;

-- name: drop_concurrency_limit
DELETE FROM flow_limits
WHERE task_type = %(task_type)s AND concurrency_key = %(key)s AND max_leased IS NOT NULL AND max_starts IS NULL;

-- name: clear_concurrency_limit
UPDATE flow_limits SET max_leased = NULL
WHERE task_type = %(task_type)s AND concurrency_key = %(key)s AND max_leased IS NOT NULL;

-- name: drop_rate_limit
DELETE FROM flow_limits
WHERE task_type = %(task_type)s AND concurrency_key = %(key)s AND max_starts IS NOT NULL AND max_leased IS NULL;

-- name: clear_rate_limit
UPDATE flow_limits SET max_starts = NULL, period = NULL
WHERE task_type = %(task_type)s AND concurrency_key = %(key)s AND max_starts IS NOT NULL;

-- name: forget_all_flow_starts
DELETE FROM flow_starts WHERE task_type = %(task_type)s AND concurrency_key = %(key)s;

-- name: list_flow_limits
SELECT task_type, concurrency_key, max_leased, max_starts, period FROM flow_limits
ORDER BY task_type, concurrency_key;

-- Serialises unique enqueues of one key until the transaction ends.
-- name: lock_unique_key
SELECT pg_advisory_xact_lock(hashtext('prismq_unique:' || current_schema() || ':' || %(unique_key)s));

-- name: find_unique
SELECT id FROM tasks
WHERE unique_key = %(unique_key)s AND created_at >= %(since)s AND status = ANY (%(statuses)s::text[])
ORDER BY created_at DESC LIMIT 1;

-- name: insert_task_flow
INSERT INTO tasks (task_type, payload, priority, run_after, max_attempts, retry_policy,
                   idempotency_key, trace_context, created_at, updated_at, concurrency_key,
                   unique_key)
VALUES (%(task_type)s, %(payload)s, %(priority)s, %(run_after)s, %(max_attempts)s,
        %(retry_policy)s, %(idempotency_key)s, %(trace_context)s, %(now)s, %(now)s,
        %(concurrency_key)s, %(unique_key)s)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: dump_tasks
SELECT id, task_type, payload, status, priority, attempts, max_attempts, retry_policy,
       run_after, lease_until, locked_by, lease_token, cancel_requested, progress,
       progress_message, result, last_error, last_traceback, idempotency_key, created_at,
       started_at, finished_at, trace_context, updated_at, concurrency_key, unique_key
FROM tasks ORDER BY id;

-- name: dump_workers
SELECT worker_id, hostname, pid, task_types, strategy, started_at, last_heartbeat
FROM workers ORDER BY worker_id;

-- name: delete_all_tasks
DELETE FROM tasks;

-- name: delete_all_workers
DELETE FROM workers;

-- name: restore_task
INSERT INTO tasks (id, task_type, payload, status, priority, attempts, max_attempts,
                   retry_policy, run_after, lease_until, locked_by, lease_token,
                   cancel_requested, progress, progress_message, result, last_error,
                   last_traceback, idempotency_key, created_at, started_at, finished_at,
                   trace_context, updated_at, concurrency_key, unique_key)
VALUES (%(id)s, %(task_type)s, %(payload)s, %(status)s, %(priority)s, %(attempts)s,
        %(max_attempts)s, %(retry_policy)s, %(run_after)s, %(lease_until)s, %(locked_by)s,
        %(lease_token)s, %(cancel_requested)s, %(progress)s, %(progress_message)s, %(result)s,
        %(last_error)s, %(last_traceback)s, %(idempotency_key)s, %(created_at)s,
        %(started_at)s, %(finished_at)s, %(trace_context)s, %(updated_at)s,
        %(concurrency_key)s, %(unique_key)s);

-- Never hand out an id again, even one only the replaced content had used.
-- name: advance_task_ids
SELECT setval(pg_get_serial_sequence('tasks', 'id'),
              greatest((SELECT coalesce(max(id), 0) FROM tasks),
                       nextval(pg_get_serial_sequence('tasks', 'id'))));

-- name: restore_worker
INSERT INTO workers (worker_id, hostname, pid, task_types, strategy, started_at, last_heartbeat)
VALUES (%(worker_id)s, %(hostname)s, %(pid)s, %(task_types)s, %(strategy)s, %(started_at)s,
        %(last_heartbeat)s);

-- Runs of the run registry (prismq.queue.integrations, migration 0002) in a dump, after
-- the tasks they belong to.
-- name: has_runs_table
SELECT to_regclass('runs') IS NOT NULL;

-- name: dump_runs
SELECT run_id, task_id, module_id, module_name, status, parameters, rerunnable,
       progress_percent, progress_message, items_processed, items_total, exit_code,
       error_message, owner, attempts, created_at, started_at, completed_at, updated_at
FROM runs ORDER BY task_id;

-- name: restore_run
INSERT INTO runs (run_id, task_id, module_id, module_name, status, parameters, rerunnable,
                  progress_percent, progress_message, items_processed, items_total, exit_code,
                  error_message, owner, attempts, created_at, started_at, completed_at,
                  updated_at)
VALUES (%(run_id)s, %(task_id)s, %(module_id)s, %(module_name)s, %(status)s, %(parameters)s,
        %(rerunnable)s, %(progress_percent)s, %(progress_message)s, %(items_processed)s,
        %(items_total)s, %(exit_code)s, %(error_message)s, %(owner)s, %(attempts)s,
        %(created_at)s, %(started_at)s, %(completed_at)s, %(updated_at)s);

-- ---------------------------------------------------------------------------------------
-- Paused task types (migration 3). Claims read paused_names inside their transaction;
-- a resume wakes idle workers.
-- ---------------------------------------------------------------------------------------

-- name: pause_type
INSERT INTO paused_task_types (task_type, paused_at) VALUES (%(task_type)s, %(now)s)
ON CONFLICT (task_type) DO NOTHING;

-- name: resume_type
DELETE FROM paused_task_types WHERE task_type = %(task_type)s;

-- name: notify_queued
SELECT pg_notify('prismq_queue', current_schema());

-- name: paused_types
SELECT task_type, paused_at FROM paused_task_types ORDER BY task_type;

-- name: paused_names
SELECT task_type FROM paused_task_types;

-- ---------------------------------------------------------------------------------------
-- Pages of tasks for the dashboard: keyset pagination, each status off its own index
-- (see the SQLite file for the meaning of the parameters).
-- ---------------------------------------------------------------------------------------

-- name: page_all
SELECT {task_columns} FROM tasks
WHERE id < %(cursor_id)s
  AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
  AND (%(since)s::double precision IS NULL OR created_at >= %(since)s::double precision)
  AND (%(until)s::double precision IS NULL OR created_at < %(until)s::double precision)
  AND (%(search)s::text IS NULL OR strpos(payload, %(search)s::text) > 0
       OR strpos(coalesce(last_error, ''), %(search)s::text) > 0)
ORDER BY id DESC LIMIT %(limit)s;

-- name: page_queued
SELECT {task_columns} FROM tasks
WHERE status = 'queued' AND (task_type, run_after, id) > (%(cursor_type)s::text, %(cursor_time)s::double precision, %(cursor_id)s::bigint)
  AND (%(since)s::double precision IS NULL OR run_after >= %(since)s::double precision)
  AND (%(until)s::double precision IS NULL OR run_after < %(until)s::double precision)
  AND (%(search)s::text IS NULL OR strpos(payload, %(search)s::text) > 0
       OR strpos(coalesce(last_error, ''), %(search)s::text) > 0)
ORDER BY task_type, run_after, id LIMIT %(limit)s;

-- name: page_queued_type
SELECT {task_columns} FROM tasks
WHERE status = 'queued' AND task_type >= %(task_type)s::text AND task_type <= %(task_type)s::text
  AND (run_after, id) > (%(cursor_time)s::double precision, %(cursor_id)s::bigint)
  AND (%(since)s::double precision IS NULL OR run_after >= %(since)s::double precision)
  AND (%(until)s::double precision IS NULL OR run_after < %(until)s::double precision)
  AND (%(search)s::text IS NULL OR strpos(payload, %(search)s::text) > 0
       OR strpos(coalesce(last_error, ''), %(search)s::text) > 0)
ORDER BY task_type, run_after, id LIMIT %(limit)s;

-- name: page_leased
SELECT {task_columns} FROM tasks
WHERE status = 'leased' AND (lease_until, id) > (%(cursor_time)s::double precision, %(cursor_id)s::bigint)
  AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
  AND (%(since)s::double precision IS NULL OR lease_until >= %(since)s::double precision)
  AND (%(until)s::double precision IS NULL OR lease_until < %(until)s::double precision)
  AND (%(search)s::text IS NULL OR strpos(payload, %(search)s::text) > 0
       OR strpos(coalesce(last_error, ''), %(search)s::text) > 0)
ORDER BY lease_until, id LIMIT %(limit)s;

-- One query for the three finished states: idx_tasks_finished is keyed by status first.
-- name: page_finished
SELECT {task_columns} FROM tasks
WHERE status = %(status)s::text AND finished_at IS NOT NULL
  AND (finished_at, id) < (%(cursor_time)s::double precision, %(cursor_id)s::bigint)
  AND (%(task_type)s::text IS NULL OR task_type = %(task_type)s::text)
  AND (%(since)s::double precision IS NULL OR finished_at >= %(since)s::double precision)
  AND (%(until)s::double precision IS NULL OR finished_at < %(until)s::double precision)
  AND (%(search)s::text IS NULL OR strpos(payload, %(search)s::text) > 0
       OR strpos(coalesce(last_error, ''), %(search)s::text) > 0)
ORDER BY status DESC, finished_at DESC, id DESC LIMIT %(limit)s;

-- name: finished_histogram
SELECT floor((finished_at - %(since)s) / %(step)s)::bigint AS bucket, status, count(*)
FROM tasks
WHERE status IN ('completed', 'dead', 'cancelled') AND finished_at >= %(since)s
GROUP BY bucket, status;

-- ---------------------------------------------------------------------------------------
-- Changes to a list of tasks by id, for the bulk operations.
-- ---------------------------------------------------------------------------------------

-- name: retry_ids
UPDATE tasks
SET status = 'queued', run_after = %(now)s, finished_at = NULL, cancel_requested = false,
    attempts = 0, updated_at = %(now)s
WHERE id = ANY (%(ids)s::bigint[]) AND status IN ('dead', 'cancelled');

-- name: cancel_queued_ids
UPDATE tasks
SET status = 'cancelled', finished_at = %(now)s, updated_at = %(now)s
WHERE id = ANY (%(ids)s::bigint[]) AND status = 'queued';

-- name: request_cancel_leased_ids
UPDATE tasks SET cancel_requested = true, updated_at = %(now)s
WHERE id = ANY (%(ids)s::bigint[]) AND status = 'leased' AND NOT cancel_requested;

-- name: delete_ids
DELETE FROM tasks
WHERE id = ANY (%(ids)s::bigint[]) AND status <> 'leased'
  AND id < (SELECT max(id) FROM tasks);

-- Paused task types in a backup dump (schema version 3 on).
-- name: has_paused_table
SELECT to_regclass('paused_task_types') IS NOT NULL;

-- name: dump_paused
SELECT task_type, paused_at FROM paused_task_types ORDER BY task_type;

-- name: delete_all_paused
DELETE FROM paused_task_types;

-- name: restore_paused
INSERT INTO paused_task_types (task_type, paused_at) VALUES (%(task_type)s, %(paused_at)s);
-- Flow-control limits (prismq.queue.flow, migration 0006) in a dump: their definitions
-- are read with list_flow_limits and restored through set_limit.
-- name: has_flow_limits_table
SELECT to_regclass('flow_limits') IS NOT NULL;

-- Periodic schedules (prismq.queue.schedules, migration 0005) in a dump.
-- name: has_schedules_table
SELECT to_regclass('schedules') IS NOT NULL;

-- name: dump_schedules
SELECT name, cron, timezone, task_type, payload, priority, max_attempts, misfire,
       max_backfill, grace, source, paused, next_run, last_run, last_task_id, created_at,
       updated_at
FROM schedules ORDER BY name;

-- name: delete_all_schedules
DELETE FROM schedules;

-- name: restore_schedule
INSERT INTO schedules (name, cron, timezone, task_type, payload, priority, max_attempts,
                       misfire, max_backfill, grace, source, paused, next_run, last_run,
                       last_task_id, created_at, updated_at)
VALUES (%(name)s, %(cron)s, %(timezone)s, %(task_type)s, %(payload)s, %(priority)s,
        %(max_attempts)s, %(misfire)s, %(max_backfill)s, %(grace)s, %(source)s, %(paused)s,
        %(next_run)s, %(last_run)s, %(last_task_id)s, %(created_at)s, %(updated_at)s);

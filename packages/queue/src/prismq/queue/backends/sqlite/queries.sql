-- Named queries of the SQLite backend. Each starts with "-- name: <name>".
-- {task_columns} is replaced by the task column list when the file is loaded.

-- name: insert_task
INSERT INTO tasks (task_type, payload, priority, run_after, max_attempts, retry_policy,
                   idempotency_key, trace_context, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: insert_task_idempotent
INSERT INTO tasks (task_type, payload, priority, run_after, max_attempts, retry_policy,
                   idempotency_key, trace_context, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: task_id_by_idempotency_key
SELECT id FROM tasks WHERE idempotency_key = ?;

-- name: get_task
SELECT {task_columns} FROM tasks WHERE id = :id;

-- name: list_tasks_newest_first
SELECT {task_columns} FROM tasks
WHERE (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:task_types IS NULL OR task_type IN (SELECT value FROM json_each(:task_types)))
  AND (:created_after IS NULL OR created_at >= :created_after)
  AND (:created_before IS NULL OR created_at < :created_before)
ORDER BY id DESC
LIMIT :limit OFFSET :offset;

-- name: list_tasks_oldest_first
SELECT {task_columns} FROM tasks
WHERE (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:task_types IS NULL OR task_type IN (SELECT value FROM json_each(:task_types)))
  AND (:created_after IS NULL OR created_at >= :created_after)
  AND (:created_before IS NULL OR created_at < :created_before)
ORDER BY id ASC
LIMIT :limit OFFSET :offset;

-- name: count_by_status
SELECT status, count(*) FROM tasks GROUP BY status;

-- name: count_by_type
SELECT task_type, status, count(*) FROM tasks GROUP BY task_type, status;

-- name: count_ready
SELECT count(*), min(run_after) FROM tasks WHERE status = 'queued' AND run_after <= :now;

-- name: count_delayed
SELECT count(*) FROM tasks WHERE status = 'queued' AND run_after > :now;

-- name: count_expired_leases
-- The leased part of idx_tasks_leased_finished, where the key is lease_until.
SELECT count(*) FROM tasks
WHERE status <> 'queued' AND (status = 'leased') = 1 AND coalesce(lease_until, finished_at) < :now;

-- name: count_finished_since
-- The finished part of idx_tasks_leased_finished, where the key is finished_at.
SELECT count(*) FROM tasks
WHERE status <> 'queued' AND (status = 'leased') = 0 AND coalesce(lease_until, finished_at) >= :since;

-- name: cancel_queued
UPDATE tasks
SET status = 'cancelled', finished_at = :now, updated_at = :now
WHERE id = :id AND status = 'queued'
RETURNING {task_columns};

-- name: request_cancel_leased
UPDATE tasks
SET cancel_requested = 1, updated_at = :now
WHERE id = :id AND status = 'leased'
RETURNING {task_columns};

-- name: retry_finished
UPDATE tasks
SET status = 'queued', run_after = :now, finished_at = NULL, cancel_requested = 0,
    attempts = CASE WHEN :reset THEN 0 ELSE attempts END,
    max_attempts = CASE WHEN :reset THEN max_attempts ELSE max(max_attempts, attempts + 1) END,
    updated_at = :now
WHERE id = :id AND status IN ('dead', 'cancelled')
RETURNING {task_columns};

-- name: prune
DELETE FROM tasks
WHERE status <> 'queued' AND (status = 'leased') = 0 AND coalesce(lease_until, finished_at) < :before
  AND status IN (SELECT value FROM json_each(:statuses))
  AND id < (SELECT max(id) FROM tasks);

-- name: reclaim_expired
-- Reads the leased part of idx_tasks_leased_finished (the key there is lease_until).
UPDATE tasks
SET status = CASE WHEN cancel_requested THEN 'cancelled'
                  WHEN attempts >= max_attempts THEN 'dead'
                  ELSE 'queued' END,
    finished_at = CASE WHEN cancel_requested OR attempts >= max_attempts THEN :now ELSE NULL END,
    last_error = 'lease expired: worker ' || locked_by || ' did not finish attempt '
                 || attempts || ' of ' || max_attempts || ' before its lease ran out',
    last_traceback = NULL,
    run_after = :now, lease_until = NULL, locked_by = NULL, lease_token = NULL,
    updated_at = :now
WHERE status <> 'queued' AND (status = 'leased') = 1 AND coalesce(lease_until, finished_at) < :now;

-- The claim. Every claim variant is this one UPDATE with a pick_* selection of the ids
-- to lease in place of {picked}: claim_<variant> is built from pick_<variant> when the
-- queries are loaded (prismq.queue.backends.sqlfile.build_claims).
-- name: claim_template
UPDATE tasks
SET status = 'leased', attempts = attempts + 1, locked_by = :worker, lease_token = :token,
    lease_until = :lease_until, started_at = :now, updated_at = :now,
    progress = NULL, progress_message = NULL
WHERE id IN ({picked}) AND status = 'queued'
RETURNING {task_columns};

-- Conditions every ready row a claim picks must meet besides being queued and due, as
-- "AND ...", put in place of {ready_filter} in the picks and candidates; both conditions
-- apply. A run's task (prismq.run:<module>, RUN_TASK_PREFIX of prismq.queue.backends.runstore)
-- is claimed only by a worker that names its task types (:explicit true), never by one that
-- claims every type. :blocked is NULL, or a JSON array of [task type, key] scopes whose flow
-- limit is reached ('' for every type or every key): their tasks wait (prismq.queue.flow).
-- name: ready_filter
AND (:explicit OR substr(task_type, 1, 11) <> 'prismq.run:')
AND (:blocked IS NULL OR NOT EXISTS (
    SELECT 1 FROM json_each(:blocked) AS b
    WHERE json_extract(b.value, '$[0]') IN ('', tasks.task_type)
      AND json_extract(b.value, '$[1]') IN ('', coalesce(tasks.concurrency_key, ''))))

-- name: pick_id
SELECT :id

-- name: pick_by_ids
SELECT value FROM json_each(:ids)

-- name: pick_oldest_first_type
SELECT id FROM tasks INDEXED BY idx_tasks_ready_type WHERE status = 'queued' AND task_type = :task_type
AND run_after <= :now {ready_filter} ORDER BY run_after, id LIMIT :count

-- name: pick_newest_first_type
SELECT id FROM tasks INDEXED BY idx_tasks_ready_type WHERE status = 'queued' AND task_type = :task_type
AND run_after <= :now {ready_filter} ORDER BY run_after DESC, id DESC LIMIT :count

-- name: pick_priority_type
SELECT id FROM tasks INDEXED BY idx_tasks_ready_type_priority WHERE status = 'queued' AND task_type = :task_type
AND run_after <= :now {ready_filter} ORDER BY priority, run_after, id LIMIT :count

-- name: candidates_oldest_first_type
SELECT id, priority, run_after FROM tasks INDEXED BY idx_tasks_ready_type
WHERE status = 'queued' AND task_type = :task_type AND run_after <= :now {ready_filter}
ORDER BY run_after, id LIMIT :count;

-- name: candidates_newest_first_type
SELECT id, priority, run_after FROM tasks INDEXED BY idx_tasks_ready_type
WHERE status = 'queued' AND task_type = :task_type AND run_after <= :now {ready_filter}
ORDER BY run_after DESC, id DESC LIMIT :count;

-- name: candidates_priority_type
SELECT id, priority, run_after FROM tasks INDEXED BY idx_tasks_ready_type_priority
WHERE status = 'queued' AND task_type = :task_type AND run_after <= :now {ready_filter}
ORDER BY priority, run_after, id LIMIT :count;

-- name: queued_task_types
WITH RECURSIVE seen(task_type) AS (
    SELECT min(task_type) FROM tasks INDEXED BY idx_tasks_ready_type WHERE status = 'queued'
    UNION ALL
    SELECT (SELECT min(task_type) FROM tasks INDEXED BY idx_tasks_ready_type WHERE status = 'queued' AND task_type > seen.task_type)
    FROM seen WHERE seen.task_type IS NOT NULL
)
SELECT task_type FROM seen WHERE task_type IS NOT NULL;

-- name: has_ready_of_type
SELECT 1 FROM tasks INDEXED BY idx_tasks_ready_type
WHERE status = 'queued' AND task_type = :task_type AND run_after <= :now LIMIT 1;

-- name: insert_leased
-- A task inserted already leased by :worker under a fresh :token (its first attempt), so
-- only that holder's fenced operations can change it; one attempt allowed, so a lease
-- that runs out makes it dead (reclaim_expired), never queued for another worker.
INSERT INTO tasks (task_type, payload, status, priority, attempts, max_attempts, retry_policy,
                   run_after, lease_until, locked_by, lease_token, created_at, started_at,
                   updated_at)
VALUES (:task_type, :payload, 'leased', :priority, 1, 1, :retry_policy, :run_after,
        :lease_until, :worker, :token, :now, :now, :now)
RETURNING {task_columns};

-- name: hand_over
-- lease_again on a leased task: a new holder and token (fencing off the previous one) when
-- its lease ran out, :worker already holds it, or its holder hands it over (:handover
-- is its current token). A queued, dead or cancelled task is leased again by
-- retry_finished then claim_id (the claim template), in the same transaction.
UPDATE tasks
SET locked_by = :worker, lease_token = :token, lease_until = :lease_until, updated_at = :now
WHERE id = :id AND status = 'leased'
  AND (locked_by = :worker OR lease_token = :handover OR lease_until < :now)
RETURNING {task_columns};

-- name: renew_lease
UPDATE tasks SET lease_until = :lease_until, updated_at = :now
WHERE id = :id AND status = 'leased' AND locked_by = :worker AND lease_token = :token
RETURNING {task_columns};

-- Reporting progress renews the lease too; it never shortens a longer one.
-- name: update_progress
UPDATE tasks SET progress = :percent, progress_message = :message, updated_at = :now,
    lease_until = max(lease_until, :lease_until)
WHERE id = :id AND status = 'leased' AND locked_by = :worker AND lease_token = :token
RETURNING {task_columns};

-- name: complete_task
UPDATE tasks
SET status = 'completed', result = :result, finished_at = :now, updated_at = :now,
    progress = 100, lease_until = NULL, locked_by = NULL, lease_token = NULL
WHERE id = :id AND status = 'leased' AND locked_by = :worker AND lease_token = :token;

-- name: complete_many
-- Several completions in one statement; :updates is a JSON array of
-- [id, worker, lease token, result as JSON text or null]. Returns the ids completed.
UPDATE tasks
SET status = 'completed', result = done.result, finished_at = :now, updated_at = :now,
    progress = 100, lease_until = NULL, locked_by = NULL, lease_token = NULL
FROM (SELECT json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS worker,
             json_extract(value, '$[2]') AS token, json_extract(value, '$[3]') AS result
      FROM json_each(:updates)) AS done
WHERE tasks.id = done.id AND tasks.status = 'leased' AND tasks.locked_by = done.worker
  AND tasks.lease_token = done.token
RETURNING tasks.id;

-- name: finish_attempt
UPDATE tasks
SET status = :status,
    run_after = coalesce(:run_after, run_after),
    attempts = CASE WHEN :count_attempt THEN attempts ELSE max(attempts - 1, 0) END,
    last_error = coalesce(:error, last_error),
    last_traceback = CASE WHEN :error IS NULL THEN last_traceback ELSE :traceback END,
    finished_at = CASE WHEN :status IN ('dead', 'cancelled') THEN :now ELSE NULL END,
    lease_until = NULL, locked_by = NULL, lease_token = NULL, updated_at = :now
WHERE id = :id AND status = 'leased' AND locked_by = :worker AND lease_token = :token
RETURNING {task_columns};

-- name: lease_holder
SELECT status, locked_by, lease_token FROM tasks WHERE id = :id;

-- name: upsert_worker
INSERT INTO workers (worker_id, hostname, pid, task_types, strategy, started_at, last_heartbeat)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (worker_id) DO UPDATE SET
    hostname = excluded.hostname, pid = excluded.pid, task_types = excluded.task_types,
    strategy = excluded.strategy, started_at = excluded.started_at,
    last_heartbeat = excluded.last_heartbeat;

-- name: heartbeat_worker
UPDATE workers SET last_heartbeat = :now WHERE worker_id = :worker_id;

-- name: delete_worker
DELETE FROM workers WHERE worker_id = :worker_id;

-- name: list_workers
SELECT worker_id, hostname, pid, task_types, strategy, started_at, last_heartbeat
FROM workers ORDER BY worker_id;

-- name: next_run_after_type
SELECT min(run_after) FROM tasks INDEXED BY idx_tasks_ready_type
WHERE status = 'queued' AND task_type = :task_type;

-- name: analyze
ANALYZE;

-- ---------------------------------------------------------------------------------------
-- Flow control (prismq.queue.flow): limits, the claim's view of them, unique enqueues.
-- ---------------------------------------------------------------------------------------

-- The limits a claim of :task_types (a JSON array, or NULL for every type) is under, each
-- with the tasks of its scope leased now (its counter, kept by the flow_count triggers)
-- and its claims within the rate period (the buckets that reach into it; one ending more
-- than a period ahead was left by a clock since stepped back and does not count).
-- name: flow_limits_for_claim
SELECT l.task_type, l.concurrency_key, l.max_leased, l.max_starts, l.period,
       CASE WHEN l.max_leased IS NULL THEN 0 ELSE l.leased END,
       CASE WHEN l.max_starts IS NULL THEN 0 ELSE (
           SELECT coalesce(sum(s.starts), 0) FROM flow_starts s
           WHERE s.task_type = l.task_type AND s.concurrency_key = l.concurrency_key
             AND s.bucket_end > :now - l.period AND s.bucket_end <= :now + l.period) END
FROM flow_limits l
WHERE :task_types IS NULL OR l.task_type = '' OR l.task_type IN (SELECT value FROM json_each(:task_types));

-- name: forget_flow_starts
DELETE FROM flow_starts WHERE task_type = :task_type AND concurrency_key = :key AND bucket_end <= :before;

-- The claimed tasks (:ids, JSON) counted into the bucket of each rate limit covering them
-- (:rated, a JSON array of [task type, key, bucket end]).
-- name: add_flow_starts
INSERT INTO flow_starts (task_type, concurrency_key, bucket_end, starts)
SELECT json_extract(r.value, '$[0]'), json_extract(r.value, '$[1]'), json_extract(r.value, '$[2]'), count(*)
FROM tasks AS t, json_each(:rated) AS r
WHERE t.id IN (SELECT value FROM json_each(:ids))
  AND json_extract(r.value, '$[0]') IN ('', t.task_type)
  AND json_extract(r.value, '$[1]') IN ('', coalesce(t.concurrency_key, ''))
GROUP BY 1, 2, 3
ON CONFLICT (task_type, concurrency_key, bucket_end) DO UPDATE SET starts = starts + excluded.starts;

-- Claims counted by the caller into the bucket of one rate limit of a whole task type
-- (:task_type, with :key ''), run once per such limit.
-- name: add_flow_start
INSERT INTO flow_starts (task_type, concurrency_key, bucket_end, starts)
VALUES (:task_type, :key, :bucket_end, :starts)
ON CONFLICT (task_type, concurrency_key, bucket_end) DO UPDATE SET starts = starts + excluded.starts;

-- A limit's counter set from the tasks of its scope leased now (when the limit is set).
-- name: recount_flow_limit
UPDATE flow_limits SET leased = (
    SELECT count(*) FROM tasks t
    WHERE t.status = 'leased'
      AND (flow_limits.task_type = '' OR t.task_type = flow_limits.task_type)
      AND (flow_limits.concurrency_key = '' OR t.concurrency_key = flow_limits.concurrency_key))
WHERE task_type = :task_type AND concurrency_key = :key;

-- Every limit's counter set from the tasks leased now (when the triggers are created).
-- name: recount_flow_limits
UPDATE flow_limits SET leased = (
    SELECT count(*) FROM tasks t
    WHERE t.status = 'leased'
      AND (flow_limits.task_type = '' OR t.task_type = flow_limits.task_type)
      AND (flow_limits.concurrency_key = '' OR t.concurrency_key = flow_limits.concurrency_key));

-- name: count_flow_limits
SELECT count(*) FROM flow_limits;

-- name: count_flow_triggers
SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'flow\_count\_%' ESCAPE '\';

-- name: set_concurrency_limit
INSERT INTO flow_limits (task_type, concurrency_key, max_leased) VALUES (:task_type, :key, :limit)
ON CONFLICT (task_type, concurrency_key) DO UPDATE SET max_leased = excluded.max_leased;

-- name: set_rate_limit
INSERT INTO flow_limits (task_type, concurrency_key, max_starts, period)
VALUES (:task_type, :key, :limit, :period)
ON CONFLICT (task_type, concurrency_key) DO UPDATE
SET max_starts = excluded.max_starts, period = excluded.period;

-- name: drop_concurrency_limit
DELETE FROM flow_limits
WHERE task_type = :task_type AND concurrency_key = :key AND max_leased IS NOT NULL AND max_starts IS NULL;

-- name: clear_concurrency_limit
UPDATE flow_limits SET max_leased = NULL
WHERE task_type = :task_type AND concurrency_key = :key AND max_leased IS NOT NULL;

-- name: drop_rate_limit
DELETE FROM flow_limits
WHERE task_type = :task_type AND concurrency_key = :key AND max_starts IS NOT NULL AND max_leased IS NULL;

-- name: clear_rate_limit
UPDATE flow_limits SET max_starts = NULL, period = NULL
WHERE task_type = :task_type AND concurrency_key = :key AND max_starts IS NOT NULL;

-- name: forget_all_flow_starts
DELETE FROM flow_starts WHERE task_type = :task_type AND concurrency_key = :key;

-- name: list_flow_limits
SELECT task_type, concurrency_key, max_leased, max_starts, period FROM flow_limits
ORDER BY task_type, concurrency_key;

-- The newest task holding :unique_key in one of :statuses (JSON), created at or after :since.
-- name: find_unique
SELECT id FROM tasks INDEXED BY idx_tasks_unique
WHERE unique_key = :unique_key AND created_at >= :since
  AND status IN (SELECT value FROM json_each(:statuses))
ORDER BY created_at DESC LIMIT 1;

-- An enqueue with a concurrency key or unique key; an idempotency key already taken
-- inserts nothing (the caller then reads the task holding it).
-- name: insert_task_flow
INSERT INTO tasks (task_type, payload, priority, run_after, max_attempts, retry_policy,
                   idempotency_key, trace_context, created_at, updated_at, concurrency_key,
                   unique_key)
VALUES (:task_type, :payload, :priority, :run_after, :max_attempts, :retry_policy,
        :idempotency_key, :trace_context, :now, :now, :concurrency_key, :unique_key)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- ---------------------------------------------------------------------------------------
-- Paused task types (migration 4). Claims read paused_names inside their transaction.
-- ---------------------------------------------------------------------------------------

-- name: pause_type
INSERT INTO paused_task_types (task_type, paused_at) VALUES (:task_type, :now)
ON CONFLICT (task_type) DO NOTHING;

-- name: resume_type
DELETE FROM paused_task_types WHERE task_type = :task_type;

-- name: paused_types
SELECT task_type, paused_at FROM paused_task_types ORDER BY task_type;

-- name: paused_names
SELECT task_type FROM paused_task_types;

-- ---------------------------------------------------------------------------------------
-- Pages of tasks for the dashboard: keyset pagination, each status off its own index.
-- :search matches text in the payload or the last error; :since/:until bound the time the
-- page is ordered by (created for all, run_after for queued, lease end for leased,
-- finished for the finished states).
-- ---------------------------------------------------------------------------------------

-- name: page_all
SELECT {task_columns} FROM tasks
WHERE id < :cursor_id
  AND (:task_type IS NULL OR task_type = :task_type)
  AND (:since IS NULL OR created_at >= :since) AND (:until IS NULL OR created_at < :until)
  AND (:search IS NULL OR instr(payload, :search) > 0 OR instr(coalesce(last_error, ''), :search) > 0)
ORDER BY id DESC LIMIT :limit;

-- name: page_queued
SELECT {task_columns} FROM tasks INDEXED BY idx_tasks_ready_type
WHERE status = 'queued' AND (task_type, run_after, id) > (:cursor_type, :cursor_time, :cursor_id)
  AND (:since IS NULL OR run_after >= :since) AND (:until IS NULL OR run_after < :until)
  AND (:search IS NULL OR instr(payload, :search) > 0 OR instr(coalesce(last_error, ''), :search) > 0)
ORDER BY task_type, run_after, id LIMIT :limit;

-- name: page_queued_type
SELECT {task_columns} FROM tasks INDEXED BY idx_tasks_ready_type
WHERE status = 'queued' AND task_type = :task_type AND (run_after, id) > (:cursor_time, :cursor_id)
  AND (:since IS NULL OR run_after >= :since) AND (:until IS NULL OR run_after < :until)
  AND (:search IS NULL OR instr(payload, :search) > 0 OR instr(coalesce(last_error, ''), :search) > 0)
ORDER BY run_after, id LIMIT :limit;

-- name: page_leased
SELECT {task_columns} FROM tasks INDEXED BY idx_tasks_leased_finished
WHERE status <> 'queued' AND (status = 'leased') = 1
  AND (coalesce(lease_until, finished_at), id) > (:cursor_time, :cursor_id)
  AND (:task_type IS NULL OR task_type = :task_type)
  AND (:since IS NULL OR lease_until >= :since) AND (:until IS NULL OR lease_until < :until)
  AND (:search IS NULL OR instr(payload, :search) > 0 OR instr(coalesce(last_error, ''), :search) > 0)
ORDER BY coalesce(lease_until, finished_at), id LIMIT :limit;

-- The finished part of idx_tasks_leased_finished (its key is finished_at there), read
-- newest first from the cursor; completed rows are most of that part.
-- name: page_completed
SELECT {task_columns} FROM tasks INDEXED BY idx_tasks_leased_finished
WHERE status <> 'queued' AND (status = 'leased') = 0 AND status = 'completed'
  AND coalesce(lease_until, finished_at) <= :cursor_time
  AND (coalesce(lease_until, finished_at) < :cursor_time OR id < :cursor_id)
  AND (:task_type IS NULL OR task_type = :task_type)
  AND (:since IS NULL OR coalesce(lease_until, finished_at) >= :since)
  AND (:until IS NULL OR coalesce(lease_until, finished_at) < :until)
  AND (:search IS NULL OR instr(payload, :search) > 0 OR instr(coalesce(last_error, ''), :search) > 0)
ORDER BY (status = 'leased') DESC, coalesce(lease_until, finished_at) DESC, id DESC LIMIT :limit;

-- name: page_dead
SELECT {task_columns} FROM tasks INDEXED BY idx_tasks_dead
WHERE status = 'dead' AND (finished_at, id) < (:cursor_time, :cursor_id)
  AND (:task_type IS NULL OR task_type = :task_type)
  AND (:since IS NULL OR finished_at >= :since) AND (:until IS NULL OR finished_at < :until)
  AND (:search IS NULL OR instr(payload, :search) > 0 OR instr(coalesce(last_error, ''), :search) > 0)
ORDER BY finished_at DESC, id DESC LIMIT :limit;

-- name: page_cancelled
SELECT {task_columns} FROM tasks INDEXED BY idx_tasks_cancelled
WHERE status = 'cancelled' AND (finished_at, id) < (:cursor_time, :cursor_id)
  AND (:task_type IS NULL OR task_type = :task_type)
  AND (:since IS NULL OR finished_at >= :since) AND (:until IS NULL OR finished_at < :until)
  AND (:search IS NULL OR instr(payload, :search) > 0 OR instr(coalesce(last_error, ''), :search) > 0)
ORDER BY finished_at DESC, id DESC LIMIT :limit;

-- Tasks finished since :since per :step-second bucket and status (the finished part of
-- idx_tasks_leased_finished, read from :since on).
-- name: finished_histogram
SELECT CAST((coalesce(lease_until, finished_at) - :since) / :step AS INTEGER) AS bucket, status, count(*)
FROM tasks
WHERE status <> 'queued' AND (status = 'leased') = 0 AND coalesce(lease_until, finished_at) >= :since
GROUP BY bucket, status;

-- ---------------------------------------------------------------------------------------
-- Changes to a list of tasks by id (:ids is a JSON array), for the bulk operations.
-- ---------------------------------------------------------------------------------------

-- name: retry_ids
UPDATE tasks
SET status = 'queued', run_after = :now, finished_at = NULL, cancel_requested = 0, attempts = 0,
    updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status IN ('dead', 'cancelled');

-- name: cancel_queued_ids
UPDATE tasks
SET status = 'cancelled', finished_at = :now, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'queued';

-- name: request_cancel_leased_ids
UPDATE tasks SET cancel_requested = 1, updated_at = :now
WHERE id IN (SELECT value FROM json_each(:ids)) AND status = 'leased' AND cancel_requested = 0;

-- The newest task stays (as for prune), so no task id is ever handed out twice.
-- name: delete_ids
DELETE FROM tasks
WHERE id IN (SELECT value FROM json_each(:ids)) AND status <> 'leased'
  AND id < (SELECT max(id) FROM tasks);

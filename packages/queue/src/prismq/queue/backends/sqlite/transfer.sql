-- Row-level copy of tasks between databases (prismq.queue.migrate), SQLite side.
-- Columns are listed in full, in the order prismq.queue.migrate.COLUMNS reads them.

-- name: count_tasks
SELECT count(*) FROM tasks;

-- name: tasks_after
SELECT
    id, task_type, payload, status, priority, attempts, max_attempts, retry_policy,
    run_after, lease_until, locked_by, lease_token, cancel_requested, progress,
    progress_message, result, last_error, last_traceback, idempotency_key, created_at,
    started_at, finished_at, updated_at
FROM tasks WHERE id > :after ORDER BY id LIMIT :limit;

-- name: tasks_between
SELECT
    id, task_type, payload, status, priority, attempts, max_attempts, retry_policy,
    run_after, lease_until, locked_by, lease_token, cancel_requested, progress,
    progress_message, result, last_error, last_traceback, idempotency_key, created_at,
    started_at, finished_at, updated_at
FROM tasks WHERE id BETWEEN :first AND :last ORDER BY id;

-- name: upsert_task
INSERT INTO tasks (
    id, task_type, payload, status, priority, attempts, max_attempts, retry_policy,
    run_after, lease_until, locked_by, lease_token, cancel_requested, progress,
    progress_message, result, last_error, last_traceback, idempotency_key, created_at,
    started_at, finished_at, updated_at
) VALUES (
    :id, :task_type, :payload, :status, :priority, :attempts, :max_attempts,
    :retry_policy, :run_after, :lease_until, :locked_by, :lease_token,
    :cancel_requested, :progress, :progress_message, :result, :last_error,
    :last_traceback, :idempotency_key, :created_at, :started_at, :finished_at,
    :updated_at
)
ON CONFLICT (id) DO UPDATE SET
    task_type = excluded.task_type,
    payload = excluded.payload,
    status = excluded.status,
    priority = excluded.priority,
    attempts = excluded.attempts,
    max_attempts = excluded.max_attempts,
    retry_policy = excluded.retry_policy,
    run_after = excluded.run_after,
    lease_until = excluded.lease_until,
    locked_by = excluded.locked_by,
    lease_token = excluded.lease_token,
    cancel_requested = excluded.cancel_requested,
    progress = excluded.progress,
    progress_message = excluded.progress_message,
    result = excluded.result,
    last_error = excluded.last_error,
    last_traceback = excluded.last_traceback,
    idempotency_key = excluded.idempotency_key,
    created_at = excluded.created_at,
    started_at = excluded.started_at,
    finished_at = excluded.finished_at,
    updated_at = excluded.updated_at;

-- Row-level copy of tasks and runs between databases (prismq.queue.migrate), SQLite side.
-- Columns are listed in full, in the order prismq.queue.migrate reads them (COLUMNS for
-- tasks, RUN_COLUMNS for runs).

-- name: count_tasks
SELECT count(*) FROM tasks;

-- name: tasks_after
SELECT
    id, task_type, payload, status, priority, attempts, max_attempts, retry_policy,
    run_after, lease_until, locked_by, lease_token, cancel_requested, progress,
    progress_message, result, last_error, last_traceback, idempotency_key, created_at,
    started_at, finished_at, trace_context, updated_at, concurrency_key, unique_key
FROM tasks WHERE id > :after ORDER BY id LIMIT :limit;

-- name: tasks_between
SELECT
    id, task_type, payload, status, priority, attempts, max_attempts, retry_policy,
    run_after, lease_until, locked_by, lease_token, cancel_requested, progress,
    progress_message, result, last_error, last_traceback, idempotency_key, created_at,
    started_at, finished_at, trace_context, updated_at, concurrency_key, unique_key
FROM tasks WHERE id BETWEEN :first AND :last ORDER BY id;

-- name: upsert_task
INSERT INTO tasks (
    id, task_type, payload, status, priority, attempts, max_attempts, retry_policy,
    run_after, lease_until, locked_by, lease_token, cancel_requested, progress,
    progress_message, result, last_error, last_traceback, idempotency_key, created_at,
    started_at, finished_at, trace_context, updated_at, concurrency_key, unique_key
) VALUES (
    :id, :task_type, :payload, :status, :priority, :attempts, :max_attempts,
    :retry_policy, :run_after, :lease_until, :locked_by, :lease_token,
    :cancel_requested, :progress, :progress_message, :result, :last_error,
    :last_traceback, :idempotency_key, :created_at, :started_at, :finished_at,
    :trace_context, :updated_at, :concurrency_key, :unique_key
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
    trace_context = excluded.trace_context,
    updated_at = excluded.updated_at,
    concurrency_key = excluded.concurrency_key,
    unique_key = excluded.unique_key;

-- Runs of the run registry (prismq.queue.integrations), copied after the tasks they belong
-- to, in task id order (the same order on both backends), upserted by run id.

-- name: has_runs
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'runs';

-- name: count_runs
SELECT count(*) FROM runs;

-- name: runs_after
SELECT
    run_id, task_id, module_id, module_name, status, parameters, rerunnable,
    progress_percent, progress_message, items_processed, items_total, exit_code,
    error_message, owner, attempts, created_at, started_at, completed_at, updated_at
FROM runs WHERE task_id > :after ORDER BY task_id LIMIT :limit;

-- name: runs_between
SELECT
    run_id, task_id, module_id, module_name, status, parameters, rerunnable,
    progress_percent, progress_message, items_processed, items_total, exit_code,
    error_message, owner, attempts, created_at, started_at, completed_at, updated_at
FROM runs WHERE task_id BETWEEN :first AND :last ORDER BY task_id;

-- name: upsert_run
INSERT INTO runs (
    run_id, task_id, module_id, module_name, status, parameters, rerunnable,
    progress_percent, progress_message, items_processed, items_total, exit_code,
    error_message, owner, attempts, created_at, started_at, completed_at, updated_at
) VALUES (
    :run_id, :task_id, :module_id, :module_name, :status, :parameters, :rerunnable,
    :progress_percent, :progress_message, :items_processed, :items_total,
    :exit_code, :error_message, :owner, :attempts, :created_at, :started_at,
    :completed_at, :updated_at
)
ON CONFLICT (run_id) DO UPDATE SET
    task_id = excluded.task_id,
    module_id = excluded.module_id,
    module_name = excluded.module_name,
    status = excluded.status,
    parameters = excluded.parameters,
    rerunnable = excluded.rerunnable,
    progress_percent = excluded.progress_percent,
    progress_message = excluded.progress_message,
    items_processed = excluded.items_processed,
    items_total = excluded.items_total,
    exit_code = excluded.exit_code,
    error_message = excluded.error_message,
    owner = excluded.owner,
    attempts = excluded.attempts,
    created_at = excluded.created_at,
    started_at = excluded.started_at,
    completed_at = excluded.completed_at,
    updated_at = excluded.updated_at;

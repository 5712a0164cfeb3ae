-- Named queries of the run registry (prismq.queue.integrations) on SQLite.
-- {run_columns} is replaced by the run column list when the file is loaded.
-- A run's task moves only along the queue's legal transitions. It is inserted leased,
-- and leased again for a takeover or a re-run, by the backend's fenced operations
-- (insert_leased, lease_again in queries.sql), then renewed, updated and finished by
-- its owner's QueueWorker; the statements here write runs rows and only read tasks.

-- name: insert_run
INSERT INTO runs ({run_columns})
VALUES (:run_id, :task_id, :module_id, :module_name, :status, :parameters, :rerunnable,
        :progress_percent, :progress_message, :items_processed, :items_total, :exit_code,
        :error_message, :owner, :attempts, :created_at, :started_at, :completed_at, :now);

-- name: get_run
SELECT {run_columns} FROM runs WHERE run_id = :run_id;

-- name: list_runs
SELECT {run_columns} FROM runs
WHERE (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))
  AND (:module_id IS NULL OR module_id = :module_id)
ORDER BY created_at DESC, run_id DESC
LIMIT :limit;

-- name: save_run
-- With :fence, only the owning manager may write, and only while the run is active.
UPDATE runs
SET module_name = :module_name, status = :status, parameters = :parameters,
    rerunnable = :rerunnable, progress_percent = :progress_percent,
    progress_message = :progress_message, items_processed = :items_processed,
    items_total = :items_total, exit_code = :exit_code, error_message = :error_message,
    attempts = :attempts, started_at = :started_at, completed_at = :completed_at,
    updated_at = :now
WHERE run_id = :run_id
  AND (:fence IS NULL OR (owner = :fence AND status IN ('queued', 'running')))
RETURNING task_id;

-- name: save_active_run
-- Progress and start of a run its owner is executing (many at once, no result wanted).
UPDATE runs
SET status = :status, progress_percent = :progress_percent,
    progress_message = :progress_message, items_processed = :items_processed,
    items_total = :items_total, attempts = :attempts, started_at = :started_at,
    completed_at = NULL, updated_at = :now
WHERE run_id = :run_id AND owner = :fence AND status IN ('queued', 'running');

-- name: claim_run
-- A manager takes a queued run that no live manager holds.
UPDATE runs SET owner = :owner, updated_at = :now
WHERE run_id = :run_id AND status = 'queued'
  AND (owner IS NULL OR owner = :owner
       OR EXISTS (SELECT 1 FROM tasks t WHERE t.id = runs.task_id
                  AND (t.status <> 'leased' OR t.lease_until < :now)))
RETURNING {run_columns};

-- name: held_runs
SELECT r.run_id, t.cancel_requested
FROM runs r JOIN tasks t ON t.id = r.task_id
WHERE r.owner = :owner AND r.status IN ('queued', 'running')
  AND t.status = 'leased' AND t.locked_by = :owner;

-- name: orphaned_runs
-- Active runs whose task no live owner leases: the lease ran out, a worker reclaimed it,
-- or it was released to the queue (prismq.queue.migrate releases every lease it copies).
SELECT r.run_id, r.task_id, r.owner, t.lease_until, t.status
FROM runs r JOIN tasks t ON t.id = r.task_id
WHERE r.status IN ('queued', 'running')
  AND NOT (t.status = 'leased' AND t.lease_until >= :now);

-- name: interrupt_run
UPDATE runs
SET status = 'interrupted', completed_at = :now, error_message = :reason, updated_at = :now
WHERE run_id = :run_id AND status IN ('queued', 'running');

-- name: take_rerunnable
UPDATE runs
SET status = 'queued', owner = :owner, started_at = NULL, completed_at = NULL,
    exit_code = NULL, error_message = NULL, progress_percent = 0, progress_message = NULL,
    items_processed = NULL, updated_at = :now
WHERE status = 'interrupted' AND rerunnable = 1
  AND module_id IN (SELECT value FROM json_each(:modules))
RETURNING {run_columns};

-- name: finished_task_ids
SELECT json_group_array(task_id) FROM runs
WHERE status IN ('completed', 'failed', 'cancelled', 'interrupted')
  AND coalesce(completed_at, created_at) < :before;

-- name: delete_runs_of_tasks
DELETE FROM runs WHERE task_id IN (SELECT value FROM json_each(:ids));

-- name: ended_runs
-- Runs finished by a registry (not their owner) whose task the owner still leases: the
-- owner finishes the task as the run row says.
SELECT {run_columns} FROM runs r
WHERE r.owner = :owner AND r.status NOT IN ('queued', 'running')
  AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = r.task_id AND t.status = 'leased'
              AND t.locked_by = :owner);

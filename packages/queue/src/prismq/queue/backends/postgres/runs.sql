-- Named queries of the run registry (prismq.queue.integrations) on PostgreSQL.
-- {run_columns} is replaced by the run column list when the file is loaded. Same
-- statements and meaning as the SQLite backend's runs.sql.
-- A run's task moves only along the queue's legal transitions. It is inserted leased,
-- and leased again for a takeover or a re-run, by the backend's fenced operations
-- (insert_leased, lease_again in queries.sql), then renewed, updated and finished by
-- its owner's QueueWorker; the statements here write runs rows and only read tasks.

-- name: lock_run
-- Serialises inserts and claims of one run id until commit (a check-then-insert that
-- READ COMMITTED would otherwise let two managers race through).
SELECT pg_advisory_xact_lock(hashtext('prismq_run:' || current_schema() || ':' || %(run_id)s));

-- name: insert_run
INSERT INTO runs ({run_columns})
VALUES (%(run_id)s, %(task_id)s, %(module_id)s, %(module_name)s, %(status)s, %(parameters)s,
        %(rerunnable)s, %(progress_percent)s, %(progress_message)s, %(items_processed)s,
        %(items_total)s, %(exit_code)s, %(error_message)s, %(owner)s, %(attempts)s,
        %(created_at)s, %(started_at)s, %(completed_at)s, %(now)s)
ON CONFLICT (run_id) DO NOTHING
RETURNING run_id;

-- name: get_run
SELECT {run_columns} FROM runs WHERE run_id = %(run_id)s;

-- name: list_runs
-- Ties on created_at break by run id in byte order, as SQLite's BINARY collation does.
SELECT {run_columns} FROM runs
WHERE (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s::text[]))
  AND (%(module_id)s::text IS NULL OR module_id = %(module_id)s::text)
ORDER BY created_at DESC, run_id COLLATE "C" DESC
LIMIT %(limit)s;

-- name: save_run
-- With fence, only the owning manager may write, and only while the run is active.
UPDATE runs
SET module_name = %(module_name)s, status = %(status)s, parameters = %(parameters)s,
    rerunnable = %(rerunnable)s, progress_percent = %(progress_percent)s,
    progress_message = %(progress_message)s, items_processed = %(items_processed)s,
    items_total = %(items_total)s, exit_code = %(exit_code)s,
    error_message = %(error_message)s, attempts = %(attempts)s, started_at = %(started_at)s,
    completed_at = %(completed_at)s, updated_at = %(now)s
WHERE run_id = %(run_id)s
  AND (%(fence)s::text IS NULL OR (owner = %(fence)s::text AND status IN ('queued', 'running')))
RETURNING task_id;

-- name: save_active_run
-- Progress and start of a run its owner is executing (many at once, no result wanted).
UPDATE runs
SET status = %(status)s, progress_percent = %(progress_percent)s,
    progress_message = %(progress_message)s, items_processed = %(items_processed)s,
    items_total = %(items_total)s, attempts = %(attempts)s, started_at = %(started_at)s,
    completed_at = NULL, updated_at = %(now)s
WHERE run_id = %(run_id)s AND owner = %(fence)s AND status IN ('queued', 'running');

-- name: claim_run
-- A manager takes a queued run that no live manager holds.
UPDATE runs SET owner = %(owner)s, updated_at = %(now)s
WHERE run_id = %(run_id)s AND status = 'queued'
  AND (owner IS NULL OR owner = %(owner)s
       OR EXISTS (SELECT 1 FROM tasks t WHERE t.id = runs.task_id
                  AND (t.status <> 'leased' OR t.lease_until < %(now)s)))
RETURNING {run_columns};

-- name: held_runs
SELECT r.run_id, t.cancel_requested
FROM runs r JOIN tasks t ON t.id = r.task_id
WHERE r.owner = %(owner)s AND r.status IN ('queued', 'running')
  AND t.status = 'leased' AND t.locked_by = %(owner)s;

-- name: orphaned_runs
-- Active runs whose task no live owner leases: the lease ran out, a worker reclaimed it,
-- or it was released to the queue (prismq.queue.migrate releases every lease it copies).
SELECT r.run_id, r.task_id, r.owner, t.lease_until, t.status
FROM runs r JOIN tasks t ON t.id = r.task_id
WHERE r.status IN ('queued', 'running')
  AND NOT (t.status = 'leased' AND t.lease_until >= %(now)s);

-- name: interrupt_run
UPDATE runs
SET status = 'interrupted', completed_at = %(now)s, error_message = %(reason)s,
    updated_at = %(now)s
WHERE run_id = %(run_id)s AND status IN ('queued', 'running');

-- name: take_rerunnable
UPDATE runs
SET status = 'queued', owner = %(owner)s, started_at = NULL, completed_at = NULL,
    exit_code = NULL, error_message = NULL, progress_percent = 0, progress_message = NULL,
    items_processed = NULL, updated_at = %(now)s
WHERE status = 'interrupted' AND rerunnable AND module_id = ANY(%(modules)s::text[])
RETURNING {run_columns};

-- name: finished_task_ids
SELECT coalesce(array_agg(task_id), '{}') FROM runs
WHERE status IN ('completed', 'failed', 'cancelled', 'interrupted')
  AND coalesce(completed_at, created_at) < %(before)s;

-- name: ended_runs
-- Runs finished by a registry (not their owner) whose task the owner still leases: the
-- owner finishes the task as the run row says.
SELECT {run_columns} FROM runs r
WHERE r.owner = %(owner)s AND r.status NOT IN ('queued', 'running')
  AND EXISTS (SELECT 1 FROM tasks t WHERE t.id = r.task_id AND t.status = 'leased'
              AND t.locked_by = %(owner)s);

-- Named queries of the periodic schedules (prismq.queue.schedules) on SQLite.
-- {schedule_columns} is replaced by the schedule column list when the file is loaded.
-- Writers are serialised by BEGIN IMMEDIATE, so the scheduler's read of due schedules,
-- the inserts of their ticks' tasks and the advance of next_run form one atomic step.

-- name: insert_schedule
-- A new schedule; nothing when the name is taken (the caller reports it).
INSERT INTO schedules ({schedule_columns})
VALUES (:name, :cron, :timezone, :task_type, :payload, :priority, :max_attempts, :misfire,
        :max_backfill, :grace, :source, :paused, :next_run, NULL, NULL, :now, :now)
ON CONFLICT (name) DO NOTHING
RETURNING {schedule_columns};

-- name: upsert_schedule
-- A schedule defined in code or a config file, written at every worker start. The pause
-- state and the last tick stay; next_run stays unless the cron or time zone changed.
INSERT INTO schedules ({schedule_columns})
VALUES (:name, :cron, :timezone, :task_type, :payload, :priority, :max_attempts, :misfire,
        :max_backfill, :grace, :source, :paused, :next_run, NULL, NULL, :now, :now)
ON CONFLICT (name) DO UPDATE SET
    next_run = CASE WHEN schedules.cron = excluded.cron AND schedules.timezone = excluded.timezone
                    THEN schedules.next_run ELSE excluded.next_run END,
    cron = excluded.cron, timezone = excluded.timezone, task_type = excluded.task_type,
    payload = excluded.payload, priority = excluded.priority,
    max_attempts = excluded.max_attempts, misfire = excluded.misfire,
    max_backfill = excluded.max_backfill, grace = excluded.grace, source = excluded.source,
    updated_at = excluded.updated_at
RETURNING {schedule_columns};

-- name: replace_schedule
-- A schedule redefined through the API: every field, next_run recomputed, pause kept.
UPDATE schedules
SET cron = :cron, timezone = :timezone, task_type = :task_type, payload = :payload,
    priority = :priority, max_attempts = :max_attempts, misfire = :misfire,
    max_backfill = :max_backfill, grace = :grace, source = :source, next_run = :next_run,
    updated_at = :now
WHERE name = :name
RETURNING {schedule_columns};

-- name: get_schedule
SELECT {schedule_columns} FROM schedules WHERE name = :name;

-- name: list_schedules
SELECT {schedule_columns} FROM schedules ORDER BY name;

-- name: due_schedules
-- Schedules whose next tick has come, soonest first (idx_schedules_due).
SELECT {schedule_columns} FROM schedules
WHERE paused = 0 AND next_run <= :now
ORDER BY next_run
LIMIT :limit;

-- name: advance_schedule
-- Move a due schedule to its next tick; matches only while next_run is the one read, so a
-- tick is never advanced over twice.
UPDATE schedules
SET next_run = :next_run, last_run = coalesce(:last_run, last_run), updated_at = :now
WHERE name = :name AND next_run = :old_next_run AND paused = 0;

-- name: record_task
UPDATE schedules SET last_task_id = :task_id WHERE name = :name;

-- name: insert_tick_task
-- The task of one tick, under the tick's unique idempotency key: no row when that tick's
-- task already exists.
INSERT INTO tasks (task_type, payload, priority, run_after, max_attempts, retry_policy,
                   idempotency_key, created_at, updated_at)
VALUES (:task_type, :payload, :priority, :run_after, :max_attempts, :retry_policy,
        :idempotency_key, :now, :now)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: set_paused
UPDATE schedules
SET paused = :paused, next_run = coalesce(:next_run, next_run), updated_at = :now
WHERE name = :name
RETURNING {schedule_columns};

-- name: delete_schedule
DELETE FROM schedules WHERE name = :name;

-- name: next_due
SELECT min(next_run) FROM schedules WHERE paused = 0;

-- name: put_schedule
-- A schedule copied as it is, state included (prismq.queue.migrate); replaces one of the
-- same name.
INSERT INTO schedules ({schedule_columns})
VALUES (:name, :cron, :timezone, :task_type, :payload, :priority, :max_attempts, :misfire,
        :max_backfill, :grace, :source, :paused, :next_run, :last_run, :last_task_id,
        :created_at, :updated_at)
ON CONFLICT (name) DO UPDATE SET
    cron = excluded.cron, timezone = excluded.timezone, task_type = excluded.task_type,
    payload = excluded.payload, priority = excluded.priority, max_attempts =
    excluded.max_attempts, misfire = excluded.misfire, max_backfill = excluded.max_backfill,
    grace = excluded.grace, source = excluded.source, paused = excluded.paused, next_run =
    excluded.next_run, last_run = excluded.last_run, last_task_id = excluded.last_task_id,
    created_at = excluded.created_at, updated_at = excluded.updated_at;

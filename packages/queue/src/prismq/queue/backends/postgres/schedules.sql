-- Named queries of the periodic schedules (prismq.queue.schedules) on PostgreSQL.
-- {schedule_columns} is replaced by the schedule column list when the file is loaded.
-- Writers are not serialised here: the scheduler locks the due schedule rows it reads
-- (FOR UPDATE SKIP LOCKED), so two schedulers never work on the same schedule at once and
-- never wait for each other; the tick's unique idempotency key is the last guard.

-- name: insert_schedule
-- A new schedule; nothing when the name is taken (the caller reports it).
INSERT INTO schedules ({schedule_columns})
VALUES (%(name)s, %(cron)s, %(timezone)s, %(task_type)s, %(payload)s, %(priority)s,
        %(max_attempts)s, %(misfire)s,
        %(max_backfill)s, %(grace)s, %(source)s, %(paused)s, %(next_run)s, NULL, NULL, %(now)s, %(now)s)
ON CONFLICT (name) DO NOTHING
RETURNING {schedule_columns};

-- name: upsert_schedule
-- A schedule defined in code or a config file, written at every worker start. The pause
-- state and the last tick stay; next_run stays unless the cron or time zone changed.
INSERT INTO schedules ({schedule_columns})
VALUES (%(name)s, %(cron)s, %(timezone)s, %(task_type)s, %(payload)s, %(priority)s,
        %(max_attempts)s, %(misfire)s,
        %(max_backfill)s, %(grace)s, %(source)s, %(paused)s, %(next_run)s, NULL, NULL, %(now)s, %(now)s)
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
SET cron = %(cron)s, timezone = %(timezone)s, task_type = %(task_type)s, payload = %(payload)s,
    priority = %(priority)s, max_attempts = %(max_attempts)s, misfire = %(misfire)s,
    max_backfill = %(max_backfill)s, grace = %(grace)s, source = %(source)s, next_run = %(next_run)s,
    updated_at = %(now)s
WHERE name = %(name)s
RETURNING {schedule_columns};

-- name: get_schedule
SELECT {schedule_columns} FROM schedules WHERE name = %(name)s;

-- name: list_schedules
SELECT {schedule_columns} FROM schedules ORDER BY name;

-- name: due_schedules
-- Schedules whose next tick has come, soonest first (idx_schedules_due), locked for
-- this transaction; rows another scheduler holds are skipped, not waited for.
SELECT {schedule_columns} FROM schedules
WHERE NOT paused AND next_run <= %(now)s
ORDER BY next_run
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: advance_schedule
-- Move a due schedule to its next tick; matches only while next_run is the one read, so a
-- tick is never advanced over twice.
UPDATE schedules
SET next_run = %(next_run)s, last_run = coalesce(%(last_run)s::double precision, last_run), updated_at = %(now)s
WHERE name = %(name)s AND next_run = %(old_next_run)s AND NOT paused;

-- name: record_task
UPDATE schedules SET last_task_id = %(task_id)s WHERE name = %(name)s;

-- name: insert_tick_task
-- The task of one tick, under the tick's unique idempotency key: no row when that tick's
-- task already exists.
INSERT INTO tasks (task_type, payload, priority, run_after, max_attempts, retry_policy,
                   idempotency_key, created_at, updated_at)
VALUES (%(task_type)s, %(payload)s, %(priority)s, %(run_after)s, %(max_attempts)s, %(retry_policy)s,
        %(idempotency_key)s, %(now)s, %(now)s)
ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: set_paused
UPDATE schedules
SET paused = %(paused)s, next_run = coalesce(%(next_run)s::double precision, next_run), updated_at = %(now)s
WHERE name = %(name)s
RETURNING {schedule_columns};

-- name: delete_schedule
DELETE FROM schedules WHERE name = %(name)s;

-- name: next_due
SELECT min(next_run) FROM schedules WHERE NOT paused;

-- name: put_schedule
-- A schedule copied as it is, state included (prismq.queue.migrate); replaces one of the
-- same name.
INSERT INTO schedules ({schedule_columns})
VALUES (%(name)s, %(cron)s, %(timezone)s, %(task_type)s, %(payload)s, %(priority)s,
        %(max_attempts)s, %(misfire)s, %(max_backfill)s, %(grace)s, %(source)s, %(paused)s,
        %(next_run)s, %(last_run)s, %(last_task_id)s, %(created_at)s, %(updated_at)s)
ON CONFLICT (name) DO UPDATE SET
    cron = excluded.cron, timezone = excluded.timezone, task_type = excluded.task_type,
    payload = excluded.payload, priority = excluded.priority, max_attempts =
    excluded.max_attempts, misfire = excluded.misfire, max_backfill = excluded.max_backfill,
    grace = excluded.grace, source = excluded.source, paused = excluded.paused, next_run =
    excluded.next_run, last_run = excluded.last_run, last_task_id = excluded.last_task_id,
    created_at = excluded.created_at, updated_at = excluded.updated_at;
